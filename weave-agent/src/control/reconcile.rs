//! Reconciling the data path with the mesh, as a pure function: from the live view and what
//! the maps hold, the map operations that make them match. The daemon only applies the plan
//! and records what it applied, so every decision here is tested without a kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use weave_common::{
    endpoint::{Endpoint, ipv4_octets},
    ipv6::{Endpoint6, Ipv6Key},
    policy::{LinkPair, SubnetPair},
};

use super::desired::desired;
use crate::{
    mesh::{
        gossip::PeerView,
        topology::routes::{NextHop, Path},
    },
    net::policy::{self, Rule, Subnet},
};

/// After a start, remote entries left in the pinned maps by the previous agent are kept this
/// long, so traffic keeps flowing while gossip reconverges.
pub const ADOPTION_GRACE: Duration = Duration::from_secs(5);

/// What the maps hold, as this agent last wrote them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Remote endpoints in the endpoint map.
    pub remote: BTreeMap<Ipv4Addr, Endpoint>,
    /// Remote entries found in the pinned map at start (left by the previous agent), kept for
    /// [`ADOPTION_GRACE`] even if gossip has not confirmed them yet.
    pub adopted: BTreeSet<Ipv4Addr>,
    /// The peer map found at start: the adopted entries still point at these peers.
    pub adopted_peers: BTreeMap<Ipv4Addr, NextHop>,
    /// The peer map; None until the first sync writes it.
    pub peers: Option<BTreeMap<Ipv4Addr, NextHop>>,
    /// The policy map; None until the first sync writes it.
    pub policy: Option<BTreeSet<SubnetPair>>,
    /// The IPv6 policy map; None until the first sync writes it.
    pub policy6: Option<BTreeSet<LinkPair>>,
    /// The overlay-subnet map; None until the first sync writes it.
    pub subnets: Option<BTreeMap<Subnet, Ipv4Addr>>,
    /// The flood map; None until the first sync writes it.
    pub flood: Option<BTreeMap<Subnet, Members>>,
    /// The IPv6 endpoint map; None until the first sync writes it.
    pub endpoints6: Option<BTreeMap<Ipv6Key, Endpoint6>>,
    /// Remote IPv6 entries found in the pinned map at start, kept through
    /// [`ADOPTION_GRACE`] as the IPv4 ones are.
    pub adopted6: BTreeMap<Ipv6Key, Endpoint6>,
}

/// Who gets a copy of a subnet's broadcast and multicast frames (the flood map's value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Members {
    /// Host-side veth ifindexes of this host's endpoints in the subnet.
    pub local: BTreeSet<u32>,
    /// Peers that hold endpoints in it.
    pub remote: BTreeSet<Ipv4Addr>,
}

/// What the agent knows now: the peers' published state and its own.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub peers: &'a [PeerView],
    /// Addresses attached on this host.
    pub local: &'a BTreeSet<Ipv4Addr>,
    /// Subnets of the endpoints attached on this host.
    pub local_subnets: &'a BTreeSet<Subnet>,
    /// The host-side veths (ifindexes) of this host's endpoints, by subnet: who gets copies
    /// of the subnet's broadcast and multicast here.
    pub local_ports: &'a BTreeMap<Subnet, BTreeSet<u32>>,
    /// This host's exposed address in each subnet it exposes.
    pub exposed_here: &'a BTreeMap<Subnet, Ipv4Addr>,
    pub rules: &'a [Rule],
    /// How frames reach each live peer and the path MTU to write (`mesh::topology`); a peer
    /// missing here is reached directly, its MTU not learned.
    pub routes: &'a BTreeMap<Ipv4Addr, Path>,
    /// Peers whose frames may cross in clear (`crypto::trust`); the others are sealed where
    /// the mesh has a password.
    pub plain: &'a BTreeSet<Ipv4Addr>,
    /// Peers whose address ring was refused (`control::ipam`): their endpoints are not reached.
    pub refused: &'a BTreeSet<String>,
    /// The IPv6 entries of this host's endpoints (`net::ipv6`).
    pub local6: &'a BTreeMap<Ipv6Key, Endpoint6>,
}

