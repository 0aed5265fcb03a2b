//! Map operations: what the control plane writes into the kernel and reads back.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Context as _, Result};
use aya::maps::{
    HashMap, MapData, PerCpuArray,
    lpm_trie::{Key, LpmTrie},
};
use weave_common::{
    counters::{Counter, CounterId},
    endpoint::{
        Endpoint, Heard, Ipv4Key, OverlaySubnet, PEER_PLAIN, PeerRoute, ipv4_key, ipv4_octets,
    },
    flood::{FLOOD_LOCAL, FLOOD_REMOTE, FloodKey, FloodSet},
    ipv6::{Endpoint6, Ipv6Key},
    maps,
    policy::{LinkPair, POLICY_CAPACITY, SubnetPair},
};

use super::{CounterTotal, Datapath};
use crate::{control::reconcile::Members, mesh::topology::routes::NextHop, net::policy::Subnet};

impl Datapath {
    pub(super) fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no {name} map"))
    }

    pub(super) fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the eBPF object has no {name} map"))
    }

    fn endpoints_map(&mut self) -> Result<HashMap<&mut MapData, Ipv4Key, Endpoint>> {
        Ok(HashMap::try_from(self.map_mut(maps::ENDPOINTS)?)?)
    }

    pub fn set_endpoint(&mut self, ip: Ipv4Addr, endpoint: Endpoint) -> Result<()> {
        self.endpoints_map()?
            .insert(ipv4_key(ip.octets()), endpoint, 0)
            .with_context(|| format!("writing endpoint {ip} to the map"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.endpoints_map()?.remove(&ipv4_key(ip.octets())) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing endpoint {ip} from the map")),
        }
    }

    /// Every entry of the endpoint map, as the kernel has it.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        let map: HashMap<&MapData, Ipv4Key, Endpoint> =
            HashMap::try_from(self.map(maps::ENDPOINTS)?)?;
        map.iter()
            .map(|entry| {
                let (key, ep) = entry?;
                Ok((Ipv4Addr::from(ipv4_octets(key)), ep))
            })
            .collect()
    }

    /// Makes the peer map hold exactly `peers`: each live peer, the next hop its frames go to
    /// (itself, or a relay) and the path MTU.
    pub fn set_peers(&mut self, peers: &BTreeMap<Ipv4Addr, NextHop>) -> Result<()> {
        let mut map: HashMap<&mut MapData, Ipv4Key, PeerRoute> =
            HashMap::try_from(self.map_mut(maps::PEERS)?)?;
        let present: BTreeMap<Ipv4Key, PeerRoute> = map.iter().collect::<Result<_, _>>()?;
        let wanted: BTreeMap<Ipv4Key, PeerRoute> = peers
            .iter()
            .map(|(peer, hop)| {
                let mut route = PeerRoute::new(ipv4_key(hop.address.octets()), hop.mtu);
                if hop.plain {
                    route.flags |= PEER_PLAIN;
                }
                (ipv4_key(peer.octets()), route)
            })
            .collect();
        for key in present.keys().filter(|k| !wanted.contains_key(k)) {
            map.remove(key)?;
        }
        // Each entry is replaced whole, so a lookup sees the old route or the new one.
        for (key, route) in wanted.iter().filter(|(k, r)| present.get(k) != Some(r)) {
            map.insert(*key, *route, 0)?;
        }
        Ok(())
    }

    /// What each peer's link hellos showed (`bpf_ktime_get_ns` time).
    pub fn heard(&self) -> Result<Vec<(Ipv4Addr, Heard)>> {
        let map: HashMap<&MapData, Ipv4Key, Heard> = HashMap::try_from(self.map(maps::HEARD)?)?;
        map.iter()
            .map(|entry| {
                let (key, at) = entry?;
                Ok((Ipv4Addr::from(ipv4_octets(key)), at))
            })
            .collect()
    }

    /// Drops a peer from the heard map (one not heard for long).
    pub fn forget_heard(&mut self, peer: Ipv4Addr) -> Result<()> {
        let mut map: HashMap<&mut MapData, Ipv4Key, Heard> =
            HashMap::try_from(self.map_mut(maps::HEARD)?)?;
        match map.remove(&ipv4_key(peer.octets())) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing {peer} from the heard map")),
        }
    }

    /// Makes the policy map hold exactly `pairs`: the cross-subnet directions rules allow.
    pub fn set_policy(&mut self, pairs: &BTreeSet<SubnetPair>) -> Result<()> {
        // Removals come first, so a map too small for the rules loses allowed directions,
        // never keeps ones that a rule closed.
        hold_exactly::<SubnetPair, u8>(self.map_mut(maps::POLICY)?, pairs).with_context(|| {
            format!(
                "writing {} allowed directions between subnets into the policy map, which \
                 holds {POLICY_CAPACITY}; if the rules allow more, narrow them",
                pairs.len()
            )
        })
    }

    /// Makes the IPv6 policy map hold exactly `pairs`: the directions between IPv6 links
    /// rules allow.
    pub fn set_policy6(&mut self, pairs: &BTreeSet<LinkPair>) -> Result<()> {
        hold_exactly::<LinkPair, u8>(self.map_mut(maps::POLICY6)?, pairs).with_context(|| {
            format!(
                "writing {} allowed directions between IPv6 links into the IPv6 policy map, \
                 which holds {POLICY_CAPACITY}; if the rules allow more, narrow them",
                pairs.len()
            )
        })
    }

    /// Makes the overlay-subnet map hold exactly `subnets`, each with this host's exposed
    /// address in it (unspecified: none), touching only the entries that differ. New and
    /// changed entries go in before stale ones go, so an address never looks outside the
    /// overlay while a subnet is replaced.
    pub fn set_subnets(&mut self, subnets: &BTreeMap<Subnet, Ipv4Addr>) -> Result<()> {
        let mut map: LpmTrie<&mut MapData, Ipv4Key, OverlaySubnet> =
            LpmTrie::try_from(self.map_mut(maps::SUBNETS)?)?;
        let key = |s: &Subnet| Key::new(u32::from(s.prefix), ipv4_key(s.network.octets()));
        let value = |here: &Ipv4Addr| OverlaySubnet {
            exposed_here: if here.is_unspecified() {
                0
            } else {
                ipv4_key(here.octets())
            },
        };
        let mut present = BTreeMap::new();
        for entry in map.iter() {
            let (k, v) = entry.context("reading the overlay-subnet map")?;
            let subnet = Subnet::new(Ipv4Addr::from(ipv4_octets(k.data())), k.prefix_len() as u8);
            present.insert(subnet, v);
        }
        for (subnet, here) in subnets {
            if present.get(subnet) != Some(&value(here)) {
                map.insert(&key(subnet), value(here), 0).with_context(|| {
                    format!("writing {subnet} into the overlay-subnet map (it holds 4,096)")
                })?;
            }
        }
        for subnet in present.keys().filter(|s| !subnets.contains_key(s)) {
            map.remove(&key(subnet))
                .with_context(|| format!("removing {subnet} from the overlay-subnet map"))?;
        }
        Ok(())
    }

    /// Makes the flood map hold exactly `flood`, touching only the entries that differ. A
    /// subnet with more members than a value holds loses the excess (the programs' loops are
    /// bounded), said once per write.
    pub fn set_flood(&mut self, flood: &BTreeMap<Subnet, Members>) -> Result<()> {
        let mut map: HashMap<&mut MapData, FloodKey, FloodSet> =
            HashMap::try_from(self.map_mut(maps::FLOOD)?)?;
        let key = |s: &Subnet| FloodKey {
            subnet: ipv4_key(s.network.octets()),
            prefix_len: u32::from(s.prefix),
        };
        let mut present = BTreeMap::new();
        for entry in map.iter() {
            let (k, v) = entry.context("reading the flood map")?;
            present.insert(k, v);
        }
        for (subnet, members) in flood {
            let value = flood_set(members);
            if members.local.len() > FLOOD_LOCAL || members.remote.len() > FLOOD_REMOTE {
                tracing::warn!(
                    "{subnet} has {} endpoints here and {} peers with endpoints: broadcast and \
                     multicast reach the first {FLOOD_LOCAL} and {FLOOD_REMOTE}",
                    members.local.len(),
                    members.remote.len()
                );
            }
            if present.get(&key(subnet)) != Some(&value) {
                map.insert(key(subnet), value, 0).with_context(|| {
                    format!("writing {subnet} into the flood map (it holds 4,096 subnets)")
                })?;
            }
        }
        let wanted: BTreeSet<FloodKey> = flood.keys().map(key).collect();
        for stale in present.keys().filter(|k| !wanted.contains(k)) {
            map.remove(stale)
                .context("removing a subnet from the flood map")?;
        }
        Ok(())
    }

    /// Makes the IPv6 endpoint map hold exactly `six`, each entry replaced whole.
    pub fn set_endpoints6(&mut self, six: &BTreeMap<Ipv6Key, Endpoint6>) -> Result<()> {
        let mut map: HashMap<&mut MapData, Ipv6Key, Endpoint6> =
            HashMap::try_from(self.map_mut(maps::ENDPOINTS6)?)?;
        let present: BTreeMap<Ipv6Key, Endpoint6> = map
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the IPv6 endpoint map")?;
        for key in present.keys().filter(|k| !six.contains_key(*k)) {
            map.remove(key)
                .context("removing an address from the IPv6 endpoint map")?;
        }
        for (key, ep) in six.iter().filter(|(k, e)| present.get(*k) != Some(e)) {
            map.insert(*key, *ep, 0).with_context(|| {
                format!(
                    "writing {} into the IPv6 endpoint map (it holds 65,536 addresses)",
                    std::net::Ipv6Addr::from(*key)
                )
            })?;
        }
        Ok(())
    }

    /// Every entry of the IPv6 endpoint map, as the kernel has it.
    pub fn endpoints6(&self) -> Result<BTreeMap<Ipv6Key, Endpoint6>> {
        let map: HashMap<&MapData, Ipv6Key, Endpoint6> =
            HashMap::try_from(self.map(maps::ENDPOINTS6)?)?;
        Ok(map.iter().collect::<Result<_, _>>()?)
    }

    /// The kernel's peer map: each peer's underlay address, its next hop and path MTU.
    pub fn peers(&self) -> Result<Vec<(Ipv4Addr, NextHop)>> {
        let map: HashMap<&MapData, Ipv4Key, PeerRoute> = HashMap::try_from(self.map(maps::PEERS)?)?;
        map.iter()
            .map(|entry| {
                let (key, route) = entry?;
                let peer = Ipv4Addr::from(ipv4_octets(key));
                let address = match route.next_hop {
                    0 => peer,
                    hop => Ipv4Addr::from(ipv4_octets(hop)),
                };
                Ok((
                    peer,
                    NextHop {
                        address,
                        mtu: route.mtu,
                        plain: route.plain(),
                    },
                ))
            })
            .collect()
    }

    /// Sums of the per-CPU counters, by counter name.
    pub fn counters(&self) -> Result<BTreeMap<&'static str, CounterTotal>> {
        let map = self.map(maps::COUNTERS)?;
        let counters: PerCpuArray<_, Counter> = PerCpuArray::try_from(map)?;
        CounterId::ALL
            .iter()
            .map(|id| {
                let per_cpu = counters
                    .get(&id.index(), 0)
                    .with_context(|| format!("reading counter {}", id.name()))?;
                let total = per_cpu
                    .iter()
                    .fold(CounterTotal::default(), |acc, c| CounterTotal {
                        packets: acc.packets + c.packets,
                        bytes: acc.bytes + c.bytes,
                    });
                Ok((id.name(), total))
            })
            .collect()
    }
}

