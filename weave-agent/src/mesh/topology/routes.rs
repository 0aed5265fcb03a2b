//! Shortest paths over the direct links, as each agent computes them from its own view (pure,
//! tested without sockets; `tests/topology_simulation.rs` drives it through 500 peers).
//!
//! A link between two peers counts only when each hears the other: one end's word alone may be
//! stale or one-way, and the frames cross it in both directions. This agent's own links count
//! when it hears the peer and the peer says it hears this agent. Ties between equally short
//! paths go to the smaller address at each step, so agents that see the same links choose
//! consistent paths: each next hop is one step closer to the destination, and no frame loops.
//! While views differ, the relay hop limit in the data path bounds what a loop costs.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    net::Ipv4Addr,
};

use super::links::{self, Link, MIN_MTU};

/// How frames reach a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// Straight to it: a link both ends hear, or no path known (before hellos have been heard,
    /// the only thing to try).
    Direct,
    /// Through the relay at this underlay address, the first hop of a shortest path.
    Via(Ipv4Addr),
}

/// A route and the path MTU it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path {
    pub route: Route,
    /// Largest outer IPv4 packet every link of the path carries, as the far end of each link
    /// reports the hellos it heard; 0 where no link of it has been measured yet.
    pub mtu: u16,
}

impl Path {
    pub const DIRECT: Self = Self {
        route: Route::Direct,
        mtu: 0,
    };
}

/// What the peer map holds for a live peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NextHop {
    /// Where its frames go: the peer itself or a relay.
    pub address: Ipv4Addr,
    /// Path MTU the data path enforces (0: none).
    pub mtu: u16,
    /// Frames may cross in clear although the mesh has a password (both hosts trust the
    /// path: `crypto::trust`).
    pub plain: bool,
}

impl NextHop {
    pub const fn direct(peer: Ipv4Addr) -> Self {
        Self {
            address: peer,
            mtu: 0,
            plain: false,
        }
    }
}

impl Route {
    /// The underlay address frames for `peer` are sent to.
    pub fn next_hop(self, peer: Ipv4Addr) -> Ipv4Addr {
        match self {
            Self::Direct => peer,
            Self::Via(relay) => relay,
        }
    }
}

/// What a peer publishes, parsed once per change.
struct Claim {
    /// Hash of the published value: a new value is parsed, the same one is not.
    digest: u64,
    /// Whom the peer hears, sorted by address.
    hears: Vec<Link>,
}

/// The links every peer publishes, as this agent knows them.
#[derive(Default)]
pub struct Topology {
    claims: HashMap<Ipv4Addr, Claim>,
}

impl Topology {
    /// Takes in the `links` value the peer at underlay address `peer` publishes now (absent or
    /// malformed: it hears no one). Returns whether what it says changed.
    pub fn update(&mut self, peer: Ipv4Addr, value: Option<&str>) -> bool {
        let value = value.unwrap_or_default();
        let mut hasher = DefaultHasher::new();
        value.hash(&mut hasher);
        let digest = hasher.finish();
        if self.claims.get(&peer).is_some_and(|c| c.digest == digest) {
            return false;
        }
        let hears = links::decode(value).unwrap_or_else(|err| {
            tracing::debug!(%peer, "ignoring its links: {err:#}");
            Vec::new()
        });
        self.claims.insert(peer, Claim { digest, hears });
        true
    }

    /// Forgets the peers `keep` says no to (gone from the mesh).
    pub fn retain(&mut self, keep: impl Fn(&Ipv4Addr) -> bool) {
        self.claims.retain(|peer, _| keep(peer));
    }

    /// Whom `peer` says it hears, sorted by address.
    pub fn hears(&self, peer: Ipv4Addr) -> &[Link] {
        self.claims.get(&peer).map_or(&[], |c| &c.hears)
    }

    /// What `peer` says of its link from `from`: None if it does not hear it, else the largest
    /// hello it heard from it (0: no probe yet).
    pub fn hears_from(&self, peer: Ipv4Addr, from: Ipv4Addr) -> Option<u16> {
        let hears = self.hears(peer);
        hears
            .binary_search_by_key(&from, |l| l.peer)
            .ok()
            .map(|i| hears[i].largest)
    }

