//! The crypto path's threads: each worker reads one queue of the TAP device, seals the frames
//! the programs hand it and sends them as UDP datagrams (one `sendmmsg` per super-packet,
//! cut by UDP GSO), and opens the sealed datagrams the underlay program hands it, writing the
//! frames back into the device; a keeper thread starts handshakes and vouches to the programs
//! that the path is alive. The buffers are the workers' own, made once: nothing is allocated
//! per packet.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    mem,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData};
use weave_common::{
    maps,
    seal::{CryptoPath, SEALED_HEADER_LEN, SEALED_TAG_LEN, marked_peer},
};

use crate::net::clock::{monotonic_ns, unix_nanos};

use super::{
    opener::{MAX_MESSAGE, Opened, Opener},
    session::Refused,
    table::{Outgoing, PeerStats, Table},
    tap::{GSO_UDP_L4, Tap, VNET_HDR_LEN, VnetHdr},
    wire::{Header, Kind},
};

/// Outer IPv4 and UDP headers of a sealed datagram.
const OUTER_LEN: usize = 20 + 8;
/// Largest UDP payload one send may carry, GSO trains included.
const MAX_SEND: usize = 65_507;
/// How long the keeper vouches for the path each time it renews, and how often it renews.
const VOUCH_FOR: Duration = Duration::from_millis(600);
const RENEW_EVERY: Duration = Duration::from_millis(100);
/// How long a worker polls its queue after a frame before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// What the workers and the keeper share.
pub struct Shared {
    pub table: RwLock<Table>,
    underlay_ip: Ipv4Addr,
    data_port: u16,
    underlay_mtu: u16,
    kicks: mpsc::Sender<Ipv4Addr>,
    stopping: AtomicBool,
}

/// The running crypto path.
pub struct Engine {
    pub shared: Arc<Shared>,
    pub tap_name: String,
    keeper: Option<std::thread::JoinHandle<()>>,
}

impl Engine {
    /// Starts the path on `tap` with `table`: the keeper (vouching through the crypto map
    /// pinned in `pin_dir`) and one worker per queue.
    pub fn start(
        tap: Tap,
        table: Table,
        pin_dir: &Path,
        underlay_ip: Ipv4Addr,
        underlay_mtu: u32,
        data_port: u16,
    ) -> Result<Self> {
        let (kicks, kicked) = mpsc::channel();
        let shared = Arc::new(Shared {
            table: RwLock::new(table),
            underlay_ip,
            data_port,
            underlay_mtu: u16::try_from(underlay_mtu).unwrap_or(u16::MAX),
            kicks,
            stopping: AtomicBool::new(false),
        });
        let mut crypto_map = open_crypto_map(pin_dir)?;
        let ifindex = tap.ifindex;
        for (i, queue) in tap.queues.into_iter().enumerate() {
            let worker = Worker::new(queue, Arc::clone(&shared))?;
            std::thread::Builder::new()
                .name(format!("seal-{i}"))
                .spawn(move || worker.run())
                .context("starting a crypto worker")?;
        }
        let socket = bind_socket(underlay_ip)?;
        let keeper_shared = Arc::clone(&shared);
        let keeper = std::thread::Builder::new()
            .name("seal-keeper".into())
            .spawn(move || keep(&keeper_shared, &socket, &mut crypto_map, ifindex, &kicked))
            .context("starting the crypto keeper")?;
        Ok(Self {
            shared,
            tap_name: tap.name,
            keeper: Some(keeper),
        })
    }

