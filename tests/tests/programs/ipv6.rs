//! IPv6 in `container_tc` (neighbour discovery answered, forwarding and its drops) and in
//! `tap_tc` (opened frames from a peer, the receive checks `overlay_tc` shares). C1, C3 and
//! C2 (on H2) are on the link fd00:1::/64, D1 on fd00:2::/64; each also has its link-local
//! address on its link.

use weave_common::{
    counters::CounterId::{self, *},
    endpoint::{ENCAP_VXLAN_DEVICE, ENDPOINT_LOCAL, ipv4_key},
    ipv6::{Endpoint6, Ipv6Key, link_local, network},
    policy::LinkPair,
    programs::{CONTAINER_TC, TAP_TC, UNDERLAY_TC},
    seal::marked_mac,
};
use weave_tests::{
    frames::{
        ETHERTYPE_IPV6, ethernet, hex, icmpv6, neighbour_advertisement, neighbour_solicitation,
        solicited_node, udp6,
    },
    programs::{Programs, Run, Skb, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
};

use super::{container::on_veth, underlay::from_h2, *};

const LINK_A: Ipv6Key = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const LINK_B: Ipv6Key = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn addr(link: Ipv6Key, host: u8) -> Ipv6Key {
    let mut a = link;
    a[15] = host;
    a
}

fn a1() -> Ipv6Key {
    addr(LINK_A, 0x10)
}
fn a2() -> Ipv6Key {
    addr(LINK_A, 0x20)
}
fn a3() -> Ipv6Key {
    addr(LINK_A, 0x30)
}
fn b1() -> Ipv6Key {
    addr(LINK_B, 0x10)
}

fn on(link: Ipv6Key, mac: [u8; 6], flags: u8, ifindex: u32, peer: [u8; 4]) -> Endpoint6 {
    Endpoint6 {
        mac,
        link_prefix: 64,
        flags,
        ifindex,
        peer: ipv4_key(peer),
        link: network(link, 64),
    }
}

/// H1 with the IPv4 endpoints of [`host`] and these IPv6 addresses.
fn host6(programs: &[&str], config: Config) -> Programs {
    let mut host = host(programs, config).unwrap();
    let here = |link, ip, veth| on(link, mac(ip), ENDPOINT_LOCAL, veth, [0; 4]);
    for (address, ep) in [
        (a1(), here(LINK_A, C1, C1_VETH)),
        (link_local(mac(C1)), here(LINK_A, C1, C1_VETH)),
        (a3(), here(LINK_A, C3, C3_VETH)),
        (b1(), here(LINK_B, D1, D1_VETH)),
        (link_local(mac(D1)), here(LINK_B, D1, D1_VETH)),
        (a2(), on(LINK_A, mac(C2), 0, 0, H2)),
        (link_local(mac(C2)), on(LINK_A, mac(C2), 0, 0, H2)),
    ] {
        host.add_endpoint6(address, ep).unwrap();
    }
    host
}

fn from_c1(ip: &[u8]) -> Vec<u8> {
    ethernet(STALE_MAC, mac(C1), ETHERTYPE_IPV6, ip)
}

fn run(host: &Programs, name: &str, frame: &[u8], veth: u32) -> Run {
    host.run(name, frame, on_veth(veth)).expect("test run")
}

/// Runs each (case, frame, veth, reason) through `container_tc` and fails once, naming every
/// case that was not dropped for `reason`.
fn container_drops(host: &Programs, cases: Vec<(&str, Vec<u8>, u32, CounterId)>) {
    let failures = cases
        .into_iter()
        .filter_map(|(what, frame, veth, reason)| {
            let out = run(host, CONTAINER_TC, &frame, veth);
            let m = out.mismatch(TC_ACT_SHOT, &[ContainerRx, reason], frame.len(), false)?;
            Some(format!("{what}: {m}"))
        })
        .collect();
    all_cases(failures);
}

#[test]
fn solicitations_are_answered_for_the_link_only() {
    let host = host6(&[CONTAINER_TC], config());
    // Resolution of a local and of a remote address, global and link-local.
    for (asker, target, target_mac) in [
        (a1(), a3(), mac(C3)),
        (a1(), a2(), mac(C2)),
        (link_local(mac(C1)), link_local(mac(C2)), mac(C2)),
    ] {
        let ns = neighbour_solicitation(mac(C1), asker, target);
        let out = run(&host, CONTAINER_TC, &ns, C1_VETH);
        out.assert(
            TC_ACT_REDIRECT,
            &[ContainerRx, Ipv6NdAnswered],
            ns.len(),
            false,
        );
        assert_eq!(
            hex(&out.frame),
            hex(&neighbour_advertisement(target_mac, target, mac(C1), asker)),
            "the advertisement for {target:02x?}"
        );
    }
    let (group, group_mac) = solicited_node(a3());
    let rs_group = addr([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2);
    let cases: Vec<(&str, Vec<u8>, u32, CounterId)> = vec![
        (
            "another link's address",
            neighbour_solicitation(mac(C1), a1(), b1()),
            C1_VETH,
            DropIsolated,
        ),
        (
            "another link's link-local address",
            neighbour_solicitation(mac(C1), link_local(mac(C1)), link_local(mac(D1))),
            C1_VETH,
            DropIsolated,
        ),
        (
            "an address nobody holds",
            neighbour_solicitation(mac(C1), a1(), addr(LINK_A, 0x99)),
            C1_VETH,
            DropUnknownDst,
        ),
        (
            "asking as another endpoint",
            neighbour_solicitation(mac(C1), a3(), a2()),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "a duplicate address probe",
            neighbour_solicitation(mac(C1), [0; 16], a3()),
            C1_VETH,
            DropIpv6Control,
        ),
        (
            "a solicitation from off the link (hop limit 64)",
            {
                let mut ns = neighbour_solicitation(mac(C1), a1(), a3());
                ns[14 + 7] = 64;
                ns
            },
            C1_VETH,
            DropMalformed,
        ),
        (
            "a router solicitation",
            ethernet(
                [0x33, 0x33, 0, 0, 0, 2],
                mac(C1),
                ETHERTYPE_IPV6,
                &icmpv6(a1(), rs_group, 133, &[0; 4]),
            ),
            C1_VETH,
            DropIpv6Control,
        ),
        (
            "a multicast listener report",
            ethernet(
                [0x33, 0x33, 0, 0, 0, 0x16],
                mac(C1),
                ETHERTYPE_IPV6,
                &icmpv6(a1(), addr(rs_group, 0x16), 143, &[0; 24]),
            ),
            C1_VETH,
            DropIpv6Control,
        ),
        (
            "a datagram to a solicited-node group",
            ethernet(group_mac, mac(C1), ETHERTYPE_IPV6, &udp6(a1(), group)),
            C1_VETH,
            DropIpv6Control,
        ),
    ];
    container_drops(&host, cases);
}

#[test]
fn unicast_goes_to_the_link_and_nowhere_else() {
    let host = host6(
        &[CONTAINER_TC],
        Config {
            encap: ENCAP_VXLAN_DEVICE,
            ..config()
        },
    );
    for (dst, dst_mac, counter) in [
        (a3(), mac(C3), Ipv6LocalDelivered),
        (a2(), mac(C2), Ipv6RemoteSent),
    ] {
        let frame = from_c1(&udp6(a1(), dst));
        let out = run(&host, CONTAINER_TC, &frame, C1_VETH);
        out.assert(TC_ACT_REDIRECT, &[ContainerRx, counter], frame.len(), false);
        assert_eq!(&out.frame[..6], &dst_mac, "the destination's own MAC");
        assert_eq!(&out.frame[6..], &frame[6..], "nothing else changed");
    }
    let frame = from_c1(&udp6(link_local(mac(C1)), link_local(mac(C2))));
    run(&host, CONTAINER_TC, &frame, C1_VETH).assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, Ipv6RemoteSent],
        frame.len(),
        false,
    );
    let cases: Vec<(&str, Vec<u8>, u32, CounterId)> = vec![
        (
            "a spoofed source",
            from_c1(&udp6(a3(), a2())),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "another endpoint's MAC",
            ethernet(mac(C2), mac(C3), ETHERTYPE_IPV6, &udp6(a1(), a2())),
            C1_VETH,
            DropSpoofed,
        ),
        (
            "from another veth",
            from_c1(&udp6(a1(), a2())),
            C3_VETH,
            DropSpoofed,
        ),
        (
            "another link",
            from_c1(&udp6(a1(), b1())),
            C1_VETH,
            DropIsolated,
        ),
        (
            "another link, link-local",
            from_c1(&udp6(link_local(mac(C1)), link_local(mac(D1)))),
            C1_VETH,
            DropIsolated,
        ),
        (
            "nobody's address",
            from_c1(&udp6(a1(), addr(LINK_A, 0x99))),
            C1_VETH,
            DropUnknownDst,
        ),
    ];
    container_drops(&host, cases);
}

