//! Datagrams a container sends to the agent's DNS server, as the server takes them: whatever
//! they hold, the answer never panics, is never sent for a response (which could bounce
//! between two servers forever), fits a UDP datagram, and what is forwarded upstream is a
//! query hickory can encode again.
#![no_main]

use std::sync::LazyLock;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use weave_agent::dns::{
    answer::{Reply, answer},
    zone::Zone,
};

static ZONE: LazyLock<Zone> = LazyLock::new(|| {
    Zone::new(
        "weave.local",
        [
            ("10.32.0.1".parse().unwrap(), "db.weave.local".to_owned()),
            ("10.32.0.2".parse().unwrap(), "db.weave.local".to_owned()),
            ("10.32.0.3".parse().unwrap(), "web.weave.local".to_owned()),
        ],
        vec!["10.32.0.0/12".parse().unwrap()],
    )
});

fuzz_target!(|data: &[u8]| {
    let mut turn = 0usize;
    match answer(&ZONE, data, &mut || {
        turn += 1;
        turn
    }) {
        Reply::Answer(bytes) => {
            assert!(bytes.len() <= 1232, "an answer of {} bytes", bytes.len());
            assert!(
                data.len() >= 12 && data[2] & 0x80 == 0,
                "answered something that was no query"
            );
            let sent = Message::from_vec(&bytes).expect("our own answer parses");
            assert_eq!(sent.metadata.message_type, MessageType::Response);
        }
        Reply::Forward(query) => {
            assert_eq!(query.metadata.message_type, MessageType::Query);
            let again = query.to_vec().expect("a forwarded query encodes");
            assert!(Message::from_vec(&again).is_ok());
        }
        Reply::Ignore => {}
    }
});