/// One change to the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    SetEndpoint(Ipv4Addr, Endpoint),
    RemoveEndpoint(Ipv4Addr),
    /// The address is attached here now and its map entry is local: nothing to write, but it
    /// is no longer a remote entry to keep or clean up.
    ForgetRemote(Ipv4Addr),
    /// Live peers and the next hop each one's frames go to.
    SetPeers(BTreeMap<Ipv4Addr, NextHop>),
    SetPolicy(BTreeSet<SubnetPair>),
    /// The directions between different IPv6 links the rules allow.
    SetPolicy6(BTreeSet<LinkPair>),
    /// Every overlay subnet known, with this host's exposed address in it
    /// ([`Ipv4Addr::UNSPECIFIED`] where it exposes none).
    SetSubnets(BTreeMap<Subnet, Ipv4Addr>),
    /// Every subnet with members here or on a peer, and who they are.
    SetFlood(BTreeMap<Subnet, Members>),
    /// Every IPv6 address of the endpoints here and on live peers.
    SetEndpoints6(BTreeMap<Ipv6Key, Endpoint6>),
}

/// The map operations for one round, and the conflicts seen in it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<MapOp>,
    pub conflicts: Vec<String>,
}

/// The operations that make the maps match `view`, given what they hold (`written`) and how
/// long ago this agent started.
pub fn plan(view: &View<'_>, written: &Written, since_start: Duration) -> Plan {
    let desired = desired(view.peers, view.local, view.refused);
    let in_grace = since_start < ADOPTION_GRACE;
    let mut ops = Vec::new();
    for ip in written.remote.keys().filter(|ip| view.local.contains(ip)) {
        ops.push(MapOp::ForgetRemote(*ip));
    }
    for (ip, ep) in &desired.endpoints {
        if written.remote.get(ip) != Some(ep) {
            ops.push(MapOp::SetEndpoint(*ip, *ep));
        }
    }
    let kept = |ip: &Ipv4Addr| {
        desired.endpoints.contains_key(ip)
            || view.local.contains(ip)
            || (in_grace && written.adopted.contains(ip))
    };
    for ip in written.remote.keys().filter(|ip| !kept(ip)) {
        ops.push(MapOp::RemoveEndpoint(*ip));
    }
    let mut peers: BTreeMap<Ipv4Addr, NextHop> = desired
        .peers
        .iter()
        .map(|&p| {
            let hop = view
                .routes
                .get(&p)
                .map_or(NextHop::direct(p), |path| NextHop {
                    address: path.route.next_hop(p),
                    mtu: path.mtu,
                    plain: false,
                });
            let hop = NextHop {
                plain: view.plain.contains(&p),
                ..hop
            };
            (p, hop)
        })
        .collect();
    if in_grace && !written.adopted.is_empty() {
        // Clear only if this agent, now, finds the path trusted: a restarted agent must not
        // go on sending in clear on an earlier agent's word.
        for (peer, hop) in &written.adopted_peers {
            peers.entry(*peer).or_insert(NextHop {
                plain: view.plain.contains(peer),
                ..*hop
            });
        }
    }
    if written.peers.as_ref() != Some(&peers) {
        ops.push(MapOp::SetPeers(peers));
    }
    let adopted_kept = written
        .remote
        .iter()
        .filter(|(ip, _)| in_grace && written.adopted.contains(ip))
        .filter(|(ip, _)| !desired.endpoints.contains_key(ip) && !view.local.contains(ip))
        .map(|(_, ep)| ep);
    let remote = desired.endpoints.values().chain(adopted_kept);
    let known = subnets(view.local_subnets, remote);
    let pairs = policy::allowed_pairs(view.rules, &known);
    if written.policy.as_ref() != Some(&pairs) {
        ops.push(MapOp::SetPolicy(pairs));
    }
    let overlay: BTreeMap<Subnet, Ipv4Addr> = known
        .iter()
        .chain(view.exposed_here.keys())
        .map(|s| {
            let here = view.exposed_here.get(s).copied();
            (*s, here.unwrap_or(Ipv4Addr::UNSPECIFIED))
        })
        .collect();
    if written.subnets.as_ref() != Some(&overlay) {
        ops.push(MapOp::SetSubnets(overlay));
    }
    let flood = flood_members(view.local_ports, &desired.endpoints);
    if written.flood.as_ref() != Some(&flood) {
        ops.push(MapOp::SetFlood(flood));
    }
    let mut six = desired.endpoints6.clone();
    if in_grace {
        for (ip, ep) in &written.adopted6 {
            six.entry(*ip).or_insert(*ep);
        }
    }
    // An address attached here is this host's, whatever a peer says of it.
    six.extend(view.local6.iter().map(|(ip, ep)| (*ip, *ep)));
    let links = six.values().map(|ep| (ep.link, ep.link_prefix)).collect();
    let pairs6 = policy::allowed_links(view.rules, &links);
    if written.policy6.as_ref() != Some(&pairs6) {
        ops.push(MapOp::SetPolicy6(pairs6));
    }
    if written.endpoints6.as_ref() != Some(&six) {
        ops.push(MapOp::SetEndpoints6(six));
    }
    Plan {
        ops,
        conflicts: desired.conflicts,
    }
}

