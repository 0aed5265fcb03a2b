//! Crafted frames, injected raw into a container's `ethwe` and onto the underlay from a peer:
//! each is dropped or passed as designed and counted under the expected counter, a frame meant
//! to be forwarded arrives in the receiving container (a capture there sees every copy) and
//! a dropped one reaches no container on either host, the programs load (the verifier never
//! rejects them), and normal traffic is unaffected afterwards.

use anyhow::{Result, ensure};
use weave_tests::{
    Segment,
    crafted::{Receiver, inject, inject_args, injected, link_mac},
    frames::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Ip, arp_request, endpoint_mac, ethernet},
    require_root, unique_name,
};

/// Congestion experienced, in the IPv4 ECN field (RFC 3168).
const ECN_CE: u8 = 3;

const C1_IP: [u8; 4] = [192, 168, 1, 10];
const C2_IP: [u8; 4] = [192, 168, 1, 20];
const H1_IP: [u8; 4] = [192, 168, 56, 101];
const H2_IP: [u8; 4] = [192, 168, 56, 102];
const VNI: u32 = weave_common::OVERLAY_VNI;

fn mac_of(ip: [u8; 4]) -> [u8; 6] {
    endpoint_mac(ip)
}

/// A frame c1 could send towards c2.
fn from_c1(ip: &Ip) -> Vec<u8> {
    ethernet(mac_of(C2_IP), mac_of(C1_IP), ETHERTYPE_IPV4, &ip.bytes())
}

/// A frame c2 could send towards c1 (inside VXLAN from h2).
fn from_c2(ip: &Ip) -> Vec<u8> {
    ethernet(mac_of(C1_IP), mac_of(C2_IP), ETHERTYPE_IPV4, &ip.bytes())
}

/// A VXLAN datagram from h2 to h1 carrying `inner`, with the given flags byte and VNI.
fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Ip {
    weave_tests::frames::vxlan(H2_IP, H1_IP, flags, vni, inner)
}

