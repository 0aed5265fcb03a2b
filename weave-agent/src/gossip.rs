//! Membership and replicated endpoint state over chitchat (scuttlebutt gossip with phi-accrual
//! failure detection) on UDP 6783.
//!
//! Each agent writes only its own keys: `nickname`, one `ep:<ip>` per local endpoint with
//! value `<prefix> <mac> <container>`, and one `rule:<a>,<b>` per isolation rule it knows
//! (see [`crate::policy`]). What an agent should program into its maps is a pure
//! function of the live nodes' keys ([`desired`]), recomputed whenever the live view changes;
//! deletes are seen because the whole view is diffed, not individual key events.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs as _},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, spawn_chitchat,
    transport::Transport,
};
use serde::{Deserialize, Serialize};
use weave_common::{GOSSIP_PORT, endpoint::Endpoint};

use crate::{
    addressing::{Cidr, format_mac, parse_mac},
    policy::{self, Rule},
};

/// One gossip round every 200 ms: heartbeats arrive often enough for a dead host to be noticed
/// within a couple of seconds instead of chitchat's default tens of seconds.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// phi at which a peer is declared dead (chitchat's default). chitchat 0.11 computes phi as the
/// silence since the last heartbeat divided by the mean interval between heartbeats (about one
/// gossip round), so a peer is dead after roughly 8 silent rounds, 1.6 s: well under the 5 s
/// goal, yet several rounds of slack for a loaded machine.
const PHI_THRESHOLD: f64 = 8.0;
const CLUSTER_ID: &str = "weave-agent";
const ENDPOINT_PREFIX: &str = "ep:";
const NICKNAME_KEY: &str = "nickname";

/// Parses a peer as typed by the user: IP, IP:PORT, or HOST[:PORT]. Gossip port by default.
pub fn peer_addr(text: &str) -> Result<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, GOSSIP_PORT));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let with_port = if text.contains(':') {
        text.to_owned()
    } else {
        format!("{text}:{GOSSIP_PORT}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(SocketAddr::is_ipv4))
        .with_context(|| {
            format!("{text:?} is not a peer address (IP, IP:PORT or a resolvable host name)")
        })
}

pub struct Gossip {
    handle: ChitchatHandle,
    self_id: ChitchatId,
}

/// An endpoint published by some peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEndpoint {
    pub cidr: Cidr,
    pub mac: String,
    pub container: String,
}

/// What this agent knows of one other peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub name: String,
    pub nickname: String,
    /// Gossip address; its IP is the peer's underlay address.
    pub address: SocketAddr,
    pub generation: u64,
    pub alive: bool,
    pub endpoints: Vec<PublishedEndpoint>,
    /// Isolation rules the peer publishes (the newest it knows per pair).
    pub rules: Vec<Rule>,
}

