//! Counts what crosses the gossip transport (plain or sealed), for metrics, and keeps failed
//! sends out of chitchat's log: chitchat logs each one with its full error (and backtrace, if
//! one was captured), hundreds of lines a second during an underlay outage.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use std::time::Instant;

use anyhow::Result;
use async_trait::async_trait;
use chitchat::{
    ChitchatMessage, Serializable as _,
    transport::{Socket, Transport},
};

use super::send_failures::SendFailures;

/// Gossip traffic through this agent's transport.
#[derive(Debug, Default)]
pub struct GossipTraffic {
    pub sent_messages: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub received_messages: AtomicU64,
    pub received_bytes: AtomicU64,
    /// Sends the socket refused (e.g. no route while the underlay is down).
    pub send_failures: AtomicU64,
}

/// Wraps the gossip transport (plain or sealed) to count messages and their encoded size
/// (before sealing).
pub struct CountingTransport {
    inner: Box<dyn Transport>,
    traffic: Arc<GossipTraffic>,
}

impl CountingTransport {
    pub fn new(inner: Box<dyn Transport>, traffic: Arc<GossipTraffic>) -> Self {
        Self { inner, traffic }
    }
}

#[async_trait]
impl Transport for CountingTransport {
    async fn open(&self, listen_addr: SocketAddr) -> Result<Box<dyn Socket>> {
        Ok(Box::new(CountingSocket {
            inner: self.inner.open(listen_addr).await?,
            traffic: Arc::clone(&self.traffic),
            failures: SendFailures::default(),
        }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    traffic: Arc<GossipTraffic>,
    failures: SendFailures,
}

#[async_trait]
impl Socket for CountingSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> Result<()> {
        let len = message.serialized_len() as u64;
        let sent = self.inner.send(to, message).await;
        let now = Instant::now();
        match sent {
            Ok(()) => {
                self.traffic.sent_messages.fetch_add(1, Ordering::Relaxed);
                self.traffic.sent_bytes.fetch_add(len, Ordering::Relaxed);
                if let Some(line) = self.failures.sent(to, now) {
                    tracing::info!("{line}");
                }
            }
            Err(err) => {
                self.traffic.send_failures.fetch_add(1, Ordering::Relaxed);
                // The root cause alone ("Network is unreachable"), never a backtrace.
                if let Some(line) = self.failures.failed(to, &err.root_cause().to_string(), now) {
                    tracing::warn!("{line}");
                }
            }
        }
        // A lost datagram is what gossip is built for; the failure detector judges liveness.
        Ok(())
    }

    async fn recv(&mut self) -> Result<(SocketAddr, ChitchatMessage)> {
        let (from, message) = self.inner.recv().await?;
        self.traffic
            .received_messages
            .fetch_add(1, Ordering::Relaxed);
        self.traffic
            .received_bytes
            .fetch_add(message.serialized_len() as u64, Ordering::Relaxed);
        Ok((from, message))
    }
}
