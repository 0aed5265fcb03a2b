//! `container_tc`'s ARP: requests and RFC 5227 probes answered in eBPF, from C1's veth unless
//! a case says another.

use weave_common::{
    counters::CounterId::{self, *},
    programs::CONTAINER_TC,
};
use weave_tests::{
    frames::arp_request,
    programs::{TC_ACT_REDIRECT, TC_ACT_SHOT},
};

use super::{
    container::{check_drops, on_veth, run},
    *,
};

/// An ARP frame's Ethernet addresses, operation, sender and target.
#[derive(Debug, PartialEq)]
struct Arp {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

impl Arp {
    fn parse(frame: &[u8]) -> Self {
        let mac = |at: usize| frame[at..at + 6].try_into().unwrap();
        let ip = |at: usize| frame[at..at + 4].try_into().unwrap();
        Self {
            eth_dst: mac(0),
            eth_src: mac(6),
            op: u16::from_be_bytes([frame[20], frame[21]]),
            sha: mac(22),
            spa: ip(28),
            tha: mac(32),
            tpa: ip(38),
        }
    }

    /// The reply in which `holder` tells the asker (`tha`, `tpa`) its MAC.
    fn reply(holder: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Self {
        Self {
            eth_dst: tha,
            eth_src: mac(holder),
            op: 2,
            sha: mac(holder),
            spa: holder,
            tha,
            tpa,
        }
    }
}

#[test]
fn arp_requests_are_answered_with_the_endpoints_mac() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    for target in [C3, C2] {
        let frame = arp_request(mac(C1), mac(C1), C1, target);
        let out = run(&host, &frame, on_veth(C1_VETH));
        out.assert(
            TC_ACT_REDIRECT,
            &[ContainerRx, ArpReplied],
            frame.len(),
            false,
        );
        let reply = Arp::reply(target, mac(C1), C1);
        assert_eq!(Arp::parse(&out.frame), reply, "reply for {target:?}");
    }
}

#[test]
fn every_drop_reason_of_arp() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let request = arp_request(mac(C1), mac(C1), C1, C3);
    let mut reply = request.clone();
    reply[21] = 2;
    let mut not_ethernet = request.clone();
    not_ethernet[15] = 6;
    let cases: Vec<(&str, Vec<u8>, u32, CounterId)> = vec![
        (
            "truncated",
            request[..14 + 20].to_vec(),
            C1_VETH,
            DropMalformed,
        ),
        ("a reply", reply, C1_VETH, DropArp),
        ("not Ethernet hardware", not_ethernet, C1_VETH, DropArp),
        (
            "for nobody",
            arp_request(mac(C1), mac(C1), C1, NOBODY),
            C1_VETH,
            DropArp,
        ),
        (
            "for another subnet",
            arp_request(mac(C1), mac(C1), C1, D1),
            C1_VETH,
            DropIsolated,
        ),
        (
            "sender MAC not the frame's",
            arp_request(mac(C1), STALE_MAC, C1, C3),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "another endpoint's address",
            arp_request(mac(C1), mac(C1), C3, C3),
            C1_VETH,
            DropSpoofed,
        ),
        ("C1's request on C3's veth", request, C3_VETH, DropSpoofed),
    ];
    check_drops(&host, cases);
}

/// Defect: probes (RFC 5227 duplicate address detection: sender address 0.0.0.0) counted as
/// drop_spoofed and never answered, so a prober took an address another endpoint holds.
#[test]
fn arp_probes_for_an_address_another_endpoint_holds_are_answered() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    for holder in [C3, C2] {
        let frame = arp_request(mac(C1), mac(C1), [0; 4], holder);
        let out = run(&host, &frame, on_veth(C1_VETH));
        out.assert(
            TC_ACT_REDIRECT,
            &[ContainerRx, ArpProbeAnswered],
            frame.len(),
            false,
        );
        // As the kernel answers a probe: to the prober's MAC, target address 0.0.0.0.
        let reply = Arp::reply(holder, mac(C1), [0; 4]);
        assert_eq!(Arp::parse(&out.frame), reply, "reply for {holder:?}");
    }
}

/// Defect, as above: the prober's own address must stay unanswered, or its own detection
/// would report a conflict with itself; so must an address nobody holds.
#[test]
fn arp_probes_for_the_probers_own_or_a_free_address_go_unanswered() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    for (case, wanted) in [("its own", C1), ("a free one", NOBODY)] {
        let frame = arp_request(mac(C1), mac(C1), [0; 4], wanted);
        let out = run(&host, &frame, on_veth(C1_VETH));
        if let Some(m) = out.mismatch(
            TC_ACT_SHOT,
            &[ContainerRx, ArpProbeUnanswered],
            frame.len(),
            false,
        ) {
            panic!("probe for {case} address: {m}");
        }
    }
}

#[test]
fn arp_probes_keep_isolation_and_come_from_the_veths_endpoint() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let probe = |sha: [u8; 6], wanted: [u8; 4]| arp_request(sha, sha, [0; 4], wanted);
    let cases: Vec<(&str, Vec<u8>, u32, CounterId)> = vec![
        (
            "for another subnet",
            probe(mac(C1), D1),
            C1_VETH,
            DropIsolated,
        ),
        (
            "from another endpoint's MAC",
            probe(mac(C3), C2),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "from a MAC no endpoint has",
            probe(STALE_MAC, C2),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "on another endpoint's veth",
            probe(mac(C1), C2),
            C3_VETH,
            DropSpoofed,
        ),
    ];
    check_drops(&host, cases);
}
