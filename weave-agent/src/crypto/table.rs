//! Who has a session with whom: the peers whose traffic is sealed, their sessions (current and
//! previous, as WireGuard keeps them, so a rekey loses nothing in flight), the handshakes
//! under way, and what each peer's traffic did. No I/O: the engine sends what this returns.

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use weave_common::seal::SEALED_HEADER_LEN;

use super::{
    handshake::{Identity, Initiating},
    session::Session,
    wire::{Header, Kind},
};

/// A handshake that got no answer is tried again after this.
pub const RETRY_AFTER: Duration = Duration::from_millis(500);
/// A peer whose datagrams name no session here (it kept one this host lost in a restart) is
/// answered with a new handshake at most this often.
const KICK_EVERY: Duration = Duration::from_millis(250);

/// A peer whose traffic is sealed, as the control plane knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: Ipv4Addr,
    /// Its static public key, from gossip.
    pub public: [u8; 32],
    /// Where datagrams for it go: itself or a relay.
    pub next_hop: Ipv4Addr,
    /// Largest outer IPv4 packet the path carries (0: the underlay's MTU).
    pub mtu: u16,
}

/// What a peer's sealed traffic did.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub sealed_bytes: AtomicU64,
    pub opened_bytes: AtomicU64,
    /// Datagrams that claimed to be from the peer (or came from its address) and were refused.
    pub refused: AtomicU64,
    /// Frames for the peer dropped because no session was ready.
    pub no_session: AtomicU64,
    pub handshakes: AtomicU64,
}

impl PeerStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

struct Entry {
    config: PeerConfig,
    current: Option<Arc<Session>>,
    previous: Option<Arc<Session>>,
    pending: Option<(Initiating, Instant)>,
    /// Highest initiation timestamp accepted from the peer.
    last_timestamp: u64,
    kicked: Option<Instant>,
    stats: Arc<PeerStats>,
}

/// A datagram to send: to the underlay address `to` (the data port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Ipv4Addr,
    pub datagram: Vec<u8>,
}

/// What the engine needs to seal a frame for a peer.
pub struct Sender {
    pub session: Arc<Session>,
    pub next_hop: Ipv4Addr,
    pub mtu: u16,
    pub stats: Arc<PeerStats>,
}

/// One peer's session state, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub address: Ipv4Addr,
    pub session_age: Option<Duration>,
    pub handshakes: u64,
    pub sealed_bytes: u64,
    pub opened_bytes: u64,
    pub refused: u64,
    pub no_session: u64,
}

pub struct Table {
    identity: Identity,
    peers: HashMap<Ipv4Addr, Entry>,
    by_index: HashMap<u32, Arc<Session>>,
    by_public: HashMap<[u8; 32], Ipv4Addr>,
    /// Datagrams refused from addresses that are no peer with a session here.
    pub refused_elsewhere: BTreeMap<Ipv4Addr, u64>,
    last_timestamp: u64,
}

