//! Membership and replicated endpoint state over chitchat (scuttlebutt gossip with phi-accrual
//! failure detection) on UDP 6783.
//!
//! What an agent should program into its maps is a pure function of the live nodes' keys
//! (`control::reconcile`), recomputed whenever the live view changes; deletes are seen
//! because the whole view is diffed, not individual key events.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, Result};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, spawn_chitchat,
    transport::Transport,
};
use serde::{Deserialize, Serialize};

use super::keys::{
    IPAM_RING_KEY, NICKNAME_KEY, PublishedEndpoint, endpoint_key, endpoint_key_value, ipv6_key,
    ipv6_only_key_value, names_key_value, published_endpoints, published_ipv6, published_ipv6_only,
    published_names, published_rules, published_via, published_wants, via_key, via_key_value,
    want_key,
};
use super::topology::links::LINKS_KEY;
use crate::crypto::trust::{SEAL_KEY, TRUSTED_KEY};
use crate::net::{
    addressing::{Cidr, Cidr6},
    clock::unix_millis,
    policy::{Rule, Subnet},
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

pub struct Gossip {
    handle: ChitchatHandle,
    self_id: ChitchatId,
    underlay: Ipv4Addr,
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
    /// The IPv6 address of each endpoint (by its IPv4 address) that has one.
    #[serde(default)]
    pub ipv6: BTreeMap<Ipv4Addr, Cidr6>,
    /// The peer's containers attached by an IPv6 address alone.
    #[serde(default)]
    pub ipv6_only: Vec<Cidr6>,
    /// Isolation rules the peer publishes (the newest it knows per pair).
    pub rules: Vec<Rule>,
    /// Whom the peer hears directly, as it publishes it (`topology::links`); None from a peer
    /// that publishes no links (not started hellos yet, or an agent from before relaying).
    #[serde(default)]
    pub links: Option<String>,
    /// The peer's data plane public key and trusted subnets, as it publishes them
    /// (`crypto::trust`); None from a peer without a password.
    #[serde(default)]
    pub seal_key: Option<String>,
    #[serde(default)]
    pub trusted: Option<String>,
    /// The networks each of the peer's exposed addresses routes (`expose`).
    #[serde(default)]
    pub exposed_routes: BTreeMap<Ipv4Addr, Vec<Subnet>>,
    /// The peer's view of the address ring (`crate::ipam::ring`, JSON), if it has one.
    #[serde(default)]
    pub ring: Option<String>,
    /// Subnets the peer asks for space in, each with the id of its request.
    #[serde(default)]
    pub wants: BTreeMap<Subnet, String>,
    /// The DNS names the peer gives to addresses (full names).
    #[serde(default)]
    pub names: BTreeMap<Ipv4Addr, Vec<String>>,
}

impl Gossip {
    /// Starts gossiping as `name`, with `initial` keys (besides the nickname) in place from the
    /// first datagram on.
    pub async fn start(
        name: &str,
        nickname: &str,
        underlay: Ipv4Addr,
        port: u16,
        initial: Vec<(String, String)>,
        transport: &dyn Transport,
    ) -> Result<Self> {
        let advertise = SocketAddr::new(IpAddr::V4(underlay), port);
        // A new generation each start: peers replace everything they knew of our previous life.
        let generation = unix_millis();
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
        Ok(Self {
            handle,
            self_id,
            underlay,
        })
    }

    pub fn self_address(&self) -> SocketAddr {
        self.self_id.gossip_advertise_addr
    }

    /// This agent's underlay address, the one it gossips from.
    pub fn self_ip(&self) -> Ipv4Addr {
        self.underlay
    }

    /// Sends one gossip round to `addr` now; the caller retries until the peer is live.
    pub fn contact(&self, addr: SocketAddr) -> Result<()> {
        self.handle.gossip(addr)
    }

    pub async fn publish(&self, cidr: &Cidr, mac: &[u8; 6], container: &str) {
        let (key, value) = endpoint_key_value(cidr, mac, container);
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

    /// Publishes whom this host hears directly (a `topology::links` value).
    pub async fn publish_links(&self, value: &str) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(LINKS_KEY, value))
            .await;
    }

    /// Publishes the networks containers reach through this host's exposed address `ip`.
    pub async fn publish_via(&self, ip: Ipv4Addr, routes: &[Subnet]) {
        let (key, value) = via_key_value(ip, routes);
        self.handle
            .with_chitchat(|c| c.self_node_state().set(&key, &value))
            .await;
    }

    /// Withdraws what [`Gossip::publish_via`] said of `ip`.
    /// Publishes the DNS names of `ip`, or withdraws them when there are none.
    pub async fn publish_names(&self, ip: Ipv4Addr, names: &[String]) {
        let (key, value) = names_key_value(ip, names);
        self.handle
            .with_chitchat(|c| {
                if names.is_empty() {
                    // Most containers never had a name: deleting a key never set only makes
                    // chitchat warn.
                    if c.self_node_state().get(&key).is_some() {
                        c.self_node_state().delete(&key);
                    }
                } else {
                    c.self_node_state().set(&key, &value);
                }
            })
            .await;
    }

    pub async fn withdraw_via(&self, ip: Ipv4Addr) {
        let key = via_key(ip);
        self.handle
            .with_chitchat(|c| c.self_node_state().delete(&key))
            .await;
    }

    /// Publishes this peer's view of the address ring.
    pub async fn publish_ring(&self, ring_json: &str) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(IPAM_RING_KEY, ring_json))
            .await;
    }

    /// Asks the mesh for space in `subnet`; a new `request` id asks again.
    pub async fn publish_want(&self, subnet: &Subnet, request: &str) {
        let key = want_key(subnet);
        self.handle
            .with_chitchat(|c| c.self_node_state().set(&key, request))
            .await;
    }

    pub async fn withdraw_want(&self, subnet: &Subnet) {
        let key = want_key(subnet);
        self.handle
            .with_chitchat(|c| c.self_node_state().delete(&key))
            .await;
    }

    pub async fn withdraw(&self, ip: Ipv4Addr) {
        let key = endpoint_key(ip);
        self.handle
            .with_chitchat(|c| c.self_node_state().delete(&key))
            .await;
        self.publish_ipv6(ip, None).await;
    }

    /// Publishes a container attached by the IPv6 address `cidr` alone, or withdraws it.
    pub async fn publish_ipv6_only(&self, cidr: &Cidr6, present: bool) {
        let (key, value) = ipv6_only_key_value(cidr);
        self.handle
            .with_chitchat(|c| {
                if present {
                    c.self_node_state().set(&key, value.clone());
                } else if c.self_node_state().get(&key).is_some() {
                    c.self_node_state().delete(&key);
                }
            })
            .await;
    }

    /// Publishes the IPv6 address of the endpoint published as `ip`, or withdraws it.
    pub async fn publish_ipv6(&self, ip: Ipv4Addr, cidr: Option<&Cidr6>) {
        let key = ipv6_key(ip);
        self.handle
            .with_chitchat(|c| match cidr {
                Some(cidr) => c.self_node_state().set(&key, cidr.to_string()),
                // Deleting a key never set only makes chitchat warn.
                None if c.self_node_state().get(&key).is_some() => {
                    c.self_node_state().delete(&key);
                }
                None => {}
            })
            .await;
    }

    /// Wakes `notify` as soon as a peer's key (endpoint, rule) is set here, while the delta is
    /// applied. The live-view watcher reports such a change only at the end of this node's next
    /// gossip round, up to a whole interval after it arrived: measured, a new endpoint became
    /// reachable 110-290 ms after `attach` (median of 20, per run) depending on how the two
    /// hosts' gossip timers happened to line up. Deletes are not reported here; the watcher
    /// and the periodic sync catch those. Our own keys do not wake it: whoever sets one here
    /// (attach, policy) syncs itself. Keep the handle: dropping it unsubscribes.
    pub async fn on_key_set(
        &self,
        notify: std::sync::Arc<tokio::sync::Notify>,
    ) -> chitchat::ListenerHandle {
        let chitchat = self.handle.chitchat();
        let guard = chitchat.lock().await;
        let me = self.self_id.node_id.clone();
        // notify_one only stores a permit: cheap enough to run under chitchat's lock.
        guard.subscribe_event("", move |event| {
            if event.node.node_id != me {
                notify.notify_one();
            }
        })
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
                links: state.get(LINKS_KEY).map(str::to_owned),
                seal_key: state.get(SEAL_KEY).map(str::to_owned),
                trusted: state.get(TRUSTED_KEY).map(str::to_owned),
                exposed_routes: published_via(state),
                ring: state.get(IPAM_RING_KEY).map(str::to_owned),
                wants: published_wants(state),
                names: published_names(state),
                ipv6: published_ipv6(state),
                ipv6_only: published_ipv6_only(state),
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
