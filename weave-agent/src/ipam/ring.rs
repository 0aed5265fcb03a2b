//! Who owns which part of the allocation range: a ring of tokens, as in Weave Net's IPAM. Each
//! token starts a range that runs to the next token (the last one to the end of the range)
//! and names the peer that owns it; a peer allocates from what it owns without asking anyone.
//!
//! The ring is a state-based CRDT that gossip carries whole:
//! - tokens are never removed, so the set of tokens only grows;
//! - an entry changes only by a write of the peer that owns it (a donation, a new free
//!   count), which raises its version; merging keeps the higher version of each token;
//! - `rmpeer` adds a tombstone (a grow-only set), and a dead peer's entries are taken over by
//!   one peer that every view names alike (see [`Ring::heir`]), whoever ran `rmpeer`.
//!
//! So at any moment at most one peer believes it owns an address: the donor stops believing
//! when it writes the donation, the receiver starts when the write reaches it. Two rings of
//! different origins (two meshes that each claimed the range alone) never merge: that would
//! put every address in two owners' hands.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A peer, by its name (the underlay MAC, as Weave names peers).
pub type Peer = String;

/// One token's range: its owner, the version of the owner's last write, and how many of its
/// addresses the owner last said were free (advisory: for choosing whom to ask for space).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    pub version: u64,
    pub owner: Peer,
    pub free: u64,
}

/// Where a ring began: the peer that claimed the whole range, and a nonce it drew then, so
/// that two claims by the same peer (after a reset) are told apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub peer: Peer,
    pub nonce: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    /// The allocation range: addresses `start .. end` (end exclusive, so a /0 fits).
    pub start: u32,
    pub end: u64,
    /// None until some peer claims the range.
    pub origin: Option<Origin>,
    pub entries: BTreeMap<u32, Entry>,
    /// Peers removed with `rmpeer`: gone for good.
    pub tombstones: BTreeSet<Peer>,
}

/// Why two rings cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeError {
    /// The peers were launched with different `--ipalloc-range`.
    RangeDiffers {
        ours: (u32, u64),
        theirs: (u32, u64),
    },
    /// Both rings claimed the range apart from each other.
    OriginDiffers { ours: Origin, theirs: Origin },
}

/// What a merge changed, and where it found two writes of one version that disagree (a peer
/// that lost its state and wrote again, or an `rmpeer` of a live peer).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    pub changed: bool,
    pub conflicts: Vec<u32>,
}

impl Ring {
    /// An unclaimed ring over `start .. end`.
    pub fn new(start: u32, end: u64) -> Self {
        Self {
            start,
            end,
            origin: None,
            entries: BTreeMap::new(),
            tombstones: BTreeSet::new(),
        }
    }

    pub fn is_claimed(&self) -> bool {
        self.origin.is_some()
    }

    /// `me` takes the whole unclaimed range. False (and nothing changes) if it is claimed.
    pub fn claim(&mut self, me: &str, nonce: u64) -> bool {
        if self.is_claimed() {
            return false;
        }
        self.origin = Some(Origin {
            peer: me.to_owned(),
            nonce,
        });
        let free = self.end - u64::from(self.start);
        self.entries.insert(
            self.start,
            Entry {
                version: 1,
                owner: me.to_owned(),
                free,
            },
        );
        true
    }

