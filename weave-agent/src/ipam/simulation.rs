//! A randomized mesh of peers that allocate, release, ask each other for space, gossip their
//! rings inside partitions that come and go, die and are removed with `rmpeer`: whatever
//! happens, no address is ever owned by two live peers at once, none is allocated twice, and
//! no merge finds two writes of one version that disagree.
//!
//! A restart is, to the others, a peer that misses gossip for a while (a partition of one);
//! to itself, its state file, which the agent writes before it uses what it records.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::{
    allocator::{donation, next_free, span},
    ring::Ring,
};
use crate::net::policy::Subnet;

const PEERS: usize = 5;
const NAMES: [&str; PEERS] = ["p0", "p1", "p2", "p3", "p4"];

#[derive(Debug, Clone)]
enum Op {
    /// Peer allocates in subnet (index into [`subnets`]); asks its partition for space if it
    /// has none.
    Allocate(usize, usize),
    /// Peer releases its n-th allocation.
    Release(usize, usize),
    /// Two peers gossip (if they can reach each other).
    Gossip(usize, usize),
    /// The mesh splits: peers whose bit is set on one side.
    Partition(u8),
    Heal,
    /// A peer dies for good; once the rest is connected and in sync, one of them runs
    /// `rmpeer` (and maybe a second one at the same time, before either has gossiped), and
    /// the heirs take its ranges over as gossip tells them.
    Die(usize, usize, Option<usize>),
}

fn subnets() -> [Subnet; 3] {
    [
        "10.32.0.0/24".parse().unwrap(),
        "10.32.0.64/28".parse().unwrap(),
        "10.32.0.200/29".parse().unwrap(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PEERS, 0..3usize).prop_map(|(p, s)| Op::Allocate(p, s)),
        1 => (0..PEERS, 0..8usize).prop_map(|(p, n)| Op::Release(p, n)),
        4 => (0..PEERS, 0..PEERS).prop_map(|(a, b)| Op::Gossip(a, b)),
        1 => any::<u8>().prop_map(Op::Partition),
        1 => Just(Op::Heal),
        1 => (0..PEERS, 0..PEERS, prop::option::of(0..PEERS))
            .prop_map(|(p, by, also)| Op::Die(p, by, also)),
    ]
}

struct Peer {
    ring: Ring,
    allocated: BTreeSet<u32>,
    alive: bool,
    side: bool,
}

struct Mesh {
    peers: Vec<Peer>,
}

impl Mesh {
    fn new() -> Self {
        let (lo, hi) = span(&"10.32.0.0/24".parse().unwrap());
        let mut peers: Vec<Peer> = (0..PEERS)
            .map(|_| Peer {
                ring: Ring::new(lo, hi),
                allocated: BTreeSet::new(),
                alive: true,
                side: false,
            })
            .collect();
        // The first host, launched alone, claims the range; the others join it.
        peers[0].ring.claim(NAMES[0], 1);
        Self { peers }
    }

    fn reach(&self, a: usize, b: usize) -> bool {
        let (pa, pb) = (&self.peers[a], &self.peers[b]);
        pa.alive && pb.alive && pa.side == pb.side
    }

    fn gossip(&mut self, from: usize, to: usize) -> Result<(), TestCaseError> {
        if from == to || !self.reach(from, to) {
            return Ok(());
        }
        let sent = self.peers[from].ring.clone();
        let merged = self.peers[to]
            .ring
            .merge(&sent)
            .map_err(|e| TestCaseError::fail(format!("merge refused: {e:?}")))?;
        prop_assert!(
            merged.conflicts.is_empty(),
            "conflicting writes at {:?}",
            merged.conflicts
        );
        // A peer that learns of a tombstone takes over what it inherits.
        self.peers[to].ring.reclaim(NAMES[to]);
        Ok(())
    }

    /// Every live peer in sync with every other it reaches.
    fn sync_all(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..2 {
            for a in 0..PEERS {
                for b in 0..PEERS {
                    self.gossip(a, b)?;
                }
            }
        }
        Ok(())
    }

