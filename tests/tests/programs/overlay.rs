//! `overlay_tc`: TC ingress of the VXLAN device, which hands it frames the kernel decapsulated
//! along with their tunnel metadata.
//!
//! A test run cannot supply that metadata (the skb it builds has no metadata dst), so
//! bpf_skb_get_tunnel_key fails and only that verdict is asserted here. Every verdict after a
//! successful read stays with the namespace tests (hostile.rs, overlay.rs), which send through
//! a real VXLAN device: drop_bad_vxlan (another VNI in the key), drop_overlay_not_peer (the key's
//! remote is no peer), and overlay_delivered, drop_not_ipv4_unicast, drop_malformed,
//! drop_overlay_spoofed, drop_overlay_unknown_src, drop_unknown_dst, drop_isolated and
//! drop_kernel_refused on the inner frame. The inner checks are the ones underlay_tc makes
//! (`weave-ebpf/src/delivery.rs`), which the underlay tests here assert case by case.

use weave_common::{counters::CounterId::*, programs::OVERLAY_TC};
use weave_tests::{
    frames::{ETHERTYPE_IPV4, Ip, ethernet},
    programs::TC_ACT_SHOT,
};

use super::*;

/// Defect: a failed tunnel-key read counted as drop_overlay_not_peer, blaming a peer for
/// what is a frame without tunnel metadata (not from the device's receive path).
#[test]
fn frames_without_tunnel_metadata_are_dropped_as_such() {
    let host = host(&[OVERLAY_TC], config()).unwrap();
    let frame = ethernet(mac(C1), mac(C2), ETHERTYPE_IPV4, &Ip::udp(C2, C1).bytes());
    let out = host
        .run(OVERLAY_TC, &frame, Some(Default::default()))
        .unwrap();
    out.assert(
        TC_ACT_SHOT,
        &[OverlayRx, DropNoTunnelKey],
        frame.len(),
        false,
    );
}
