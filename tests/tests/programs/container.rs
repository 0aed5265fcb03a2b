//! `container_tc`: TC ingress of a container's host-side veth, C1's unless a case says another:
//! IPv4 forwarding and its drops (ARP is arp.rs's).
//!
//! Not reachable in a test run, whose skb is always linear, unshared and a page at most:
//! `drop_kernel_refused` (bpf_skb_pull_data on a frame whose headers sit in paged data, or a
//! helper out of memory), `drop_redirect_failed` (the redirect helpers only record a target
//! here) and eBPF encapsulation declining a frame too big for the underlay once wrapped
//! (loopback, the only device every namespace has, takes 64 KiB); the hostile-input namespace
//! test sends the largest frame `ethwe`'s MTU allows.

use weave_common::{
    counters::CounterId::{self, *},
    endpoint::ENCAP_VXLAN_DEVICE,
    policy::SubnetPair,
    programs::CONTAINER_TC,
};
use weave_tests::{
    frames::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ip, checksum, ethernet},
    programs::{Programs, Run, Skb, TC_ACT_REDIRECT, TC_ACT_SHOT},
};

use super::*;

pub(super) fn on_veth(veth: u32) -> Option<Skb> {
    Some(Skb {
        ingress_ifindex: veth,
        ..Skb::default()
    })
}

/// A frame C1 sends, its destination MAC whatever its neighbour cache holds.
fn from_c1(ip: &Ip) -> Vec<u8> {
    ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV4, &ip.bytes())
}

pub(super) fn run(host: &Programs, frame: &[u8], skb: Option<Skb>) -> Run {
    host.run(CONTAINER_TC, frame, skb).expect("test run")
}

/// `frame` with the destination MAC `dst`.
fn to(dst: [u8; 6], frame: &[u8]) -> Vec<u8> {
    [&dst[..], &frame[6..]].concat()
}

#[test]
fn local_destinations_get_the_frame_with_their_current_mac() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let frame = from_c1(&Ip::udp(C1, C3));
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, LocalDelivered],
        frame.len(),
        false,
    );
    assert_eq!(out.frame, to(mac(C3), &frame));
}

#[test]
fn remote_destinations_go_through_the_vxlan_device_when_it_encapsulates() {
    let host = host(
        &[CONTAINER_TC],
        Config {
            encap: ENCAP_VXLAN_DEVICE,
            ..config()
        },
    )
    .unwrap();
    let frame = from_c1(&Ip::udp(C1, C2));
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        frame.len(),
        false,
    );
    assert_eq!(out.frame, to(mac(C2), &frame));
}

#[test]
fn ebpf_encapsulation_wraps_the_frame_in_vxlan_for_the_peer() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    // ECT(0): the outer header carries the sender's ECN field (RFC 6040).
    let frame = from_c1(&Ip {
        tos: 0x02,
        ..Ip::udp(C1, C2)
    });
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        frame.len(),
        false,
    );

    let inner = to(mac(C2), &frame);
    let (outer, rest) = out.frame.split_at(14 + 20 + 8 + 8);
    assert_eq!(
        rest,
        &inner[..],
        "the inner frame, its destination rewritten"
    );
    let ip = &outer[14..34];
    let ip_len = (inner.len() + 36) as u16;
    assert_eq!(
        &ip[..4],
        &[0x45, 0x02, (ip_len >> 8) as u8, ip_len as u8][..]
    );
    assert_eq!(&ip[6..10], &[0x40, 0, 64, 17][..], "DF, TTL 64, UDP");
    assert_eq!((&ip[12..16], &ip[16..20]), (&H1[..], &H2[..]));
    assert_eq!(checksum(ip), [0, 0], "outer IPv4 checksum");
    let udp = &outer[34..42];
    assert_eq!(&udp[2..4], &weave_common::VXLAN_PORT.to_be_bytes()[..]);
    assert_eq!(&udp[4..6], &(ip_len - 20).to_be_bytes()[..]);
    let vni = (OVERLAY_VNI << 8).to_be_bytes();
    assert_eq!(
        &outer[42..50],
        &[0x08, 0, 0, 0, vni[0], vni[1], vni[2], 0][..]
    );
}

#[test]
fn super_packets_take_the_vxlan_device_even_with_ebpf_encapsulation() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let frame = from_c1(&Ip::udp(C1, C2));
    let skb = Skb {
        ingress_ifindex: C1_VETH,
        gso_size: 1400,
        gso_segs: 2,
        ..Skb::default()
    };
    let out = run(&host, &frame, Some(skb));
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        frame.len(),
        false,
    );
    assert_eq!(out.frame, to(mac(C2), &frame), "not wrapped in eBPF");
}