#[test]
fn crafted_frames_are_counted_and_harmless() -> Result<()> {
    require_root();
    let prefix = unique_name("z");
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    ensure!(c1.ping("192.168.1.20", 2)?, "no baseline connectivity");

    let from_container =
        |frames: &[String]| injected(c1.exec("python3", &inject_args("ethwe", frames))?);
    let c1_mac = mac_of(C1_IP);
    let ok = Ip::udp(C1_IP, C2_IP);
    // Frames c1 sends are for c2 on h2.
    let to_c2 = Receiver {
        host: h2,
        at: &c2,
        src: C1_IP,
        dst: C2_IP,
    };
    for (case, frame, expect, delivered) in [
        (
            "truncated IPv4 header",
            from_c1(&ok)[..14 + 12].to_vec(),
            "drop_malformed",
            false,
        ),
        (
            "IP version 6 in an IPv4 frame",
            from_c1(&Ip {
                version: 6,
                ..ok.clone()
            }),
            "drop_malformed",
            false,
        ),
        (
            "total length beyond the frame (oversize claim)",
            from_c1(&Ip {
                claimed_len: Some(9000),
                ..ok.clone()
            }),
            "drop_malformed",
            false,
        ),
        (
            "header length under 20 bytes",
            {
                let mut f = from_c1(&ok);
                f[14] = 0x44;
                f
            },
            "drop_malformed",
            false,
        ),
        (
            "spoofed source address",
            from_c1(&Ip {
                src: [192, 168, 1, 99],
                ..ok.clone()
            }),
            "drop_spoofed",
            false,
        ),
        (
            "ARP whose sender MAC is not the frame's",
            arp_request(c1_mac, [0x02, 0, 0, 0, 0, 1], C1_IP, C2_IP),
            "drop_spoofed",
            false,
        ),
        (
            "ARP claiming another endpoint's address",
            arp_request(c1_mac, c1_mac, C2_IP, C2_IP),
            "drop_spoofed",
            false,
        ),
        (
            "IPv6 claiming more payload than it carries",
            ethernet(mac_of(C2_IP), c1_mac, ETHERTYPE_IPV6, &[0x60; 40]),
            "drop_malformed",
            false,
        ),
        (
            "IP options (legitimate: forwarded)",
            from_c1(&Ip {
                option_words: 2,
                ..ok.clone()
            }),
            "remote_sent",
            true,
        ),
        (
            "a fragment (legitimate: forwarded)",
            from_c1(&Ip {
                frag: 0x2000,
                ..ok.clone()
            }),
            "remote_sent",
            true,
        ),
        (
            "largest frame ethwe's MTU allows (forwarded)",
            from_c1(&Ip {
                payload: [
                    &[0x27, 0x0f, 0x27, 0x0f, 0x05, 0x92, 0, 0][..],
                    &[0x55; 1450 - 28],
                ]
                .concat(),
                ..ok.clone()
            }),
            "remote_sent",
            true,
        ),
    ] {
        inject(
            case,
            &from_container,
            &frame,
            (h1, &to_c2),
            expect,
            delivered,
        )?;
    }

    // Onto the underlay, from h2 (a live peer) to h1.
    let (h1_mac, h2_mac) = (link_mac(h1, "eth0")?, link_mac(h2, "eth0")?);
    let on_wire = |ip: &Ip| ethernet(h1_mac, h2_mac, ETHERTYPE_IPV4, &ip.bytes());
    let inner_ok = from_c2(&Ip::udp(C2_IP, C1_IP));
    // What h2 sends is for c1 on h1.
    let to_c1 = Receiver {
        host: h1,
        at: &c1,
        src: C2_IP,
        dst: C1_IP,
    };
    let from_peer = |frames: &[String]| injected(h2.exec("python3", &inject_args("eth0", frames))?);
    let vni = VNI;
    for (case, frame, expect, delivered) in [
        (
            "VXLAN with the I flag clear",
            on_wire(&vxlan(0x00, vni, &inner_ok)),
            "drop_bad_vxlan",
            false,
        ),
        (
            "VXLAN with another VNI",
            on_wire(&vxlan(0x08, 42, &inner_ok)),
            "drop_bad_vxlan",
            false,
        ),
        (
            "inner total length beyond the frame",
            on_wire(&vxlan(
                0x08,
                vni,
                &from_c2(&Ip {
                    claimed_len: Some(9000),
                    ..Ip::udp(C2_IP, C1_IP)
                }),
            )),
            "drop_malformed",
            false,
        ),
        (
            "inner source not hosted by the sending peer",
            on_wire(&vxlan(
                0x08,
                vni,
                &ethernet(
                    mac_of(C1_IP),
                    mac_of(C1_IP),
                    ETHERTYPE_IPV4,
                    &Ip::udp(C1_IP, C1_IP).bytes(),
                ),
            )),
            "drop_overlay_spoofed",
            false,
        ),
        (
            "VXLAN in an IP fragment (left to the kernel)",
            on_wire(&Ip {
                frag: 0x2000,
                ..vxlan(0x08, vni, &inner_ok)
            }),
            "overlay_fragment",
            false,
        ),
        (
            "congestion marked on a packet that does not do ECN",
            on_wire(&Ip {
                tos: ECN_CE,
                ..vxlan(0x08, vni, &inner_ok)
            }),
            "drop_ce_on_not_ect",
            false,
        ),
        (
            "truncated VXLAN (passed on, the kernel drops it)",
            on_wire(&Ip {
                payload: vxlan(0x08, vni, &[]).payload.into_iter().take(12).collect(),
                ..vxlan(0x08, vni, &[])
            }),
            "underlay_overlay_pass",
            false,
        ),
        (
            "well-formed VXLAN from the peer (delivered)",
            on_wire(&vxlan(0x08, vni, &inner_ok)),
            "overlay_delivered",
            true,
        ),
    ] {
        inject(case, &from_peer, &frame, (h1, &to_c1), expect, delivered)?;
    }

    // Nothing broke: the programs are still attached and the containers still talk.
    let status = h1.status()?;
    ensure!(
        status["programs"].as_array().is_some_and(|p| p.len() >= 4),
        "programs detached: {}",
        status["programs"]
    );
    ensure!(
        c1.ping("192.168.1.20", 3)?,
        "normal traffic broken after the crafted frames"
    );
    ensure!(
        c2.ping("192.168.1.10", 3)?,
        "normal traffic broken after the crafted frames"
    );
    Ok(())
}

