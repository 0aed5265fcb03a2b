//! Crafted frames, injected raw into a container's `ethwe` and onto the underlay from a peer:
//! each is dropped or passed as designed and counted under the expected counter, the programs
//! load (the verifier never rejects them), and normal traffic is unaffected afterwards.

use std::{
    io::{BufReader, Lines},
    process::{Child, ChildStdout},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Host, Segment, require_root, spawn_in, unique_name, wait_for_line, wait_until};

/// ECN field values (RFC 3168).
const ECN_ECT0: u8 = 2;
const ECN_CE: u8 = 3;

/// Sends each hex-encoded frame given on the command line, raw, out of interface argv[1].
const INJECT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for frame in sys.argv[2:]:
    s.send(bytes.fromhex(frame))
"#;

/// Arguments for `python3` to send `frames` (hex) out of `iface`.
fn inject_args<'a>(iface: &'a str, frames: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["-c", INJECT, iface];
    args.extend(frames.iter().map(String::as_str));
    args
}

fn injected(out: std::process::Output) -> Result<()> {
    ensure!(
        out.status.success(),
        "injecting: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// How many copies of each crafted frame are sent.
const COPIES: usize = 3;

const C1_IP: [u8; 4] = [192, 168, 1, 10];
const C2_IP: [u8; 4] = [192, 168, 1, 20];
const H1_IP: [u8; 4] = [192, 168, 56, 101];
const H2_IP: [u8; 4] = [192, 168, 56, 102];

fn mac_of(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x57, ip[0], ip[1], ip[2], ip[3]]
}

fn checksum(header: &[u8]) -> [u8; 2] {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Knobs for one IPv4 packet; `Default` is a well-formed UDP datagram.
#[derive(Clone)]
struct Ip {
    src: [u8; 4],
    dst: [u8; 4],
    version: u8,
    /// 32-bit words of options (NOPs).
    option_words: u8,
    /// Type of service: DSCP and ECN field.
    tos: u8,
    /// Flags and fragment offset field.
    frag: u16,
    /// Overrides the total length field.
    claimed_len: Option<u16>,
    proto: u8,
    payload: Vec<u8>,
}

impl Default for Ip {
    fn default() -> Self {
        Self {
            src: C1_IP,
            dst: C2_IP,
            version: 4,
            option_words: 0,
            tos: 0,
            frag: 0,
            claimed_len: None,
            proto: 17,
            // UDP 9999 -> 9999, no checksum, 8 bytes of data.
            payload: [&[0x27, 0x0f, 0x27, 0x0f, 0, 16, 0, 0][..], b"crafted!"].concat(),
        }
    }
}

impl Ip {
    fn bytes(&self) -> Vec<u8> {
        let ihl = 5 + self.option_words;
        let total = u16::from(ihl) * 4 + self.payload.len() as u16;
        let mut h = vec![(self.version << 4) | ihl, self.tos];
        h.extend_from_slice(&self.claimed_len.unwrap_or(total).to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[64, self.proto, 0, 0]);
        h.extend_from_slice(&self.src);
        h.extend_from_slice(&self.dst);
        h.extend(std::iter::repeat_n(1u8, usize::from(self.option_words) * 4));
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum);
        h.extend_from_slice(&self.payload);
        h
    }
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&dst[..], &src[..], &ethertype.to_be_bytes()[..], payload].concat()
}

/// A frame c1 could send towards c2.
fn from_c1(ip: &Ip) -> Vec<u8> {
    ethernet(mac_of(C2_IP), mac_of(C1_IP), 0x0800, &ip.bytes())
}

/// A frame c2 could send towards c1 (inside VXLAN from h2).
fn from_c2(ip: &Ip) -> Vec<u8> {
    ethernet(mac_of(C1_IP), mac_of(C2_IP), 0x0800, &ip.bytes())
}

fn arp_request(eth_src: [u8; 6], sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&sha);
    arp.extend_from_slice(&spa);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&tpa);
    ethernet([0xff; 6], eth_src, 0x0806, &arp)
}

/// A VXLAN datagram from h2 to h1 carrying `inner`, with the given flags byte and VNI.
fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Ip {
    let mut udp = vec![0xc0, 0x00, 0x1a, 0x80];
    udp.extend_from_slice(&(16 + inner.len() as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0, flags, 0, 0, 0]);
    udp.extend_from_slice(&(vni << 8).to_be_bytes());
    udp.extend_from_slice(inner);
    Ip {
        src: H2_IP,
        dst: H1_IP,
        payload: udp,
        ..Ip::default()
    }
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

fn link_mac(host: &Host, dev: &str) -> Result<[u8; 6]> {
    let json: serde_json::Value = serde_json::from_str(&host.ip(["-j", "link", "show", dev])?)?;
    let text = json[0]["address"].as_str().context("no MAC")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

/// Every counter's packet count on `host`.
fn counters(host: &Host) -> Result<serde_json::Map<String, serde_json::Value>> {
    let status = host.status()?;
    let map = status["counters"].as_object().context("no counters")?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.clone(), v["packets"].clone()))
        .collect())
}

