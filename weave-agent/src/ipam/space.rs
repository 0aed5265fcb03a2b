//! One peer's address space: its view of the ring, what it has handed out and to whom, and
//! the decisions around them (claim the range, allocate, give space to a peer that asks,
//! take in a peer's ring). Pure: the daemon persists it, gossips the ring and asks.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{
    allocator::{self, donation, next_free},
    ring::{MergeError, Merged, Peer, Ring},
};
use crate::net::{addressing::Cidr, policy::Subnet};

/// Who may claim the whole range when nobody has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Init {
    /// A peer launched without peers: the first host of a mesh.
    Seed,
    /// A peer that joined others: it gets space from them.
    Observer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub me: Peer,
    pub init: Init,
    pub range: Subnet,
    pub default_subnet: Subnet,
    pub ring: Ring,
    /// Addresses handed out here, each with the holder it was handed to.
    pub allocated: BTreeMap<Ipv4Addr, String>,
}

/// What an allocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocated {
    /// This address, recorded for the holder.
    Address(Cidr),
    /// Nothing free here in that subnet, but other peers own parts of it: ask them, and try
    /// again when space arrives.
    AskPeers(Vec<Peer>),
}

impl Space {
    pub fn new(me: &str, init: Init, range: Subnet, default_subnet: Subnet) -> Result<Self> {
        if !range.contains(&default_subnet) {
            bail!(
                "--ipalloc-default-subnet {default_subnet} is not inside --ipalloc-range \
                 {range}"
            );
        }
        let (lo, hi) = allocator::span(&range);
        Ok(Self {
            me: me.to_owned(),
            init,
            range,
            default_subnet,
            ring: Ring::new(lo, hi),
            allocated: BTreeMap::new(),
        })
    }

    /// An address of `subnet` for `holder`: the one it holds there already (a retried attach
    /// gets the same), else the lowest free one this peer owns that `taken` (addresses any
    /// endpoint in the mesh holds) does not name. A seed claims the range first if nobody
    /// has. An error if the subnet is outside the range or has no free address anywhere.
    pub fn allocate(
        &mut self,
        holder: &str,
        subnet: &Subnet,
        taken: &BTreeSet<u32>,
        nonce: u64,
    ) -> Result<Allocated> {
        if !self.range.contains(subnet) {
            bail!("{subnet} is not inside the allocation range {}", self.range);
        }
        let wanted = allocator::hosts(subnet);
        let inside = |ip: &Ipv4Addr| {
            let ip = u32::from(*ip);
            ip >= wanted.0 && u64::from(ip) < wanted.1
        };
        if let Some((ip, _)) = self
            .allocated
            .iter()
            .find(|(ip, h)| *h == holder && inside(ip))
        {
            return Ok(Allocated::Address(Cidr {
                ip: *ip,
                prefix: subnet.prefix,
            }));
        }
        if !self.ring.is_claimed() && self.init == Init::Seed {
            self.ring.claim(&self.me, nonce);
        }
        let used = self.used(taken);
        if let Some(ip) = next_free(&self.ring, &self.me, subnet, &used) {
            self.allocated.insert(ip, holder.to_owned());
            return Ok(Allocated::Address(Cidr {
                ip,
                prefix: subnet.prefix,
            }));
        }
        let others = self.owners_in(subnet);
        if others.is_empty() && self.ring.is_claimed() {
            bail!(
                "no free address in {subnet}: all {} addresses this host owns there are in use, \
                 and no other host owns any of it",
                allocator::free_count(&self.ring, &self.me, subnet, &BTreeSet::new())
            );
        }
        Ok(Allocated::AskPeers(others))
    }

    /// What may not be handed out: the addresses allocated here and those `taken` elsewhere.
    fn used(&self, taken: &BTreeSet<u32>) -> BTreeSet<u32> {
        self.allocated
            .keys()
            .map(|ip| u32::from(*ip))
            .chain(taken.iter().copied())
            .collect()
    }

    /// The peers other than this one that own part of `subnet`, none of them tombstoned.
    pub fn owners_in(&self, subnet: &Subnet) -> Vec<Peer> {
        let (lo, hi) = allocator::span(subnet);
        let mut owners: BTreeSet<Peer> = BTreeSet::new();
        for owner in self.ring.owners() {
            if owner == &self.me || self.ring.tombstones.contains(owner) {
                continue;
            }
            let overlaps = self
                .ring
                .ranges_of(owner)
                .iter()
                .any(|(a, b)| u64::from(*a) < hi && u64::from(lo) < *b);
            if overlaps {
                owners.insert(owner.clone());
            }
        }
        owners.into_iter().collect()
    }

    /// Records an explicit address (`attach 10.32.5.7/24`) if this peer owns it, so it is
    /// never handed out while held. Addresses others own are theirs to guard: every peer
    /// skips what any endpoint in the mesh holds.
    pub fn mark_used(&mut self, ip: Ipv4Addr, holder: &str) {
        if self.ring.owner(u32::from(ip)) == Some(&self.me) {
            self.allocated.insert(ip, holder.to_owned());
        }
    }

    /// Frees what `holder` holds; returns the addresses, which may be handed out again at
    /// once.
    pub fn release(&mut self, holder: &str) -> Vec<Ipv4Addr> {
        let freed: Vec<Ipv4Addr> = self
            .allocated
            .iter()
            .filter(|(_, h)| *h == holder)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in &freed {
            self.allocated.remove(ip);
        }
        freed
    }

    /// Frees one address, whoever holds it; true if it was allocated here.
    pub fn release_address(&mut self, ip: Ipv4Addr) -> bool {
        self.allocated.remove(&ip).is_some()
    }

