//! `weave-agent bench-peer` (hidden): a stand-in peer for `cargo xtask bench`, which measures
//! how fast an agent learns many remote endpoints. Kept out of the production gossip code.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result};
use weave_common::GOSSIP_PORT;

use super::{gossip::Gossip, peer_addr::PeerSpec};
use crate::net::addressing::Cidr;

/// `weave-agent bench-peer`: joins `seed` and publishes `count` synthetic endpoints
/// (10.200.0.0/16) over real gossip, then stays until killed.
pub fn bench_peer(address: Ipv4Addr, seed: &str, count: u16) -> Result<()> {
    let seed = PeerSpec::parse(seed, GOSSIP_PORT)?
        .literal()
        .context("bench-peer takes the seed as IP or IP:PORT")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let name = format!("bench-{address}");
        let gossip = Gossip::start(
            &name,
            &name,
            address,
            GOSSIP_PORT,
            Vec::new(),
            &chitchat::transport::UdpTransport,
        )
        .await?;
        for i in 0..count {
            let [hi, lo] = (i + 1).to_be_bytes();
            let cidr: Cidr = format!("10.200.{hi}.{lo}/16").parse()?;
            gossip.publish(&cidr, &cidr.mac(), "bench").await;
        }
        println!("publishing {count} endpoints",);
        loop {
            gossip.contact(seed)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}