impl Table {
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            peers: HashMap::new(),
            by_index: HashMap::new(),
            by_public: HashMap::new(),
            refused_elsewhere: BTreeMap::new(),
            last_timestamp: 0,
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.identity.public
    }

    /// Makes `peers` the sealed peers: new ones added, changed ones updated (a new key drops
    /// the old sessions), vanished ones forgotten with their sessions.
    pub fn set_peers(&mut self, peers: &[PeerConfig]) {
        let wanted: HashMap<Ipv4Addr, PeerConfig> = peers.iter().map(|p| (p.address, *p)).collect();
        let gone: Vec<Ipv4Addr> = self
            .peers
            .iter()
            .filter(|(ip, e)| wanted.get(ip).is_none_or(|w| w.public != e.config.public))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            if let Some(entry) = self.peers.remove(&ip) {
                self.forget_sessions(&entry);
                self.by_public.remove(&entry.config.public);
            }
        }
        for (ip, config) in wanted {
            match self.peers.get_mut(&ip) {
                Some(entry) => entry.config = config,
                None => {
                    self.by_public.insert(config.public, ip);
                    self.peers.insert(
                        ip,
                        Entry {
                            config,
                            current: None,
                            previous: None,
                            pending: None,
                            last_timestamp: 0,
                            kicked: None,
                            stats: Arc::default(),
                        },
                    );
                }
            }
        }
    }

    fn forget_sessions(&mut self, entry: &Entry) {
        for s in entry.current.iter().chain(&entry.previous) {
            self.by_index.remove(&s.local_index);
        }
    }

    /// How to seal a frame for `peer` at `now`, if a session is ready.
    pub fn sender(&self, peer: Ipv4Addr, now: Instant) -> Option<Sender> {
        let entry = self.peers.get(&peer)?;
        let session = entry.current.as_ref().filter(|s| s.usable(now))?;
        Some(Sender {
            session: Arc::clone(session),
            next_hop: entry.config.next_hop,
            mtu: entry.config.mtu,
            stats: Arc::clone(&entry.stats),
        })
    }

    pub fn stats(&self, peer: Ipv4Addr) -> Option<Arc<PeerStats>> {
        self.peers.get(&peer).map(|e| Arc::clone(&e.stats))
    }

    /// The session datagrams with receiver index `index` belong to.
    pub fn receiver(&self, index: u32) -> Option<Arc<Session>> {
        self.by_index.get(&index).cloned()
    }

    /// Counts a refused datagram against `peer` (or, if it is none, its address).
    pub fn refuse(&mut self, peer: Ipv4Addr) {
        match self.peers.get(&peer) {
            Some(entry) => PeerStats::add(&entry.stats.refused, 1),
            None => *self.refused_elsewhere.entry(peer).or_default() += 1,
        }
    }

    /// Asks for a handshake with `peer` soon: it sent datagrams for a session this host does not
    /// have, or a frame for it found none. At most every [`KICK_EVERY`].
    pub fn kick(&mut self, peer: Ipv4Addr, now: Instant) -> bool {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return false;
        };
        if entry
            .kicked
            .is_some_and(|at| now.duration_since(at) < KICK_EVERY)
        {
            return false;
        }
        entry.kicked = Some(now);
        // A pending handshake younger than the retry interval is left to finish.
        if entry
            .pending
            .as_ref()
            .is_some_and(|(_, at)| now.duration_since(*at) < RETRY_AFTER)
        {
            return false;
        }
        entry.pending = None;
        true
    }

    /// Initiations to send at `now`: to every peer without a usable session, or whose session
    /// is due, unless one is under way and younger than [`RETRY_AFTER`]. `wall_ns`: the time
    /// of day, from which timestamps are made (strictly growing, also across restarts).
    pub fn due_handshakes(&mut self, now: Instant, wall_ns: u64) -> Vec<Outgoing> {
        let due: Vec<Ipv4Addr> = self
            .peers
            .iter()
            .filter(|(_, e)| {
                let needs = e
                    .current
                    .as_ref()
                    .is_none_or(|s| !s.usable(now) || s.due(now));
                let waiting = e
                    .pending
                    .as_ref()
                    .is_some_and(|(_, at)| now.duration_since(*at) < RETRY_AFTER);
                needs && !waiting
            })
            .map(|(ip, _)| *ip)
            .collect();
        let mut out = Vec::new();
        for peer in due {
            match self.initiate(peer, now, wall_ns) {
                Ok(o) => out.push(o),
                Err(err) => tracing::warn!(%peer, "starting a handshake: {err:#}"),
            }
        }
        out
    }

    fn initiate(&mut self, peer: Ipv4Addr, now: Instant, wall_ns: u64) -> Result<Outgoing> {
        let index = self.fresh_index()?;
        self.last_timestamp = wall_ns.max(self.last_timestamp + 1);
        let timestamp = self.last_timestamp;
        let entry = self.peers.get_mut(&peer).context("not a sealed peer")?;
        let (pending, message) = self
            .identity
            .initiate(&entry.config.public, index, timestamp)?;
        entry.pending = Some((pending, now));
        let header = Header::handshake(Kind::Initiation, peer, index, 0);
        Ok(Outgoing {
            to: entry.config.next_hop,
            datagram: with_header(&header, &message),
        })
    }

    /// Answers an initiation (`datagram`, header `header`, whole): the response to send, once
    /// the new session is installed.
    pub fn on_initiation(
        &mut self,
        header: &Header,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Outgoing> {
        let index = self.fresh_index()?;
        let answer = self
            .identity
            .respond(&datagram[SEALED_HEADER_LEN..], index)?;
        let peer = *self
            .by_public
            .get(&answer.remote_static)
            .context("an initiation from a key no peer publishes")?;
        if answer.initiator_index != header.session {
            bail!("an initiation whose header and payload disagree");
        }
        let entry = self.peers.get_mut(&peer).context("no longer a peer")?;
        if answer.timestamp <= entry.last_timestamp {
            bail!("a replayed initiation from {peer}");
        }
        entry.last_timestamp = answer.timestamp;
        let to = entry.config.next_hop;
        let session = Session::new(
            peer,
            index,
            answer.initiator_index,
            &answer.keys,
            false,
            now,
        );
        self.install(peer, session);
        let reply = Header::handshake(Kind::Response, peer, index, answer.initiator_index);
        Ok(Outgoing {
            to,
            datagram: with_header(&reply, &answer.message),
        })
    }

    /// Completes the handshake a response answers.
    pub fn on_response(&mut self, header: &Header, datagram: &[u8], now: Instant) -> Result<()> {
        let peer = self
            .peers
            .iter()
            .find(|(_, e)| {
                e.pending
                    .as_ref()
                    .is_some_and(|(p, _)| p.local_index == header.aux)
            })
            .map(|(ip, _)| *ip)
            .context("a response to no handshake under way")?;
        let entry = self.peers.get_mut(&peer).expect("found above");
        let (pending, _) = entry.pending.take().expect("found above");
        let local = pending.local_index;
        let (remote, keys) = pending.finish(&datagram[SEALED_HEADER_LEN..])?;
        if remote != header.session {
            bail!("a response whose header and payload disagree");
        }
        self.install(peer, Session::new(peer, local, remote, &keys, true, now));
        Ok(())
    }

    /// Two hosts at `a` and `b` with fresh key pairs and pre-shared key `psk`, each the
    /// other's sealed peer, after a whole handshake in memory (as two engines make one over
    /// the network): for the tests and the fuzzer, which need a session to work with.
    pub fn connected_pair(a: Ipv4Addr, b: Ipv4Addr, psk: [u8; 32]) -> Result<(Table, Table)> {
        let table =
            || Ok::<_, anyhow::Error>(Table::new(Identity::new(Identity::generate_pair()?, psk)));
        let (mut ta, mut tb) = (table()?, table()?);
        let peer = |address, public| PeerConfig {
            address,
            public,
            next_hop: address,
            mtu: 0,
        };
        ta.set_peers(&[peer(b, tb.public_key())]);
        tb.set_peers(&[peer(a, ta.public_key())]);
        let now = Instant::now();
        let init = ta
            .due_handshakes(now, 1)
            .pop()
            .context("no handshake due")?;
        let header = Header::parse(&init.datagram).context("an initiation without a header")?;
        let response = tb.on_initiation(&header, &init.datagram, now)?;
        let header = Header::parse(&response.datagram).context("a response without a header")?;
        ta.on_response(&header, &response.datagram, now)?;
        Ok((ta, tb))
    }

    fn install(&mut self, peer: Ipv4Addr, session: Session) {
        let session = Arc::new(session);
        self.by_index
            .insert(session.local_index, Arc::clone(&session));
        let entry = self.peers.get_mut(&peer).expect("installing for a peer");
        PeerStats::add(&entry.stats.handshakes, 1);
        let dropped = entry.previous.take();
        entry.previous = entry.current.replace(session);
        if let Some(old) = dropped {
            self.by_index.remove(&old.local_index);
        }
    }

    fn fresh_index(&self) -> Result<u32> {
        loop {
            let mut bytes = [0u8; 4];
            getrandom::fill(&mut bytes).context("reading random bytes")?;
            let index = u32::from_ne_bytes(bytes);
            if index != 0 && !self.by_index.contains_key(&index) {
                return Ok(index);
            }
        }
    }

    pub fn report(&self, now: Instant) -> Vec<PeerReport> {
        let mut out: Vec<PeerReport> = self
            .peers
            .values()
            .map(|e| PeerReport {
                address: e.config.address,
                session_age: e
                    .current
                    .as_ref()
                    .filter(|s| s.usable(now))
                    .map(|s| now.duration_since(s.created)),
                handshakes: e.stats.handshakes.load(Ordering::Relaxed),
                sealed_bytes: e.stats.sealed_bytes.load(Ordering::Relaxed),
                opened_bytes: e.stats.opened_bytes.load(Ordering::Relaxed),
                refused: e.stats.refused.load(Ordering::Relaxed),
                no_session: e.stats.no_session.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|r| r.address);
        out
    }
}

fn with_header(header: &Header, message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; SEALED_HEADER_LEN + message.len()];
    header.write(
        (&mut out[..SEALED_HEADER_LEN])
            .try_into()
            .expect("header room"),
    );
    out[SEALED_HEADER_LEN..].copy_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn table(psk: u8) -> Table {
        Table::new(Identity::new(Identity::generate_pair().unwrap(), [psk; 32]))
    }

    fn peer(address: Ipv4Addr, public: [u8; 32]) -> PeerConfig {
        PeerConfig {
            address,
            public,
            next_hop: address,
            mtu: 0,
        }
    }

    fn meet(a: &mut Table, b: &mut Table) {
        a.set_peers(&[peer(B, b.public_key())]);
        b.set_peers(&[peer(A, a.public_key())]);
    }

    /// Delivers `datagram` to `to` as the engine would: the response, if any.
    fn deliver(to: &mut Table, datagram: &[u8], now: Instant) -> Result<Option<Outgoing>> {
        let header = Header::parse(datagram).context("not sealed")?;
        match header.kind {
            Kind::Initiation => to.on_initiation(&header, datagram, now).map(Some),
            Kind::Response => to.on_response(&header, datagram, now).map(|()| None),
            Kind::Data => bail!("data"),
        }
    }

    #[test]
    fn one_round_trip_gives_both_sides_a_session_to_each_other() {
        let (mut a, mut b) = (table(1), table(1));
        meet(&mut a, &mut b);
        let now = Instant::now();
        assert!(a.sender(B, now).is_none());
        let init = a.due_handshakes(now, 1).pop().unwrap();
        assert_eq!(init.to, B);
        assert!(
            a.due_handshakes(now, 2).is_empty(),
            "one under way is waited for"
        );
        let response = deliver(&mut b, &init.datagram, now).unwrap().unwrap();
        deliver(&mut a, &response.datagram, now).unwrap();
        let (sa, sb) = (a.sender(B, now).unwrap(), b.sender(A, now).unwrap());
        assert_eq!(sa.session.remote_index, sb.session.local_index);
        assert_eq!(sb.session.remote_index, sa.session.local_index);
        assert!(b.receiver(sa.session.remote_index).is_some());
        assert!(
            a.due_handshakes(now, 3).is_empty(),
            "nothing due with a fresh session"
        );
    }

    #[test]
    fn a_replayed_initiation_is_refused_and_changes_nothing() {
        let (mut a, mut b) = (table(1), table(1));
        meet(&mut a, &mut b);
        let now = Instant::now();
        let init = a.due_handshakes(now, 10).pop().unwrap();
        let response = deliver(&mut b, &init.datagram, now).unwrap().unwrap();
        deliver(&mut a, &response.datagram, now).unwrap();
        let before = b.sender(A, now).unwrap().session.local_index;
        assert!(deliver(&mut b, &init.datagram, now).is_err());
        assert_eq!(b.sender(A, now).unwrap().session.local_index, before);
    }

    #[test]
    fn a_restarted_peer_handshakes_again_and_the_other_side_takes_the_new_session() {
        let (mut a, mut b) = (table(1), table(1));
        meet(&mut a, &mut b);
        let now = Instant::now();
        let init = a.due_handshakes(now, 10).pop().unwrap();
        let response = deliver(&mut b, &init.datagram, now).unwrap().unwrap();
        deliver(&mut a, &response.datagram, now).unwrap();
        // A restarts with the same key pair but no sessions; its clock has moved on.
        let mut a2 = Table::new(a.identity.clone());
        a2.set_peers(&[peer(B, b.public_key())]);
        let init = a2.due_handshakes(now, 20).pop().unwrap();
        let response = deliver(&mut b, &init.datagram, now).unwrap().unwrap();
        deliver(&mut a2, &response.datagram, now).unwrap();
        assert_eq!(
            b.sender(A, now).unwrap().session.remote_index,
            a2.sender(B, now).unwrap().session.local_index
        );
    }

    #[test]
    fn crossing_initiations_leave_each_side_able_to_open_what_the_other_sends() {
        let (mut a, mut b) = (table(1), table(1));
        meet(&mut a, &mut b);
        let now = Instant::now();
        let ia = a.due_handshakes(now, 1).pop().unwrap();
        let ib = b.due_handshakes(now, 1).pop().unwrap();
        let ra = deliver(&mut b, &ia.datagram, now).unwrap().unwrap();
        let rb = deliver(&mut a, &ib.datagram, now).unwrap().unwrap();
        deliver(&mut a, &ra.datagram, now).unwrap();
        deliver(&mut b, &rb.datagram, now).unwrap();
        let (sa, sb) = (a.sender(B, now).unwrap(), b.sender(A, now).unwrap());
        assert!(b.receiver(sa.session.remote_index).is_some());
        assert!(a.receiver(sb.session.remote_index).is_some());
    }

    #[test]
    fn a_host_without_the_password_gets_no_session() {
        let (mut a, mut b) = (table(1), table(2));
        meet(&mut a, &mut b);
        let now = Instant::now();
        let init = a.due_handshakes(now, 1).pop().unwrap();
        assert!(deliver(&mut b, &init.datagram, now).is_err());
        assert!(b.sender(A, now).is_none());
    }

    #[test]
    fn an_unanswered_handshake_is_retried_and_a_due_session_replaced() {
        let (mut a, mut b) = (table(1), table(1));
        meet(&mut a, &mut b);
        let t0 = Instant::now();
        a.due_handshakes(t0, 1);
        assert_eq!(a.due_handshakes(t0 + RETRY_AFTER, 2).len(), 1);
        let init = a.due_handshakes(t0 + 2 * RETRY_AFTER, 3).pop().unwrap();
        let response = deliver(&mut b, &init.datagram, t0).unwrap().unwrap();
        deliver(&mut a, &response.datagram, t0).unwrap();
        let later = t0 + super::super::session::REKEY_AFTER;
        assert_eq!(a.due_handshakes(later, 4).len(), 1, "rekey");
        assert!(
            a.sender(B, later).is_some(),
            "the old session serves meanwhile"
        );
    }

    #[test]
    fn a_peer_that_is_gone_takes_its_sessions_with_it() {
        let (mut a, _) = Table::connected_pair(A, B, [1; 32]).unwrap();
        let now = Instant::now();
        let index = a.sender(B, now).unwrap().session.local_index;
        a.set_peers(&[]);
        assert!(a.sender(B, now).is_none() && a.receiver(index).is_none());
        a.refuse(B);
        assert_eq!(a.refused_elsewhere.get(&B), Some(&1));
    }
}
