//! Control-socket protocol between the CLI and the daemon: one JSON request line, then a
//! `working` line every [`WORKING_EVERY`] while the daemon is at it and one JSON response
//! line, per connection, over a root-only unix socket.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::{
    host::{docker::DOCKER_CALL_TIMEOUT, run_spec::RunSpec},
    net::policy::Action,
};

/// How long the CLI waits for a request that does not involve Docker (the daemon answers
/// those in milliseconds; seconds mean it is stuck), and for any line from the daemon: it
/// says it is working far more often.
pub const QUICK_REPLY: Duration = Duration::from_secs(15);
/// What the CLI waits on top of the daemon's own worst case, for scheduling and the work
/// around the Docker calls (creating `ethwe`, map writes).
const REPLY_MARGIN: Duration = Duration::from_secs(30);
/// How often the daemon tells a waiting CLI that it is still at its request.
pub const WORKING_EVERY: Duration = Duration::from_secs(2);
/// How long a request may wait behind others while the daemon keeps saying it is working:
/// a burst of attaches queues on the kernel's rtnetlink lock, which every veth made on the
/// machine takes (300 concurrent attaches on three agents of a 2-core machine took 12 s).
const QUEUE_ALLOWANCE: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Shutdown,
    /// Attach `cidr` to the container whose network namespace file is `netns`, or, without
    /// one, to the Docker container named `container`. `cidr` may hold several address
    /// requests, comma-separated: each is attached in turn, the first making `ethwe` unless
    /// the container has one already.
    Attach {
        cidr: String,
        container: String,
        netns: Option<PathBuf>,
        mtu: Option<u32>,
        /// The container's DNS name; None: its Docker name, or none.
        #[serde(default)]
        dns_name: Option<String>,
        /// Leave out the route `224.0.0.0/4 dev ethwe` (`--no-multicast-route`).
        #[serde(default)]
        no_multicast_route: bool,
    },
    /// Create and start a Docker container, then attach `cidr` to it.
    Run {
        cidr: String,
        spec: Box<RunSpec>,
        mtu: Option<u32>,
        /// Leave out the route `224.0.0.0/4 dev ethwe` (`--no-multicast-route`).
        #[serde(default)]
        no_multicast_route: bool,
    },
    /// Detach every endpoint of `container` (as named at attach, or by its netns file).
    Detach {
        container: String,
        netns: Option<PathBuf>,
        /// Only this address (IP or CIDR); None: all of the container's.
        #[serde(default)]
        address: Option<String>,
    },
    Ps,
    /// A CNI runtime's ADD, through the plugin: `addresses` (comma-joined requests as for
    /// `attach`; empty: the default subnet) on the interface `iface` of the container the
    /// runtime calls `container_id`, in `netns`. An ADD of an attachment that exists answers
    /// what it holds.
    CniAdd {
        container_id: String,
        netns: PathBuf,
        iface: String,
        addresses: String,
        dns_name: Option<String>,
        mtu: Option<u32>,
    },
    /// DEL: the attachment's endpoints go; none is no error.
    CniDel {
        container_id: String,
        iface: String,
    },
    /// CHECK: the attachment is as ADD made it, or an error says what differs.
    CniCheck {
        container_id: String,
        netns: PathBuf,
        iface: String,
    },
    /// GC: every CNI attachment but `keep` goes.
    CniGc {
        keep: Vec<CniAttachment>,
    },
    Peers,
    /// Connect to another peer (IP, IP:PORT, HOST) and keep retrying until it answers.
    Join {
        peer: String,
    },
    /// Add `peers` to the configured peers (or, with `replace`, make them the whole list) and
    /// contact them now.
    Connect {
        peers: Vec<String>,
        replace: bool,
    },
    /// Stop retrying `peers` and drop them from the configured peers.
    Forget {
        peers: Vec<String>,
    },
    /// Set the isolation rule for the pair of networks `a`, `b` (both directions).
    PolicySet {
        action: Action,
        a: String,
        b: String,
    },
    PolicyList,
    /// Give this host `cidr` on the overlay (`expose`).
    Expose {
        cidr: String,
        /// Networks the subnet's containers reach through it; None: the host's directly
        /// connected networks.
        routes: Option<Vec<String>>,
        masquerade: bool,
    },
    /// Take back the exposed address `cidr`, or all of them (`hide`).
    Hide {
        cidr: Option<String>,
    },
    /// `peer` (a name or nickname) is gone for good: its address ranges go to its heirs.
    RmPeer {
        peer: String,
    },
    /// The address space: who owns which range, and what this host handed out.
    Ipam,
    /// Give `name` to `ips` (`dns-add`), or take it back (`dns-remove`).
    DnsChange {
        ips: Vec<std::net::Ipv4Addr>,
        name: String,
        add: bool,
    },
    /// Every name the DNS server answers.
    Dns,
}

