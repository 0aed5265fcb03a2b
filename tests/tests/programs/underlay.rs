//! `underlay_tc` and `underlay_xdp` on the host NIC: what is overlay traffic for this host,
//! and the peer filter. Decapsulation is `decap.rs`'s.

use weave_common::{
    counters::CounterId::{self, *},
    programs::{UNDERLAY_TC, UNDERLAY_XDP},
};
use weave_tests::{
    frames::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ip, VXLAN_I, ethernet},
    programs::{Programs, Run, Skb, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS},
};

use super::*;

/// What every overlay packet from a peer counts on its way into a container.
pub(super) const DELIVERED: [CounterId; 5] = [
    UnderlayRx,
    UnderlayOverlayPass,
    OverlayRx,
    UnderlayDecap,
    OverlayDelivered,
];

/// An inner frame from `ip.src`'s endpoint, with a stale destination MAC.
pub(super) fn inner(ip: &Ip) -> Vec<u8> {
    ethernet(STALE_MAC, mac(ip.src), ETHERTYPE_IPV4, &ip.bytes())
}

/// A VXLAN datagram from H2 to H1 carrying `inner`, with the given flags byte and VNI.
pub(super) fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Ip {
    frames::vxlan(H2, H1, flags, vni, inner)
}

/// `outer` on the wire from H2's NIC to `dst_mac`.
pub(super) fn on_wire(dst_mac: [u8; 6], outer: &Ip) -> Vec<u8> {
    ethernet(dst_mac, H2_MAC, ETHERTYPE_IPV4, &outer.bytes())
}

/// A well-formed overlay packet from H2 to H1 carrying `inner`.
pub(super) fn from_h2(inner: &[u8]) -> Vec<u8> {
    on_wire(H1_MAC, &vxlan(VXLAN_I, OVERLAY_VNI, inner))
}

pub(super) fn run(host: &Programs, frame: &[u8], skb: Skb) -> Run {
    host.run(UNDERLAY_TC, frame, Some(skb)).expect("test run")
}

pub(super) fn underlay(config: Config) -> Programs {
    super::host(&[UNDERLAY_TC], config).unwrap()
}

/// Runs each (case, frame, reason) through `underlay_tc` and fails once, naming every case
/// that was not dropped for `reason` once its overlay frame was looked at (counted as
/// arriving, passing the peer check, an overlay frame seen, and the reason).
pub(super) fn check_overlay_drops(host: &Programs, cases: Vec<(&str, Vec<u8>, CounterId)>) {
    let failures = cases
        .into_iter()
        .filter_map(|(case, frame, reason)| {
            run(host, &frame, Skb::default())
                .mismatch(
                    TC_ACT_SHOT,
                    &[UnderlayRx, UnderlayOverlayPass, OverlayRx, reason],
                    frame.len(),
                    true,
                )
                .map(|m| format!("{case}: {m}"))
        })
        .collect();
    all_cases(failures);
}

#[test]
fn what_the_kernel_should_handle_passes_untouched() {
    let host = underlay(config());
    let vxlan_ok = vxlan(VXLAN_I, OVERLAY_VNI, &inner(&Ip::udp(C2, C1)));
    let short = Ip {
        payload: vxlan_ok.payload[..12].to_vec(),
        ..vxlan_ok.clone()
    };
    let cases = [
        (
            "the host's own UDP",
            on_wire(H1_MAC, &Ip::udp(H2, H1)),
            &[UnderlayRx][..],
        ),
        (
            "ARP",
            ethernet([0xff; 6], H2_MAC, ETHERTYPE_ARP, &[0; 28]),
            &[UnderlayRx],
        ),
        (
            "IPv6",
            ethernet(H1_MAC, H2_MAC, ETHERTYPE_IPV6, &[0x60; 40]),
            &[UnderlayRx],
        ),
        (
            "outer IP options",
            on_wire(
                H1_MAC,
                &Ip {
                    option_words: 1,
                    ..vxlan_ok.clone()
                },
            ),
            &[UnderlayRx, UnderlayOverlayPass],
        ),
        (
            "truncated VXLAN",
            on_wire(H1_MAC, &short),
            &[UnderlayRx, UnderlayOverlayPass],
        ),
        (
            "a first fragment, for the kernel to reassemble",
            on_wire(
                H1_MAC,
                &Ip {
                    frag: 0x2000,
                    ..vxlan_ok.clone()
                },
            ),
            &[UnderlayRx, UnderlayOverlayPass, OverlayFragment],
        ),
        (
            "a later fragment, whose payload is no UDP header",
            on_wire(
                H1_MAC,
                &Ip {
                    frag: 0x0010,
                    ..vxlan_ok.clone()
                },
            ),
            &[UnderlayRx],
        ),
    ];
    let failures = cases
        .into_iter()
        .filter_map(|(case, frame, counted)| {
            let out = run(&host, &frame, Skb::default());
            let mismatch = out.mismatch(TC_ACT_OK, counted, frame.len(), true);
            let changed = (out.frame != frame).then(|| "frame changed".to_owned());
            mismatch.or(changed).map(|m| format!("{case}: {m}"))
        })
        .collect();
    all_cases(failures);
}

