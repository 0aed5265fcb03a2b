//! `overlay_tc`: TC ingress of the VXLAN device, which hands it frames the kernel decapsulated
//! along with their tunnel metadata.
//!
//! A test run cannot supply that metadata (the skb it builds has no metadata dst), so
//! bpf_skb_get_tunnel_key fails and only that verdict is asserted here. The verdicts after a
//! successful read stay with the namespace test
//! `hostile::crafted_vxlan_through_the_vxlan_device_is_judged_by_overlay_tc`, which sends
//! through a real VXLAN device: drop_bad_vxlan (another VNI in the key), drop_malformed,
//! drop_not_ipv4_unicast, drop_overlay_spoofed, drop_overlay_unknown_src, drop_unknown_dst and
//! overlay_delivered. drop_isolated is not sent there: the inner checks are the ones
//! underlay_tc makes (`weave-ebpf/src/delivery.rs`), which decap.rs asserts case by case.
//! Reached by no test: drop_overlay_not_peer (the underlay's peer filter drops a non-peer's
//! VXLAN before the device sees it) and drop_kernel_refused.

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
