//! `underlay_tc`'s eBPF decapsulation: overlay frames from a peer, straight into the
//! container, or dropped with the reason.
//!
//! Not reachable in a test run: `drop_kernel_refused` (pulling headers out of paged data, or
//! bpf_skb_adjust_room out of memory: a test-run skb is linear and unshared),
//! `drop_redirect_failed`, and GSO super-packets decapsulated in eBPF, which needs a real
//! UDP-tunnel GSO type (a test run sets only the segment size and count; tests/forwarding.rs
//! has real ones).

use weave_common::{
    counters::CounterId::{self, *},
    endpoint::{ENCAP_VXLAN_DEVICE, ENDPOINT_FORWARDS},
    programs::{CONTAINER_TC, UNDERLAY_TC},
};
use weave_tests::{
    frames::{ETHERTYPE_IPV4, Ip, VXLAN_I, checksum, ethernet},
    programs::{Skb, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
};

use super::{
    underlay::{DELIVERED, check_overlay_drops, from_h2, inner, on_wire, run, underlay, vxlan},
    *,
};

#[test]
fn overlay_frames_from_a_peer_go_straight_into_the_container() {
    let host = underlay(config());
    let frame = inner(&Ip::udp(C2, C1));
    let out = run(&host, &from_h2(&frame), Skb::default());
    out.assert(TC_ACT_REDIRECT, &DELIVERED, frame.len() + 50, true);
    let delivered = [&mac(C1)[..], &frame[6..]].concat();
    assert_eq!(out.frame, delivered, "the inner frame, to C1's MAC");
}

/// Defect: underlay_tc counted the outer length where overlay_tc (behind the VXLAN device)
/// counts the inner frame, so overlay_delivered's bytes depended on the way a packet came in.
#[test]
fn bytes_count_the_container_frame_not_the_vxlan_packet() {
    let host = underlay(config());
    let frame = inner(&Ip::udp(C2, C1));
    let counted = run(&host, &from_h2(&frame), Skb::default()).counted;
    let bytes = |id| counted.iter().find(|(c, _)| *c == id).map(|(_, c)| c.bytes);
    let (inner, outer) = (frame.len() as u64, frame.len() as u64 + 50);
    assert_eq!(bytes(OverlayDelivered), Some(inner), "overlay_delivered");
    assert_eq!(bytes(OverlayRx), Some(inner), "overlay_rx");
    assert_eq!(
        bytes(UnderlayRx),
        Some(outer),
        "underlay_rx counts what arrived"
    );
}

#[test]
fn where_xdp_filters_the_program_counts_only_the_overlay_path() {
    let host = underlay(Config {
        underlay_xdp: 1,
        ..config()
    });
    let frame = from_h2(&inner(&Ip::udp(C2, C1)));
    let out = run(&host, &frame, Skb::default());
    out.assert(
        TC_ACT_REDIRECT,
        &[OverlayRx, UnderlayDecap, OverlayDelivered],
        frame.len(),
        true,
    );
}

#[test]
fn with_the_vxlan_device_overlay_frames_are_left_to_the_kernel() {
    let host = underlay(Config {
        encap: ENCAP_VXLAN_DEVICE,
        ..config()
    });
    let frame = from_h2(&inner(&Ip::udp(C2, C1)));
    let out = run(&host, &frame, Skb::default());
    out.assert(
        TC_ACT_OK,
        &[UnderlayRx, UnderlayOverlayPass],
        frame.len(),
        true,
    );
    assert_eq!(out.frame, frame, "untouched");
}

/// Broadcast and multicast take the VXLAN device, whose program copies them to the members
/// here: untouched by the underlay program, whatever they hold (overlay_tc judges them).
#[test]
fn group_frames_are_left_to_the_kernel() {
    let host = underlay(config());
    let ok = Ip::udp(C2, C1);
    let group = [0x01, 0x00, 0x5e, 0x01, 0x01, 0x01];
    for dst in [[0xff; 6], group] {
        let frame = from_h2(&ethernet(dst, mac(C2), ETHERTYPE_IPV4, &ok.bytes()));
        let out = run(&host, &frame, Skb::default());
        out.assert(
            TC_ACT_OK,
            &[UnderlayRx, UnderlayOverlayPass],
            frame.len(),
            true,
        );
        assert_eq!(out.frame, frame, "untouched");
    }
}

#[test]
fn every_drop_reason_of_decapsulation() {
    let host = underlay(config());
    let ok = Ip::udp(C2, C1);
    let ok_inner = inner(&ok);
    let wrong_mac = ethernet(mac(C1), mac(C4), ETHERTYPE_IPV4, &ok.bytes());
    let not_ect = on_wire(
        H1_MAC,
        &Ip {
            tos: 3,
            ..vxlan(VXLAN_I, OVERLAY_VNI, &ok_inner)
        },
    );
    let cases: Vec<(&str, Vec<u8>, CounterId)> = vec![
        (
            "I flag clear",
            on_wire(H1_MAC, &vxlan(0, OVERLAY_VNI, &ok_inner)),
            DropBadVxlan,
        ),
        (
            "another VNI",
            on_wire(H1_MAC, &vxlan(VXLAN_I, 42, &ok_inner)),
            DropBadVxlan,
        ),
        (
            "inner version 6",
            from_h2(&inner(&Ip {
                version: 6,
                ..ok.clone()
            })),
            DropMalformed,
        ),
        (
            "inner total length beyond the frame",
            from_h2(&inner(&Ip {
                claimed_len: Some(9000),
                ..ok.clone()
            })),
            DropMalformed,
        ),
        (
            "inner source hosted here",
            from_h2(&inner(&Ip::udp(C3, C1))),
            DropOverlaySpoofed,
        ),
        (
            "inner source hosted by H3",
            from_h2(&inner(&Ip::udp(C4, C1))),
            DropOverlaySpoofed,
        ),
        (
            "inner source MAC not C2's",
            from_h2(&wrong_mac),
            DropOverlaySpoofed,
        ),
        (
            "inner destination unknown",
            from_h2(&inner(&Ip::udp(C2, NOBODY))),
            DropUnknownDst,
        ),
        (
            "inner destination on the sending host itself",
            from_h2(&inner(&Ip::udp(C2, C2))),
            DropUnknownDst,
        ),
        (
            "inner destination isolated",
            from_h2(&inner(&Ip::udp(C2, D1))),
            DropIsolated,
        ),
        ("congestion marked on not-ECT", not_ect, DropCeOnNotEct),
    ];
    check_overlay_drops(&host, cases);
}

/// The agent's DNS server answers its own host's containers only: a peer's container cannot
/// use (or flood) it through the overlay.
#[test]
fn a_remote_endpoint_cannot_reach_the_agents_service() {
    let mut host = underlay(config());
    host.add_endpoint(SERVICE, service()).unwrap();
    check_overlay_drops(
        &host,
        vec![(
            "C2 to H1's DNS server",
            from_h2(&inner(&Ip::udp(C2, SERVICE))),
            DropIsolated,
        )],
    );
}

/// Defect: an inner source no endpoint has (often one attached on the peer a moment ago, which
/// gossip has not brought here yet) counted as drop_overlay_spoofed, like a forged one.
#[test]
fn an_unknown_inner_source_is_not_called_spoofed() {
    let host = underlay(config());
    let frame = from_h2(&inner(&Ip::udp(NOBODY, C1)));
    let out = run(&host, &frame, Skb::default());
    let counted = [
        UnderlayRx,
        UnderlayOverlayPass,
        OverlayRx,
        DropOverlayUnknownSrc,
    ];
    out.assert(TC_ACT_SHOT, &counted, frame.len(), true);
}

#[test]
fn congestion_marked_on_the_outer_header_reaches_the_inner_one() {
    let host = underlay(config());
    let ect0 = inner(&Ip {
        tos: 2,
        ..Ip::udp(C2, C1)
    });
    let frame = on_wire(
        H1_MAC,
        &Ip {
            tos: 3,
            ..vxlan(VXLAN_I, OVERLAY_VNI, &ect0)
        },
    );
    let out = run(&host, &frame, Skb::default());
    out.assert(TC_ACT_REDIRECT, &DELIVERED, frame.len(), true);
    let ip = &out.frame[14..34];
    assert_eq!(ip[1] & 3, 3, "inner ECN field");
    assert_eq!(checksum(ip), [0, 0], "inner IPv4 checksum after marking");
}

/// A super-packet for an endpoint that does not forward is stripped in eBPF; one for an
/// endpoint that forwards too where the kernel clears tunnel GSO state (`gso_decap` 1), else
/// it goes to the VXLAN device untried. A test run's skb has a segment size but no GSO type,
/// which bpf_skb_adjust_room refuses for a super-packet before touching it: so a tried one is
/// left, unchanged, to the VXLAN device here and counted as refused. A real one is stripped
/// (tests/forwarding.rs counts those).
#[test]
fn super_packets_are_tried_in_ebpf_unless_their_endpoint_forwards() {
    let frame = from_h2(&inner(&Ip::udp(C2, C1)));
    let cases = [
        (false, 0, UnderlayGsoRefused),
        (false, 1, UnderlayGsoRefused),
        (true, 0, UnderlayGsoForwarding),
        (true, 1, UnderlayGsoRefused),
    ];
    let mut failures = Vec::new();
    for (forwards, gso_decap, way) in cases {
        let mut host = underlay(Config {
            gso_decap,
            ..config()
        });
        let mut c1 = local(C1, C1_VETH);
        if forwards {
            c1.flags |= ENDPOINT_FORWARDS;
        }
        host.add_endpoint(C1, c1).unwrap();
        let out = run(&host, &frame, super_packet());
        let case = format!("forwards {forwards}, gso_decap {gso_decap}");
        let counters = [UnderlayRx, UnderlayOverlayPass, way];
        if let Some(mismatch) = out.mismatch(TC_ACT_OK, &counters, frame.len(), true) {
            failures.push(format!("{case}: {mismatch}"));
        } else if out.frame != frame {
            failures.push(format!("{case}: the packet was changed"));
        }
    }
    all_cases(failures);
}

/// Single packets for an endpoint that forwards are decapsulated in eBPF as for any other:
/// only super-packets carry GSO state.
#[test]
fn single_packets_for_an_endpoint_that_forwards_are_decapsulated_in_ebpf() {
    let mut host = underlay(config());
    let mut router = local(C1, C1_VETH);
    router.flags |= ENDPOINT_FORWARDS;
    host.add_endpoint(C1, router).unwrap();
    let frame = from_h2(&inner(&Ip::udp(C2, C1)));
    let out = run(&host, &frame, Skb::default());
    out.assert(TC_ACT_REDIRECT, &DELIVERED, frame.len(), true);
}

/// What a test run can make of a super-packet: a segment size and count.
fn super_packet() -> Skb {
    Skb {
        gso_size: 1400,
        gso_segs: 2,
        ..Skb::default()
    }
}

/// Defect: underlay_tc called a packet GSO when gso_segs > 1 even without a segment size,
/// container_tc and overlay_tc only with one. A segment count alone is no super-packet (the
/// kernel's skb_is_gso), so every program treats it as a single packet.
#[test]
fn a_segment_count_without_a_segment_size_is_a_single_packet_everywhere() {
    let host = super::host(&[UNDERLAY_TC, CONTAINER_TC], config()).unwrap();
    let counted_only = Skb {
        gso_segs: 2,
        ..Skb::default()
    };
    let arriving = from_h2(&inner(&Ip::udp(C2, C1)));
    let out = run(&host, &arriving, counted_only);
    out.assert(TC_ACT_REDIRECT, &DELIVERED, arriving.len(), true);
    let leaving = ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV4, &Ip::udp(C1, C2).bytes());
    let skb = Skb {
        ingress_ifindex: C1_VETH,
        ..counted_only
    };
    let out = host.run(CONTAINER_TC, &leaving, Some(skb)).unwrap();
    out.assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, RemoteSent],
        leaving.len(),
        false,
    );
    assert_eq!(out.frame.len(), leaving.len() + 50, "wrapped in eBPF");
}