    /// Folds `other` into this ring. Per token the higher entry wins (version first, then the
    /// rest as a tie-break, so the result never depends on the order of merges); tombstones
    /// are united. An unclaimed side takes the other's origin.
    pub fn merge(&mut self, other: &Ring) -> Result<Merged, MergeError> {
        if (self.start, self.end) != (other.start, other.end) {
            return Err(MergeError::RangeDiffers {
                ours: (self.start, self.end),
                theirs: (other.start, other.end),
            });
        }
        match (&self.origin, &other.origin) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(MergeError::OriginDiffers {
                    ours: ours.clone(),
                    theirs: theirs.clone(),
                });
            }
            _ => {}
        }
        let mut merged = Merged::default();
        if self.origin.is_none() && other.origin.is_some() {
            self.origin.clone_from(&other.origin);
            merged.changed = true;
        }
        for (token, theirs) in &other.entries {
            match self.entries.get_mut(token) {
                None => {
                    self.entries.insert(*token, theirs.clone());
                    merged.changed = true;
                }
                Some(ours) if ours == theirs => {}
                Some(ours) => {
                    if ours.version == theirs.version {
                        merged.conflicts.push(*token);
                    }
                    if theirs > ours {
                        *ours = theirs.clone();
                        merged.changed = true;
                    }
                }
            }
        }
        for peer in &other.tombstones {
            merged.changed |= self.tombstones.insert(peer.clone());
        }
        Ok(merged)
    }

    /// The range `[token, end)` the entry at `token` covers.
    pub fn span(&self, token: u32) -> (u32, u64) {
        let end = self
            .entries
            .range(token.saturating_add(1)..)
            .next()
            .filter(|_| token < u32::MAX)
            .map_or(self.end, |(next, _)| u64::from(*next));
        (token, end)
    }

    /// The owner of `addr`, if the ring is claimed and `addr` is in the range.
    pub fn owner(&self, addr: u32) -> Option<&Peer> {
        if addr < self.start || u64::from(addr) >= self.end {
            return None;
        }
        self.entries
            .range(..=addr)
            .next_back()
            .map(|(_, entry)| &entry.owner)
    }

    /// The ranges `peer` owns, in order, adjacent ones joined.
    pub fn ranges_of(&self, peer: &str) -> Vec<(u32, u64)> {
        let mut out: Vec<(u32, u64)> = Vec::new();
        for (token, entry) in &self.entries {
            if entry.owner != peer {
                continue;
            }
            let (lo, hi) = self.span(*token);
            match out.last_mut() {
                Some(last) if last.1 == u64::from(lo) => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    /// Each entry's span that `peer` owns, not joined: what [`Ring::donate`] can move.
    pub fn spans_of(&self, peer: &str) -> Vec<(u32, u64)> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.owner == peer)
            .map(|(token, _)| self.span(*token))
            .collect()
    }

    /// Every peer that owns something.
    pub fn owners(&self) -> BTreeSet<&Peer> {
        self.entries.values().map(|e| &e.owner).collect()
    }

    /// `me` gives `[lo, hi)` to `to`. The span must lie inside one range `me` owns; returns
    /// false (and changes nothing) otherwise. Tokens at `lo` and `hi` (unless `hi` ends that
    /// range already) are written or added, so `me` keeps the rest on both sides.
    pub fn donate(&mut self, me: &str, to: &str, lo: u32, hi: u64, free: u64) -> bool {
        let Some((&token, entry)) = self.entries.range(..=lo).next_back() else {
            return false;
        };
        let (_, end) = self.span(token);
        if entry.owner != me || u64::from(lo) >= hi || hi > end || me == to {
            return false;
        }
        let kept = entry.clone();
        if hi < end {
            // `hi` fits in u32: it is below the end of a range that is.
            let hi = hi as u32;
            self.entries.insert(
                hi,
                Entry {
                    version: 1,
                    owner: me.to_owned(),
                    free: kept.free.saturating_sub(free),
                },
            );
        }
        let version = self.entries.get(&lo).map_or(1, |e| e.version + 1);
        self.entries.insert(
            lo,
            Entry {
                version,
                owner: to.to_owned(),
                free,
            },
        );
        true
    }

    /// `me` reports the free addresses of the range at `token`; a write of its own, so the
    /// version rises. False if `me` does not own it or nothing changed.
    pub fn set_free(&mut self, me: &str, token: u32, free: u64) -> bool {
        match self.entries.get_mut(&token) {
            Some(entry) if entry.owner == me && entry.free != free => {
                entry.free = free;
                entry.version += 1;
                true
            }
            _ => false,
        }
    }

    /// The peer that takes over the range at `token` when its owner is tombstoned: the owner
    /// of the nearest range before it (around the ring) whose owner is not tombstoned. None
    /// if the owner is not tombstoned, or every owner is.
    ///
    /// Every view that holds the same entries and tombstones names the same heir, and a peer
    /// believes it is the heir only while it really owns that nearest range (only an owner
    /// writes its entries), so two peers never both take a range over.
    pub fn heir(&self, token: u32) -> Option<&Peer> {
        let owner = &self.entries.get(&token)?.owner;
        if !self.tombstones.contains(owner) {
            return None;
        }
        let before = self.entries.range(..token).rev();
        let wrapped = self.entries.range(token..).rev();
        before
            .chain(wrapped)
            .map(|(_, entry)| &entry.owner)
            .find(|owner| !self.tombstones.contains(*owner))
    }

    /// `me` takes over every range whose heir it is; returns their tokens.
    pub fn reclaim(&mut self, me: &str) -> Vec<u32> {
        let mine: Vec<u32> = self
            .entries
            .keys()
            .copied()
            .filter(|token| self.heir(*token).is_some_and(|heir| heir == me))
            .collect();
        for token in &mine {
            let (lo, hi) = self.span(*token);
            let entry = self.entries.get_mut(token).expect("listed above");
            entry.owner = me.to_owned();
            entry.version += 1;
            // The dead peer's allocations died with it.
            entry.free = hi - u64::from(lo);
        }
        mine
    }

    /// Adds `peer` to the tombstones (`rmpeer`); false if it was there already.
    pub fn tombstone(&mut self, peer: &str) -> bool {
        self.tombstones.insert(peer.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const START: u32 = 0x0a20_0000;
    const END: u64 = 0x0a30_0000;

    fn claimed(by: &str) -> Ring {
        let mut ring = Ring::new(START, END);
        assert!(ring.claim(by, 7));
        ring
    }

    #[test]
    fn a_donation_splits_the_range_and_each_side_keeps_its_part() {
        let mut ring = claimed("a");
        let lo = START + 0x1000;
        assert!(ring.donate("a", "b", lo, u64::from(lo) + 0x1000, 0x1000));
        assert_eq!(
            ring.ranges_of("a"),
            [(START, u64::from(lo)), (lo + 0x1000, END)]
        );
        assert_eq!(ring.ranges_of("b"), [(lo, u64::from(lo) + 0x1000)]);
        assert_eq!(ring.owner(lo).map(String::as_str), Some("b"));
        assert_eq!(ring.owner(lo - 1).map(String::as_str), Some("a"));
        // Not a's to give any more, and never across ranges.
        assert!(!ring.donate("a", "c", lo, u64::from(lo) + 1, 1));
        assert!(!ring.donate("a", "c", lo - 1, u64::from(lo) + 1, 2));
    }

    #[test]
    fn rings_claimed_apart_refuse_to_merge() {
        let mut a = claimed("a");
        let b = claimed("b");
        assert!(matches!(a.merge(&b), Err(MergeError::OriginDiffers { .. })));
        assert_eq!(a, claimed("a"), "a refused merge changed nothing");
        let mut fresh = Ring::new(START, END);
        assert!(fresh.merge(&b).unwrap().changed);
        assert_eq!(fresh, b, "an unclaimed ring adopts the other");
        let mut other_range = Ring::new(START, END + 1);
        assert!(matches!(
            other_range.merge(&b),
            Err(MergeError::RangeDiffers { .. })
        ));
    }

    #[test]
    fn a_tombstoned_peers_ranges_go_to_the_owner_before_them() {
        let mut ring = claimed("a");
        let third = (END - u64::from(START)) / 3;
        let (b_lo, c_lo) = (START + third as u32, START + 2 * third as u32);
        assert!(ring.donate("a", "b", b_lo, u64::from(c_lo), third));
        assert!(ring.donate("a", "c", c_lo, END, END - u64::from(c_lo)));
        ring.tombstone("c");
        assert_eq!(ring.heir(c_lo).map(String::as_str), Some("b"));
        assert!(ring.reclaim("a").is_empty(), "a is not c's heir");
        assert_eq!(ring.reclaim("b"), [c_lo]);
        assert_eq!(ring.ranges_of("b"), [(b_lo, END)]);
        // With b gone too, both go around to a; the first range's heir wraps to the end.
        ring.tombstone("b");
        ring.tombstone("a");
        assert_eq!(ring.heir(START), None, "nobody is left to inherit");
    }

    #[test]
    fn two_rmpeers_of_one_peer_make_the_same_write() {
        let mut ring = claimed("a");
        let lo = START + 0x8000;
        ring.donate("a", "b", lo, END, END - u64::from(lo));
        let (mut on_a, mut on_c) = (ring.clone(), ring.clone());
        on_a.tombstone("b");
        on_c.tombstone("b");
        on_a.reclaim("a");
        on_c.reclaim("c");
        let merged = on_a.merge(&on_c).unwrap();
        assert!(merged.conflicts.is_empty(), "{merged:?}");
        assert_eq!(on_a.ranges_of("a"), [(START, END)]);
    }

    /// Any ring of one origin, conflicting writes included (what a peer that lost its state
    /// would make): the merge laws must hold for those too.
    fn any_ring() -> impl Strategy<Value = Ring> {
        let entry = (0u64..4, 0u8..3, 0u64..4).prop_map(|(version, owner, free)| Entry {
            version,
            owner: ["a", "b", "c"][owner as usize].to_owned(),
            free,
        });
        let entries = prop::collection::btree_map(0u32..16, entry, 0..6);
        let tombstones =
            prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c"]), 0..3);
        (entries, tombstones).prop_map(|(entries, tombstones)| {
            let mut ring = claimed("a");
            ring.entries
                .extend(entries.into_iter().map(|(t, e)| (START + t, e)));
            ring.tombstones = tombstones.into_iter().map(str::to_owned).collect();
            ring
        })
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in any_ring(), b in any_ring(), c in any_ring(),
        ) {
            let (a, b, c) = (&a, &b, &c);
            let join = |x: &Ring, y: &Ring| {
                let mut out = x.clone();
                out.merge(y).unwrap();
                out
            };
            prop_assert_eq!(join(a, b), join(b, a));
            prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
            prop_assert_eq!(join(a, a), a.clone());
        }
    }
}