    /// Stops vouching for the path, so the programs drop (and count) sealed traffic at once
    /// rather than hand it to a device nobody will read.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        let _ = self.shared.kicks.send(Ipv4Addr::UNSPECIFIED);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

fn open_crypto_map(pin_dir: &Path) -> Result<Array<MapData, CryptoPath>> {
    let pin = pin_dir.join(maps::CRYPTO);
    let data = MapData::from_pin(&pin)
        .with_context(|| format!("opening the crypto map {}", pin.display()))?;
    Ok(Array::try_from(Map::Array(data))?)
}

/// The keeper: renews the programs' trust in the path, and sends the handshakes that are due
/// (at once when a worker asks).
fn keep(
    shared: &Shared,
    socket: &UdpSocket,
    crypto_map: &mut Array<MapData, CryptoPath>,
    ifindex: u32,
    kicked: &mpsc::Receiver<Ipv4Addr>,
) {
    let vouch = |map: &mut Array<MapData, CryptoPath>, until: u64| {
        let path = CryptoPath {
            seal: 1,
            tap_ifindex: ifindex,
            alive_until_ns: until,
        };
        if let Err(err) = map.set(0, path, 0) {
            tracing::warn!("renewing the crypto path in the data path: {err}");
        }
    };
    loop {
        vouch(crypto_map, monotonic_ns() + VOUCH_FOR.as_nanos() as u64);
        let _ = kicked.recv_timeout(RENEW_EVERY);
        if shared.stopping.load(Ordering::Relaxed) {
            vouch(crypto_map, 0);
            return;
        }
        let due = shared
            .table
            .write()
            .expect("session table")
            .due_handshakes(Instant::now(), unix_nanos());
        for out in due {
            send_one(socket, shared.data_port, &out);
        }
    }
}

fn bind_socket(ip: Ipv4Addr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddrV4::new(ip, 0))
        .with_context(|| format!("binding a UDP socket on {ip} for sealed datagrams"))?;
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt reads an int of the size given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(socket)
}

fn send_one(socket: &UdpSocket, port: u16, out: &Outgoing) {
    if let Err(err) = socket.send_to(&out.datagram, SocketAddrV4::new(out.to, port)) {
        tracing::debug!(to = %out.to, "sending a handshake: {err}");
    }
}

struct Worker {
    tap: File,
    socket: UdpSocket,
    shared: Arc<Shared>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    opener: Opener,
}