impl Gossip {
    /// Starts gossiping as `name`, with `initial` keys (besides the nickname) in place from the
    /// first datagram on.
    pub async fn start(
        name: &str,
        nickname: &str,
        underlay: Ipv4Addr,
        initial: Vec<(String, String)>,
        transport: &dyn Transport,
    ) -> Result<Self> {
        let advertise = SocketAddr::new(IpAddr::V4(underlay), GOSSIP_PORT);
        // A new generation each start: peers replace everything they knew of our previous life.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let self_id = ChitchatId::new(name.to_owned(), generation, advertise);
        let config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: CLUSTER_ID.to_owned(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: advertise,
            seed_nodes: Vec::new(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: PHI_THRESHOLD,
                sampling_window_size: 100,
                max_interval: Duration::from_secs(2),
                initial_interval: GOSSIP_INTERVAL * 2,
                dead_node_grace_period: Duration::from_secs(10 * 60),
            },
            marked_for_deletion_grace_period: Duration::from_secs(60 * 60),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let mut keys = vec![(NICKNAME_KEY.to_owned(), nickname.to_owned())];
        keys.extend(initial);
        let handle = spawn_chitchat(config, keys, transport)
            .await
            .with_context(|| format!("starting gossip on UDP {advertise} (is the port in use?)"))?;
        Ok(Self { handle, self_id })
    }

    pub fn self_address(&self) -> SocketAddr {
        self.self_id.gossip_advertise_addr
    }

    /// Sends one gossip round to `addr` now; the caller retries until the peer is live.
    pub fn contact(&self, addr: SocketAddr) -> Result<()> {
        self.handle.gossip(addr)
    }

    pub async fn publish(&self, cidr: &Cidr, container: &str) {
        let (key, value) = endpoint_key_value(cidr, container);
        self.handle
            .with_chitchat(|c| c.self_node_state().set(&key, &value))
            .await;
    }

    /// Publishes `rule` as this agent's word on its pair (replacing what it said before).
    pub async fn publish_rule(&self, rule: &Rule) {
        let (key, value) = (rule.gossip_key(), rule.gossip_value());
        self.handle
            .with_chitchat(|c| c.self_node_state().set(&key, &value))
            .await;
    }

    pub async fn withdraw(&self, ip: Ipv4Addr) {
        let key = format!("{ENDPOINT_PREFIX}{ip}");
        self.handle
            .with_chitchat(|c| c.self_node_state().delete(&key))
            .await;
    }

    /// Wakes `notify` as soon as a peer's key (endpoint, rule) is set here, while the delta is
    /// applied. The live-view watcher reports such a change only at the end of this node's next
    /// gossip round, up to a whole interval after it arrived: measured, a new endpoint became
    /// reachable 110-290 ms after `attach` (median of 20, per run) depending on how the two
    /// hosts' gossip timers happened to line up. Deletes are not reported here; the watcher
    /// and the periodic sync catch those. Keep the handle: dropping it unsubscribes.
    pub async fn on_key_set(
        &self,
        notify: std::sync::Arc<tokio::sync::Notify>,
    ) -> chitchat::ListenerHandle {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        // notify_one only stores a permit: cheap enough to run under chitchat's lock.
        guard.subscribe_event("", move |_| notify.notify_one())
    }

    /// Waits until the live view may have changed (a peer joined, left or changed its keys).
    pub fn watcher(
        &self,
    ) -> impl std::future::Future<Output = tokio::sync::watch::Receiver<BTreeMap<ChitchatId, NodeState>>>
    {
        let chitchat = self.handle.chitchat();
        async move { chitchat.lock().await.live_nodes_watcher() }
    }

    /// Every other peer we know, live or dead: per name the newest live generation, else the
    /// newest.
    pub async fn peers(&self) -> Vec<PeerView> {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let live: BTreeSet<&ChitchatId> = guard.live_nodes().collect();
        let mut newest: BTreeMap<&str, PeerView> = BTreeMap::new();
        for id in guard.node_states().keys() {
            if id.node_id == self.self_id.node_id {
                continue;
            }
            let Some(state) = guard.node_state(id) else {
                continue;
            };
            let view = PeerView {
                name: id.node_id.to_string(),
                nickname: state.get(NICKNAME_KEY).unwrap_or_default().to_owned(),
                address: id.gossip_advertise_addr,
                generation: id.generation_id,
                alive: live.contains(id),
                endpoints: published_endpoints(state),
                rules: published_rules(state),
            };
            // A restarted peer's new generation takes over once it is alive; until then the
            // old one, if still alive, speaks for it, so its endpoints never lapse.
            match newest.get(&*id.node_id) {
                Some(seen) if (seen.alive, seen.generation) >= (view.alive, view.generation) => {}
                _ => {
                    newest.insert(&id.node_id, view);
                }
            }
        }
        newest.into_values().collect()
    }
}

/// The gossip key and value announcing a local endpoint.
pub fn endpoint_key_value(cidr: &Cidr, container: &str) -> (String, String) {
    let key = format!("{ENDPOINT_PREFIX}{}", cidr.ip);
    let value = format!("{} {} {container}", cidr.prefix, format_mac(&cidr.mac()));
    (key, value)
}

/// `weave-agent bench-peer`: joins `seed` and publishes `count` synthetic endpoints
/// (10.200.0.0/16) over real gossip, then stays until killed.
pub fn bench_peer(address: Ipv4Addr, seed: &str, count: u16) -> Result<()> {
    let seed = peer_addr(seed)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let name = format!("bench-{address}");
        let gossip = Gossip::start(
            &name,
            &name,
            address,
            Vec::new(),
            &chitchat::transport::UdpTransport,
        )
        .await?;
        for i in 0..count {
            let [hi, lo] = (i + 1).to_be_bytes();
            let cidr: Cidr = format!("10.200.{hi}.{lo}/16").parse()?;
            gossip.publish(&cidr, "bench").await;
        }
        println!("publishing {count} endpoints",);
        loop {
            gossip.contact(seed)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

fn published_endpoints(state: &NodeState) -> Vec<PublishedEndpoint> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let ip = key.strip_prefix(ENDPOINT_PREFIX)?;
            parse_endpoint(ip, value).ok()
        })
        .collect()
}

fn published_rules(state: &NodeState) -> Vec<Rule> {
    state
        .key_values()
        .filter(|(key, _)| key.starts_with(policy::GOSSIP_PREFIX))
        .filter_map(|(key, value)| Rule::from_gossip(key, value).ok())
        .collect()
}

/// The endpoint behind a gossip key's address part and its value.
pub fn parse_endpoint(ip: &str, value: &str) -> Result<PublishedEndpoint> {
    let mut parts = value.splitn(3, ' ');
    let (Some(prefix), Some(mac), container) = (parts.next(), parts.next(), parts.next()) else {
        bail!("malformed endpoint value {value:?}");
    };
    let cidr: Cidr = format!("{ip}/{prefix}").parse()?;
    if parse_mac(mac).is_none() {
        bail!("malformed MAC {mac:?}");
    }
    Ok(PublishedEndpoint {
        cidr,
        mac: mac.to_owned(),
        container: container.unwrap_or_default().to_owned(),
    })
}

