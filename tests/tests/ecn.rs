//! ECN through eBPF encapsulation (RFC 6040, as the kernel's tunnels do it), end to end
//! between two namespace hosts.

use anyhow::{Result, ensure};
use weave_tests::{
    Segment,
    crafted::{Python, inject_args, injected, link_mac},
    frames::{ETHERTYPE_IPV4, Ip, VXLAN_I, endpoint_mac, ethernet, hex, vxlan},
    require_root, unique_name,
};

/// ECN field values (RFC 3168).
const ECN_ECT0: u8 = 2;
const ECN_CE: u8 = 3;

const C1_IP: [u8; 4] = [192, 168, 1, 10];
const C2_IP: [u8; 4] = [192, 168, 1, 20];
const H1_IP: [u8; 4] = [192, 168, 56, 101];
const H2_IP: [u8; 4] = [192, 168, 56, 102];

/// Prints "ready", then the TOS byte of the first UDP datagram to argv[1]:9999.
const TOS_RECEIVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind((sys.argv[1], 9999)); s.settimeout(5)
print("ready", flush=True)
data, anc, flags, addr = s.recvmsg(2048, 64)
print([c[2][0] for c in anc if c[1] == socket.IP_TOS][0], flush=True)
"#;

/// Prints "ready", then the outer and inner ECN fields of the first VXLAN packet on eth0
/// that carries UDP to port 9998; gives up after 5 s. A tap for every protocol: it sees frames
/// before the TC program redirects them, a socket for IPv4 alone would not.
const VXLAN_SNIFFER: &str = r#"
import socket, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0)); s.settimeout(1)
deadline = time.monotonic() + 5
print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        frame = s.recv(4096)
    except socket.timeout:
        continue
    ip = frame[14:]
    if frame[12:14] != b"\x08\x00" or ip[9] != 17 or int.from_bytes(ip[22:24], "big") != 6784:
        continue
    # Link hellos go to the data port too, and carry no frame.
    if len(ip) < 20 + 8 + 8 + 14 + 24:
        continue
    inner = ip[20 + 8 + 8 + 14:]
    if inner[9] == 17 and int.from_bytes(inner[22:24], "big") == 9998:
        print(ip[1] & 3, inner[1] & 3, flush=True)
        break
"#;

/// ECN through eBPF encapsulation (RFC 6040, as the kernel's tunnels do it): the sender's
/// ECN field is copied to the outer header, and congestion marked on the outer header by the
/// underlay reaches the inner packet.
#[test]
fn ecn_marks_cross_the_tunnel_both_ways() -> Result<()> {
    require_root();
    let prefix = unique_name("e");
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    // 192.168.1.10 on h1, 192.168.1.20 on h2.
    let containers = seg.attach_one_each(&prefix, |i| format!("192.168.1.{}/24", 10 * (i + 1)))?;
    let c1 = &containers[0];

    // Sending: an ECT(0) datagram from c1 leaves h1 with ECT(0) on the outer header too.
    let sniffer = Python::start(&h2.name, VXLAN_SNIFFER, &[])?;
    injected(c1.exec(
        "python3",
        &[
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 2); \
             s.sendto(b'ecn', ('192.168.1.20', 9998))",
        ],
    )?)?;
    let seen = sniffer.answer()?;
    ensure!(
        seen == format!("{ECN_ECT0} {ECN_ECT0}"),
        "outer and inner ECN on the wire: {seen}"
    );

    // Receiving: CE on the outer header of an ECT(0) packet from h2 arrives as CE in c1.
    let receiver = Python::start(&c1.name, TOS_RECEIVER, &["192.168.1.10"])?;
    let (h1_mac, h2_mac) = (link_mac(h1, "eth0")?, link_mac(h2, "eth0")?);
    let inner = ethernet(
        endpoint_mac(C1_IP),
        endpoint_mac(C2_IP),
        ETHERTYPE_IPV4,
        &Ip {
            tos: ECN_ECT0,
            ..Ip::udp(C2_IP, C1_IP)
        }
        .bytes(),
    );
    let outer = Ip {
        tos: ECN_CE,
        ..vxlan(H2_IP, H1_IP, VXLAN_I, weave_common::OVERLAY_VNI, &inner)
    };
    let frame = hex(&ethernet(h1_mac, h2_mac, ETHERTYPE_IPV4, &outer.bytes()));
    injected(h2.exec("python3", &inject_args("eth0", &[frame]))?)?;
    let tos = receiver.answer()?;
    ensure!(tos == ECN_CE.to_string(), "TOS in c1: {tos}");
    Ok(())
}