/// Makes a hash map used as a set hold exactly `wanted` (value 1), touching only the keys
/// that differ, so lookups of unchanged keys never miss.
fn hold_exactly<K, V>(map: &mut aya::maps::Map, wanted: &BTreeSet<K>) -> Result<()>
where
    K: aya::Pod + Ord,
    V: aya::Pod + From<u8>,
{
    let mut map: HashMap<&mut MapData, K, V> = HashMap::try_from(map)?;
    let present: BTreeSet<K> = map.keys().collect::<Result<_, _>>()?;
    let (remove, insert) = set_difference(&present, wanted);
    // Removals first: a map too small for `wanted` loses entries, never keeps stale ones.
    for key in remove {
        map.remove(key)?;
    }
    for key in insert {
        map.insert(*key, V::from(1), 0)?;
    }
    Ok(())
}

/// The flood map's value for `members`, cut to what it holds.
fn flood_set(members: &Members) -> FloodSet {
    let mut set = FloodSet::default();
    for (slot, ifindex) in set.local.iter_mut().zip(&members.local) {
        *slot = *ifindex;
        set.local_count += 1;
    }
    for (slot, peer) in set.remote.iter_mut().zip(&members.remote) {
        *slot = ipv4_key(peer.octets());
        set.remote_count += 1;
    }
    set
}

