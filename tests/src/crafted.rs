//! Crafted frames in namespaces: sent raw from a packet socket, small Python programs that
//! report what arrived, and [`inject`], which sends copies of a frame and checks its verdict
//! where it was judged and where it would have arrived. For the hostile-input tests, which
//! send what no well-behaved stack would.

use std::{
    io::{BufReader, Lines},
    process::{Child, ChildStdout, Output},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};

use crate::{Container, Host, frames::hex, spawn_in, wait_for_line, wait_until};

/// Sends each hex-encoded frame given on the command line, raw, out of interface argv[1].
const INJECT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for frame in sys.argv[2:]:
    s.send(bytes.fromhex(frame))
"#;

/// Arguments for `python3` to send `frames` (hex) out of `iface`.
pub fn inject_args<'a>(iface: &'a str, frames: &'a [String]) -> Vec<&'a str> {
    let mut args = vec!["-c", INJECT, iface];
    args.extend(frames.iter().map(String::as_str));
    args
}

/// The result of running [`inject_args`] (or any Python sender): it must have succeeded.
pub fn injected(out: Output) -> Result<()> {
    ensure!(
        out.status.success(),
        "injecting: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The MAC of link `dev` in `host`.
pub fn link_mac(host: &Host, dev: &str) -> Result<[u8; 6]> {
    let json: serde_json::Value = serde_json::from_str(&host.ip(["-j", "link", "show", dev])?)?;
    let text = json[0]["address"].as_str().context("no MAC")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

/// A Python program that was started and has said it is ready.
pub struct Python {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Python {
    /// Starts `script` with `args` in namespace `ns`; returns once it has printed "ready", so
    /// whatever it listens for can be sent.
    pub fn start(ns: &str, script: &str, args: &[&str]) -> Result<Self> {
        let mut all = vec!["-c", script];
        all.extend_from_slice(args);
        let (child, mut lines) = spawn_in(ns, "python3", &all)?;
        wait_for_line(&mut lines, "ready")?;
        Ok(Self { child, lines })
    }

    /// The line it prints after "ready", once it has ended.
    pub fn answer(mut self) -> Result<String> {
        let answer = self
            .lines
            .next()
            .context("python ended without an answer")??;
        self.child.wait()?;
        Ok(answer)
    }
}

/// Prints "ready", then how many IPv4 frames from argv[1] to argv[2] with IP id 0x1234 (the
/// crafted ones) arrived on `ethwe`, once argv[3] have or after 5 s. A packet socket, so
/// that fragments and frames no socket would take count too.
const CAPTURE: &str = r#"
import socket, sys, time
src, dst, want = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("ethwe", 0)); s.settimeout(0.2)
print("ready", flush=True)
seen, deadline = 0, time.monotonic() + 5
while seen < want and time.monotonic() < deadline:
    try:
        frame, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    ip = frame[14:]
    crafted = ip[12:16] == src and ip[16:20] == dst and ip[4:6] == b"\x12\x34"
    if crafted and addr[2] != socket.PACKET_OUTGOING:
        seen += 1
print(seen, flush=True)
"#;

/// How many copies of each crafted frame are sent.
pub const COPIES: usize = 3;

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

/// Where a crafted frame would arrive if it were forwarded: the container `at` on `host`,
/// which sees it as IPv4 from `src` to `dst`.
pub struct Receiver<'a> {
    pub host: &'a Host,
    pub at: &'a Container,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Receiver<'_> {
    /// Starts a capture in the receiving container for `want` crafted frames.
    fn capture(&self, want: usize) -> Result<Python> {
        let [src, dst] = [self.src, self.dst].map(|ip| std::net::Ipv4Addr::from(ip).to_string());
        Python::start(&self.at.name, CAPTURE, &[&src, &dst, &want.to_string()])
    }
}

/// Local and overlay deliveries on `host`: what grows when a frame reaches a container there.
fn deliveries(host: &Host) -> Result<u64> {
    let now = counters(host)?;
    Ok(count(&now, "local_delivered") + count(&now, "overlay_delivered"))
}

/// Injects `COPIES` of `frame` and checks the verdict: `expect` grew by at least that much on
/// `host`, and the receiver's container got every copy when `delivered`, else neither host
/// delivered anything to a container.
pub fn inject(
    case: &str,
    send: &dyn Fn(&[String]) -> Result<()>,
    frame: &[u8],
    (host, receiver): (&Host, &Receiver),
    expect: &str,
    delivered: bool,
) -> Result<()> {
    let before = counters(host)?;
    let delivered_before = (deliveries(host)?, deliveries(receiver.host)?);
    let capture = delivered.then(|| receiver.capture(COPIES)).transpose()?;
    let frames = vec![hex(frame); COPIES];
    send(&frames).with_context(|| format!("injecting {case}"))?;
    wait_until(Duration::from_secs(5), &format!("{case}: {expect}"), || {
        Ok(count(&counters(host)?, expect) >= count(&before, expect) + COPIES as u64)
    })?;
    if let Some(capture) = capture {
        let arrived = capture.answer()?;
        ensure!(
            arrived == COPIES.to_string(),
            "{case}: {arrived} of {COPIES} copies arrived in {}",
            receiver.at.name
        );
    } else {
        let after = (deliveries(host)?, deliveries(receiver.host)?);
        ensure!(
            after == delivered_before,
            "{case}: deliveries to containers (sender's host, receiver's host) went from \
             {delivered_before:?} to {after:?}"
        );
    }
    let after = counters(host)?;
    eprintln!(
        "{case}: {expect} +{}",
        count(&after, expect) - count(&before, expect)
    );
    Ok(())
}