fn count(snapshot: &serde_json::Map<String, serde_json::Value>, name: &str) -> u64 {
    snapshot.get(name).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// Injects `COPIES` of `frame` and checks the verdict: `expect` grew by at least that much on
/// `host`, and nothing was delivered to a container when `delivered` is false.
fn inject(
    case: &str,
    send: &dyn Fn(&[String]) -> Result<()>,
    frame: &[u8],
    host: &Host,
    expect: &str,
    delivered: bool,
) -> Result<()> {
    let before = counters(host)?;
    let frames = vec![hex(frame); COPIES];
    send(&frames).with_context(|| format!("injecting {case}"))?;
    wait_until(Duration::from_secs(5), &format!("{case}: {expect}"), || {
        Ok(count(&counters(host)?, expect) >= count(&before, expect) + COPIES as u64)
    })?;
    let after = counters(host)?;
    if !delivered {
        for name in ["local_delivered", "overlay_delivered"] {
            ensure!(
                count(&after, name) == count(&before, name),
                "{case}: {name} grew from {} to {}",
                count(&before, name),
                count(&after, name)
            );
        }
    }
    eprintln!(
        "{case}: {expect} +{}",
        count(&after, expect) - count(&before, expect)
    );
    Ok(())
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
    let ok = Ip::default();
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
            "IPv6",
            ethernet(mac_of(C2_IP), c1_mac, 0x86dd, &[0x60; 40]),
            "drop_not_ipv4_unicast",
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
        inject(case, &from_container, &frame, h1, expect, delivered)?;
    }

    // Onto the underlay, from h2 (a live peer) to h1.
    let (h1_mac, h2_mac) = (link_mac(h1, "eth0")?, link_mac(h2, "eth0")?);
    let on_wire = |ip: &Ip| ethernet(h1_mac, h2_mac, 0x0800, &ip.bytes());
    let inner_ok = from_c2(&Ip {
        src: C2_IP,
        dst: C1_IP,
        ..Ip::default()
    });
    let from_peer = |frames: &[String]| injected(h2.exec("python3", &inject_args("eth0", frames))?);
    let vni = 6784;
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
                    src: C2_IP,
                    dst: C1_IP,
                    claimed_len: Some(9000),
                    ..Ip::default()
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
                    0x0800,
                    &Ip {
                        src: C1_IP,
                        dst: C1_IP,
                        ..Ip::default()
                    }
                    .bytes(),
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
        inject(case, &from_peer, &frame, h1, expect, delivered)?;
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
    inner = ip[20 + 8 + 8 + 14:]
    if inner[9] == 17 and int.from_bytes(inner[22:24], "big") == 9998:
        print(ip[1] & 3, inner[1] & 3, flush=True)
        break
"#;

/// Starts a Python `script` in namespace `ns`; returns once it has printed "ready".
fn start_python(
    ns: &str,
    script: &str,
    arg: &str,
) -> Result<(Child, Lines<BufReader<ChildStdout>>)> {
    let (child, mut lines) = spawn_in(ns, "python3", &["-c", script, arg])?;
    wait_for_line(&mut lines, "ready")?;
    Ok((child, lines))
}

/// The last line a script started with [`start_python`] prints before it ends.
fn python_answer(mut child: Child, mut lines: Lines<BufReader<ChildStdout>>) -> Result<String> {
    let answer = lines.next().context("python ended without an answer")??;
    child.wait()?;
    Ok(answer)
}

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
    let (sniffer, lines) = start_python(&h2.name, VXLAN_SNIFFER, "")?;
    injected(c1.exec(
        "python3",
        &[
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 2); \
             s.sendto(b'ecn', ('192.168.1.20', 9998))",
        ],
    )?)?;
    let seen = python_answer(sniffer, lines)?;
    ensure!(
        seen == format!("{ECN_ECT0} {ECN_ECT0}"),
        "outer and inner ECN on the wire: {seen}"
    );

    // Receiving: CE on the outer header of an ECT(0) packet from h2 arrives as CE in c1.
    let (receiver, lines) = start_python(&c1.name, TOS_RECEIVER, "192.168.1.10")?;
    let (h1_mac, h2_mac) = (link_mac(h1, "eth0")?, link_mac(h2, "eth0")?);
    let inner = from_c2(&Ip {
        src: C2_IP,
        dst: C1_IP,
        tos: ECN_ECT0,
        ..Ip::default()
    });
    let outer = Ip {
        tos: ECN_CE,
        ..vxlan(0x08, 6784, &inner)
    };
    let frame = hex(&ethernet(h1_mac, h2_mac, 0x0800, &outer.bytes()));
    injected(h2.exec("python3", &inject_args("eth0", &[frame]))?)?;
    let tos = python_answer(receiver, lines)?;
    ensure!(tos == ECN_CE.to_string(), "TOS in c1: {tos}");
    Ok(())
}