    /// Bytes this view holds on the heap, roughly: what the 500-peer simulation reports.
    pub fn heap_bytes(&self) -> usize {
        self.claims.capacity() * (size_of::<Ipv4Addr>() + size_of::<Claim>() + 8)
            + self
                .claims
                .values()
                .map(|c| c.hears.capacity() * size_of::<Link>())
                .sum::<usize>()
    }

    /// The route to every peer in `live`, and its path MTU, for the agent at `me` that hears
    /// `heard`.
    pub fn routes(
        &self,
        me: Ipv4Addr,
        heard: &BTreeSet<Ipv4Addr>,
        live: &BTreeSet<Ipv4Addr>,
    ) -> BTreeMap<Ipv4Addr, Path> {
        // First hop and path MTU of the shortest path to each peer reached so far.
        let mut first: HashMap<Ipv4Addr, (Ipv4Addr, u16)> = HashMap::with_capacity(live.len());
        let mut queue = VecDeque::new();
        for &n in heard {
            if n == me || !live.contains(&n) {
                continue;
            }
            // A link this agent hears counts once the peer says it hears this agent too.
            if let Some(largest) = self.hears_from(n, me) {
                first.insert(n, (n, narrower(0, largest)));
                queue.push_back(n);
            }
        }
        while let Some(x) = queue.pop_front() {
            let (hop, mtu) = first[&x];
            // x hears each y it names; the link counts if y hears x too, and carries what y
            // heard from x.
            for link in self.hears(x) {
                let y = link.peer;
                if y == me || first.contains_key(&y) || !live.contains(&y) {
                    continue;
                }
                let Some(largest) = self.hears_from(y, x) else {
                    continue;
                };
                first.insert(y, (hop, narrower(mtu, largest)));
                queue.push_back(y);
            }
        }
        live.iter()
            .filter(|&&p| p != me)
            .map(|&p| {
                let path = match first.get(&p) {
                    Some(&(hop, mtu)) if hop != p => Path {
                        route: Route::Via(hop),
                        mtu,
                    },
                    Some(&(_, mtu)) => Path {
                        route: Route::Direct,
                        mtu,
                    },
                    None => Path::DIRECT,
                };
                (p, path)
            })
            .collect()
    }
}

