//! Sending link hellos: a small UDP datagram to each live peer's data port, from this host's
//! underlay address, so the peer's underlay program can tell it came straight from here.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context as _, Result};
use tokio::net::UdpSocket;
use weave_common::relay::{HELLO_LEN, HELLO_VNI, plain};

/// The UDP payload of every hello: a VXLAN header with [`HELLO_VNI`], then zeros.
pub fn datagram() -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..8].copy_from_slice(&plain(HELLO_VNI));
    out
}

pub struct Hellos {
    socket: UdpSocket,
    /// Sends probes: DF set and the kernel's own path MTU ignored (IP_PMTUDISC_PROBE), so a
    /// probe leaves at the size asked for whatever an earlier ICMP said, and a hop too small
    /// for it drops it.
    probes: UdpSocket,
}

impl Hellos {
    /// A socket bound to the underlay address, so hellos leave with the source address peers
    /// know this host by (the one they check overlay packets against).
    pub async fn bind(underlay: Ipv4Addr) -> Result<Self> {
        let socket = UdpSocket::bind(SocketAddrV4::new(underlay, 0))
            .await
            .with_context(|| format!("binding a UDP socket on {underlay} for link hellos"))?;
        let probes = UdpSocket::bind(SocketAddrV4::new(underlay, 0))
            .await
            .with_context(|| format!("binding a UDP socket on {underlay} for MTU probes"))?;
        // Like every overlay packet, no UDP checksum (RFC 7348 allows it over IPv4).
        set_option(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            1,
            "SO_NO_CHECK",
        )?;
        set_option(
            &probes,
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            1,
            "SO_NO_CHECK",
        )?;
        let probe = libc::IP_PMTUDISC_PROBE;
        set_option(
            &probes,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            probe,
            "IP_PMTUDISC_PROBE",
        )?;
        Ok(Self { socket, probes })
    }

    /// Probes of the path MTU to each of `peers`: a hello padded to each IPv4 total length in
    /// `sizes`. The peer notes the largest that arrived.
    pub async fn probe(&self, peers: &[SocketAddr], sizes: &[u16]) {
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let mut probe = vec![0u8; usize::from(largest).saturating_sub(28).max(HELLO_LEN)];
        probe[..HELLO_LEN].copy_from_slice(&datagram());
        for peer in peers {
            for size in sizes {
                let payload = usize::from(*size).saturating_sub(28).max(HELLO_LEN);
                if let Err(err) = self.probes.send_to(&probe[..payload], peer).await {
                    tracing::trace!(%peer, size, "MTU probe not sent: {err}");
                }
            }
        }
    }

    /// One hello to each of `peers` (underlay address, data port). A failed send (no route
    /// while the underlay is down) is a hello not heard, which is what it is.
    pub async fn send(&self, peers: impl IntoIterator<Item = SocketAddr>) -> usize {
        let hello = datagram();
        let mut sent = 0;
        for peer in peers {
            match self.socket.send_to(&hello, peer).await {
                Ok(_) => sent += 1,
                Err(err) => tracing::trace!(%peer, "link hello not sent: {err}"),
            }
        }
        sent
    }
}

/// setsockopt with an int value, or what failed.
fn set_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
    what: &str,
) -> Result<()> {
    // SAFETY: a valid socket and a c_int option value of the size given.
    let set = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setting {what} on a hello socket"));
    }
    Ok(())
}