    /// `to` asks for space in `subnet`: gives it part of what this peer has free there (a
    /// seed claims the range first). Returns the span given, if any.
    pub fn give(
        &mut self,
        to: &str,
        subnet: &Subnet,
        taken: &BTreeSet<u32>,
        nonce: u64,
    ) -> Option<(u32, u64)> {
        if to == self.me || !self.range.contains(subnet) || self.ring.tombstones.contains(to) {
            return None;
        }
        if !self.ring.is_claimed() && self.init == Init::Seed {
            self.ring.claim(&self.me, nonce);
        }
        let used = self.used(taken);
        let (lo, hi) = donation(&self.ring, &self.me, subnet, &used)?;
        let free = hi - u64::from(lo);
        self.ring
            .donate(&self.me, to, lo, hi, free)
            .then_some((lo, hi))
    }

    /// Takes in a peer's ring, then whatever this peer inherits from tombstoned ones.
    pub fn merge(&mut self, theirs: &Ring) -> Result<Merged, MergeError> {
        let mut merged = self.ring.merge(theirs)?;
        if !self.ring.reclaim(&self.me).is_empty() {
            merged.changed = true;
        }
        Ok(merged)
    }

    /// `rmpeer`: `peer` is gone for good; its ranges go to its heirs. Refused for this peer
    /// itself.
    pub fn remove_peer(&mut self, peer: &str) -> Result<bool> {
        if peer == self.me {
            bail!(
                "{peer} is this host: rmpeer removes a host that is gone for good, from another one"
            );
        }
        let added = self.ring.tombstone(peer);
        self.ring.reclaim(&self.me);
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    fn space(me: &str, init: Init) -> Space {
        Space::new(me, init, s("10.32.0.0/12"), s("10.32.0.0/12")).unwrap()
    }

    fn address(outcome: Allocated) -> Cidr {
        match outcome {
            Allocated::Address(cidr) => cidr,
            other => panic!("expected an address, got {other:?}"),
        }
    }

    #[test]
    fn a_seed_claims_the_range_and_hands_out_the_lowest_free_address() {
        let mut a = space("a", Init::Seed);
        let none = BTreeSet::new();
        let first = address(a.allocate("c1", &s("10.32.0.0/12"), &none, 1).unwrap());
        assert_eq!(first.to_string(), "10.32.0.1/12");
        // The same holder asking again gets the same address.
        assert_eq!(
            address(a.allocate("c1", &s("10.32.0.0/12"), &none, 1).unwrap()),
            first
        );
        // An address held elsewhere in the mesh is skipped.
        let taken = BTreeSet::from([u32::from("10.32.0.2".parse::<Ipv4Addr>().unwrap())]);
        let second = address(a.allocate("c2", &s("10.32.0.0/12"), &taken, 1).unwrap());
        assert_eq!(second.to_string(), "10.32.0.3/12");
        // Freed, it goes to the next holder at once.
        assert_eq!(a.release("c1"), ["10.32.0.1".parse::<Ipv4Addr>().unwrap()]);
        let third = address(a.allocate("c3", &s("10.32.0.0/12"), &none, 1).unwrap());
        assert_eq!(third.ip, first.ip);
    }

    #[test]
    fn an_observer_asks_until_a_seed_gives_it_space() {
        let mut a = space("a", Init::Seed);
        let mut b = space("b", Init::Observer);
        let none = BTreeSet::new();
        let subnet = s("10.32.5.0/24");
        // Nothing claimed yet: b has nobody to name, and must wait for the mesh.
        assert_eq!(
            b.allocate("c1", &subnet, &none, 2).unwrap(),
            Allocated::AskPeers(vec![])
        );
        let given = a.give("b", &subnet, &none, 1).expect("a gives space");
        b.merge(&a.ring).unwrap();
        let got = address(b.allocate("c1", &subnet, &none, 2).unwrap());
        assert!(u32::from(got.ip) >= given.0 && u64::from(u32::from(got.ip)) < given.1);
        assert_eq!(got.prefix, 24);
        // a keeps handing out from what it kept, never from what it gave.
        let mine = address(a.allocate("c2", &subnet, &none, 1).unwrap());
        assert!(u32::from(mine.ip) < given.0, "{mine} is in what a gave b");
    }

    #[test]
    fn a_full_subnet_is_an_error_when_nobody_else_owns_any_of_it() {
        let mut a = space("a", Init::Seed);
        let none = BTreeSet::new();
        let small = s("10.32.9.0/28");
        for i in 0..14 {
            address(a.allocate(&format!("c{i}"), &small, &none, 1).unwrap());
        }
        let err = a.allocate("c14", &small, &none, 1).unwrap_err();
        assert!(
            format!("{err:#}").contains("no free address in 10.32.9.0/28"),
            "{err:#}"
        );
        // With part of it given away, the answer is to ask its owner instead.
        let mut a2 = space("a", Init::Seed);
        a2.give("b", &small, &none, 1).unwrap();
        let outcomes: Vec<Allocated> = (0..14)
            .map(|i| a2.allocate(&format!("c{i}"), &small, &none, 1).unwrap())
            .collect();
        assert_eq!(
            outcomes.last(),
            Some(&Allocated::AskPeers(vec!["b".to_owned()])),
            "{outcomes:?}"
        );
    }

    #[test]
    fn outside_the_range_is_refused_and_rmpeer_of_oneself_too() {
        let mut a = space("a", Init::Seed);
        let err = a
            .allocate("c1", &s("10.50.0.0/24"), &BTreeSet::new(), 1)
            .unwrap_err();
        assert!(format!("{err:#}").contains("10.50.0.0/24"));
        assert!(a.remove_peer("a").is_err());
        assert!(Space::new("a", Init::Seed, s("10.32.0.0/12"), s("10.50.0.0/16")).is_err());
    }
}