/// The MTU of a path (`path`, 0: not measured) once it takes a link whose far end heard hellos
/// up to `largest` (below [`MIN_MTU`]: no probe got through yet, nothing known).
fn narrower(path: u16, largest: u16) -> u16 {
    match (path, largest) {
        (p, l) if l < MIN_MTU => p,
        (0, l) => l,
        (p, l) => p.min(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    /// Links as a peer publishes them: each heard at 1500.
    fn value(peers: &[Ipv4Addr]) -> String {
        links::encode(&peers.iter().map(|p| (*p, 1500)).collect())
    }

    /// A topology where each listed pair hears each other (probes of 1500 getting through),
    /// seen from `me`.
    fn mesh(
        me: u8,
        pairs: &[(u8, u8)],
        nodes: u8,
    ) -> (Topology, BTreeSet<Ipv4Addr>, BTreeSet<Ipv4Addr>) {
        let mut hears: BTreeMap<u8, BTreeSet<Ipv4Addr>> =
            (1..=nodes).map(|n| (n, BTreeSet::new())).collect();
        for &(a, b) in pairs {
            hears.get_mut(&a).unwrap().insert(ip(b));
            hears.get_mut(&b).unwrap().insert(ip(a));
        }
        let mut topo = Topology::default();
        for (n, set) in &hears {
            if *n != me {
                let peers: Vec<Ipv4Addr> = set.iter().copied().collect();
                topo.update(ip(*n), Some(&value(&peers)));
            }
        }
        let live = (1..=nodes).map(ip).collect();
        (topo, hears[&me].clone(), live)
    }

    fn route(p: Path) -> Route {
        p.route
    }

    #[test]
    fn a_firewalled_pair_goes_through_the_host_both_reach() {
        // 1 - 2 - 3, no link 1 - 3.
        let (topo, heard, live) = mesh(1, &[(1, 2), (2, 3)], 3);
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(route(routes[&ip(2)]), Route::Direct);
        assert_eq!(route(routes[&ip(3)]), Route::Via(ip(2)));
        assert_eq!(route(routes[&ip(3)]).next_hop(ip(3)), ip(2));
        assert_eq!(routes[&ip(3)].mtu, 1500);
    }

    #[test]
    fn a_link_counts_only_when_both_ends_hear_each_other() {
        let (mut topo, heard, live) = mesh(1, &[(1, 2), (2, 3)], 3);
        // 3 says it hears 1 (and 2), but 1 does not hear 3: still relayed.
        topo.update(ip(3), Some(&value(&[ip(1), ip(2)])));
        assert_eq!(
            route(topo.routes(ip(1), &heard, &live)[&ip(3)]),
            Route::Via(ip(2))
        );
        // 1 hears 3 too: direct.
        let mut heard = heard;
        heard.insert(ip(3));
        assert_eq!(
            route(topo.routes(ip(1), &heard, &live)[&ip(3)]),
            Route::Direct
        );
    }

    #[test]
    fn ties_go_to_the_smaller_address_and_the_next_hop_is_a_step_closer() {
        // 1 reaches 4 through 2 or 3; 2 and 3 reach 4 directly.
        let pairs = [(1, 2), (1, 3), (2, 4), (3, 4)];
        let (topo, heard, live) = mesh(1, &pairs, 4);
        assert_eq!(
            route(topo.routes(ip(1), &heard, &live)[&ip(4)]),
            Route::Via(ip(2))
        );
        let (topo2, heard2, live2) = mesh(2, &pairs, 4);
        assert_eq!(
            route(topo2.routes(ip(2), &heard2, &live2)[&ip(4)]),
            Route::Direct
        );
    }

    #[test]
    fn peers_without_a_known_path_are_tried_directly_and_dead_ones_are_no_hop() {
        // 1 - 2 - 3 but 2 is not live: 3 has no path, so it is tried directly.
        let (topo, heard, mut live) = mesh(1, &[(1, 2), (2, 3)], 3);
        live.remove(&ip(2));
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(routes.get(&ip(3)), Some(&Path::DIRECT));
        assert!(!routes.contains_key(&ip(2)));
        assert!(!routes.contains_key(&ip(1)), "no route to itself");
    }

    #[test]
    fn longer_chains_take_their_first_hop() {
        let (topo, heard, live) = mesh(1, &[(1, 2), (2, 3), (3, 4), (4, 5)], 5);
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(route(routes[&ip(5)]), Route::Via(ip(2)));
        assert_eq!(route(routes[&ip(4)]), Route::Via(ip(2)));
    }

    #[test]
    fn the_path_mtu_is_the_narrowest_link_as_its_far_ends_heard_it() {
        // 1 - 2 - 3: 2 hears 1's probes up to 1500, 3 hears 2's only up to 1000 (a small hop).
        let mut topo = Topology::default();
        let one_way = |pairs: &[(Ipv4Addr, u16)]| links::encode(&pairs.iter().copied().collect());
        topo.update(ip(2), Some(&one_way(&[(ip(1), 1500), (ip(3), 1500)])));
        topo.update(ip(3), Some(&one_way(&[(ip(2), 1000)])));
        let heard = BTreeSet::from([ip(2)]);
        let live = (1..=3).map(ip).collect();
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(
            routes[&ip(2)],
            Path {
                route: Route::Direct,
                mtu: 1500
            }
        );
        assert_eq!(
            routes[&ip(3)],
            Path {
                route: Route::Via(ip(2)),
                mtu: 1000
            }
        );
        // Only small hellos heard so far on 2 - 3: the path knows only its first link.
        topo.update(ip(3), Some(&one_way(&[(ip(2), 58)])));
        assert_eq!(topo.routes(ip(1), &heard, &live)[&ip(3)].mtu, 1500);
        // Nothing measured at all: 0.
        topo.update(ip(2), Some(&one_way(&[(ip(1), 0), (ip(3), 0)])));
        assert_eq!(topo.routes(ip(1), &heard, &live)[&ip(3)].mtu, 0);
    }

    #[test]
    fn an_unchanged_value_is_not_parsed_again_and_garbage_hears_no_one() {
        let mut topo = Topology::default();
        let value = value(&[ip(2)]);
        assert!(topo.update(ip(1), Some(&value)));
        assert!(!topo.update(ip(1), Some(&value)));
        assert!(topo.update(ip(1), Some("garbage!")));
        assert!(topo.hears(ip(1)).is_empty());
        topo.retain(|_| false);
        assert!(topo.claims.is_empty());
    }
}