impl Request {
    /// What the request is, in the words of the command that sends it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Shutdown => "stop",
            Self::Attach { .. } => "attach",
            Self::Run { .. } => "run",
            Self::Detach { .. } => "detach",
            Self::Ps => "ps",
            Self::CniAdd { .. } => "CNI ADD",
            Self::CniDel { .. } => "CNI DEL",
            Self::CniCheck { .. } => "CNI CHECK",
            Self::CniGc { .. } => "CNI GC",
            Self::Peers => "peers",
            Self::Join { .. } => "join",
            Self::Connect { .. } => "connect",
            Self::Forget { .. } => "forget",
            Self::PolicySet { .. } => "policy",
            Self::PolicyList => "policy list",
            Self::Expose { .. } => "expose",
            Self::Hide { .. } => "hide",
            Self::RmPeer { .. } => "rmpeer",
            Self::Ipam => "ipam",
            Self::DnsChange { add: true, .. } => "dns-add",
            Self::DnsChange { add: false, .. } => "dns-remove",
            Self::Dns => "dns",
        }
    }

    /// Docker API calls the daemon may make, one after another, to answer this request.
    /// Each may take up to [`DOCKER_CALL_TIMEOUT`].
    pub fn docker_calls(&self) -> u32 {
        match self {
            // connect, create, start, inspect, and a remove if attaching fails
            Self::Run { .. } => 5,
            // connect, inspect
            Self::Attach { netns: None, .. } | Self::Detach { netns: None, .. } => 2,
            _ => 0,
        }
    }

    /// How long the CLI waits for the answer: longer than the daemon can take, so a slow
    /// Docker never makes the CLI report a failure for what then succeeds.
    pub fn reply_timeout(&self) -> Duration {
        match self.docker_calls() {
            0 => QUICK_REPLY,
            calls => DOCKER_CALL_TIMEOUT * calls + REPLY_MARGIN,
        }
    }

    /// How long the CLI waits in all while the daemon keeps saying it is working.
    pub fn working_limit(&self) -> Duration {
        self.reply_timeout() + QUEUE_ALLOWANCE
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    ShuttingDown {
        pid: u32,
    },
    /// One per address attached, in the order asked.
    Attached {
        endpoints: Vec<EndpointInfo>,
    },
    /// A CNI ADD's attachment, and the name server its container should use.
    CniAdded {
        endpoints: Vec<EndpointInfo>,
        dns: Option<CniDns>,
    },
    /// A CNI CHECK found the attachment as ADD made it.
    CniChecked,
    /// Full id of the container `run` created.
    Ran {
        id: String,
    },
    Detached {
        endpoints: Vec<EndpointInfo>,
    },
    Endpoints {
        endpoints: Vec<EndpointInfo>,
    },
    Peers {
        peers: Vec<PeerInfo>,
    },
    Joined {
        address: String,
        /// The peer answered within the join's wait and its address ring was taken in; false
        /// if it has not answered yet (the agent keeps contacting it).
        #[serde(default)]
        answered: bool,
    },
    /// The configured peers after `connect` or `forget`, as typed.
    ConfiguredPeers {
        peers: Vec<String>,
    },
    /// The isolation rules this agent knows, one per pair of networks.
    Rules {
        rules: Vec<RuleInfo>,
    },
    Exposed {
        endpoint: EndpointInfo,
        /// IPv4 forwarding was off on the host and `expose` turned it on.
        forwarding_turned_on: bool,
    },
    Hidden {
        endpoints: Vec<EndpointInfo>,
    },
    Ipam {
        info: IpamInfo,
        /// Every range of the ring, in order, as this host sees it.
        ranges: Vec<RangeInfo>,
        /// What this host handed out, to whom.
        allocations: Vec<AllocationInfo>,
    },
    PeerRemoved {
        /// The peer's name and nickname.
        name: String,
        nickname: String,
        /// Addresses of the removed peer's ranges this host now owns (its heirs on other
        /// hosts take the rest as gossip reaches them).
        taken_over: u64,
    },
    Error {
        message: String,
    },
    /// Not an answer: the daemon is still at the request (see [`WORKING_EVERY`]).
    Working,
    DnsRecords {
        records: Vec<DnsRecord>,
    },
}

