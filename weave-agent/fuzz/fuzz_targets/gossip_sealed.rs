//! Datagrams with a password set. First byte even: the bytes arrive as they are (an outsider's
//! datagram: must be refused, never panic). Odd: the rest is sealed with the right key first,
//! so the fuzzer reaches what only an authenticated peer reaches: the replay window, zstd
//! decompression (bounded) and the gossip decoder.
#![no_main]

use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use weave_agent::mesh::sealed_transport::{Opener, Sealer};

/// A fixed key: the key derivation is not what is fuzzed, and Argon2 per input would crawl.
const KEY: [u8; 32] = [0x57; 32];
const NOW_MS: u64 = 1_800_000_000_000;

static PEERS: LazyLock<Mutex<(Sealer, Opener)>> =
    LazyLock::new(|| Mutex::new((Sealer::new(&KEY).expect("randomness"), Opener::new(&KEY))));

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut peers = PEERS.lock().expect("not poisoned");
    let (sealer, opener) = &mut *peers;
    if mode & 1 == 0 {
        assert!(
            opener.accept(rest, NOW_MS).is_err(),
            "forged datagram accepted"
        );
    } else {
        let datagram = sealer.seal(rest, NOW_MS).expect("sealing");
        let _ = opener.accept(&datagram, NOW_MS);
    }
});
