//! Peers as users name them (IP, IP:PORT, HOST[:PORT]), and host names resolved in the
//! background. Resolution never happens where the agent does its work: a resolver that takes
//! seconds must not stall gossip rounds, the map sync or `status`, or peers would declare
//! this host dead.

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::Duration,
};

use anyhow::{Result, bail};
use weave_common::GOSSIP_PORT;

/// How long one host name may take to resolve before this round gives up on it.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer as given to `launch`, `join` or `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSpec {
    Addr(SocketAddr),
    Host { name: String, port: u16 },
}

impl PeerSpec {
    /// Checks the syntax only; host names are resolved later, by [`PeerBook::refresh`]. A peer
    /// given without a port is at `default_port` (the mesh's gossip port, `launch --port`).
    pub fn parse(text: &str, default_port: u16) -> Result<Self> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::Addr(SocketAddr::new(ip, default_port)));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => match port.parse::<u16>() {
                Ok(port) if port != 0 => (name, port),
                _ => bail!("{text:?}: the port after ':' must be a number from 1 to 65535"),
            },
            None => (text, default_port),
        };
        if !is_host_name(name) {
            bail!("{text:?} is not a peer address (IP, IP:PORT, HOST or HOST:PORT)");
        }
        Ok(Self::Host {
            name: name.to_owned(),
            port,
        })
    }

    /// The address, if it was given as one.
    pub fn literal(&self) -> Option<SocketAddr> {
        match self {
            Self::Addr(addr) => Some(*addr),
            Self::Host { .. } => None,
        }
    }
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// The last known address of each configured peer given by host name.
#[derive(Debug)]
pub struct PeerBook {
    resolved: Mutex<BTreeMap<String, SocketAddr>>,
    /// Where a peer given without a port is (see [`PeerSpec::parse`]).
    default_port: u16,
}

impl Default for PeerBook {
    fn default() -> Self {
        Self::new(GOSSIP_PORT)
    }
}

impl PeerBook {
    /// A book for a mesh whose gossip port is `default_port`.
    pub fn new(default_port: u16) -> Self {
        Self {
            resolved: Mutex::default(),
            default_port,
        }
    }

    /// Where a peer given without a port is.
    pub fn default_port(&self) -> u16 {
        self.default_port
    }

    /// The address of a configured peer as known now: the literal one, or the host name's last
    /// resolution; None while a name has not resolved yet. Never resolves.
    pub fn address(&self, text: &str) -> Option<SocketAddr> {
        match PeerSpec::parse(text, self.default_port).ok()? {
            PeerSpec::Addr(addr) => Some(addr),
            PeerSpec::Host { .. } => self.resolved.lock().expect("peer book").get(text).copied(),
        }
    }

    /// Resolves the host names among `configured` with `resolve` (each bounded by
    /// [`RESOLVE_TIMEOUT`]) and keeps the first IPv4 address of each. A name that fails keeps
    /// its previous address, since a flaky resolver is no reason to stop reaching a peer.
    pub async fn refresh<R, F>(&self, configured: &[String], resolve: R)
    where
        R: Fn(String) -> F,
        F: Future<Output = io::Result<Vec<SocketAddr>>>,
    {
        for text in configured {
            let Ok(PeerSpec::Host { name, port }) = PeerSpec::parse(text, self.default_port) else {
                continue;
            };
            let found = tokio::time::timeout(RESOLVE_TIMEOUT, resolve(format!("{name}:{port}")))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))
                .and_then(|r| r);
            match found.map(|addrs| addrs.into_iter().find(SocketAddr::is_ipv4)) {
                Ok(Some(addr)) => {
                    self.resolved
                        .lock()
                        .expect("peer book")
                        .insert(text.clone(), addr);
                }
                Ok(None) => tracing::debug!("peer {text}: no IPv4 address"),
                Err(err) => tracing::debug!("resolving peer {text}: {err}"),
            }
        }
        let mut resolved = self.resolved.lock().expect("peer book");
        resolved.retain(|text, _| configured.contains(text));
    }
}

/// The system's resolver, off the async threads (tokio runs getaddrinfo on its blocking pool).
pub async fn system_resolver(host_port: String) -> io::Result<Vec<SocketAddr>> {
    Ok(tokio::net::lookup_host(host_port).await?.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_default_to_the_gossip_port_and_names_are_not_resolved_when_parsed() {
        assert_eq!(
            PeerSpec::parse("192.168.56.101", GOSSIP_PORT).unwrap(),
            PeerSpec::Addr("192.168.56.101:6783".parse().unwrap())
        );
        assert_eq!(
            PeerSpec::parse("192.168.56.101:7000", GOSSIP_PORT)
                .unwrap()
                .literal(),
            Some("192.168.56.101:7000".parse().unwrap())
        );
        assert_eq!(
            PeerSpec::parse("host-b.example", GOSSIP_PORT).unwrap(),
            PeerSpec::Host {
                name: "host-b.example".into(),
                port: 6783
            }
        );
        assert!(PeerSpec::parse("not an address", GOSSIP_PORT).is_err());
        assert!(PeerSpec::parse("host:0", GOSSIP_PORT).is_err());
        assert!(PeerSpec::parse("-bad.example", GOSSIP_PORT).is_err());
    }

    /// With `launch --port N`, a peer typed without a port is at N, by address or by name.
    #[test]
    fn a_mesh_on_another_port_finds_its_peers_there() {
        let book = PeerBook::new(7000);
        assert_eq!(
            book.address("192.168.56.101"),
            Some("192.168.56.101:7000".parse().unwrap())
        );
        assert_eq!(
            book.address("192.168.56.101:6783"),
            Some("192.168.56.101:6783".parse().unwrap()),
            "a port given is kept"
        );
        assert_eq!(
            PeerSpec::parse("host-b.example", book.default_port()).unwrap(),
            PeerSpec::Host {
                name: "host-b.example".into(),
                port: 7000
            }
        );
    }

    /// A resolver that never answers (as a dead DNS server behaves for seconds) holds up no
    /// one: the addresses known so far are there at once, and the round gives up in time.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_resolver_that_never_answers_stalls_nothing() {
        let book = PeerBook::default();
        let configured = vec!["10.0.0.1".to_owned(), "slow.example".to_owned()];
        let heartbeat = async {
            // What the sync loop and `status` do while the refresh waits on the resolver.
            assert_eq!(
                book.address("10.0.0.1"),
                Some("10.0.0.1:6783".parse().unwrap())
            );
            assert_eq!(book.address("slow.example"), None);
        };
        let refresh = book.refresh(&configured, |_| std::future::pending());
        let ((), ()) = tokio::join!(heartbeat, refresh);
        assert_eq!(book.address("slow.example"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_name_keeps_its_address_through_a_failed_round_and_goes_when_forgotten() {
        let book = PeerBook::default();
        let configured = vec!["b.example:7000".to_owned()];
        let answer: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        book.refresh(&configured, |name| async move {
            assert_eq!(name, "b.example:7000");
            Ok(vec!["[::1]:7000".parse().unwrap(), answer])
        })
        .await;
        assert_eq!(book.address("b.example:7000"), Some(answer));
        book.refresh(&configured, |_| async { Err(io::Error::other("SERVFAIL")) })
            .await;
        assert_eq!(book.address("b.example:7000"), Some(answer));
        book.refresh(&[], |_| async { Ok(Vec::new()) }).await;
        assert_eq!(book.address("b.example:7000"), None);
    }
}