/// A name the DNS server answers, and one of its addresses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
}

/// The DNS server, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsInfo {
    pub enabled: bool,
    pub address: Option<std::net::Ipv4Addr>,
    pub domain: String,
    pub upstreams: Vec<String>,
    pub records: usize,
    pub answered: u64,
    pub forwarded: u64,
    pub upstream_failed: u64,
    pub malformed: u64,
}

/// An endpoint attached on this host, as `ps` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    pub container: String,
    pub mac: String,
    pub cidr: String,
    pub host_veth: String,
    pub mtu: u32,
    /// Why the container may send a received packet on (IP forwarding, a bridge, ...); empty
    /// when it cannot. Its GSO super-packets then keep the kernel's VXLAN receive path.
    #[serde(default)]
    pub forwards: Vec<String>,
    /// Set for an exposed host address (`expose`; its container is `weave:expose`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<ExposeInfo>,
    /// The container's DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The container's IPv6 address (CIDR), kept with its first IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// How an exposed address serves what is outside the overlay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExposeInfo {
    /// The interface holding the address on the host.
    pub interface: String,
    /// Networks the subnet's containers reach through it.
    pub routes: Vec<String>,
    /// Clients from outside reach containers with the exposed address as source.
    pub masquerade: bool,
}

/// An isolation rule, as `policy list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleInfo {
    pub a: String,
    pub b: String,
    /// `allow` or `deny`.
    pub action: String,
    /// When it was made (Unix milliseconds); the newest word on a pair wins.
    pub at_ms: u64,
    /// Peer name of the agent it was made on.
    pub by: String,
}

/// Another peer of the mesh, as `peers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: String,
    pub nickname: String,
    /// Underlay address.
    pub address: String,
    /// `alive`, `dead`, or `connecting` (a peer given to launch/join that has not answered).
    pub state: String,
    pub endpoints: usize,
    /// Start time (Unix ms) of the peer's agent as we know it: a restart or reboot raises it.
    #[serde(default)]
    pub generation: u64,
    /// `direct`, or `via` a relay (a live peer); empty for a peer that is not live.
    #[serde(default)]
    pub route: String,
    /// With route `via`: the relay's underlay address, and its nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_nickname: Option<String>,
    /// Container traffic with the peer: `sealed` (encrypted), `trusted` (in clear: both hosts
    /// trust the path), `waiting` (sealed, but the peer has not published its key yet), or
    /// empty without a password.
    #[serde(default)]
    pub encryption: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionInfo>,
}

/// The encrypted session with a peer, as `peers` and `status` show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    /// Age of the session in use (None: none yet).
    pub age_ms: Option<u64>,
    /// Handshakes completed with the peer since this agent started.
    pub handshakes: u64,
    /// Bytes of container frames sealed to the peer and opened from it.
    pub sealed_bytes: u64,
    pub opened_bytes: u64,
    /// Datagrams refused: forged, replayed, for no session this host has.
    pub refused: u64,
    /// Frames to the peer dropped while no session was ready.
    pub dropped_no_session: u64,
}

