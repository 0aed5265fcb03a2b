//! Relaying in `underlay_tc`: frames for a container on a third host are sent on towards it
//! with the relay marks set, in the kernel; relayed frames for a container here are checked
//! against their origin; link hellos are noted. And `container_tc` sends to a peer's next hop.
//!
//! Besides the usual test host (see main.rs), H4 is a live peer hosting C5, and H5 hosts C6
//! but is no peer.

use weave_common::{
    OVERLAY_VNI,
    counters::CounterId::{self, *},
    endpoint::ENCAP_VXLAN_DEVICE,
    programs::{CONTAINER_TC, UNDERLAY_TC},
    relay::{HELLO_VNI, MAX_RELAY_HOPS},
};
use weave_tests::{
    frames::{self, ETHERTYPE_IPV4, Ip, VXLAN_I, checksum, ethernet},
    programs::{Programs, Skb, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
};

use super::{
    underlay::{DELIVERED, check_overlay_drops, from_h2, inner, on_wire, run},
    *,
};

const H4: [u8; 4] = [192, 168, 56, 104];
const H5: [u8; 4] = [192, 168, 56, 105];
const C5: [u8; 4] = [192, 168, 1, 50];
const C6: [u8; 4] = [192, 168, 1, 60];

fn relay_host(config: Config) -> Programs {
    let mut host = super::host(&[UNDERLAY_TC, CONTAINER_TC], config).unwrap();
    host.add_endpoint(C5, remote(C5, H4)).unwrap();
    host.add_endpoint(C6, remote(C6, H5)).unwrap();
    host.add_peer(H4).unwrap();
    host
}

/// What a relay leaves of an overlay packet: (outer source, outer destination, TTL, VXLAN
/// flags byte, origin from the reserved bytes), after checking the outer IPv4 checksum and
/// that the UDP checksum stayed zero.
fn relay_marks(frame: &[u8]) -> ([u8; 4], [u8; 4], u8, u8, [u8; 4]) {
    let ip = &frame[14..34];
    assert_eq!(checksum(ip), [0, 0], "outer IPv4 checksum");
    assert_eq!(&frame[40..42], &[0, 0], "outer UDP checksum");
    let vx = &frame[42..50];
    let origin = [vx[1], vx[2], vx[3], vx[7]];
    (
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
        ip[8],
        vx[0],
        origin,
    )
}

#[test]
fn a_frame_for_a_third_host_is_sent_on_with_the_relay_marks() {
    let host = relay_host(config());
    let frame = from_h2(&inner(&Ip::udp(C2, C4)));
    let out = run(&host, &frame, Skb::default());
    out.assert(
        TC_ACT_REDIRECT,
        &[UnderlayRx, UnderlayOverlayPass, RelayForwarded],
        frame.len(),
        true,
    );
    assert_eq!(
        relay_marks(&out.frame),
        (H1, H3, 64, VXLAN_I | 1, H2),
        "(source, destination, TTL, flags, origin)"
    );
    assert_eq!(out.frame[50..], frame[50..], "the inner frame is untouched");
    assert_eq!(out.frame.len(), frame.len(), "nothing added or removed");
}

#[test]
fn a_relayed_frame_goes_to_the_next_hop_and_keeps_its_origin() {
    let mut host = relay_host(config());
    host.add_peer_via(H3, H4).unwrap();
    let frame = on_wire(
        H1_MAC,
        &frames::relayed_vxlan(H2, H1, H4, 2, OVERLAY_VNI, &inner(&Ip::udp(C5, C4))),
    );
    let out = run(&host, &frame, Skb::default());
    out.assert(
        TC_ACT_REDIRECT,
        &[UnderlayRx, UnderlayOverlayPass, RelayForwarded],
        frame.len(),
        true,
    );
    assert_eq!(relay_marks(&out.frame), (H1, H4, 64, VXLAN_I | 3, H4));
}

#[test]
fn every_drop_reason_of_relaying() {
    let host = relay_host(config());
    let relayed = |origin, hops, ip: &Ip| {
        on_wire(
            H1_MAC,
            &frames::relayed_vxlan(H2, H1, origin, hops, OVERLAY_VNI, &inner(ip)),
        )
    };
    let mut with_udp_checksum = from_h2(&inner(&Ip::udp(C2, C4)));
    with_udp_checksum[40..42].copy_from_slice(&[0x12, 0x34]);
    let cases: Vec<(&str, Vec<u8>, CounterId)> = vec![
        (
            "at the hop limit",
            relayed(H2, MAX_RELAY_HOPS, &Ip::udp(C2, C4)),
            DropRelayHopLimit,
        ),
        (
            "destination host not a live peer",
            from_h2(&inner(&Ip::udp(C2, C6))),
            DropRelayNoRoute,
        ),
        (
            "destination on the origin itself",
            from_h2(&inner(&Ip::udp(C2, D2))),
            DropUnknownDst,
        ),
        (
            "inner source not the origin's",
            from_h2(&inner(&Ip::udp(C5, C4))),
            DropOverlaySpoofed,
        ),
        (
            "inner source hosted here",
            from_h2(&inner(&Ip::udp(C1, C4))),
            DropOverlaySpoofed,
        ),
        (
            "isolated subnets",
            from_h2(&inner(&Ip::udp(D2, C4))),
            DropIsolated,
        ),
        (
            "outer UDP checksum",
            with_udp_checksum,
            DropRelayUdpChecksum,
        ),
        (
            "origin not a live peer",
            relayed(H5, 1, &Ip::udp(C6, C1)),
            DropRelayOriginNotPeer,
        ),
    ];
    check_overlay_drops(&host, cases);
}

#[test]
fn a_relayed_frame_for_a_container_here_is_checked_against_its_origin() {
    let host = relay_host(config());
    // From H2 on behalf of H3, whose C4 it comes from.
    let frame = on_wire(
        H1_MAC,
        &frames::relayed_vxlan(H2, H1, H3, 1, OVERLAY_VNI, &inner(&Ip::udp(C4, C1))),
    );
    let out = run(&host, &frame, Skb::default());
    let mut counted = DELIVERED.to_vec();
    counted.push(RelayReceived);
    out.assert(TC_ACT_REDIRECT, &counted, frame.len(), true);
    // The same frame claiming to come from H2's own endpoint is forged.
    let forged = on_wire(
        H1_MAC,
        &frames::relayed_vxlan(H2, H1, H3, 1, OVERLAY_VNI, &inner(&Ip::udp(C2, C1))),
    );
    run(&host, &forged, Skb::default()).assert(
        TC_ACT_SHOT,
        &[
            UnderlayRx,
            UnderlayOverlayPass,
            OverlayRx,
            DropOverlaySpoofed,
        ],
        forged.len(),
        true,
    );
}

#[test]
fn a_relayed_frame_for_the_vxlan_device_is_put_back_into_plain_form() {
    let host = relay_host(Config {
        encap: ENCAP_VXLAN_DEVICE,
        ..config()
    });
    let frame = on_wire(
        H1_MAC,
        &frames::relayed_vxlan(H2, H1, H3, 1, OVERLAY_VNI, &inner(&Ip::udp(C4, C1))),
    );
    let out = run(&host, &frame, Skb::default());
    out.assert(
        TC_ACT_OK,
        &[UnderlayRx, UnderlayOverlayPass, RelayReceived],
        frame.len(),
        true,
    );
    let plain = on_wire(
        H1_MAC,
        &frames::vxlan(H3, H1, VXLAN_I, OVERLAY_VNI, &inner(&Ip::udp(C4, C1))),
    );
    assert_eq!(
        out.frame, plain,
        "what the device gets: the origin as outer source, no relay marks, a valid checksum"
    );
}

#[test]
fn link_hellos_are_noted_and_go_no_further() {
    let host = relay_host(config());
    let hello = on_wire(H1_MAC, &frames::vxlan(H2, H1, VXLAN_I, HELLO_VNI, &[0; 8]));
    assert!(host.heard().unwrap().is_empty());
    let out = run(&host, &hello, Skb::default());
    out.assert(
        TC_ACT_SHOT,
        &[UnderlayRx, UnderlayOverlayPass, LinkHello],
        hello.len(),
        true,
    );
    let heard = host.heard().unwrap();
    assert_eq!(heard.len(), 1, "{heard:?}");
    let (peer, record) = heard[0];
    assert!(peer == H2 && record.at_ns > 0, "{heard:?}");
    assert_eq!(
        record.largest as usize,
        hello.len() - 14,
        "the hello's IPv4 length"
    );
    // From a host that is no peer: not noted.
    let stranger = on_wire(H1_MAC, &frames::vxlan(H5, H1, VXLAN_I, HELLO_VNI, &[0; 8]));
    run(&host, &stranger, Skb::default()).assert(
        TC_ACT_SHOT,
        &[UnderlayRx, DropOverlayNotPeer],
        stranger.len(),
        true,
    );
    assert_eq!(host.heard().unwrap().len(), 1);
}

#[test]
fn containers_send_to_the_next_hop_of_the_destination_host() {
    let mut host = relay_host(config());
    host.add_peer_via(H3, H2).unwrap();
    let frame = ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV4, &Ip::udp(C1, C4).bytes());
    let skb = Skb {
        ingress_ifindex: C1_VETH,
        ..Skb::default()
    };
    let out = host.run(CONTAINER_TC, &frame, Some(skb)).unwrap();
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        frame.len(),
        false,
    );
    let outer_dst: [u8; 4] = out.frame[30..34].try_into().unwrap();
    assert_eq!(outer_dst, H2, "sent to the relay");
    assert_eq!(out.frame[42], VXLAN_I, "a plain frame: the relay marks it");
}

