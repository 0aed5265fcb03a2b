//! What users and peers type or send as text: CIDRs, networks, isolation rules, endpoints and
//! links as gossiped, CONTAINER references, peer addresses (parsed only: names resolve later,
//! in the background), `docker run` options. The first byte picks the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weave_agent::{
    host::{netns as container, run_spec::RunSpec},
    mesh::{keys as gossip, peer_addr::PeerSpec, topology::links},
    net::{addressing::Cidr, policy},
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (first, second) = text.split_once('\n').unwrap_or((text, ""));
    match which % 8 {
        0 => {
            if let Ok(cidr) = text.parse::<Cidr>() {
                // What parses must print back to something that parses to the same.
                assert_eq!(cidr.to_string().parse::<Cidr>().ok(), Some(cidr));
            }
        }
        1 => {
            if let Ok(net) = text.parse::<policy::Subnet>() {
                assert_eq!(net.to_string().parse::<policy::Subnet>().ok(), Some(net));
            }
        }
        2 => {
            if let Ok(rule) = policy::Rule::from_gossip(first, second) {
                let again = policy::Rule::from_gossip(&rule.gossip_key(), &rule.gossip_value());
                assert_eq!(again.ok(), Some(rule));
            }
        }
        3 => {
            let _ = gossip::parse_endpoint(first, second);
        }
        4 => {
            if let Ok(Some(path)) = container::reference(text) {
                if text.starts_with("netns:") {
                    assert!(path.starts_with("/run/netns/"), "{path:?} left /run/netns");
                }
            }
        }
        5 => {
            // The default port only fills in what the text leaves out.
            let _ = PeerSpec::parse(text, 6783);
        }
        6 => {
            // Whom a peer says it hears: what decodes encodes to the same links.
            if let Ok(decoded) = links::decode(text) {
                let map = decoded.iter().map(|l| (l.peer, l.largest)).collect();
                assert_eq!(links::decode(&links::encode(&map)).ok(), Some(decoded));
            }
        }
        _ => {
            let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
            let _ = RunSpec::parse(&args);
        }
    }
});
