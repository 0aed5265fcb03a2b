//! Packet captures on a test switch (`tcpdump -w`), read back here: what crossed the wire, for
//! tests that must show what an eavesdropper on the path sees.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

/// A capture running in a namespace until [`Capture::stop`].
pub struct Capture {
    child: Child,
    file: PathBuf,
}

/// One captured frame: its bytes (cut at the snap length) and its length on the wire.
pub struct Frame {
    pub data: Vec<u8>,
    pub wire_len: usize,
}

impl Capture {
    /// Starts capturing every frame on `iface` in namespace `ns`, the first `snap` bytes of
    /// each; returns once tcpdump says it is listening.
    pub fn start(ns: &str, iface: &str, snap: usize) -> Result<Self> {
        let file = std::env::temp_dir().join(format!("{ns}-{iface}-{}.pcap", std::process::id()));
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-U", "-B", "65536",
            ])
            .args(["-s", &snap.to_string(), "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (cargo xtask setup installs it)")?;
        let stderr = child.stderr.take().context("piped")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next().transpose()? {
                Some(line) if line.contains("listening on") => break,
                Some(_) => {}
                None => {
                    let _ = child.wait();
                    bail!("tcpdump exited before it listened");
                }
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, file })
    }

    /// Stops the capture once everything that crossed before now is in the file, and reads
    /// every frame: a ping of a pattern of its own from namespace `ns` to `to` crosses last,
    /// and tcpdump writes frames in the order it sees them.
    pub fn stop_after_ping(self, ns: &str, to: &str) -> Result<Vec<Frame>> {
        const PATTERN: &str = "5eedf1a5c0de";
        let needle = [
            0x5e, 0xed, 0xf1, 0xa5, 0xc0, 0xde, 0x5e, 0xed, 0xf1, 0xa5, 0xc0, 0xde,
        ];
        crate::wait_until(
            std::time::Duration::from_secs(20),
            "the capture to catch up with the traffic",
            || {
                crate::run(
                    "ip",
                    [
                        "netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-p", PATTERN, to,
                    ],
                )?;
                let bytes = std::fs::read(&self.file).unwrap_or_default();
                Ok(bytes.windows(needle.len()).any(|w| w == needle))
            },
        )?;
        self.stop()
    }

    /// Stops the capture and reads every frame it wrote.
    pub fn stop(mut self) -> Result<Vec<Frame>> {
        // SIGINT: tcpdump flushes and closes the file.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let bytes = std::fs::read(&self.file).context("reading the capture")?;
        parse(&bytes)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The frames of a classic pcap file (microsecond, little-endian, as tcpdump writes here).
fn parse(bytes: &[u8]) -> Result<Vec<Frame>> {
    ensure!(bytes.len() >= 24, "a capture without a header");
    ensure!(
        bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "not a little-endian pcap"
    );
    let mut frames = Vec::new();
    let mut at = 24;
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    while at + 16 <= bytes.len() {
        let (incl, orig) = (word(bytes, at + 8), word(bytes, at + 12));
        let start = at + 16;
        if start + incl > bytes.len() {
            break;
        }
        frames.push(Frame {
            data: bytes[start..start + incl].to_vec(),
            wire_len: orig,
        });
        at = start + incl;
    }
    Ok(frames)
}

impl Frame {
    /// UDP payload of an IPv4 datagram to `port`, if this frame is one (as far as captured).
    pub fn udp_payload_to(&self, port: u16) -> Option<&[u8]> {
        let d = &self.data;
        if d.len() < 14 + 20 + 8 || d[12..14] != [0x08, 0x00] || d[23] != 17 {
            return None;
        }
        let udp = 14 + usize::from(d[14] & 0x0f) * 4;
        let dst = u16::from_be_bytes([*d.get(udp + 2)?, *d.get(udp + 3)?]);
        (dst == port).then(|| &d[(udp + 8).min(d.len())..])
    }

    /// The frame's captured bytes contain `needle`.
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.data.windows(needle.len()).any(|w| w == needle)
    }
}

/// VNI of a VXLAN-shaped header (flags with the I bit, then the VNI), if `payload` starts
/// with one.
pub fn vxlan_vni(payload: &[u8]) -> Option<u32> {
    let h = payload.get(..8)?;
    (h[0] & 0x08 != 0).then(|| u32::from_be_bytes([0, h[4], h[5], h[6]]))
}
