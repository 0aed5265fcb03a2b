//! One datagram from a container in, what to do with it out: an answer from the zone, the query
//! to forward upstream, or nothing. Pure (the server's sockets are elsewhere) and fuzzed: this
//! is where bytes a container chose are parsed, by hickory's protocol crate.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, PTR},
    },
};

use super::zone::{Zone, normalize};

/// Seconds a client may cache an answer: Weave's default, so a withdrawn name is gone from
/// caches as fast as from the mesh.
pub const TTL: u32 = 1;
/// The largest UDP answer without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The largest UDP answer sent whatever a client offers (the DNS flag day 2020 figure), so an
/// answer is never fragmented.
const EDNS_UDP: u16 = 1232;

/// What to do with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back to the client.
    Answer(Vec<u8>),
    /// A well-formed query for a name outside the zone: ask upstream.
    Forward(Box<Message>),
    /// Not a query (a response, or too short to carry an id): no answer, which a forged
    /// "response" must never get, or two servers could bounce it forever.
    Ignore,
}

/// Answers `packet`; `turn` is asked for the next turn each time several addresses of a name
/// are answered, and rotates their order (only then: a resolver's AAAA query between two A
/// queries must not take a turn, or the A answers of one client would never rotate).
pub fn answer(zone: &Zone, packet: &[u8], turn: &mut impl FnMut() -> usize) -> Reply {
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => return malformed(packet),
    };
    if request.metadata.message_type != MessageType::Query {
        return Reply::Ignore;
    }
    if request.metadata.op_code != OpCode::Query {
        return error(&request, ResponseCode::NotImp);
    }
    let [query] = request.queries.as_slice() else {
        return error(&request, ResponseCode::FormErr);
    };
    let name = normalize(&query.name().to_ascii());
    let (qtype, class) = (query.query_type(), query.query_class());
    if zone.holds(&name) {
        if class != DNSClass::IN {
            return error(&request, ResponseCode::Refused);
        }
        let found = zone.addresses(&name);
        if found.is_empty() {
            return error(&request, ResponseCode::NXDomain);
        }
        let mut response = response_to(&request, ResponseCode::NoError);
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            let start = if found.len() > 1 {
                turn() % found.len()
            } else {
                0
            };
            for ip in found[start..].iter().chain(&found[..start]) {
                response.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::A(A(*ip)),
                ));
            }
        }
        // Other types of a name that exists: no data, which is not NXDOMAIN.
        return encode(response, &request);
    }
    if let Some(ip) = reverse_of(query.name())
        && zone.answers_reverse(ip)
    {
        if class != DNSClass::IN {
            return error(&request, ResponseCode::Refused);
        }
        let names = zone.names(ip);
        if names.is_empty() {
            return error(&request, ResponseCode::NXDomain);
        }
        let mut response = response_to(&request, ResponseCode::NoError);
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            for name in names {
                let Ok(target) = Name::from_ascii(format!("{name}.")) else {
                    continue;
                };
                response.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::PTR(PTR(target)),
                ));
            }
        }
        return encode(response, &request);
    }
    Reply::Forward(Box::new(request))
}

/// The IPv4 address a full `d.c.b.a.in-addr.arpa.` name stands for.
fn reverse_of(name: &Name) -> Option<Ipv4Addr> {
    if name.num_labels() != 6 {
        return None;
    }
    let net = name.parse_arpa_name().ok()?;
    match net.addr() {
        std::net::IpAddr::V4(ip) if net.prefix_len() == 32 => Some(ip),
        _ => None,
    }
}

/// A query hickory cannot read: FORMERR with its id, if it has a header that says it is a
/// query; else nothing.
fn malformed(packet: &[u8]) -> Reply {
    // The id is the first two bytes and QR the top bit of the third (RFC 1035 4.1.1).
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return Reply::Ignore;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let message = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
    message.to_vec().map_or(Reply::Ignore, Reply::Answer)
}

fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.recursion_available = true;
    metadata.response_code = code;
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = metadata;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP);
        response.set_edns(edns);
    }
    response
}

fn error(request: &Message, code: ResponseCode) -> Reply {
    encode(response_to(request, code), request)
}