/// What to remove from `present` and insert into it to make it `wanted`. Both are sorted sets,
/// so a full policy map (16,384 keys each side) costs n log n comparisons, not n squared.
fn set_difference<'a, K: Ord>(
    present: &'a BTreeSet<K>,
    wanted: &'a BTreeSet<K>,
) -> (Vec<&'a K>, Vec<&'a K>) {
    (
        present.difference(wanted).collect(),
        wanted.difference(present).collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, cmp::Ordering};

    use super::*;

    thread_local! {
        static COMPARISONS: Cell<u64> = const { Cell::new(0) };
    }

    /// A key that counts how often it is compared.
    #[derive(Debug, Clone, Copy)]
    struct Counted(u32);

    impl PartialEq for Counted {
        fn eq(&self, other: &Self) -> bool {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0 == other.0
        }
    }
    impl Eq for Counted {}
    impl PartialOrd for Counted {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Counted {
        fn cmp(&self, other: &Self) -> Ordering {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0.cmp(&other.0)
        }
    }

    #[test]
    fn the_diff_removes_what_is_unwanted_and_adds_what_is_missing() {
        let present = BTreeSet::from([1, 2, 3]);
        let wanted = BTreeSet::from([2, 3, 4, 5]);
        let (remove, insert) = set_difference(&present, &wanted);
        assert_eq!(remove, [&1]);
        assert_eq!(insert, [&4, &5]);
    }

    #[test]
    fn a_full_policy_map_is_diffed_in_n_log_n_comparisons() {
        let n = POLICY_CAPACITY;
        // Half the keys stay, half are replaced: the case of a rule change on a full map.
        let present: BTreeSet<Counted> = (0..n).map(Counted).collect();
        let wanted: BTreeSet<Counted> = (n / 2..n + n / 2).map(Counted).collect();
        COMPARISONS.with(|c| c.set(0));
        let (remove, insert) = set_difference(&present, &wanted);
        let comparisons = COMPARISONS.with(Cell::get);
        assert_eq!(
            (remove.len(), insert.len()),
            (n as usize / 2, n as usize / 2)
        );
        // A merge of two sorted sets takes about 2n; a contains() per key would take n^2 / 2.
        assert!(
            comparisons <= 8 * u64::from(n),
            "{comparisons} comparisons for {n} keys"
        );
    }
}
