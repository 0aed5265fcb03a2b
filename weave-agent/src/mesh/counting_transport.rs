//! Counts what crosses the gossip transport (plain or sealed), for metrics.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Result;
use async_trait::async_trait;
use chitchat::{
    ChitchatMessage, Serializable as _,
    transport::{Socket, Transport},
};

/// Gossip traffic through this agent's transport.
#[derive(Debug, Default)]
pub struct GossipTraffic {
    pub sent_messages: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub received_messages: AtomicU64,
    pub received_bytes: AtomicU64,
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
        }))
    }
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    traffic: Arc<GossipTraffic>,
}

#[async_trait]
impl Socket for CountingSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> Result<()> {
        let len = message.serialized_len() as u64;
        self.inner.send(to, message).await?;
        self.traffic.sent_messages.fetch_add(1, Ordering::Relaxed);
        self.traffic.sent_bytes.fetch_add(len, Ordering::Relaxed);
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
