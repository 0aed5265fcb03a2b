//! Answers already given, by the bytes of the query that asked (all but its id): containers ask
//! the same few names over and over, and the same bytes against the same zone always get the
//! same answer, so a repeated query skips parsing and building (PowerDNS's packet cache does
//! the same). Pure: the server owns one per thread.

use std::{collections::HashMap, sync::Arc};

use super::zone::Zone;

/// Entries kept before the cache starts over: a bound on memory whatever a container sends
/// (queries of at most `MAX_QUERY` bytes, answers of at most 1232: under 2 MB).
const CAPACITY: usize = 1024;
/// Longer queries are answered but not kept (a plain question is well under this).
const MAX_QUERY: usize = 512;

#[derive(Default)]
pub struct PacketCache {
    /// The zone the entries were answered from; another zone empties the cache.
    zone: Option<Arc<Zone>>,
    entries: HashMap<Vec<u8>, Vec<u8>>,
}

impl PacketCache {
    /// The answer to `query` from `zone`, its id set to the query's, if one was kept.
    pub fn get(&mut self, zone: &Arc<Zone>, query: &[u8]) -> Option<Vec<u8>> {
        if !self.zone.as_ref().is_some_and(|z| Arc::ptr_eq(z, zone)) {
            self.entries.clear();
            self.zone = Some(Arc::clone(zone));
            return None;
        }
        let key = query.get(2..)?;
        let mut answer = self.entries.get(key)?.clone();
        answer[..2].copy_from_slice(&query[..2]);
        Some(answer)
    }

    /// Keeps `answer`, which `zone` gave `query` and would give it again (no rotation).
    pub fn put(&mut self, zone: &Arc<Zone>, query: &[u8], answer: &[u8]) {
        if query.len() < 12 || query.len() > MAX_QUERY || answer.len() < 12 {
            return;
        }
        if !self.zone.as_ref().is_some_and(|z| Arc::ptr_eq(z, zone)) {
            self.entries.clear();
            self.zone = Some(Arc::clone(zone));
        }
        if self.entries.len() >= CAPACITY {
            self.entries.clear();
        }
        self.entries.insert(query[2..].to_vec(), answer.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(ip: &str) -> Arc<Zone> {
        Arc::new(Zone::new(
            "weave.local",
            [(ip.parse().unwrap(), "web.weave.local".to_owned())],
            Vec::new(),
        ))
    }

    #[test]
    fn a_kept_answer_comes_back_with_the_new_querys_id() {
        let (z, mut cache) = (zone("10.32.0.1"), PacketCache::default());
        let query = [&[0x12, 0x34][..], &[1; 30]].concat();
        let answer = [&[0x12, 0x34][..], &[2; 40]].concat();
        assert_eq!(cache.get(&z, &query), None);
        cache.put(&z, &query, &answer);
        let again = [&[0xab, 0xcd][..], &[1; 30]].concat();
        let got = cache.get(&z, &again).unwrap();
        assert_eq!(&got[..2], &[0xab, 0xcd]);
        assert_eq!(&got[2..], &answer[2..]);
        // Other bytes after the id: another query.
        let other = [&[0xab, 0xcd][..], &[1; 29], &[9]].concat();
        assert_eq!(cache.get(&z, &other), None);
    }

    #[test]
    fn another_zone_empties_it_even_an_equal_one() {
        let (z, mut cache) = (zone("10.32.0.1"), PacketCache::default());
        let query = [0u8; 20];
        cache.put(&z, &query, &[7; 30]);
        assert!(cache.get(&z, &query).is_some());
        let newer = zone("10.32.0.1");
        assert_eq!(cache.get(&newer, &query), None);
        assert_eq!(
            cache.get(&z, &query),
            None,
            "the old zone's entries are gone"
        );
    }

    #[test]
    fn it_stays_bounded_and_keeps_no_oversized_or_headerless_query() {
        let (z, mut cache) = (zone("10.32.0.1"), PacketCache::default());
        for i in 0..(CAPACITY * 3) as u32 {
            let query = [&[0, 0][..], &i.to_be_bytes(), &[0; 10]].concat();
            cache.put(&z, &query, &[1; 20]);
            assert!(cache.entries.len() <= CAPACITY);
        }
        let long = vec![0u8; MAX_QUERY + 1];
        cache.put(&z, &long, &[1; 20]);
        assert_eq!(cache.get(&z, &long), None);
        cache.put(&z, &[0; 5], &[1; 20]);
        assert_eq!(cache.get(&z, &[0; 5]), None);
    }
}