/// An IPv4 packet from C1 to C4 of `total` bytes.
fn sized(total: usize) -> Ip {
    let mut ip = Ip::udp(C1, C4);
    ip.payload.resize(total - 20, 0x5a);
    ip
}

#[test]
fn packets_too_big_for_the_path_are_answered_with_fragmentation_needed() {
    let mut host = relay_host(config());
    host.add_peer_route(H3, H3, 1000).unwrap();
    let skb = Skb {
        ingress_ifindex: C1_VETH,
        ..Skb::default()
    };
    // 950 bytes of IPv4 make exactly 1000 once wrapped: sent.
    let fits = ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV4, &sized(950).bytes());
    let out = host.run(CONTAINER_TC, &fits, Some(skb)).unwrap();
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        fits.len(),
        false,
    );

    let big = sized(951).bytes();
    let frame = ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV4, &big);
    let out = host.run(CONTAINER_TC, &frame, Some(skb)).unwrap();
    let counted: Vec<CounterId> = out.counted.iter().map(|(id, _)| *id).collect();
    assert_eq!(out.code, TC_ACT_REDIRECT);
    assert_eq!(counted, [ContainerRx, IcmpFragNeeded]);
    let answer = &out.frame;
    assert_eq!(
        answer.len(),
        14 + 20 + 8 + 28,
        "Ethernet, IPv4, ICMP, the quote"
    );
    assert_eq!(&answer[0..6], &mac(C1), "back to the sender");
    assert_eq!(&answer[6..12], &mac(C4), "from the destination");
    let ip = &answer[14..34];
    assert_eq!(checksum(ip), [0, 0], "IPv4 checksum");
    assert_eq!((ip[9], &ip[12..16], &ip[16..20]), (1, &C4[..], &C1[..]));
    let icmp = &answer[34..];
    assert_eq!(checksum(icmp), [0, 0], "ICMP checksum");
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        950,
        "the MTU that fits"
    );
    assert_eq!(
        &icmp[8..],
        &big[..28],
        "the packet's IPv4 header and 8 bytes quoted"
    );
}

#[test]
fn a_path_mtu_not_learned_sends_everything_as_before() {
    let host = relay_host(config());
    let skb = Skb {
        ingress_ifindex: C1_VETH,
        ..Skb::default()
    };
    let frame = ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV4, &sized(1400).bytes());
    let out = host.run(CONTAINER_TC, &frame, Some(skb)).unwrap();
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        frame.len(),
        false,
    );
}
