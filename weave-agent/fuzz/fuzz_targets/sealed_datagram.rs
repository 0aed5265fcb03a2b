//! Datagrams on the data port with a password set, as the crypto path's opener takes them.
//! First byte even: the bytes arrive as they are (an outsider's or a forger's datagram: must
//! never open, never panic; handshake messages go to the table as the engine hands them).
//! Odd: a chunk header (index, count, offset) and payload from the input are sealed with a
//! real session first, so the fuzzer reaches what only a peer with the password reaches: the
//! replay window and the reassembly of messages from chunks.
#![no_main]

use std::{
    net::Ipv4Addr,
    sync::{LazyLock, Mutex},
    time::Instant,
};

use libfuzzer_sys::fuzz_target;
use weave_agent::crypto::{
    opener::{MAX_MESSAGE, Opened, Opener},
    table::Table,
    wire::{Header, Kind},
};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

struct World {
    /// A sends; B receives through its opener.
    a: Table,
    b: Table,
    opener: Opener,
}

static WORLD: LazyLock<Mutex<World>> = LazyLock::new(|| {
    let (a, b) = Table::connected_pair(A, B, [0x57; 32]).expect("a handshake in memory");
    Mutex::new(World {
        a,
        b,
        opener: Opener::default(),
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut world = WORLD.lock().expect("not poisoned");
    let World { a, b, opener } = &mut *world;
    let now = Instant::now();
    let mut datagram = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let (Some(&index), Some(&count), Some(offset)) = (rest.first(), rest.get(1), rest.get(2..4))
        else {
            return;
        };
        let payload = &rest[4..];
        let sender = a.sender(B, now).expect("a session");
        let Some(counter) = sender.session.take_counters(1) else {
            return;
        };
        let header = Header {
            dest: B,
            kind: Kind::Data,
            index,
            count,
            session: sender.session.remote_index,
            aux: u32::from(u16::from_be_bytes([offset[0], offset[1]])) * 64,
            counter,
        };
        sender.session.sealed(&header, payload)
    };
    let raw = datagram.clone();
    match opener.open(b, A, &mut datagram, now) {
        Opened::Message { message, .. } => {
            assert!(mode & 1 == 1, "a datagram nobody sealed opened");
            assert!(message.len() <= MAX_MESSAGE);
        }
        Opened::Handshake(header) => {
            // Whatever it is, it must not make a session for a host without the keys.
            let before = b.report(now);
            let _ = match header.kind {
                Kind::Initiation => b.on_initiation(&header, &raw, now).map(drop),
                Kind::Response => b.on_response(&header, &raw, now),
                Kind::Data => Ok(()),
            };
            let after = b.report(now);
            assert_eq!(before[0].handshakes, after[0].handshakes, "a forged handshake");
        }
        Opened::Partial | Opened::Refused { .. } => {}
    }
});