/// What the maps should hold for remote endpoints and peers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub endpoints: BTreeMap<Ipv4Addr, Endpoint>,
    pub peers: BTreeSet<Ipv4Addr>,
    /// Addresses claimed by more than one host, as human-readable lines.
    pub conflicts: Vec<String>,
}

/// Remote endpoints and peers from the live peers' published state. An address also used here
/// stays local; one claimed by two peers goes to the peer with the smaller name, and both
/// cases are reported as conflicts.
pub fn desired(peers: &[PeerView], local: &BTreeSet<Ipv4Addr>) -> Desired {
    let mut out = Desired::default();
    let mut owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for peer in peers.iter().filter(|p| p.alive) {
        let IpAddr::V4(underlay) = peer.address.ip() else {
            continue;
        };
        out.peers.insert(underlay);
        for ep in &peer.endpoints {
            let ip = ep.cidr.ip;
            let Some(mac) = parse_mac(&ep.mac) else {
                continue;
            };
            if local.contains(&ip) {
                out.conflicts.push(format!(
                    "{ip} is attached here and also on peer {}",
                    peer.name
                ));
                continue;
            }
            if let Some(other) = owner.get(&ip) {
                out.conflicts.push(format!(
                    "{ip} is claimed by peers {other} and {}",
                    peer.name
                ));
                if *other <= peer.name.as_str() {
                    continue;
                }
            }
            owner.insert(ip, &peer.name);
            out.endpoints
                .insert(ip, ep.cidr.remote_endpoint(mac, underlay));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: [u8; 4], alive: bool, eps: &[&str]) -> PeerView {
        PeerView {
            name: name.to_owned(),
            nickname: name.to_owned(),
            address: SocketAddr::from((ip, GOSSIP_PORT)),
            generation: 1,
            alive,
            endpoints: eps
                .iter()
                .map(|e| {
                    let cidr: Cidr = e.parse().unwrap();
                    PublishedEndpoint {
                        cidr,
                        mac: format_mac(&cidr.mac()),
                        container: "c".into(),
                    }
                })
                .collect(),
            rules: Vec::new(),
        }
    }

    #[test]
    fn live_peers_endpoints_become_remote_entries() {
        let peers = [
            peer("b", [10, 0, 0, 2], true, &["192.168.1.20/24"]),
            peer("c", [10, 0, 0, 3], false, &["192.168.1.30/24"]),
        ];
        let d = desired(&peers, &BTreeSet::new());
        assert_eq!(d.peers, BTreeSet::from([Ipv4Addr::new(10, 0, 0, 2)]));
        assert_eq!(
            d.endpoints.len(),
            1,
            "dead peer's endpoints must be withdrawn"
        );
        let ep = d.endpoints[&Ipv4Addr::new(192, 168, 1, 20)];
        assert!(!ep.is_local());
        assert_eq!(ep.peer, weave_common::endpoint::ipv4_key([10, 0, 0, 2]));
        assert!(d.conflicts.is_empty());
    }

    #[test]
    fn conflicts_are_reported_and_resolved_deterministically() {
        let peers = [
            peer("z", [10, 0, 0, 9], true, &["192.168.1.20/24"]),
            peer(
                "b",
                [10, 0, 0, 2],
                true,
                &["192.168.1.20/24", "192.168.1.10/24"],
            ),
        ];
        let local = BTreeSet::from([Ipv4Addr::new(192, 168, 1, 10)]);
        let d = desired(&peers, &local);
        assert_eq!(
            d.endpoints[&Ipv4Addr::new(192, 168, 1, 20)].peer,
            weave_common::endpoint::ipv4_key([10, 0, 0, 2])
        );
        assert!(!d.endpoints.contains_key(&Ipv4Addr::new(192, 168, 1, 10)));
        assert_eq!(d.conflicts.len(), 2, "{:?}", d.conflicts);
    }

    #[test]
    fn endpoint_values_parse_and_reject_garbage() {
        let ep = parse_endpoint("192.168.1.10", "24 02:57:c0:a8:01:0a netns:ctr 1").unwrap();
        assert_eq!(ep.cidr.to_string(), "192.168.1.10/24");
        assert_eq!(ep.container, "netns:ctr 1");
        assert!(parse_endpoint("192.168.1.10", "24").is_err());
        assert!(parse_endpoint("192.168.1.10", "24 nope c").is_err());
    }

    #[test]
    fn peer_addresses_default_to_the_gossip_port() {
        assert_eq!(
            peer_addr("192.168.56.101").unwrap(),
            "192.168.56.101:6783".parse().unwrap()
        );
        assert_eq!(
            peer_addr("192.168.56.101:7000").unwrap(),
            "192.168.56.101:7000".parse().unwrap()
        );
        assert!(peer_addr("not an address").is_err());
    }
}
