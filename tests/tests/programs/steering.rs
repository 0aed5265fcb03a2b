//! `tap_steering`: the crypto device's queue for each frame. The kernel takes the returned
//! value modulo the queue count, so the tests compare what it returns.

use weave_common::{
    endpoint::ipv4_key,
    programs,
    seal::{flow_hint, marked_mac},
};
use weave_tests::frames::{Ip, ethernet};

use super::*;

const ETH_P_IP: u16 = 0x0800;
const TCP: u8 = 6;

fn steer(frame: &[u8]) -> u32 {
    require_root();
    let programs = Programs::load(&[programs::TAP_STEERING]).expect("load");
    let run = programs
        .run(programs::TAP_STEERING, frame, None)
        .expect("run");
    run.code as u32
}

/// A container's TCP segment from `src:sport` to `dst:dport`, marked for sealing to H2.
fn to_seal(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut payload = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    payload.extend_from_slice(&[0; 16]);
    let ip = Ip {
        src,
        dst,
        proto: TCP,
        payload,
        ..Ip::default()
    };
    ethernet(marked_mac(ipv4_key(H2)), mac(src), ETH_P_IP, &ip.bytes())
}

#[test]
fn a_flow_to_seal_gets_its_hint_in_both_directions() {
    let there = steer(&to_seal(C1, C2, 40_000, 5201));
    let back = steer(&to_seal(C2, C1, 5201, 40_000));
    assert_eq!(there, back);
    let ports = [40_000u16.to_be_bytes(), 5201u16.to_be_bytes()].concat();
    assert_eq!(
        there,
        u32::from(flow_hint(C1, C2, ports.try_into().unwrap()))
    );
    // Another flow of the same two containers: the ports take part.
    let other = steer(&to_seal(C1, C2, 40_001, 5201));
    assert_ne!(there, other);
}

#[test]
fn a_sealed_datagram_goes_by_its_source_port() {
    let mut udp = [40_001u16.to_be_bytes(), 6784u16.to_be_bytes()].concat();
    udp.extend_from_slice(&[0; 4]);
    udp.extend_from_slice(b"sealed datagram");
    let ip = Ip {
        src: H2,
        dst: H1,
        payload: udp,
        ..Ip::default()
    };
    let frame = ethernet(H1_MAC, H2_MAC, ETH_P_IP, &ip.bytes());
    assert_eq!(steer(&frame), 40_001);
}

#[test]
fn what_is_not_ipv4_goes_to_the_first_queue() {
    let frame = ethernet(marked_mac(ipv4_key(H2)), mac(C1), 0x86dd, &[0x60; 40]);
    assert_eq!(steer(&frame), 0);
}
