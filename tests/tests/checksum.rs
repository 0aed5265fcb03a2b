//! The outer UDP checksum of VXLAN: zero on both ways of sending (RFC 7348 allows it over
//! IPv4, and it is the kernel VXLAN device's own default). eBPF-built headers cannot afford a
//! checksum over the whole payload; the device path is told to leave it out too
//! (BPF_F_ZERO_CSUM_TX), so a receiver never sees two kinds of packets from one overlay.

use anyhow::{Result, ensure};
use weave_tests::{Segment, crafted::Python, require_root, unique_name};

/// Prints "ready", then "<vxlan packets> <with a nonzero UDP checksum>" seen arriving on
/// eth0 for the VXLAN port, once argv[1] have arrived or after 5 s.
const VXLAN_CHECKSUMS: &str = r#"
import socket, struct, sys, time
want = int(sys.argv[1])
# ETH_P_ALL: only such taps see a frame before TC ingress, which decapsulates it.
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0)); s.settimeout(0.2)
print("ready", flush=True)
seen, nonzero, deadline = 0, 0, time.monotonic() + 5
while seen < want and time.monotonic() < deadline:
    try:
        frame, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    if addr[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00" or ip[9] != 17:
        continue
    dport, csum = struct.unpack("!H2xH", ip[ihl + 2:ihl + 8])
    if dport == 6784:
        seen += 1
        nonzero += csum != 0
print(seen, nonzero, flush=True)
"#;

#[test]
fn vxlan_leaves_with_a_zero_udp_checksum_whichever_way_it_was_wrapped() -> Result<()> {
    require_root();
    let prefix = unique_name("k");
    let seg = Segment::new(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    // h1 sends through the VXLAN device, h2 builds its headers in eBPF.
    h1.agent_ok(&["launch", "--encap", "vxlan"])?;
    h2.agent_ok(&["join", "192.168.56.101"])?;
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    ensure!(c1.ping("192.168.1.20", 1)?, "no connectivity");

    for (sender, receiver, from, to, way) in [
        (h1, h2, &c1, "192.168.1.20", "the VXLAN device"),
        (h2, h1, &c2, "192.168.1.10", "eBPF-built headers"),
    ] {
        let capture = Python::start(&receiver.name, VXLAN_CHECKSUMS, &["4"])?;
        ensure!(from.ping(to, 4)?, "pings from {} failed", sender.name);
        let answer = capture.answer()?;
        let counts: Vec<u32> = answer
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        ensure!(counts.len() == 2, "capture said {answer:?}");
        ensure!(
            counts[0] >= 4,
            "only {} VXLAN packets through {way}",
            counts[0]
        );
        ensure!(
            counts[1] == 0,
            "{} of {} VXLAN packets through {way} carried a UDP checksum",
            counts[1],
            counts[0]
        );
    }
    Ok(())
}
