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
}

impl Hellos {
    /// A socket bound to the underlay address, so hellos leave with the source address peers
    /// know this host by (the one they check overlay packets against).
    pub async fn bind(underlay: Ipv4Addr) -> Result<Self> {
        let socket = UdpSocket::bind(SocketAddrV4::new(underlay, 0))
            .await
            .with_context(|| format!("binding a UDP socket on {underlay} for link hellos"))?;
        // Like every overlay packet, no UDP checksum (RFC 7348 allows it over IPv4).
        set_option(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            1,
            "SO_NO_CHECK",
        )?;
        Ok(Self { socket })
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