    fn allocate(&mut self, p: usize, s: usize) -> Result<(), TestCaseError> {
        if !self.peers[p].alive {
            return Ok(());
        }
        let subnet = subnets()[s];
        if next_free(
            &self.peers[p].ring,
            NAMES[p],
            &subnet,
            &self.peers[p].allocated,
        )
        .is_none()
        {
            // Ask the peers it reaches; the first with space gives some, and gossips it back.
            for q in (0..PEERS).filter(|q| *q != p && self.reach(p, *q)) {
                let offer = donation(
                    &self.peers[q].ring,
                    NAMES[q],
                    &subnet,
                    &self.peers[q].allocated,
                );
                if let Some((lo, hi)) = offer {
                    let given = self.peers[q].ring.donate(NAMES[q], NAMES[p], lo, hi, 0);
                    prop_assert!(given, "{} could not give what it offered", NAMES[q]);
                    self.gossip(q, p)?;
                    break;
                }
            }
        }
        let peer = &mut self.peers[p];
        if let Some(ip) = next_free(&peer.ring, NAMES[p], &subnet, &peer.allocated) {
            peer.allocated.insert(u32::from(ip));
        }
        Ok(())
    }

    fn die(&mut self, p: usize, by: usize, also: Option<usize>) -> Result<(), TestCaseError> {
        let live = self.peers.iter().filter(|peer| peer.alive).count();
        if p == by || !self.peers[p].alive || !self.peers[by].alive || live <= 2 {
            return Ok(());
        }
        // What the dead peer sent before it died has reached whoever it reached.
        for q in 0..PEERS {
            self.gossip(p, q)?;
        }
        self.peers[p].alive = false;
        // rmpeer's precondition: the peer is gone and the rest of the mesh is in sync.
        for peer in &mut self.peers {
            peer.side = false;
        }
        self.sync_all()?;
        for runner in [Some(by), also].into_iter().flatten() {
            if runner != p {
                self.peers[runner].ring.tombstone(NAMES[p]);
                self.peers[runner].ring.reclaim(NAMES[runner]);
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Allocate(p, s) => self.allocate(p, s)?,
            Op::Release(p, n) => {
                let peer = &mut self.peers[p];
                if let Some(ip) = peer.allocated.iter().nth(n).copied() {
                    peer.allocated.remove(&ip);
                }
            }
            Op::Gossip(a, b) => self.gossip(a, b)?,
            Op::Partition(bits) => {
                for (i, peer) in self.peers.iter_mut().enumerate() {
                    peer.side = bits & (1 << i) != 0;
                }
            }
            Op::Heal => {
                for peer in &mut self.peers {
                    peer.side = false;
                }
            }
            Op::Die(p, by, also) => self.die(p, by, also)?,
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let live: Vec<usize> = (0..PEERS).filter(|p| self.peers[*p].alive).collect();
        for (i, &a) in live.iter().enumerate() {
            let own_a = self.peers[a].ring.ranges_of(NAMES[a]);
            for addr in &self.peers[a].allocated {
                prop_assert!(
                    own_a
                        .iter()
                        .any(|(lo, hi)| lo <= addr && u64::from(*addr) < *hi),
                    "{} holds {addr:#x} outside what it owns",
                    NAMES[a]
                );
            }
            for &b in &live[i + 1..] {
                let own_b = self.peers[b].ring.ranges_of(NAMES[b]);
                for (a_lo, a_hi) in &own_a {
                    for (b_lo, b_hi) in &own_b {
                        prop_assert!(
                            u64::from(*a_lo.max(b_lo)) >= *a_hi.min(b_hi),
                            "{} and {} both own {:#x}..{:#x}",
                            NAMES[a],
                            NAMES[b],
                            a_lo.max(b_lo),
                            a_hi.min(b_hi)
                        );
                    }
                }
                let twice: Vec<_> = self.peers[a]
                    .allocated
                    .intersection(&self.peers[b].allocated)
                    .collect();
                prop_assert!(twice.is_empty(), "allocated twice: {twice:x?}");
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_address_is_ever_owned_or_allocated_twice(ops in prop::collection::vec(op(), 1..120)) {
        let mut mesh = Mesh::new();
        for op in &ops {
            mesh.apply(op)?;
        }
        // Healed and in sync, every live peer's view is the same ring.
        for peer in &mut mesh.peers {
            peer.side = false;
        }
        mesh.sync_all()?;
        let live: Vec<&Peer> = mesh.peers.iter().filter(|p| p.alive).collect();
        for pair in live.windows(2) {
            prop_assert_eq!(&pair[0].ring.entries, &pair[1].ring.entries);
        }
    }
}
