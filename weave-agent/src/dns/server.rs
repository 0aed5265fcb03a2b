//! The DNS server's sockets: queries from this host's containers on the service address,
//! answered from the zone or relayed upstream. One task, no lock on the way of a query but the
//! zone's read lock, held for the length of a map read.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{net::UdpSocket, sync::watch};

use super::{
    answer::{Reply, answer},
    forward::{Datagram, Forwarder},
    zone::Zone,
};

/// The largest datagram read: anything longer is cut, which the parser then refuses.
const MAX_DATAGRAM: usize = 4096;

/// What `status` and metrics show of the server.
#[derive(Debug, Default)]
pub struct Counters {
    /// Answered from the zone (NXDOMAIN included).
    pub answered: AtomicU64,
    pub forwarded: AtomicU64,
    /// Forwarded queries no upstream answered in time (answered SERVFAIL).
    pub upstream_failed: AtomicU64,
    /// Datagrams that were no readable query (answered FORMERR where they had a header).
    pub malformed: AtomicU64,
}

/// The server as the rest of the agent sees it.
pub struct Service {
    pub address: Ipv4Addr,
    pub domain: String,
    pub upstreams: Vec<SocketAddr>,
    pub counters: Counters,
    zone: RwLock<Arc<Zone>>,
    turn: AtomicUsize,
}

impl Service {
    pub fn new(address: Ipv4Addr, domain: String, upstreams: Vec<SocketAddr>) -> Self {
        let zone = Zone::new(&domain, [], Vec::new());
        Self {
            address,
            domain,
            upstreams,
            counters: Counters::default(),
            zone: RwLock::new(Arc::new(zone)),
            turn: AtomicUsize::new(0),
        }
    }

    pub fn zone(&self) -> Arc<Zone> {
        Arc::clone(&self.zone.read().expect("zone lock"))
    }

    /// Replaces the zone, if it changed.
    pub fn set_zone(&self, zone: Zone) {
        let mut current = self.zone.write().expect("zone lock");
        if **current != zone {
            *current = Arc::new(zone);
        }
    }
}

/// The sockets, bound before the daemon says it is ready: the service address on `device`
/// only (so nothing outside this host's containers can query it), and an ephemeral one for
/// the upstreams.
pub struct Sockets {
    service: UdpSocket,
    upstream: UdpSocket,
}

impl Sockets {
    pub fn bind(address: Ipv4Addr, device: &str) -> Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket
            .bind_device(Some(device.as_bytes()))
            .with_context(|| format!("binding the DNS socket to {device}"))?;
        socket.set_nonblocking(true)?;
        let at = SocketAddrV4::new(address, 53);
        socket.bind(&at.into()).with_context(|| {
            format!(
                "binding the DNS server to {at}: is another DNS server listening on port 53 of \
                 every address (dnsmasq without --bind-interfaces)? Launch with --no-dns to do \
                 without names"
            )
        })?;
        let service = UdpSocket::from_std(socket.into())?;
        let upstream = std::net::UdpSocket::bind("0.0.0.0:0")
            .context("opening the socket for upstream resolvers")?;
        upstream.set_nonblocking(true)?;
        Ok(Self {
            service,
            upstream: UdpSocket::from_std(upstream)?,
        })
    }
}

/// Serves until `stop` turns true.
pub async fn serve(service: Arc<Service>, sockets: Sockets, mut stop: watch::Receiver<bool>) {
    let Sockets {
        service: socket,
        upstream,
    } = sockets;
    let mut forwarder = Forwarder::new(service.upstreams.clone(), Box::new(rand_id));
    let (mut query, mut reply) = (vec![0u8; MAX_DATAGRAM], vec![0u8; MAX_DATAGRAM]);
    loop {
        let due = forwarder.next_deadline();
        tokio::select! {
            got = socket.recv_from(&mut query) => {
                let Ok((len, client)) = got else { continue };
                let zone = service.zone();
                let mut turn = || service.turn.fetch_add(1, Ordering::Relaxed);
                match answer(&zone, &query[..len], &mut turn) {
                    Reply::Answer(bytes) => {
                        service.counters.answered.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&bytes, client).await;
                    }
                    Reply::Forward(message) => {
                        service.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                        let send = forwarder.start(*message, client, Instant::now());
                        deliver(&socket, &upstream, send, client).await;
                    }
                    Reply::Ignore => {
                        service.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            got = upstream.recv_from(&mut reply) => {
                let Ok((len, from)) = got else { continue };
                if let Some(send) = forwarder.answered(from, &reply[..len]) {
                    let _ = socket.send_to(&send.bytes, send.to).await;
                }
            }
            () = sleep_until(due) => {
                let (sends, failed) = forwarder.expire(Instant::now());
                service.counters.upstream_failed.fetch_add(failed as u64, Ordering::Relaxed);
                for send in sends {
                    let to = send.to;
                    // A SERVFAIL goes to a container; a retry to an upstream.
                    if forwarder.upstreams().contains(&to) {
                        let _ = upstream.send_to(&send.bytes, to).await;
                    } else {
                        let _ = socket.send_to(&send.bytes, to).await;
                    }
                }
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Sends what the forwarder made of a query from `client`: to an upstream, or (SERVFAIL)
/// back to the client.
async fn deliver(socket: &UdpSocket, upstream: &UdpSocket, send: Datagram, client: SocketAddr) {
    if send.to == client {
        let _ = socket.send_to(&send.bytes, client).await;
    } else {
        let _ = upstream.send_to(&send.bytes, send.to).await;
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn rand_id() -> u16 {
    let mut bytes = [0u8; 2];
    // The kernel's generator does not fail on Linux once booted; a zero id only weakens the
    // guess-resistance of one query.
    let _ = getrandom::fill(&mut bytes);
    u16::from_le_bytes(bytes)
}