/// Encodes `response` to fit the client's UDP size, dropping answers from the end if needed:
/// fewer addresses of a name rather than a truncated answer, which would send the client to
/// TCP.
fn encode(mut response: Message, request: &Message) -> Reply {
    let limit = match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(CLASSIC_UDP as u16, EDNS_UDP)),
        None => CLASSIC_UDP,
    };
    loop {
        match response.to_vec() {
            Ok(bytes) if bytes.len() <= limit || response.answers.is_empty() => {
                return Reply::Answer(bytes);
            }
            Ok(_) => {
                response.answers.pop();
            }
            Err(_) => return Reply::Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;

    fn zone() -> Zone {
        Zone::new(
            "weave.local",
            [
                ("10.32.0.1".parse().unwrap(), "db.weave.local".to_owned()),
                ("10.32.0.2".parse().unwrap(), "db.weave.local".to_owned()),
                ("10.32.0.3".parse().unwrap(), "web.weave.local".to_owned()),
            ],
            vec!["10.32.0.0/12".parse().unwrap()],
        )
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4321;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        message.to_vec().unwrap()
    }

    fn answered(reply: Reply) -> Message {
        match reply {
            Reply::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn addresses(message: &Message) -> Vec<Ipv4Addr> {
        message
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(A(ip)) => Some(*ip),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_name_in_the_zone_is_answered_with_every_address_rotating() {
        let zone = zone();
        let first = answered(answer(
            &zone,
            &query("DB.weave.local.", RecordType::A),
            &mut || 0,
        ));
        assert_eq!(first.metadata.id, 4321);
        assert_eq!(first.metadata.response_code, ResponseCode::NoError);
        assert!(first.metadata.authoritative && first.metadata.recursion_desired);
        let second = answered(answer(
            &zone,
            &query("db.weave.local.", RecordType::A),
            &mut || 1,
        ));
        let (a, b): (Ipv4Addr, Ipv4Addr) =
            ("10.32.0.1".parse().unwrap(), "10.32.0.2".parse().unwrap());
        assert_eq!(addresses(&first), [a, b]);
        assert_eq!(addresses(&second), [b, a]);
        assert!(first.answers.iter().all(|r| r.ttl == TTL));
        // Only answers with several addresses take a turn.
        let mut turns = 0;
        let mut count = || {
            turns += 1;
            turns
        };
        answer(
            &zone,
            &query("db.weave.local.", RecordType::AAAA),
            &mut count,
        );
        answer(&zone, &query("web.weave.local.", RecordType::A), &mut count);
        answer(&zone, &query("db.weave.local.", RecordType::A), &mut count);
        assert_eq!(turns, 1);
    }

    #[test]
    fn unknown_names_in_the_zone_are_nxdomain_and_other_types_no_data() {
        let zone = zone();
        let missing = answered(answer(
            &zone,
            &query("gone.weave.local.", RecordType::A),
            &mut || 0,
        ));
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        let aaaa = answered(answer(
            &zone,
            &query("web.weave.local.", RecordType::AAAA),
            &mut || 0,
        ));
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
    }

    #[test]
    fn reverse_names_of_the_overlay_are_answered_and_others_forwarded() {
        let zone = zone();
        let ptr = answered(answer(
            &zone,
            &query("3.0.32.10.in-addr.arpa.", RecordType::PTR),
            &mut || 0,
        ));
        let names: Vec<String> = ptr
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(PTR(name)) => Some(name.to_ascii()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["web.weave.local."]);
        let free = answered(answer(
            &zone,
            &query("9.0.32.10.in-addr.arpa.", RecordType::PTR),
            &mut || 0,
        ));
        assert_eq!(free.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(
            answer(
                &zone,
                &query("1.1.168.192.in-addr.arpa.", RecordType::PTR),
                &mut || 0
            ),
            Reply::Forward(_)
        ));
        assert!(matches!(
            answer(&zone, &query("example.com.", RecordType::A), &mut || 0),
            Reply::Forward(_)
        ));
    }

    #[test]
    fn garbage_gets_formerr_if_it_looks_like_a_query_and_responses_get_nothing() {
        let zone = zone();
        assert_eq!(answer(&zone, &[], &mut || 0), Reply::Ignore);
        assert_eq!(answer(&zone, &[1, 2, 3], &mut || 0), Reply::Ignore);
        let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0, 9, 0, 0, 0, 0, 0, 0];
        junk.extend([0xff; 20]);
        let formerr = answered(answer(&zone, &junk, &mut || 0));
        assert_eq!(formerr.metadata.id, 0xabcd);
        assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
        // The same bytes with QR set: a "response", never answered.
        junk[2] |= 0x80;
        assert_eq!(answer(&zone, &junk, &mut || 0), Reply::Ignore);
        let mut response = Message::from_vec(&query("web.weave.local.", RecordType::A)).unwrap();
        response.metadata.message_type = MessageType::Response;
        assert_eq!(
            answer(&zone, &response.to_vec().unwrap(), &mut || 0),
            Reply::Ignore
        );
    }

    #[test]
    fn a_name_with_more_addresses_than_fit_is_answered_with_those_that_fit() {
        let many = (0..200u32).map(|i| (Ipv4Addr::from(0x0a20_0000 + i), "big.weave.local".into()));
        let zone = Zone::new("weave.local", many, Vec::new());
        let reply = answer(&zone, &query("big.weave.local.", RecordType::A), &mut || 0);
        let Reply::Answer(bytes) = reply else {
            panic!("no answer")
        };
        assert!(bytes.len() <= CLASSIC_UDP, "{}", bytes.len());
        let message = Message::from_vec(&bytes).unwrap();
        assert!(!message.metadata.truncation);
        assert!(message.answers.len() > 10 && message.answers.len() < 200);
    }
}
