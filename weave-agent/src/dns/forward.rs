//! Queries for names outside the zone, relayed to the host's resolvers: each under an id of
//! our own (so answers are matched to the query and a guessed id gains nothing), tried on one
//! upstream after another, answered with SERVFAIL when none answers in time. Pure: the server
//! does the sending.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::op::{Message, MessageType, ResponseCode};

/// How long one upstream has to answer before the next is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Queries waiting upstream at most: past it a new one is answered SERVFAIL at once, so a
/// container flooding names outside the zone cannot grow the table without end.
pub const MAX_PENDING: usize = 4096;

/// A datagram to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Datagram {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

struct Pending {
    client: SocketAddr,
    client_id: u16,
    query: Message,
    /// Index into the upstreams of the one asked last.
    asked: usize,
    deadline: Instant,
}

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    pending: HashMap<u16, Pending>,
    /// Source of our ids: random, so an off-path host cannot guess the one in flight.
    ids: Box<dyn FnMut() -> u16 + Send>,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, ids: Box<dyn FnMut() -> u16 + Send>) -> Self {
        Self {
            upstreams,
            pending: HashMap::new(),
            ids,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Starts forwarding `query` from `client`: the datagram for the first upstream, or the
    /// SERVFAIL for the client when there is no upstream or no room.
    pub fn start(&mut self, query: Message, client: SocketAddr, now: Instant) -> Datagram {
        if self.upstreams.is_empty() || self.pending.len() >= MAX_PENDING {
            return Datagram {
                to: client,
                bytes: servfail(&query),
            };
        }
        let client_id = query.metadata.id;
        let id = self.free_id();
        let pending = Pending {
            client,
            client_id,
            query,
            asked: 0,
            deadline: now + UPSTREAM_TIMEOUT,
        };
        let bytes = with_id(&pending.query, id);
        let to = self.upstreams[0];
        self.pending.insert(id, pending);
        Datagram { to, bytes }
    }

    /// An upstream's datagram: the answer for the client whose query it answers, or None (not
    /// an answer to a query of ours, or from a host we did not ask).
    pub fn answered(&mut self, from: SocketAddr, packet: &[u8]) -> Option<Datagram> {
        let mut response = Message::from_vec(packet).ok()?;
        if response.metadata.message_type != MessageType::Response {
            return None;
        }
        let id = response.metadata.id;
        let pending = self.pending.get(&id)?;
        if self.upstreams.get(pending.asked) != Some(&from)
            || response.queries != pending.query.queries
        {
            return None;
        }
        let pending = self.pending.remove(&id)?;
        response.metadata.id = pending.client_id;
        Some(Datagram {
            to: pending.client,
            bytes: response.to_vec().ok()?,
        })
    }

    /// Queries whose upstream took too long: each goes to the next upstream, or, after the
    /// last, back to its client as SERVFAIL (`failed` counts those).
    pub fn expire(&mut self, now: Instant) -> (Vec<Datagram>, usize) {
        let late: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let (mut sends, mut failed) = (Vec::new(), 0);
        for id in late {
            let Some(mut pending) = self.pending.remove(&id) else {
                continue;
            };
            pending.asked += 1;
            if let Some(next) = self.upstreams.get(pending.asked).copied() {
                let id = self.free_id();
                pending.deadline = now + UPSTREAM_TIMEOUT;
                sends.push(Datagram {
                    to: next,
                    bytes: with_id(&pending.query, id),
                });
                self.pending.insert(id, pending);
            } else {
                failed += 1;
                let mut query = pending.query;
                query.metadata.id = pending.client_id;
                sends.push(Datagram {
                    to: pending.client,
                    bytes: servfail(&query),
                });
            }
        }
        (sends, failed)
    }

    /// When the next query falls due, if any waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    fn free_id(&mut self) -> u16 {
        loop {
            let id = (self.ids)();
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }
}

fn with_id(query: &Message, id: u16) -> Vec<u8> {
    let mut query = query.clone();
    query.metadata.id = id;
    query.to_vec().unwrap_or_default()
}

/// SERVFAIL for `query`, under its own id.
fn servfail(query: &Message) -> Vec<u8> {
    let mut response = Message::error_msg(
        query.metadata.id,
        query.metadata.op_code,
        ResponseCode::ServFail,
    );
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(query.queries.to_vec());
    response.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Query,
        rr::{Name, RecordType},
    };

    use super::*;

    fn query(id: u16) -> Message {
        let mut message = Message::query();
        message.metadata.id = id;
        message.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        message
    }

    fn counting_ids() -> Box<dyn FnMut() -> u16 + Send> {
        let mut next = 100u16;
        Box::new(move || {
            next += 1;
            next
        })
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_answer_goes_back_to_the_client_under_its_own_id() {
        let (up, client) = (addr("10.0.0.53:53"), addr("10.32.0.5:40000"));
        let mut fwd = Forwarder::new(vec![up], counting_ids());
        let now = Instant::now();
        let sent = fwd.start(query(7), client, now);
        assert_eq!(sent.to, up);
        let asked = Message::from_vec(&sent.bytes).unwrap();
        assert_eq!(asked.metadata.id, 101);
        let mut response = asked.clone();
        response.metadata.message_type = MessageType::Response;
        let bytes = response.to_vec().unwrap();
        // From a host we did not ask, or a query rather than a response: nothing.
        assert_eq!(fwd.answered(addr("10.0.0.99:53"), &bytes), None);
        assert_eq!(fwd.answered(up, &asked.to_vec().unwrap()), None);
        let back = fwd.answered(up, &bytes).expect("relayed");
        assert_eq!(back.to, client);
        assert_eq!(Message::from_vec(&back.bytes).unwrap().metadata.id, 7);
        // Once only.
        assert_eq!(fwd.answered(up, &bytes), None);
        assert_eq!(fwd.pending(), 0);
    }

    #[test]
    fn a_silent_upstream_hands_over_to_the_next_then_the_client_gets_servfail() {
        let (a, b, client) = (
            addr("10.0.0.1:53"),
            addr("10.0.0.2:53"),
            addr("10.32.0.5:1"),
        );
        let mut fwd = Forwarder::new(vec![a, b], counting_ids());
        let now = Instant::now();
        fwd.start(query(9), client, now);
        assert_eq!(fwd.expire(now + UPSTREAM_TIMEOUT / 2), (Vec::new(), 0));
        let (sends, failed) = fwd.expire(now + UPSTREAM_TIMEOUT);
        assert_eq!((sends.len(), failed), (1, 0));
        assert_eq!(sends[0].to, b);
        let (sends, failed) = fwd.expire(now + UPSTREAM_TIMEOUT * 2);
        assert_eq!((sends.len(), failed), (1, 1));
        assert_eq!(sends[0].to, client);
        let fail = Message::from_vec(&sends[0].bytes).unwrap();
        assert_eq!(fail.metadata.id, 9);
        assert_eq!(fail.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(fwd.pending(), 0);
    }

    #[test]
    fn a_full_table_or_no_upstream_fails_at_once() {
        let client = addr("10.32.0.5:1");
        let mut none = Forwarder::new(Vec::new(), counting_ids());
        let sent = none.start(query(1), client, Instant::now());
        assert_eq!(sent.to, client);
        let mut ids = 0u16;
        let mut fwd = Forwarder::new(
            vec![addr("10.0.0.1:53")],
            Box::new(move || {
                ids = ids.wrapping_add(1);
                ids
            }),
        );
        let now = Instant::now();
        for i in 0..MAX_PENDING {
            assert_ne!(fwd.start(query(i as u16), client, now).to, client);
        }
        let refused = fwd.start(query(1), client, now);
        assert_eq!(refused.to, client);
        assert_eq!(
            Message::from_vec(&refused.bytes)
                .unwrap()
                .metadata
                .response_code,
            ResponseCode::ServFail
        );
    }
}