#[test]
fn frames_ebpf_cannot_wrap_take_the_vxlan_device() {
    // An underlay bpf_check_mtu cannot find stands for one the wrapped frame would not fit.
    let host = host(
        &[CONTAINER_TC],
        Config {
            underlay_ifindex: 0x7fff_fff0,
            ..config()
        },
    )
    .unwrap();
    let frame = from_c1(&Ip::udp(C1, C2));
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSentDevice],
        frame.len(),
        false,
    );
    assert_eq!(out.frame, to(mac(C2), &frame), "not wrapped in eBPF");
}

#[test]
fn remote_frames_without_a_vxlan_device_are_dropped() {
    let no_device = Config {
        encap: ENCAP_VXLAN_DEVICE,
        vxlan_ifindex: 0,
        ..config()
    };
    let host = host(&[CONTAINER_TC], no_device).unwrap();
    let frame = from_c1(&Ip::udp(C1, C2));
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_SHOT,
        &[ContainerRx, DropNoTunnel],
        frame.len(),
        false,
    );
}

#[test]
fn a_rule_opens_another_subnet() {
    let mut host = host(&[CONTAINER_TC], config()).unwrap();
    host.allow(SubnetPair::between(
        &local(C1, C1_VETH),
        &local(D1, D1_VETH),
    ))
    .unwrap();
    let frame = from_c1(&Ip::udp(C1, D1));
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, LocalDelivered],
        frame.len(),
        false,
    );
}

#[test]
fn ip_options_and_fragments_are_forwarded() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let options = Ip {
        option_words: 2,
        ..Ip::udp(C1, C3)
    };
    let fragment = Ip {
        frag: 0x2000,
        ..Ip::udp(C1, C3)
    };
    for ip in [options, fragment] {
        let frame = from_c1(&ip);
        let out = run(&host, &frame, on_veth(C1_VETH));
        out.assert(
            TC_ACT_REDIRECT,
            &[ContainerRx, LocalDelivered],
            frame.len(),
            false,
        );
    }
}

#[test]
fn every_drop_reason_of_ipv4_and_other_ethertypes() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let ok = Ip::udp(C1, C3);
    let mut short_ihl = from_c1(&ok);
    short_ihl[14] = 0x44;
    // A truncated IPv4 header is hostile.rs's: this kernel's test run refuses (EINVAL) an IPv4
    // frame too short for its header, as it refuses a bare Ethernet header.
    let cases: Vec<(&str, Vec<u8>, u32, CounterId)> = vec![
        (
            "IP version 6",
            from_c1(&Ip {
                version: 6,
                ..ok.clone()
            }),
            C1_VETH,
            DropMalformed,
        ),
        ("header length under 20", short_ihl, C1_VETH, DropMalformed),
        (
            "total length beyond the frame",
            from_c1(&Ip {
                claimed_len: Some(9000),
                ..ok.clone()
            }),
            C1_VETH,
            DropMalformed,
        ),
        (
            "total length under the header",
            from_c1(&Ip {
                claimed_len: Some(12),
                ..ok.clone()
            }),
            C1_VETH,
            DropMalformed,
        ),
        (
            "spoofed source address",
            from_c1(&Ip::udp(NOBODY, C3)),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "another endpoint's source address",
            from_c1(&Ip::udp(C3, C1)),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "spoofed source MAC",
            ethernet(mac(C3), STALE_MAC, ETHERTYPE_IPV4, &ok.bytes()),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "C1's frame on C3's veth",
            from_c1(&ok),
            C3_VETH,
            DropSpoofed,
        ),
        (
            "unknown destination",
            from_c1(&Ip::udp(C1, NOBODY)),
            C1_VETH,
            DropUnknownDst,
        ),
        (
            "local, other subnet",
            from_c1(&Ip::udp(C1, D1)),
            C1_VETH,
            DropIsolated,
        ),
        (
            "remote, other subnet",
            from_c1(&Ip::udp(C1, D2)),
            C1_VETH,
            DropIsolated,
        ),
        (
            "IPv6 claiming more payload than it carries",
            ethernet(mac(C3), mac(C1), ETHERTYPE_IPV6, &[0x60; 40]),
            C1_VETH,
            DropMalformed,
        ),
        (
            "broadcast MAC to a unicast address",
            ethernet([0xff; 6], mac(C1), ETHERTYPE_IPV4, &ok.bytes()),
            C1_VETH,
            DropNotIpv4Unicast,
        ),
        (
            "another subnet's broadcast address",
            ethernet(
                [0xff; 6],
                mac(C1),
                ETHERTYPE_IPV4,
                &Ip::udp(C1, [192, 168, 2, 255]).bytes(),
            ),
            C1_VETH,
            DropNotIpv4Unicast,
        ),
        (
            "broadcast from a spoofed source",
            ethernet(
                [0xff; 6],
                mac(C1),
                ETHERTYPE_IPV4,
                &Ip::udp(NOBODY, [192, 168, 1, 255]).bytes(),
            ),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "multicast MAC to a unicast address",
            ethernet(
                [0x01, 0, 0x5e, 0, 0, 1],
                mac(C1),
                ETHERTYPE_IPV4,
                &ok.bytes(),
            ),
            C1_VETH,
            DropNotIpv4Unicast,
        ),
    ];
    check_drops(&host, cases);
}

