//! Any datagram on UDP 6783 without a password: chitchat's decoder must not panic or allocate
//! without bound, whatever the bytes. First byte even: the bytes as they are. Odd: chitchat's
//! magic number and protocol version go first, so the fuzzer spends its time on the message
//! bodies (digests, deltas, strings) instead of rediscovering a 16-bit constant.
#![no_main]

use chitchat::{ChitchatMessage, Deserializable as _};
use libfuzzer_sys::fuzz_target;

/// chitchat 0.11's magic number 45139 (little endian) and protocol version 0.
const HEADER: [u8; 3] = [0x53, 0xb0, 0];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = ChitchatMessage::deserialize(&mut &rest[..]);
    } else {
        let mut datagram = HEADER.to_vec();
        datagram.extend_from_slice(rest);
        let _ = ChitchatMessage::deserialize(&mut datagram.as_slice());
    }
});