/// Crafted VXLAN from a live peer to a host that receives through the kernel's VXLAN device
/// (`--encap vxlan`): there overlay_tc judges the inner frame with the tunnel key the device
/// hands it, which a BPF_PROG_TEST_RUN cannot supply (see tests/programs/overlay.rs).
#[test]
fn crafted_vxlan_through_the_vxlan_device_is_judged_by_overlay_tc() -> Result<()> {
    require_root();
    let prefix = unique_name("d");
    let seg = Segment::new(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    h1.agent_ok(&["launch", "--encap", "vxlan"])?;
    h2.agent_ok(&["join", "192.168.56.101"])?;
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let _c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    ensure!(c1.ping("192.168.1.20", 2)?, "no baseline connectivity");

    let (h1_mac, h2_mac) = (link_mac(h1, "eth0")?, link_mac(h2, "eth0")?);
    let on_wire = |inner: &[u8], vni: u32| {
        ethernet(
            h1_mac,
            h2_mac,
            ETHERTYPE_IPV4,
            &vxlan(0x08, vni, inner).bytes(),
        )
    };
    let from_peer = |frames: &[String]| injected(h2.exec("python3", &inject_args("eth0", frames))?);
    let to_c1 = Receiver {
        host: h1,
        at: &c1,
        src: C2_IP,
        dst: C1_IP,
    };
    let ok = Ip::udp(C2_IP, C1_IP);
    let nobody = [192, 168, 1, 99];
    let from_c1_itself = ethernet(
        mac_of(C1_IP),
        mac_of(C1_IP),
        ETHERTYPE_IPV4,
        &Ip::udp(C1_IP, C1_IP).bytes(),
    );
    let inner_ipv6 = ethernet(mac_of(C1_IP), mac_of(C2_IP), ETHERTYPE_IPV6, &[0x60; 40]);
    let too_long = Ip {
        claimed_len: Some(9000),
        ..ok.clone()
    };
    for (case, frame, expect, delivered) in [
        (
            "another VNI",
            on_wire(&from_c2(&ok), 42),
            "drop_bad_vxlan",
            false,
        ),
        (
            "inner total length beyond the frame",
            on_wire(&from_c2(&too_long), VNI),
            "drop_malformed",
            false,
        ),
        (
            "inner IPv6 claiming more payload than it carries",
            on_wire(&inner_ipv6, VNI),
            "drop_malformed",
            false,
        ),
        (
            "inner source hosted here",
            on_wire(&from_c1_itself, VNI),
            "drop_overlay_spoofed",
            false,
        ),
        (
            "inner source no endpoint has",
            on_wire(&from_c2(&Ip::udp(nobody, C1_IP)), VNI),
            "drop_overlay_unknown_src",
            false,
        ),
        (
            "inner destination no endpoint has",
            on_wire(&from_c2(&Ip::udp(C2_IP, nobody)), VNI),
            "drop_unknown_dst",
            false,
        ),
        (
            "well-formed (delivered)",
            on_wire(&from_c2(&ok), VNI),
            "overlay_delivered",
            true,
        ),
    ] {
        inject(case, &from_peer, &frame, (h1, &to_c1), expect, delivered)?;
    }
    Ok(())
}