/// A direction the IPv6 policy map holds opens another link: its neighbour discovery and its
/// frames, that direction only.
#[test]
fn a_policy_entry_opens_another_link_one_way() {
    let mut host = host6(&[CONTAINER_TC], config());
    host.allow6(LinkPair {
        src_link: network(LINK_A, 64),
        dst_link: network(LINK_B, 64),
        src_prefix: 64,
        dst_prefix: 64,
        pad: [0; 2],
    })
    .unwrap();
    let ns = neighbour_solicitation(mac(C1), a1(), b1());
    run(&host, CONTAINER_TC, &ns, C1_VETH).assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, Ipv6NdAnswered],
        ns.len(),
        false,
    );
    let frame = from_c1(&udp6(a1(), b1()));
    run(&host, CONTAINER_TC, &frame, C1_VETH).assert(
        TC_ACT_REDIRECT,
        &[ContainerRx, Ipv6LocalDelivered],
        frame.len(),
        false,
    );
    let back = ethernet(STALE_MAC, mac(D1), ETHERTYPE_IPV6, &udp6(b1(), a1()));
    container_drops(
        &host,
        vec![("the direction not written", back, D1_VETH, DropIsolated)],
    );
}

/// An opened frame from H2 meets the checks every frame from a peer meets.
#[test]
fn frames_from_a_peer_reach_their_link_only() {
    let host = host6(&[TAP_TC], config());
    let opened = |src, dst, sender_mac| {
        ethernet(
            marked_mac(ipv4_key(H2)),
            sender_mac,
            ETHERTYPE_IPV6,
            &udp6(src, dst),
        )
    };
    let frame = opened(a2(), a1(), mac(C2));
    let out = run(&host, TAP_TC, &frame, 0);
    out.assert(
        TC_ACT_REDIRECT,
        &[OverlayRx, Ipv6Delivered],
        frame.len(),
        false,
    );
    assert_eq!(&out.frame[..6], &mac(C1));
    let frame = opened(link_local(mac(C2)), link_local(mac(C1)), mac(C2));
    run(&host, TAP_TC, &frame, 0).assert(
        TC_ACT_REDIRECT,
        &[OverlayRx, Ipv6Delivered],
        frame.len(),
        false,
    );
    let mut failures = Vec::new();
    let cases: Vec<(&str, Vec<u8>, CounterId)> = vec![
        (
            "a local endpoint's address",
            opened(a3(), a1(), mac(C3)),
            DropOverlaySpoofed,
        ),
        (
            "another endpoint's MAC",
            opened(a2(), a1(), mac(D2)),
            DropOverlaySpoofed,
        ),
        ("another link", opened(a2(), b1(), mac(C2)), DropIsolated),
        (
            "an unknown sender",
            opened(addr(LINK_A, 0x99), a1(), mac(C2)),
            DropOverlayUnknownSrc,
        ),
        (
            "not for an endpoint here",
            opened(a2(), addr(LINK_A, 0x99), mac(C2)),
            DropUnknownDst,
        ),
    ];
    for (what, frame, reason) in cases {
        let out = run(&host, TAP_TC, &frame, 0);
        if let Some(m) = out.mismatch(TC_ACT_SHOT, &[OverlayRx, reason], frame.len(), false) {
            failures.push(format!("{what}: {m}"));
        }
    }
    all_cases(failures);
}