#[test]
fn overlay_packets_from_non_peers_are_dropped() {
    let host = underlay(config());
    let frame = on_wire(
        H1_MAC,
        &Ip {
            src: [192, 168, 56, 199],
            ..vxlan(VXLAN_I, OVERLAY_VNI, &inner(&Ip::udp(C2, C1)))
        },
    );
    let out = run(&host, &frame, Skb::default());
    out.assert(
        TC_ACT_SHOT,
        &[UnderlayRx, DropOverlayNotPeer],
        frame.len(),
        true,
    );
}

/// Defect: a VXLAN packet for another host (seen on a promiscuous or bridged underlay) was
/// decapsulated into a local container if its inner destination was one. It is passed on to
/// the kernel untouched (which forwards it on a bridge or drops it as for another host), and
/// not filtered either: it is not ours to police.
#[test]
fn overlay_packets_for_another_host_are_passed_on_untouched() {
    let host = underlay(config());
    let inner = inner(&Ip::udp(C2, C1));
    let to_h1 = vxlan(VXLAN_I, OVERLAY_VNI, &inner);
    let to_h3 = Ip {
        dst: H3,
        ..to_h1.clone()
    };
    let from_stranger = Ip {
        src: [10, 0, 0, 1],
        ..to_h3.clone()
    };
    let cases = [
        ("another host's address and MAC", on_wire(H3_MAC, &to_h3)),
        ("this host's address, another MAC", on_wire(H3_MAC, &to_h1)),
        ("another host's address, this MAC", on_wire(H1_MAC, &to_h3)),
        (
            "from a non-peer to another host",
            on_wire(H3_MAC, &from_stranger),
        ),
    ];
    let failures = cases
        .into_iter()
        .filter_map(|(case, frame)| {
            let out = run(&host, &frame, Skb::default());
            let mismatch = out.mismatch(
                TC_ACT_OK,
                &[UnderlayRx, UnderlayOtherHost],
                frame.len(),
                true,
            );
            let changed = (out.frame != frame).then(|| "frame changed".to_owned());
            mismatch.or(changed).map(|m| format!("{case}: {m}"))
        })
        .collect();
    all_cases(failures);
}

#[test]
fn without_a_known_mac_the_address_alone_decides() {
    let host = underlay(Config {
        underlay_mac: [0; 6],
        ..config()
    });
    let frame = from_h2(&inner(&Ip::udp(C2, C1)));
    let out = run(&host, &frame, Skb::default());
    out.assert(TC_ACT_REDIRECT, &DELIVERED, frame.len(), true);
}

#[test]
fn xdp_drops_overlay_packets_from_non_peers_and_passes_the_rest() {
    let host = super::host(&[UNDERLAY_XDP], config()).unwrap();
    let overlay = vxlan(VXLAN_I, OVERLAY_VNI, &inner(&Ip::udp(C2, C1)));
    let cases = [
        (
            "the host's own UDP",
            on_wire(H1_MAC, &Ip::udp(H2, H1)),
            XDP_PASS,
            &[UnderlayRx][..],
        ),
        (
            "from a peer",
            on_wire(H1_MAC, &overlay),
            XDP_PASS,
            &[UnderlayRx, UnderlayOverlayPass],
        ),
        (
            "from a non-peer",
            on_wire(
                H1_MAC,
                &Ip {
                    src: [10, 0, 0, 1],
                    ..overlay.clone()
                },
            ),
            XDP_DROP,
            &[UnderlayRx, DropOverlayNotPeer],
        ),
        (
            "for another host",
            on_wire(
                H3_MAC,
                &Ip {
                    dst: H3,
                    ..overlay.clone()
                },
            ),
            XDP_PASS,
            &[UnderlayRx, UnderlayOtherHost],
        ),
    ];
    let failures = cases
        .into_iter()
        .filter_map(|(case, frame, code, counted)| {
            let out = host.run(UNDERLAY_XDP, &frame, None).expect("test run");
            out.mismatch(code, counted, frame.len(), true)
                .map(|m| format!("{case}: {m}"))
        })
        .collect();
    all_cases(failures);
}
