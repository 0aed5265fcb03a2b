//! The DNS server's sockets: queries from this host's containers on the service address,
//! answered from the zone or relayed upstream. One task, no lock on the way of a query but the
//! zone's read lock, held for the length of a map read.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd as _,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{io::Interest, net::UdpSocket, sync::watch};

use super::{
    answer::{Reply, answer},
    batch::{BATCH, Batch},
    forward::Forwarder,
    packet_cache::PacketCache,
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
    service: std::net::UdpSocket,
    upstream: std::net::UdpSocket,
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
        let service = socket.into();
        let upstream = std::net::UdpSocket::bind("0.0.0.0:0")
            .context("opening the socket for upstream resolvers")?;
        upstream.set_nonblocking(true)?;
        Ok(Self { service, upstream })
    }
}

/// Runs the server on a thread of its own, with a runtime of its own, until `stop` turns true:
/// a burst of queries then never waits behind the daemon's work, and the daemon's never behind
/// it, on a machine with a core to spare.
pub fn spawn(
    service: Arc<Service>,
    sockets: Sockets,
    stop: watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>> {
    let Sockets {
        service: socket,
        upstream,
    } = sockets;
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!("the DNS server's runtime: {err}; containers get no names");
                    return;
                }
            };
            runtime.block_on(async move {
                // Registered with this thread's runtime, not the daemon's.
                match (UdpSocket::from_std(socket), UdpSocket::from_std(upstream)) {
                    (Ok(socket), Ok(upstream)) => serve(service, socket, upstream, stop).await,
                    (Err(err), _) | (_, Err(err)) => {
                        tracing::error!("the DNS server's sockets: {err}; containers get no names")
                    }
                }
            });
        })
        .context("starting the DNS server's thread")
}

/// Batches read per wake-up before the other branches get a turn: a flood from one container
/// must not starve the upstream answers and their timeouts.
const BATCHES_PER_WAKE: usize = 4;

async fn serve(
    service: Arc<Service>,
    socket: UdpSocket,
    upstream: UdpSocket,
    mut stop: watch::Receiver<bool>,
) {
    let mut forwarder = Forwarder::new(service.upstreams.clone(), Box::new(rand_id));
    let mut cache = PacketCache::default();
    let mut batch = Batch::new(MAX_DATAGRAM);
    let mut reply = vec![0u8; MAX_DATAGRAM];
    loop {
        let due = forwarder.next_deadline();
        tokio::select! {
            ready = socket.readable() => {
                if ready.is_ok() {
                    take_queries(&service, (&socket, &upstream), &mut forwarder, &mut cache, &mut batch);
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

/// Everything queued (a few batches at most), answered in batches: one system call to read
/// them, one to send the answers.
fn take_queries(
    service: &Service,
    (socket, upstream): (&UdpSocket, &UdpSocket),
    forwarder: &mut Forwarder,
    cache: &mut PacketCache,
    batch: &mut Batch,
) {
    let fd = socket.as_raw_fd();
    for _ in 0..BATCHES_PER_WAKE {
        // try_io: an empty queue clears the readiness, so the next wake-up is a real one.
        match socket.try_io(Interest::READABLE, || batch.receive(fd)) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // One look at the zone per batch, not per query.
        let zone = service.zone();
        for i in 0..batch.received() {
            let (packet, client) = batch.datagram(i);
            let query = (packet, client);
            if let Some(bytes) = take_query(service, &zone, upstream, forwarder, cache, query) {
                batch.queue(bytes, client);
            }
        }
        if let Err(err) = socket.try_io(Interest::WRITABLE, || batch.flush(fd)) {
            tracing::debug!("sending DNS answers: {err}");
        }
        if batch.received() < BATCH {
            return;
        }
    }
}

/// The answer to one datagram from `client`, if it gets one now; a query for another domain
/// goes upstream instead (its answer comes later).
fn take_query(
    service: &Service,
    zone: &Arc<Zone>,
    upstream: &UdpSocket,
    forwarder: &mut Forwarder,
    cache: &mut PacketCache,
    (packet, client): (&[u8], SocketAddrV4),
) -> Option<Vec<u8>> {
    if let Some(bytes) = cache.get(zone, packet) {
        service.counters.answered.fetch_add(1, Ordering::Relaxed);
        return Some(bytes);
    }
    // An answer that took a turn (several addresses, rotated) differs next time: not kept.
    let mut rotated = false;
    let mut turn = || {
        rotated = true;
        service.turn.fetch_add(1, Ordering::Relaxed)
    };
    match answer(zone, packet, &mut turn) {
        Reply::Answer(bytes) => {
            service.counters.answered.fetch_add(1, Ordering::Relaxed);
            if !rotated {
                cache.put(zone, packet, &bytes);
            }
            Some(bytes)
        }
        Reply::Forward(message) => {
            service.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            let send = forwarder.start(*message, SocketAddr::V4(client), Instant::now());
            if send.to == SocketAddr::V4(client) {
                return Some(send.bytes);
            }
            // Without waiting: a full send buffer drops it, and the timeout answers SERVFAIL.
            let _ = upstream.try_send_to(&send.bytes, send.to);
            None
        }
        Reply::Ignore => {
            service.counters.malformed.fetch_add(1, Ordering::Relaxed);
            None
        }
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
