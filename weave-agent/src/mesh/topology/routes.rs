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

use super::links;

/// How frames reach a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// Straight to it: a link both ends hear, or no path known (before hellos have been heard,
    /// the only thing to try).
    Direct,
    /// Through the relay at this underlay address, the first hop of a shortest path.
    Via(Ipv4Addr),
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
    /// Whom the peer hears, sorted.
    hears: Vec<Ipv4Addr>,
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

    /// Whom `peer` says it hears, sorted.
    pub fn hears(&self, peer: Ipv4Addr) -> &[Ipv4Addr] {
        self.claims.get(&peer).map_or(&[], |c| &c.hears)
    }

    /// Bytes this view holds on the heap, roughly: what the 500-peer simulation reports.
    pub fn heap_bytes(&self) -> usize {
        self.claims.capacity() * (size_of::<Ipv4Addr>() + size_of::<Claim>() + 8)
            + self
                .claims
                .values()
                .map(|c| c.hears.capacity() * size_of::<Ipv4Addr>())
                .sum::<usize>()
    }

    /// The route to every peer in `live`, for the agent at `me` that hears `heard`.
    pub fn routes(
        &self,
        me: Ipv4Addr,
        heard: &BTreeSet<Ipv4Addr>,
        live: &BTreeSet<Ipv4Addr>,
    ) -> BTreeMap<Ipv4Addr, Route> {
        let linked = |a: Ipv4Addr, b: Ipv4Addr| {
            let hears = |x: Ipv4Addr, y: Ipv4Addr| {
                if x == me {
                    heard.contains(&y)
                } else {
                    self.hears(x).binary_search(&y).is_ok()
                }
            };
            hears(a, b) && hears(b, a)
        };
        // First hop of the shortest path to each peer reached so far.
        let mut first: HashMap<Ipv4Addr, Ipv4Addr> = HashMap::with_capacity(live.len());
        let mut queue = VecDeque::new();
        for &n in heard {
            if n != me && live.contains(&n) && linked(me, n) {
                first.insert(n, n);
                queue.push_back(n);
            }
        }
        while let Some(x) = queue.pop_front() {
            let hop = first[&x];
            // x hears each y it names; the link counts if y hears x too.
            for &y in self.hears(x) {
                if y == me
                    || first.contains_key(&y)
                    || !live.contains(&y)
                    || self.hears(y).binary_search(&x).is_err()
                {
                    continue;
                }
                first.insert(y, hop);
                queue.push_back(y);
            }
        }
        live.iter()
            .filter(|&&p| p != me)
            .map(|&p| {
                let route = match first.get(&p) {
                    Some(&hop) if hop != p => Route::Via(hop),
                    _ => Route::Direct,
                };
                (p, route)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    /// A topology where each listed pair hears each other, seen from `me`.
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
                topo.update(ip(*n), Some(&links::encode(set)));
            }
        }
        let live = (1..=nodes).map(ip).collect();
        (topo, hears[&me].clone(), live)
    }

    #[test]
    fn a_firewalled_pair_goes_through_the_host_both_reach() {
        // 1 - 2 - 3, no link 1 - 3.
        let (topo, heard, live) = mesh(1, &[(1, 2), (2, 3)], 3);
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(routes[&ip(2)], Route::Direct);
        assert_eq!(routes[&ip(3)], Route::Via(ip(2)));
        assert_eq!(routes[&ip(3)].next_hop(ip(3)), ip(2));
    }

    #[test]
    fn a_link_counts_only_when_both_ends_hear_each_other() {
        let (mut topo, heard, live) = mesh(1, &[(1, 2), (2, 3)], 3);
        // 3 says it hears 1 (and 2), but 1 does not hear 3: still relayed.
        topo.update(ip(3), Some(&links::encode(&BTreeSet::from([ip(1), ip(2)]))));
        assert_eq!(topo.routes(ip(1), &heard, &live)[&ip(3)], Route::Via(ip(2)));
        // 1 hears 3 too: direct.
        let mut heard = heard;
        heard.insert(ip(3));
        assert_eq!(topo.routes(ip(1), &heard, &live)[&ip(3)], Route::Direct);
    }

    #[test]
    fn ties_go_to_the_smaller_address_and_the_next_hop_is_a_step_closer() {
        // 1 reaches 4 through 2 or 3; 2 and 3 reach 4 directly.
        let pairs = [(1, 2), (1, 3), (2, 4), (3, 4)];
        let (topo, heard, live) = mesh(1, &pairs, 4);
        assert_eq!(topo.routes(ip(1), &heard, &live)[&ip(4)], Route::Via(ip(2)));
        let (topo2, heard2, live2) = mesh(2, &pairs, 4);
        assert_eq!(topo2.routes(ip(2), &heard2, &live2)[&ip(4)], Route::Direct);
    }

    #[test]
    fn peers_without_a_known_path_are_tried_directly_and_dead_ones_are_no_hop() {
        // 1 - 2 - 3 but 2 is not live: 3 has no path, so it is tried directly.
        let (topo, heard, mut live) = mesh(1, &[(1, 2), (2, 3)], 3);
        live.remove(&ip(2));
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(routes.get(&ip(3)), Some(&Route::Direct));
        assert!(!routes.contains_key(&ip(2)));
        assert!(!routes.contains_key(&ip(1)), "no route to itself");
    }

    #[test]
    fn longer_chains_take_their_first_hop() {
        let (topo, heard, live) = mesh(1, &[(1, 2), (2, 3), (3, 4), (4, 5)], 5);
        let routes = topo.routes(ip(1), &heard, &live);
        assert_eq!(routes[&ip(5)], Route::Via(ip(2)));
        assert_eq!(routes[&ip(4)], Route::Via(ip(2)));
    }

    #[test]
    fn an_unchanged_value_is_not_parsed_again_and_garbage_hears_no_one() {
        let mut topo = Topology::default();
        let value = links::encode(&BTreeSet::from([ip(2)]));
        assert!(topo.update(ip(1), Some(&value)));
        assert!(!topo.update(ip(1), Some(&value)));
        assert!(topo.update(ip(1), Some("garbage!")));
        assert_eq!(topo.hears(ip(1)), &[] as &[Ipv4Addr]);
        topo.retain(|_| false);
        assert!(topo.claims.is_empty());
    }
}