/// Every endpoint subnet known: local ones, and those of the remote entries the maps keep.
fn subnets<'a>(
    local: &BTreeSet<Subnet>,
    remote: impl Iterator<Item = &'a Endpoint>,
) -> BTreeSet<Subnet> {
    local
        .iter()
        .copied()
        .chain(remote.map(|e| Subnet::new(Ipv4Addr::from(ipv4_octets(e.subnet)), e.prefix_len)))
        .collect()
}

/// Each subnet's members: this host's veths in it, and the peers with endpoints in it. Only
/// what gossip confirms: endpoints adopted from a previous agent get unicast through the
/// grace, not copies.
fn flood_members(
    local: &BTreeMap<Subnet, BTreeSet<u32>>,
    remote: &BTreeMap<Ipv4Addr, Endpoint>,
) -> BTreeMap<Subnet, Members> {
    let mut flood: BTreeMap<Subnet, Members> = local
        .iter()
        .map(|(subnet, ports)| {
            let members = Members {
                local: ports.clone(),
                remote: BTreeSet::new(),
            };
            (*subnet, members)
        })
        .collect();
    for ep in remote.values().filter(|ep| !ep.service()) {
        let subnet = Subnet::new(Ipv4Addr::from(ipv4_octets(ep.subnet)), ep.prefix_len);
        let peer = Ipv4Addr::from(ipv4_octets(ep.peer));
        flood.entry(subnet).or_default().remote.insert(peer);
    }
    flood
}

/// Whatever carries out map operations: the kernel's maps, or a stand-in in tests.
pub trait MapWriter {
    fn apply(&mut self, op: &MapOp) -> anyhow::Result<()>;
}