/// A broadcast of the sender's own subnet is copied to the members (none in this map) and
/// goes no further itself; past the endpoint's burst, the rate limit drops it.
#[test]
fn broadcasts_are_counted_as_sent_then_held_to_the_rate() {
    let host = host(&[CONTAINER_TC], config()).unwrap();
    let frame = ethernet(
        [0xff; 6],
        mac(C1),
        ETHERTYPE_IPV4,
        &Ip::udp(C1, [192, 168, 1, 255]).bytes(),
    );
    let out = run(&host, &frame, on_veth(C1_VETH));
    out.assert(
        TC_ACT_SHOT,
        &[ContainerRx, BroadcastSent],
        frame.len(),
        false,
    );
    // The burst is 100 frames at 1,000 a second: far more within a few milliseconds of runs
    // cannot all pass.
    let limited = (0..300)
        .map(|_| run(&host, &frame, on_veth(C1_VETH)))
        .filter(|out| {
            out.mismatch(
                TC_ACT_SHOT,
                &[ContainerRx, DropRateLimited],
                frame.len(),
                false,
            )
            .is_none()
        })
        .count();
    assert!(limited > 0, "300 broadcasts at once and none rate-limited");
}

pub(super) fn check_drops(host: &Programs, cases: Vec<(&str, Vec<u8>, u32, CounterId)>) {
    let failures = cases
        .into_iter()
        .filter_map(|(case, frame, veth, reason)| {
            let mismatch = match host.run(CONTAINER_TC, &frame, on_veth(veth)) {
                Ok(out) => out.mismatch(TC_ACT_SHOT, &[ContainerRx, reason], frame.len(), false),
                Err(err) => Some(format!("{err:#}")),
            };
            mismatch.map(|m| format!("{case}: {m}"))
        })
        .collect();
    all_cases(failures);
}

/// The DNS server's address is reachable from every local endpoint whatever its subnet, and
/// answers every one of them, with no rule; it is no way between subnets, and no remote
/// endpoint reaches it (decap.rs) nor does it reach one.
#[test]
fn the_agents_service_talks_with_every_local_endpoint_and_no_remote_one() {
    let mut host = host(&[CONTAINER_TC], config()).unwrap();
    host.add_endpoint(SERVICE, service()).unwrap();
    let from = |src: [u8; 4], dst: [u8; 4]| {
        ethernet(
            STALE_MAC,
            mac(src),
            ETHERTYPE_IPV4,
            &Ip::udp(src, dst).bytes(),
        )
    };
    let mut failures = Vec::new();
    for (case, frame, veth, code, counters, delivered_to) in [
        (
            "C1 to the service",
            from(C1, SERVICE),
            C1_VETH,
            TC_ACT_REDIRECT,
            &[ContainerRx, LocalDelivered][..],
            Some(SERVICE),
        ),
        (
            "D1, another subnet, to the service",
            from(D1, SERVICE),
            D1_VETH,
            TC_ACT_REDIRECT,
            &[ContainerRx, LocalDelivered][..],
            Some(SERVICE),
        ),
        (
            "the service to C1",
            from(SERVICE, C1),
            SERVICE_VETH,
            TC_ACT_REDIRECT,
            &[ContainerRx, LocalDelivered][..],
            Some(C1),
        ),
        (
            "the service to D1",
            from(SERVICE, D1),
            SERVICE_VETH,
            TC_ACT_REDIRECT,
            &[ContainerRx, LocalDelivered][..],
            Some(D1),
        ),
        (
            "the service to remote C2",
            from(SERVICE, C2),
            SERVICE_VETH,
            TC_ACT_SHOT,
            &[ContainerRx, DropIsolated][..],
            None,
        ),
        (
            "C1 to D1 still isolated",
            from(C1, D1),
            C1_VETH,
            TC_ACT_SHOT,
            &[ContainerRx, DropIsolated][..],
            None,
        ),
    ] {
        let out = run(&host, &frame, on_veth(veth));
        if let Some(m) = out.mismatch(code, counters, frame.len(), false) {
            failures.push(format!("{case}: {m}"));
        } else if let Some(dst) = delivered_to
            && out.frame != to(mac(dst), &frame)
        {
            failures.push(format!("{case}: not rewritten to its MAC"));
        }
    }
    all_cases(failures);
}