/// The link to another peer, as `status connections` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub name: String,
    pub nickname: String,
    /// Underlay address.
    pub address: String,
    /// `direct` (a link both ends hear), `relayed` (through `via`), `trying` (live, but no
    /// link or path known yet: frames go straight to it), `dead`, `connecting`, `resolving`.
    pub state: String,
    /// Underlay address of the relay, when relayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Why the link is not direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long ago its last hello arrived here, if one ever did (since the map was cleaned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ms_ago: Option<u64>,
    /// It says it hears this host's hellos.
    pub hears_us: bool,
    /// Path MTU to it (largest outer IPv4 packet), where a hop narrower than the underlay NIC
    /// was found; container packets that would exceed it get ICMP "fragmentation needed".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointCounts {
    /// Entries in the kernel's endpoint map, by kind.
    pub local: usize,
    pub remote: usize,
    /// Local entries marked as forwarding (their GSO super-packets keep the kernel's VXLAN
    /// receive path where the kernel cannot clear tunnel GSO state from eBPF).
    #[serde(default)]
    pub forwarding: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// This peer's name (the underlay MAC, as Weave Net names peers).
    pub peer_name: String,
    pub nickname: String,
    pub netns: String,
    pub state_dir: String,
    pub pin_dir: String,
    pub underlay: Underlay,
    pub programs: Vec<Program>,
    /// VXLAN (external mode) device carrying the overlay.
    pub vxlan: String,
    /// UDP ports of gossip and of the VXLAN data plane: the two a firewall must open.
    #[serde(default)]
    pub gossip_port: u16,
    #[serde(default)]
    pub data_port: u16,
    /// Default MTU of `ethwe` (underlay MTU - 50).
    pub mtu: u32,
    pub endpoints: EndpointCounts,
    pub peers: Vec<PeerInfo>,
    /// The link to each peer: direct, or relayed and why.
    #[serde(default)]
    pub connections: Vec<ConnectionInfo>,
    /// Addresses claimed by more than one host.
    pub conflicts: Vec<String>,
    /// Gossip is authenticated and encrypted (a password is set).
    pub encryption: bool,
    /// Gossip datagrams refused for failing authentication, and from where.
    pub auth_failures: u64,
    pub auth_failure_sources: BTreeMap<String, u64>,
    pub counters: BTreeMap<String, Counter>,
    /// Automatic addresses.
    #[serde(default)]
    pub ipam: IpamInfo,
    #[serde(default)]
    pub dns: DnsInfo,
}

/// One range of the address ring.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RangeInfo {
    /// First and last address.
    pub first: String,
    pub last: String,
    pub addresses: u64,
    /// The owner's peer name, and its nickname where this host knows it.
    pub owner: String,
    pub nickname: String,
}

/// One attachment a CNI runtime still has (GC keeps these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniAttachment {
    pub container_id: String,
    pub iface: String,
}

/// The agent's name server, for a CNI result's `dns`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniDns {
    pub nameserver: std::net::Ipv4Addr,
    pub domain: String,
}

/// One subnet's addresses across the mesh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubnetUsageInfo {
    pub subnet: String,
    /// Addresses a container may get there, how many any endpoint holds, how many are free.
    pub addresses: u64,
    pub used: u64,
    pub free: u64,
    /// Each owner's part of the subnet (what nobody claimed yet is in none).
    pub owners: Vec<ShareInfo>,
}

/// One owner's part of a subnet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareInfo {
    pub owner: String,
    pub nickname: String,
    pub owned: u64,
    pub used: u64,
}

/// One address this host handed out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocationInfo {
    pub address: String,
    pub holder: String,
}

/// Automatic addresses, as `status` shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamInfo {
    pub range: String,
    pub default_subnet: String,
    /// `seed` or `observer`.
    pub init: String,
    /// Someone has claimed the range (this host or one it heard of).
    pub claimed: bool,
    /// Addresses of the range this host owns, and how many of them it handed out.
    pub owned: u64,
    pub allocated: usize,
    /// Peers whose ring could not be taken in, with why.
    pub refused: Vec<String>,
    /// Writes of the ring that disagreed at one version: a host that lost its allocations,
    /// or `rmpeer` of a live host. Zero in a healthy mesh.
    #[serde(default)]
    pub conflicting_writes: u64,
    /// Peers removed with `rmpeer`.
    #[serde(default)]
    pub removed: Vec<String>,
    /// How full each subnet in use is across the mesh: the default subnet first, then every
    /// other subnet of the range an endpoint anywhere has an address in.
    #[serde(default)]
    pub subnets: Vec<SubnetUsageInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Underlay {
    pub name: String,
    pub ifindex: u32,
    /// Address with prefix length, e.g. 192.168.56.101/24.
    pub address: String,
    pub mtu: u32,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    pub name: String,
    /// Kernel program id, as `bpftool prog` and `ip -d link` show it.
    pub id: u32,
    /// Where it is attached, or what it is waiting for.
    pub attached: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Longest request line the daemon reads; real requests are a few hundred bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Parses one request line as the daemon receives it.
pub fn parse_request(line: &[u8]) -> Result<Request> {
    if line.len() > MAX_REQUEST {
        bail!("request longer than {MAX_REQUEST} bytes");
    }
    serde_json::from_slice(line).map_err(|err| anyhow!("malformed request: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let text = serde_json::to_string(&Request::Shutdown).unwrap();
        assert_eq!(text, r#"{"op":"shutdown"}"#);
        assert!(matches!(
            serde_json::from_str::<Request>(r#"{"op":"status"}"#).unwrap(),
            Request::Status
        ));
    }
}