/// Applies `ops` and records in `written` what was applied. Every operation is tried, so one
/// that fails (a policy too big for its map) holds up none of the others; the first error is
/// returned. A policy write is recorded even when it fails: the map then holds what fitted,
/// and rewriting 16,384 keys every round would not make more fit.
pub fn apply_ops(
    maps: &mut impl MapWriter,
    written: &mut Written,
    ops: &[MapOp],
) -> anyhow::Result<()> {
    let mut first_error = None;
    for op in ops {
        let result = maps.apply(op);
        if result.is_ok() || matches!(op, MapOp::SetPolicy(_) | MapOp::SetPolicy6(_)) {
            written.record(op);
        }
        if let Err(err) = result {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Written {
    /// Records `op` as applied to the maps.
    pub fn record(&mut self, op: &MapOp) {
        match op {
            MapOp::SetEndpoint(ip, ep) => {
                self.remote.insert(*ip, *ep);
            }
            MapOp::RemoveEndpoint(ip) | MapOp::ForgetRemote(ip) => {
                self.remote.remove(ip);
                self.adopted.remove(ip);
            }
            MapOp::SetPeers(peers) => self.peers = Some(peers.clone()),
            MapOp::SetPolicy(pairs) => self.policy = Some(pairs.clone()),
            MapOp::SetPolicy6(pairs) => self.policy6 = Some(pairs.clone()),
            MapOp::SetSubnets(subnets) => self.subnets = Some(subnets.clone()),
            MapOp::SetFlood(flood) => self.flood = Some(flood.clone()),
            MapOp::SetEndpoints6(six) => self.endpoints6 = Some(six.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        control::desired::tests::peer, mesh::topology::routes::Route, net::addressing::Cidr,
    };

    fn view<'a>(
        peers: &'a [PeerView],
        local: &'a BTreeSet<Ipv4Addr>,
        subnets: &'a BTreeSet<Subnet>,
    ) -> View<'a> {
        View {
            peers,
            local,
            local_subnets: subnets,
            local_ports: &NO_PORTS,
            exposed_here: &NO_EXPOSED,
            rules: &[],
            routes: &NO_ROUTES,
            plain: &NO_PLAIN,
            refused: &NO_REFUSED,
            local6: &NO_LOCAL6,
        }
    }

    static NO_ROUTES: BTreeMap<Ipv4Addr, Path> = BTreeMap::new();
    static NO_PLAIN: BTreeSet<Ipv4Addr> = BTreeSet::new();
    static NO_REFUSED: BTreeSet<String> = BTreeSet::new();
    static NO_LOCAL6: BTreeMap<Ipv6Key, Endpoint6> = BTreeMap::new();
    static NO_EXPOSED: BTreeMap<Subnet, Ipv4Addr> = BTreeMap::new();
    static NO_PORTS: BTreeMap<Subnet, BTreeSet<u32>> = BTreeMap::new();

    fn apply(written: &mut Written, plan: &Plan) {
        for op in &plan.ops {
            written.record(op);
        }
    }

    const LATER: Duration = Duration::from_secs(60);

    #[test]
    fn a_plan_applied_once_has_nothing_left_to_do() {
        let peers = [peer("b", [10, 0, 0, 2], true, &["192.168.1.20/24"])];
        let (local, subnets) = (BTreeSet::new(), BTreeSet::new());
        let mut written = Written::default();
        let first = plan(&view(&peers, &local, &subnets), &written, LATER);
        assert!(
            first
                .ops
                .iter()
                .any(|op| matches!(op, MapOp::SetEndpoint(..)))
                && first.ops.iter().any(|op| matches!(op, MapOp::SetPeers(..))),
            "{:?}",
            first.ops
        );
        apply(&mut written, &first);
        let second = plan(&view(&peers, &local, &subnets), &written, LATER);
        assert_eq!(second.ops, [], "the maps already match");
    }

    #[test]
    fn a_dead_peers_endpoints_are_removed() {
        let alive = [peer("b", [10, 0, 0, 2], true, &["192.168.1.20/24"])];
        let dead = [peer("b", [10, 0, 0, 2], false, &["192.168.1.20/24"])];
        let (local, subnets) = (BTreeSet::new(), BTreeSet::new());
        let mut written = Written::default();
        let first = plan(&view(&alive, &local, &subnets), &written, LATER);
        apply(&mut written, &first);
        let ops = plan(&view(&dead, &local, &subnets), &written, LATER).ops;
        assert!(ops.contains(&MapOp::RemoveEndpoint(Ipv4Addr::new(192, 168, 1, 20))));
        assert!(ops.contains(&MapOp::SetPeers(BTreeMap::new())));
    }

    #[test]
    fn adopted_entries_and_their_peers_are_kept_through_the_grace_only() {
        let ip = Ipv4Addr::new(192, 168, 1, 20);
        let cidr: Cidr = "192.168.1.20/24".parse().unwrap();
        let old_peer = Ipv4Addr::new(10, 0, 0, 2);
        let mut written = Written {
            remote: BTreeMap::from([(ip, cidr.remote_endpoint(cidr.mac(), old_peer))]),
            adopted: BTreeSet::from([ip]),
            adopted_peers: BTreeMap::from([(old_peer, NextHop::direct(old_peer))]),
            ..Written::default()
        };
        let (local, subnets) = (BTreeSet::new(), BTreeSet::new());
        let early = plan(
            &view(&[], &local, &subnets),
            &written,
            Duration::from_secs(1),
        );
        assert!(
            !early.ops.contains(&MapOp::RemoveEndpoint(ip)),
            "{:?}",
            early.ops
        );
        assert!(early.ops.contains(&MapOp::SetPeers(BTreeMap::from([(
            old_peer,
            NextHop::direct(old_peer)
        )]))));
        apply(&mut written, &early);
        let late = plan(&view(&[], &local, &subnets), &written, ADOPTION_GRACE);
        assert!(
            late.ops.contains(&MapOp::RemoveEndpoint(ip)),
            "{:?}",
            late.ops
        );
        assert!(late.ops.contains(&MapOp::SetPeers(BTreeMap::new())));
    }

    /// A restarted agent finds an earlier one's peer map: a peer it had in clear is sealed
    /// until this agent itself finds the path trusted.
    #[test]
    fn an_adopted_peer_is_sealed_until_trust_is_seen_again() {
        let ip = Ipv4Addr::new(192, 168, 1, 20);
        let cidr: Cidr = "192.168.1.20/24".parse().unwrap();
        let old_peer = Ipv4Addr::new(10, 0, 0, 2);
        let plain = NextHop {
            plain: true,
            ..NextHop::direct(old_peer)
        };
        let written = Written {
            remote: BTreeMap::from([(ip, cidr.remote_endpoint(cidr.mac(), old_peer))]),
            adopted: BTreeSet::from([ip]),
            adopted_peers: BTreeMap::from([(old_peer, plain)]),
            ..Written::default()
        };
        let (local, subnets) = (BTreeSet::new(), BTreeSet::new());
        let early = plan(
            &view(&[], &local, &subnets),
            &written,
            Duration::from_secs(1),
        );
        assert!(
            early.ops.contains(&MapOp::SetPeers(BTreeMap::from([(
                old_peer,
                NextHop::direct(old_peer)
            )]))),
            "{:?}",
            early.ops
        );
        let trusted = BTreeSet::from([old_peer]);
        let seen = plan(
            &View {
                plain: &trusted,
                refused: &NO_REFUSED,
                ..view(&[], &local, &subnets)
            },
            &written,
            Duration::from_secs(1),
        );
        assert!(
            seen.ops
                .contains(&MapOp::SetPeers(BTreeMap::from([(old_peer, plain)])))
        );
    }

    #[test]
    fn peers_get_the_next_hop_of_their_route() {
        let peers = [
            peer("b", [10, 0, 0, 2], true, &[]),
            peer("c", [10, 0, 0, 3], true, &[]),
        ];
        let (local, subnets) = (BTreeSet::new(), BTreeSet::new());
        let (b, c) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
        let routes = BTreeMap::from([
            (b, Path::DIRECT),
            (
                c,
                Path {
                    route: Route::Via(b),
                    mtu: 1000,
                },
            ),
        ]);
        let view = View {
            routes: &routes,
            ..view(&peers, &local, &subnets)
        };
        let ops = plan(&view, &Written::default(), LATER).ops;
        assert!(
            ops.contains(&MapOp::SetPeers(BTreeMap::from([
                (b, NextHop::direct(b)),
                (
                    c,
                    NextHop {
                        address: b,
                        mtu: 1000,
                        plain: false,
                    }
                )
            ]))),
            "{ops:?}"
        );
    }

    /// An address seen on a peer, then attached here: its map entry is local now, so it must
    /// be neither removed as stale nor kept as remote (or a later identical remote entry
    /// would never be written again).
    #[test]
    fn an_address_attached_here_stops_being_a_remote_entry() {
        let ip = Ipv4Addr::new(192, 168, 1, 20);
        let peers = [peer("b", [10, 0, 0, 2], true, &["192.168.1.20/24"])];
        let (none, subnets) = (BTreeSet::new(), BTreeSet::new());
        let mut written = Written::default();
        let first = plan(&view(&peers, &none, &subnets), &written, LATER);
        apply(&mut written, &first);
        let local = BTreeSet::from([ip]);
        let gone = [peer("b", [10, 0, 0, 2], true, &[])];
        let ops = plan(&view(&gone, &local, &subnets), &written, LATER).ops;
        assert!(ops.contains(&MapOp::ForgetRemote(ip)), "{ops:?}");
        assert!(!ops.contains(&MapOp::RemoveEndpoint(ip)), "{ops:?}");
        apply(
            &mut written,
            &Plan {
                ops,
                conflicts: Vec::new(),
            },
        );
        assert!(!written.remote.contains_key(&ip));
    }

    /// Maps that refuse every policy write (as a full policy map does) and count the tries.
    #[derive(Default)]
    struct FullPolicyMap {
        policy_writes: usize,
    }

    impl MapWriter for FullPolicyMap {
        fn apply(&mut self, op: &MapOp) -> anyhow::Result<()> {
            if matches!(op, MapOp::SetPolicy(_)) {
                self.policy_writes += 1;
                anyhow::bail!("policy map full");
            }
            Ok(())
        }
    }

    /// A policy the map cannot hold is tried once, the error reported, and not rewritten every
    /// round after (it was, 16,384 keys twice a second), while the other maps keep up.
    #[test]
    fn a_policy_the_map_cannot_hold_is_not_rewritten_every_round() {
        let a: Subnet = "192.168.1.0/24".parse().unwrap();
        let b: Subnet = "192.168.2.0/24".parse().unwrap();
        let rules = [Rule::new(a, b, policy::Action::Allow, 1, "p").unwrap()];
        let subnets = BTreeSet::from([a, b]);
        let local = BTreeSet::new();
        let peers = [peer("b", [10, 0, 0, 2], true, &["192.168.1.20/24"])];
        let view = View {
            peers: &peers,
            local: &local,
            local_subnets: &subnets,
            local_ports: &NO_PORTS,
            exposed_here: &NO_EXPOSED,
            rules: &rules,
            routes: &NO_ROUTES,
            plain: &NO_PLAIN,
            refused: &NO_REFUSED,
            local6: &NO_LOCAL6,
        };
        let (mut maps, mut written) = (FullPolicyMap::default(), Written::default());
        let first = plan(&view, &written, LATER);
        assert!(apply_ops(&mut maps, &mut written, &first.ops).is_err());
        assert!(
            written.remote.contains_key(&Ipv4Addr::new(192, 168, 1, 20)),
            "the endpoint went in despite the policy"
        );
        for _ in 0..3 {
            let again = plan(&view, &written, LATER);
            apply_ops(&mut maps, &mut written, &again.ops).unwrap();
        }
        assert_eq!(maps.policy_writes, 1);
    }

    /// An IPv6 rule between the links of the IPv6 map goes into the IPv6 policy map, both
    /// directions, and is written once; a link nobody is on gets no entry.
    #[test]
    fn ipv6_rules_between_known_links_fill_the_ipv6_policy_map() {
        use crate::net::{addressing::Cidr6, ipv6::entries};
        let endpoint = |v4: &str, v6: &str, veth| {
            let cidr6: Cidr6 = v6.parse().unwrap();
            entries(
                &v4.parse::<Cidr>().unwrap().local_endpoint(veth),
                Some(&cidr6),
            )
        };
        let local6: BTreeMap<Ipv6Key, Endpoint6> = endpoint("10.40.1.1/24", "fd00:1::1/64", 3)
            .into_iter()
            .chain(endpoint("10.40.2.1/24", "fd00:2::1/64", 4))
            .collect();
        let net6 = |s: &str| s.parse::<policy::Net>().unwrap();
        let rules = [
            Rule::new(
                net6("fd00:1::/64"),
                net6("fd00:2::/64"),
                policy::Action::Allow,
                1,
                "p",
            )
            .unwrap(),
            Rule::new(
                net6("fd00:1::/64"),
                net6("fd00:3::/64"),
                policy::Action::Allow,
                1,
                "p",
            )
            .unwrap(),
        ];
        let (local, subnets) = (BTreeSet::new(), BTreeSet::new());
        let view = View {
            rules: &rules,
            local6: &local6,
            ..view(&[], &local, &subnets)
        };
        let mut written = Written::default();
        let first = plan(&view, &written, LATER);
        let pairs: Vec<&BTreeSet<LinkPair>> = first
            .ops
            .iter()
            .filter_map(|op| match op {
                MapOp::SetPolicy6(pairs) => Some(pairs),
                _ => None,
            })
            .collect();
        let [pairs] = pairs.as_slice() else {
            panic!("{:?}", first.ops);
        };
        let link = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let one_way = |a: &str, b: &str| LinkPair {
            src_link: link(a),
            dst_link: link(b),
            src_prefix: 64,
            dst_prefix: 64,
            pad: [0; 2],
        };
        assert_eq!(
            **pairs,
            BTreeSet::from([
                one_way("fd00:1::", "fd00:2::"),
                one_way("fd00:2::", "fd00:1::")
            ])
        );
        apply(&mut written, &first);
        let again = plan(&view, &written, LATER);
        assert!(
            !again
                .ops
                .iter()
                .any(|op| matches!(op, MapOp::SetPolicy6(_)))
        );
    }

    /// The programs tell outside addresses from overlay ones by this map, and hand frames for
    /// outside to the exposed address it names: every subnet, local or remote, is in it, with
    /// this host's exposed address where there is one.
    #[test]
    fn the_subnet_map_holds_every_subnet_and_the_exposed_address_here() {
        let exposed: Subnet = "10.40.1.0/24".parse().unwrap();
        let here = Ipv4Addr::new(10, 40, 1, 1);
        let local_only: Subnet = "10.50.0.0/16".parse().unwrap();
        let peers = [peer(
            "b",
            [10, 0, 0, 2],
            true,
            &["10.40.1.7/24", "10.60.0.9/24"],
        )];
        let local = BTreeSet::from([here]);
        let subnets = BTreeSet::from([exposed, local_only]);
        let exposed_here = BTreeMap::from([(exposed, here)]);
        let view = View {
            exposed_here: &exposed_here,
            ..view(&peers, &local, &subnets)
        };
        let mut written = Written::default();
        let first = plan(&view, &written, LATER);
        let want = BTreeMap::from([
            (exposed, here),
            (local_only, Ipv4Addr::UNSPECIFIED),
            ("10.60.0.0/24".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
        ]);
        assert!(
            first.ops.contains(&MapOp::SetSubnets(want)),
            "{:?}",
            first.ops
        );
        apply(&mut written, &first);
        // Hidden: the subnet stays an overlay subnet while endpoints are in it, with no
        // exposed address here.
        let view = View {
            exposed_here: &NO_EXPOSED,
            ..view
        };
        let after = plan(&view, &written, LATER);
        let hidden = after.ops.iter().find_map(|op| match op {
            MapOp::SetSubnets(s) => Some(s.clone()),
            _ => None,
        });
        assert_eq!(
            hidden.and_then(|s| s.get(&exposed).copied()),
            Some(Ipv4Addr::UNSPECIFIED)
        );
    }

    /// A subnet's copies go to its veths here and once to each peer with members in it,
    /// however many it has there; the agent's DNS service gets none.
    #[test]
    fn each_subnet_floods_to_its_veths_here_and_each_peer_with_members_once() {
        let shared: Subnet = "10.40.1.0/24".parse().unwrap();
        let peers = [
            peer("b", [10, 0, 0, 2], true, &["10.40.1.7/24", "10.40.1.8/24"]),
            peer("c", [10, 0, 0, 3], true, &["10.40.1.9/24", "10.60.0.9/24"]),
        ];
        let (local, subnets) = (BTreeSet::new(), BTreeSet::from([shared]));
        let ports = BTreeMap::from([(shared, BTreeSet::from([11, 12]))]);
        let view = View {
            local_ports: &ports,
            ..view(&peers, &local, &subnets)
        };
        let mut written = Written::default();
        let first = plan(&view, &written, LATER);
        let (b, c) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
        let want = BTreeMap::from([
            (
                shared,
                Members {
                    local: BTreeSet::from([11, 12]),
                    remote: BTreeSet::from([b, c]),
                },
            ),
            (
                "10.60.0.0/24".parse().unwrap(),
                Members {
                    local: BTreeSet::new(),
                    remote: BTreeSet::from([c]),
                },
            ),
        ]);
        assert!(
            first.ops.contains(&MapOp::SetFlood(want)),
            "{:?}",
            first.ops
        );
        apply(&mut written, &first);
        let again = plan(&view, &written, LATER);
        assert!(
            !again.ops.iter().any(|op| matches!(op, MapOp::SetFlood(_))),
            "rewritten with nothing changed: {:?}",
            again.ops
        );
    }
}
