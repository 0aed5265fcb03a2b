//! DNS clients `cargo xtask bench` runs inside a container namespace (hidden xtask
//! subcommands): a load generator that keeps a window of queries in flight, and a watcher that
//! asks until a name appears or goes. Messages are built and read by hickory's protocol crate,
//! as the server under test does, so neither side's wire code is home-made.

use std::{
    io::{IoSlice, IoSliceMut},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType, rdata::A},
};
use nix::{
    errno::Errno,
    sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmmsg},
};

/// How long the load generator waits for the window's answers before it counts them lost and
/// sends more: far above any answer's latency here, far below what would hide a loss in the
/// rate.
const LOST_AFTER: Duration = Duration::from_millis(200);

/// An A query for `name` with id 0 (each send patches the id in).
fn query(name: &str) -> Result<Vec<u8>> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).with_context(|| format!("{name:?} is no DNS name"))?,
        RecordType::A,
    ));
    Ok(message.to_vec()?)
}

/// The answer's response code and A addresses.
fn read_answer(bytes: &[u8]) -> Result<(u16, ResponseCode, Vec<Ipv4Addr>)> {
    let message = Message::from_vec(bytes).context("an answer that does not parse")?;
    let addresses = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect();
    Ok((
        message.metadata.id,
        message.metadata.response_code,
        addresses,
    ))
}

fn socket_to(server: SocketAddr, wait: Duration) -> Result<UdpSocket> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket
        .connect(server)
        .with_context(|| format!("no route to {server}"))?;
    socket.set_read_timeout(Some(wait))?;
    Ok(socket)
}

/// `count` A queries for `name` (which must be answered with `expect`), `window` in flight at a
/// time; prints answers per second, p50 and p99 latency in µs, and the queries lost.
pub fn load(
    server: SocketAddr,
    name: &str,
    expect: Ipv4Addr,
    count: usize,
    window: usize,
) -> Result<()> {
    ensure!(
        (1..=u16::MAX as usize).contains(&window),
        "window {window}: 1 to 65535"
    );
    let socket = socket_to(server, LOST_AFTER)?;
    let bytes = query(name)?;
    // One full check of the answer before the run: the right address, not just any answer.
    socket.send(&bytes)?;
    let mut buf = [0u8; 1500];
    let n = socket
        .recv(&mut buf)
        .with_context(|| format!("{server} does not answer"))?;
    let (_, code, addresses) = read_answer(&buf[..n])?;
    ensure!(
        code == ResponseCode::NoError && addresses == [expect],
        "{server} answers {name} with {code} {addresses:?}, not {expect}"
    );

    let fd = socket.as_raw_fd();
    let mut sent_at: Vec<Option<Instant>> = vec![None; 1 << 16];
    let mut latencies = Vec::with_capacity(count);
    let (mut next, mut in_flight, mut lost) = (0usize, 0usize, 0usize);
    let mut outgoing: Vec<Vec<u8>> = vec![bytes.clone(); window];
    let mut answers: Vec<Vec<u8>> = vec![vec![0u8; 1500]; window];
    let mut send_headers = MultiHeaders::<SockaddrIn>::preallocate(window, None);
    let mut recv_headers = MultiHeaders::<SockaddrIn>::preallocate(window, None);
    let start = Instant::now();
    while latencies.len() + lost < count {
        // The window refilled in one call.
        let room = (window - in_flight).min(count - next);
        if room > 0 {
            for query in &mut outgoing[..room] {
                let id = (next % (1 << 16)) as u16;
                query[..2].copy_from_slice(&id.to_be_bytes());
                sent_at[id as usize] = Some(Instant::now());
                next += 1;
            }
            let slices: Vec<[IoSlice<'_>; 1]> =
                outgoing[..room].iter().map(|q| [IoSlice::new(q)]).collect();
            let to: Vec<Option<SockaddrIn>> = vec![None; room];
            let no_control: [ControlMessage<'_>; 0] = [];
            let sent = sendmmsg(
                fd,
                &mut send_headers,
                &slices,
                &to,
                no_control,
                MsgFlags::empty(),
            )?
            .count();
            ensure!(sent == room, "sent {sent} of {room} queries");
            in_flight += room;
        }
        // Whatever answers are there once the first is (the socket's timeout bounds the wait).
        let lengths: Option<Vec<usize>> = {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                answers.iter_mut().map(|a| [IoSliceMut::new(a)]).collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(messages) => Some(messages.map(|m| m.bytes).collect()),
                Err(Errno::EAGAIN | Errno::EINTR) => None,
                Err(err) => return Err(err).context("receiving answers"),
            }
        };
        let Some(lengths) = lengths else {
            lost += in_flight;
            in_flight = 0;
            sent_at.iter_mut().for_each(|s| *s = None);
            continue;
        };
        for (answer, n) in answers.iter().zip(lengths) {
            // The header alone on the hot path: the id, and NOERROR with an answer (a full
            // parse here would make the client, not the server, the bottleneck).
            ensure!(n >= 12, "a {n}-byte answer");
            let id = u16::from_be_bytes([answer[0], answer[1]]);
            let Some(sent) = sent_at[id as usize].take() else {
                continue; // an answer after we gave up on it
            };
            let rcode = answer[3] & 0x0f;
            let count = u16::from_be_bytes([answer[6], answer[7]]);
            ensure!(
                rcode == 0 && count >= 1,
                "answer {id}: rcode {rcode}, {count} answers"
            );
            latencies.push(sent.elapsed());
            in_flight -= 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    ensure!(!latencies.is_empty(), "no query was answered");
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{:.0} {:.1} {:.1} {lost}",
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.99)
    );
    Ok(())
}

/// Asks for `name` every 2 ms until it resolves (`present`) or is NXDOMAIN (`!present`); prints
/// `asking` first, then the wall-clock time of the deciding answer in µs since the epoch
/// (comparable with other processes on this machine).
pub fn wait(server: SocketAddr, name: &str, present: bool, timeout: Duration) -> Result<()> {
    let socket = socket_to(server, Duration::from_millis(2))?;
    let mut bytes = query(name)?;
    let mut buf = [0u8; 1500];
    println!("asking");
    let start = Instant::now();
    let mut id = 0u16;
    'asking: while start.elapsed() < timeout {
        id = id.wrapping_add(1);
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        socket.send(&bytes)?;
        // This query's answer, past any late one to an earlier query (reading one answer per
        // query would stay one behind for good after a single late answer).
        let (code, addresses) = loop {
            let Ok(n) = socket.recv(&mut buf) else {
                continue 'asking;
            };
            let (got, code, addresses) = read_answer(&buf[..n])?;
            if got == id {
                break (code, addresses);
            }
        };
        let decided = if present {
            code == ResponseCode::NoError && !addresses.is_empty()
        } else {
            code == ResponseCode::NXDomain
        };
        if decided {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
            println!("{}", now.as_micros());
            return Ok(());
        }
    }
    bail!(
        "{name} was still {} after {timeout:?}",
        if present { "missing" } else { "there" }
    )
}
