//! Small network helpers `cargo xtask bench` runs inside namespaces (as hidden xtask
//! subcommands): a 1-byte request/response pair and a UDP reachability probe.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

/// Serves one connection: echoes every byte back. Prints `ready` once listening.
pub fn rr_server(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("ready");
    let (mut conn, _) = listener.accept()?;
    conn.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    while conn.read(&mut byte)? == 1 {
        conn.write_all(&byte)?;
    }
    Ok(())
}

/// `count` 1-byte round trips on one connection (after a warm-up); prints p50 and p99 in µs.
pub fn rr_client(addr: SocketAddr, count: usize) -> Result<()> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_nodelay(true)?;
    let mut byte = [7u8; 1];
    let mut rtts = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let start = Instant::now();
        conn.write_all(&byte)?;
        conn.read_exact(&mut byte)?;
        if i >= count / 10 {
            rtts.push(start.elapsed());
        }
    }
    rtts.sort_unstable();
    let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!("{:.1} {:.1}", at(0.50), at(0.99));
    Ok(())
}

/// Echoes UDP datagrams on `port` forever.
pub fn udp_echo(port: u16) -> Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", port))?;
    println!("ready");
    let mut buf = [0u8; 64];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let _ = socket.send_to(&buf[..n], from);
    }
}

/// Sends a datagram to `addr` every millisecond until one is echoed; prints the wall-clock time
/// of that echo in µs since the epoch (comparable with other processes on this machine).
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(1)))?;
    println!("probing");
    let start = Instant::now();
    let mut buf = [0u8; 16];
    while start.elapsed() < timeout {
        // Unreachable (no ARP answer yet) is expected until the mesh knows the address.
        let _ = socket.send_to(b"probe", addr);
        if socket.recv_from(&mut buf).is_ok() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
            println!("{}", now.as_micros());
            return Ok(());
        }
    }
    bail!("{addr} did not answer within {timeout:?}")
}
