//! The crypto path's TAP device: frames to seal and sealed datagrams come out of it, opened
//! frames go back in. A virtio-net header in front of each frame lets GSO super-packets (a
//! container's TCP bulk, a peer's train of sealed datagrams) cross in one read or write, and
//! one queue per worker thread spreads flows over the cores.

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, Result, bail};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_UP: libc::c_short = 0x0001;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_USO4: libc::c_ulong = 0x20;
const TUN_F_USO6: libc::c_ulong = 0x40;
/// Frames the kernel may queue per queue for the agent: bulk arrives in bursts.
const TX_QUEUE_LEN: libc::c_int = 4096;

/// Bytes of the virtio-net header before every frame.
pub const VNET_HDR_LEN: usize = 10;
/// The header's GSO types (virtio spec 5.1.6).
pub const GSO_NONE: u8 = 0;
pub const GSO_UDP_L4: u8 = 5;

/// The virtio-net header's fields as this host reads them (little-endian, the legacy layout
/// on a little-endian host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
}

impl VnetHdr {
    pub fn read(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..VNET_HDR_LEN)?;
        Some(Self {
            flags: h[0],
            gso_type: h[1] & 0x7f,
            hdr_len: u16::from_le_bytes([h[2], h[3]]),
            gso_size: u16::from_le_bytes([h[4], h[5]]),
        })
    }
}

/// The device's queues, one file each.
pub struct Tap {
    pub name: String,
    pub ifindex: u32,
    pub queues: Vec<File>,
}

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqInt {
    name: [libc::c_char; libc::IFNAMSIZ],
    value: libc::c_int,
    _pad: [u8; 20],
}

fn ifname(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ]> {
    if name.len() >= libc::IFNAMSIZ {
        bail!("interface name {name:?} is too long");
    }
    let mut out = [0 as libc::c_char; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

fn check(ret: libc::c_int, what: &str) -> Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(())
}

impl Tap {
    /// Creates the device `name` with `queues` queues, up, with checksum and TCP/UDP
    /// segmentation offloads (super-packets cross whole), no IPv6 of its own, and a long
    /// queue. It lives as long as its files: when the agent exits, the device goes with it.
    pub fn create(name: &str, queues: usize) -> Result<Self> {
        let mut files = Vec::with_capacity(queues);
        for _ in 0..queues.max(1) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .context("opening /dev/net/tun (is the tun module loaded?)")?;
            let mut req = IfReqFlags {
                name: ifname(name)?,
                flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE,
                _pad: [0; 22],
            };
            // SAFETY: the request is a valid ifreq for TUNSETIFF, alive for the call.
            check(
                unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) },
                &format!("creating TAP device {name}"),
            )?;
            let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads an int from the pointer.
            check(
                unsafe { libc::ioctl(file.as_raw_fd(), TUNSETVNETHDRSZ, &size) },
                "setting the TAP's virtio-net header size",
            )?;
            files.push(file);
        }
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        check(
            unsafe { libc::ioctl(files[0].as_raw_fd(), TUNSETOFFLOAD, offloads) },
            "turning on the TAP's segmentation offloads",
        )?;
        // The kernel would send router solicitations and MLD reports into the device.
        let ipv6 = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        if let Err(err) = std::fs::write(&ipv6, "1") {
            tracing::debug!("{ipv6}: {err}");
        }
        let ifindex = bring_up(name)?;
        Ok(Self {
            name: name.to_owned(),
            ifindex,
            queues: files,
        })
    }
}

/// Sets the queue length, brings `name` up, and says its ifindex.
fn bring_up(name: &str) -> Result<u32> {
    // SAFETY: plain socket creation; the descriptor is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock, "opening a socket to configure the TAP")?;
    let result = (|| {
        let mut qlen = IfReqInt {
            name: ifname(name)?,
            value: TX_QUEUE_LEN,
            _pad: [0; 20],
        };
        // SAFETY: a valid ifreq for SIOCSIFTXQLEN.
        check(
            unsafe { libc::ioctl(sock, libc::SIOCSIFTXQLEN, &mut qlen) },
            "setting the TAP's queue length",
        )?;
        let mut flags = IfReqFlags {
            name: ifname(name)?,
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: valid ifreqs for SIOCGIFFLAGS and SIOCSIFFLAGS.
        check(
            unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut flags) },
            "reading the TAP's flags",
        )?;
        flags.flags |= IFF_UP;
        check(
            unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut flags) },
            "bringing the TAP up",
        )?;
        let cname = std::ffi::CString::new(name)?;
        // SAFETY: a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            bail!("the TAP {name} vanished as it was made");
        }
        Ok(index)
    })();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(sock) };
    result
}
