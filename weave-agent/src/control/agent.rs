//! The state the daemon's tasks share, and how they share it.
//!
//! One async mutex guards what must change together (the maps, the persisted state and the
//! record of what was written). It is held only for quick work: map writes, a netlink call
//! or two, a file save. Anything that enters a container's namespace (creating `ethwe`,
//! syncing its routes) runs without it, so `status`, metrics and the sync loop never wait
//! for a container. Endpoints being attached meanwhile are reserved in [`Inner::pending`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use tokio::sync::{Mutex, watch};

use super::{api, location::Location, reconcile::Written, state::State};
use crate::{
    crypto::engine::Engine,
    datapath::Datapath,
    mesh::{
        counting_transport::GossipTraffic,
        gossip::Gossip,
        gossip::PeerView,
        peer_addr::PeerBook,
        sealed_transport::AuthFailures,
        topology::routes::{Path, Topology},
    },
    net::{
        addressing::Cidr,
        exposure::ContainerRoute,
        policy::{Subnet, Subnet6},
    },
};

pub struct Agent {
    pub loc: Location,
    /// The parts of `status` that never change while the agent runs.
    pub base: api::Status,
    pub gossip: Gossip,
    /// Gossip datagrams refused by the sealed transport (stays empty without a password).
    pub auth_failures: Arc<std::sync::Mutex<AuthFailures>>,
    /// Gossip messages and bytes through the transport, for metrics.
    pub traffic: Arc<GossipTraffic>,
    /// Configured peers given by host name, resolved in the background.
    pub peer_book: PeerBook,
    /// Wakes the resolver when a host name was just configured.
    pub resolve_now: tokio::sync::Notify,
    /// Wakes the sync loop when whom this host hears changed, so routes follow at once.
    pub resync: tokio::sync::Notify,
    pub inner: Mutex<Inner>,
    pub shutdown: watch::Sender<bool>,
    /// The encrypted data plane, with a password.
    pub crypto: Option<std::sync::Mutex<Engine>>,
    /// Underlay networks this host trusts (`--trusted-subnets`).
    pub trusted: Vec<Subnet>,
    /// Wakes those waiting for a sync round to end (a `join` waiting for the peer's verdict).
    pub synced: tokio::sync::Notify,
    /// Wakes allocations waiting for space when the address space changed.
    pub ipam_changed: tokio::sync::Notify,
    /// Attaches under way (`endpoints::attach_endpoint`), so a burst syncs once at its end.
    pub attaches: std::sync::atomic::AtomicUsize,
    /// The DNS server for this host's containers; None with `--no-dns`.
    pub dns: Option<Arc<crate::dns::server::Service>>,
}

pub struct Inner {
    pub datapath: Datapath,
    pub netlink: rtnetlink::Handle,
    pub state: State,
    /// Default `ethwe` MTU.
    pub mtu: u32,
    /// The mesh as the last sync saw it.
    pub peers: Vec<PeerView>,
    pub conflicts: Vec<String>,
    /// What the maps hold, as this agent wrote them.
    pub written: Written,
    pub started: Instant,
    pub last_contact: BTreeMap<SocketAddr, Instant>,
    /// Routes the rules and exposed addresses put in each local endpoint's container, by its
    /// host veth (a container's addresses share one), as last made.
    pub routes: BTreeMap<String, BTreeSet<ContainerRoute>>,
    /// The IPv6 on-link routes the rules put in each container with an IPv6 address, by its
    /// host veth, as last made.
    pub routes6: BTreeMap<String, BTreeSet<Subnet6>>,
    /// Attaches under way outside the lock: their addresses and containers are taken.
    pub pending: Vec<Pending>,
    /// The same for attaches by an IPv6 address alone.
    pub pending6: Vec<super::state::Ipv6Endpoint>,
    /// IPv6 addresses being given beside an IPv4 one (`endpoints::claim_ipv6`).
    pub claimed6: BTreeSet<std::net::Ipv6Addr>,
    /// The links every peer publishes, as last synced.
    pub topology: Topology,
    /// Whom this host hears directly, as the link loop last read it.
    pub links: Links,
    /// How frames reach each live peer, and the path MTU, as the last sync computed it.
    pub next_hops: BTreeMap<Ipv4Addr, Path>,
    /// The host routes carrying a narrow path's MTU to a peer (`host::peer_mtu`), as made.
    pub mtu_routes: BTreeMap<Ipv4Addr, u32>,
    /// `mtu_routes` has been read from the kernel (at the first sync).
    pub mtu_routes_read: bool,
    /// Live peers whose frames may cross in clear, as the last sync decided.
    pub plain: BTreeSet<Ipv4Addr>,
    /// Automatic addresses: this host's space and what it answered.
    pub ipam: super::ipam::store::Ipam,
}

/// Whom this host hears directly: the heard map as last read.
#[derive(Debug, Default, Clone)]
pub struct Links {
    /// Peers heard within the window, with the largest hello heard from each lately.
    pub heard: BTreeMap<Ipv4Addr, u16>,
    /// When each peer's last hello arrived, and when the map was read (`bpf_ktime_get_ns`).
    pub last: BTreeMap<Ipv4Addr, u64>,
    pub read_at_ns: u64,
}

/// An attach that has reserved its address and container but not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub cidr: Cidr,
    pub netns: PathBuf,
    pub container: String,
    pub docker_id: Option<String>,
}

impl Agent {
    /// Saves the persisted state, which `inner` holds.
    pub fn save(&self, inner: &Inner) -> anyhow::Result<()> {
        super::state::save(&self.loc.state_dir, &inner.state)
    }
}