impl Worker {
    fn new(tap: File, shared: Arc<Shared>) -> Result<Self> {
        let socket = bind_socket(shared.underlay_ip)?;
        // SAFETY: F_SETFL on a descriptor we own.
        unsafe { libc::fcntl(tap.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        Ok(Self {
            tap,
            socket,
            shared,
            rx: vec![0; MAX_MESSAGE],
            // A message cut into chunks grows by each chunk's header and tag.
            tx: vec![0; 2 * MAX_MESSAGE],
            opener: Opener::default(),
        })
    }

    /// The next frame from the device into `rx`: its length. Right after a frame, the worker
    /// polls for [`SPIN`] before it sleeps, so the answer to what it just sent (a request's
    /// response) does not wait for the scheduler to wake it.
    fn next_frame(&mut self) -> std::io::Result<usize> {
        let mut spinning: Option<Instant> = None;
        loop {
            match self.tap.read(&mut self.rx) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    let since = *spinning.get_or_insert_with(Instant::now);
                    if since.elapsed() < SPIN {
                        // Polling yields: a thread with work (a TCP stack, the other worker)
                        // gets the core, so polling costs only time nobody else wants.
                        // SAFETY: sched_yield has no preconditions.
                        unsafe { libc::sched_yield() };
                        continue;
                    }
                    let mut fd = libc::pollfd {
                        fd: self.tap.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut fd, 1, -1) };
                    spinning = None;
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }

    fn run(mut self) {
        loop {
            let n = match self.next_frame() {
                Ok(n) => n,
                Err(err) => {
                    tracing::error!("reading the crypto device: {err}; this worker stops");
                    return;
                }
            };
            if n < VNET_HDR_LEN + 14 {
                continue;
            }
            let dst: [u8; 6] = self.rx[VNET_HDR_LEN..VNET_HDR_LEN + 6]
                .try_into()
                .expect("six bytes");
            match marked_peer(&dst) {
                Some(peer) => self.seal(Ipv4Addr::from(peer.to_ne_bytes()), n),
                None => self.open_all(n),
            }
        }
    }

    /// Seals the message `rx[..n]` (virtio-net header and frame) for `peer` and sends it.
    fn seal(&mut self, peer: Ipv4Addr, n: usize) {
        let now = Instant::now();
        let sender = self
            .shared
            .table
            .read()
            .expect("session table")
            .sender(peer, now);
        let Some(sender) = sender else {
            self.no_session(peer, now);
            return;
        };
        let mtu = match sender.mtu {
            0 => self.shared.underlay_mtu,
            mtu => mtu,
        };
        let segment = usize::from(mtu).saturating_sub(OUTER_LEN);
        let chunk = segment.saturating_sub(SEALED_HEADER_LEN + SEALED_TAG_LEN);
        if chunk < 64 {
            return;
        }
        let count = n.div_ceil(chunk);
        let Ok(count8) = u8::try_from(count) else {
            tracing::debug!(n, "a frame too large to seal");
            return;
        };
        let Some(first) = sender.session.take_counters(count as u64) else {
            self.no_session(peer, now);
            return;
        };
        let mut total = 0;
        for i in 0..count {
            let offset = i * chunk;
            let len = chunk.min(n - offset);
            let counter = first + i as u64;
            let header = Header {
                dest: peer,
                kind: Kind::Data,
                index: i as u8,
                count: count8,
                session: sender.session.remote_index,
                aux: offset as u32,
                counter,
            };
            let at = i * segment;
            let out = &mut self.tx[at..];
            header.write((&mut out[..SEALED_HEADER_LEN]).try_into().expect("room"));
            out[SEALED_HEADER_LEN..][..len].copy_from_slice(&self.rx[offset..offset + len]);
            total = at + sender.session.seal(counter, out, SEALED_HEADER_LEN + len);
        }
        let to = SocketAddrV4::new(sender.next_hop, self.shared.data_port);
        if let Err(err) = send_segmented(&self.socket, &self.tx[..total], segment, to) {
            tracing::debug!(%to, "sending sealed datagrams: {err}");
            return;
        }
        PeerStats::add(&sender.stats.sealed_bytes, (n - VNET_HDR_LEN) as u64);
    }

    fn no_session(&self, peer: Ipv4Addr, now: Instant) {
        let mut table = self.shared.table.write().expect("session table");
        if let Some(stats) = table.stats(peer) {
            PeerStats::add(&stats.no_session, 1);
        }
        if table.kick(peer, now) {
            let _ = self.shared.kicks.send(peer);
        }
    }

    /// Opens every sealed datagram in `rx[..n]`: one, or a GSO train of them.
    fn open_all(&mut self, n: usize) {
        let Some(vnet) = VnetHdr::read(&self.rx) else {
            return;
        };
        let frame = &self.rx[VNET_HDR_LEN..n];
        // Ethernet, IPv4 (any options), UDP to the data port; anything else is not ours.
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            return;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let udp = 14 + ihl;
        if ihl < 20 || frame.len() < udp + 8 {
            return;
        }
        if u16::from_be_bytes([frame[udp + 2], frame[udp + 3]]) != self.shared.data_port {
            return;
        }
        let source = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
        let start = VNET_HDR_LEN + udp + 8;
        let segment = if vnet.gso_type == GSO_UDP_L4 && vnet.gso_size != 0 {
            usize::from(vnet.gso_size)
        } else {
            n - start
        };
        let now = Instant::now();
        let mut at = start;
        while at < n {
            let end = (at + segment).min(n);
            self.open_one(source, at, end, now);
            at = end;
        }
    }

    fn open_one(&mut self, source: Ipv4Addr, start: usize, end: usize, now: Instant) {
        let opened = {
            let table = self.shared.table.read().expect("session table");
            self.opener
                .open(&table, source, &mut self.rx[start..end], now)
        };
        match opened {
            Opened::Partial => {}
            Opened::Message { peer, message } => {
                // A TAP write takes the whole frame or fails: one write is one frame.
                match self.tap.write(message) {
                    Ok(written) if written == message.len() => {
                        let stats = self.shared.table.read().expect("table").stats(peer);
                        if let Some(stats) = stats {
                            let bytes = (message.len() - VNET_HDR_LEN) as u64;
                            PeerStats::add(&stats.opened_bytes, bytes);
                        }
                    }
                    Ok(written) => tracing::debug!(written, "the device took part of a frame"),
                    Err(err) => tracing::debug!(%peer, "handing an opened frame back: {err}"),
                }
            }
            Opened::Handshake(header) => self.handshake(source, &header, start, end, now),
            Opened::Refused {
                blame,
                unknown_session,
                why,
            } => {
                if why.is_some_and(|w| w != Refused::Replayed) {
                    tracing::debug!(peer = %blame, ?why, "a sealed datagram refused");
                }
                let mut table = self.shared.table.write().expect("session table");
                table.refuse(blame);
                // A session this host no longer has (it restarted): the peer needs a new one.
                if unknown_session && table.kick(blame, now) {
                    let _ = self.shared.kicks.send(blame);
                }
            }
        }
    }

    fn handshake(
        &mut self,
        source: Ipv4Addr,
        header: &Header,
        start: usize,
        end: usize,
        now: Instant,
    ) {
        let datagram = &self.rx[start..end];
        let mut table = self.shared.table.write().expect("session table");
        let result = match header.kind {
            Kind::Initiation => table.on_initiation(header, datagram, now).map(Some),
            Kind::Response => table.on_response(header, datagram, now).map(|()| None),
            Kind::Data => Ok(None),
        };
        match result {
            Ok(Some(reply)) => {
                drop(table);
                send_one(&self.socket, self.shared.data_port, &reply);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(%source, "a handshake refused: {err:#}");
                table.refuse(source);
            }
        }
    }
}

/// Sends `datagrams` (each `segment` bytes but the last) to `to`, as few sends as UDP GSO
/// allows: each send carries at most [`MAX_SEND`] bytes, cut by the kernel.
fn send_segmented(
    socket: &UdpSocket,
    datagrams: &[u8],
    segment: usize,
    to: SocketAddrV4,
) -> std::io::Result<()> {
    let per_send = (MAX_SEND / segment).max(1) * segment;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    const MAX_BATCH: usize = 4;
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    // Room for one UDP_SEGMENT control message per send.
    let mut controls = [[0u64; 4]; MAX_BATCH];
    let mut sent = 0;
    while sent < datagrams.len() {
        let mut batch = 0;
        let mut at = sent;
        while at < datagrams.len() && batch < MAX_BATCH {
            let len = per_send.min(datagrams.len() - at);
            iovs[batch] = libc::iovec {
                iov_base: datagrams[at..].as_ptr() as *mut libc::c_void,
                iov_len: len,
            };
            let hdr = &mut msgs[batch].msg_hdr;
            hdr.msg_name = (&addr as *const libc::sockaddr_in).cast_mut().cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut iovs[batch];
            hdr.msg_iovlen = 1;
            if len > segment {
                let control = &mut controls[batch];
                hdr.msg_control = control.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: the control buffer holds one header and a u16, as CMSG_SPACE said.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(hdr);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                    libc::CMSG_DATA(cmsg)
                        .cast::<u16>()
                        .write_unaligned(segment as u16);
                }
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            at += len;
            batch += 1;
        }
        // SAFETY: every message points at live buffers for the length of the call.
        let done = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                batch as libc::c_uint,
                0,
            )
        };
        if done < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for msg in &msgs[..done as usize] {
            sent += msg.msg_len as usize;
        }
        if done == 0 {
            break;
        }
    }
    Ok(())
}