/// `underlay_tc` strips IPv6 from a peer as it strips IPv4, and tells the kernel the packet
/// inside is IPv6 now; what it does not strip (a frame a relay sent on) takes the device.
#[test]
fn ipv6_from_a_peer_is_decapsulated_into_the_container() {
    let host = host6(&[UNDERLAY_TC], config());
    let frame = ethernet(STALE_MAC, mac(C2), ETHERTYPE_IPV6, &udp6(a2(), a1()));
    let wire = from_h2(&frame);
    let out = host.run(UNDERLAY_TC, &wire, Some(Skb::default())).unwrap();
    out.assert(
        TC_ACT_REDIRECT,
        &[
            UnderlayRx,
            UnderlayOverlayPass,
            OverlayRx,
            UnderlayDecap,
            Ipv6Delivered,
        ],
        frame.len() + 50,
        true,
    );
    assert_eq!(
        hex(&out.frame),
        hex(&[&mac(C1)[..], &frame[6..]].concat()),
        "the inner frame, to C1's MAC, typed IPv6"
    );
    let mut failures = Vec::new();
    for (what, inner, reason) in [
        (
            "a spoofed source",
            ethernet(STALE_MAC, mac(C2), ETHERTYPE_IPV6, &udp6(a3(), a1())),
            DropOverlaySpoofed,
        ),
        (
            "another link",
            ethernet(STALE_MAC, mac(C2), ETHERTYPE_IPV6, &udp6(a2(), b1())),
            DropIsolated,
        ),
    ] {
        let wire = from_h2(&inner);
        let out = host.run(UNDERLAY_TC, &wire, Some(Skb::default())).unwrap();
        if let Some(m) = out.mismatch(
            TC_ACT_SHOT,
            &[UnderlayRx, UnderlayOverlayPass, OverlayRx, reason],
            wire.len(),
            true,
        ) {
            failures.push(format!("{what}: {m}"));
        }
    }
    all_cases(failures);
    let host = host6(
        &[UNDERLAY_TC],
        Config {
            encap: ENCAP_VXLAN_DEVICE,
            ..config()
        },
    );
    let out = host.run(UNDERLAY_TC, &wire, Some(Skb::default())).unwrap();
    out.assert(
        TC_ACT_OK,
        &[UnderlayRx, UnderlayOverlayPass],
        wire.len(),
        true,
    );
}
