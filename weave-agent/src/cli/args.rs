//! Command line: what users type, with help that teaches the walkthrough.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const WALKTHROUGH: &str = "\
Walkthrough (two hosts, as with Weave Net):
  host A$ weave-agent launch
  host B$ weave-agent join 192.168.56.101
  host B$ weave-agent run 192.168.1.20/24 --name wet -it IMAGE sh
  host A$ weave-agent run 192.168.1.10/24 -it IMAGE sh
The two containers reach each other on their `ethwe` interfaces; containers in
other subnets (e.g. 192.168.2.0/24) are isolated from them.

One agent runs per network namespace: `ip netns exec HOST weave-agent status`
talks to the agent of namespace HOST. Its control socket and state live in
/run/weave-agent/<namespace>/, its pinned eBPF objects in
/sys/fs/bpf/weave-agent/<namespace>/ of the initial mount namespace.";

/// Weave Net-style container network across hosts, with the data path in eBPF.
#[derive(Debug, Parser)]
#[command(name = "weave-agent", version, after_help = WALKTHROUGH)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). WEAVE_LOG=<filter> overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// State directory (control socket, log, persisted state).
    /// Default: /run/weave-agent/<network namespace name>.
    #[arg(long, global = true, env = "WEAVE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the agent in this network namespace; returns once it answers.
    ///
    /// Loads the eBPF data path, attaches its programs to the underlay
    /// interface (TC, plus XDP where the driver runs it natively) and serves
    /// the control socket. The daemon runs in the
    /// background and logs to <state dir>/agent.log; use --foreground under a
    /// service manager.
    #[command(
        after_help = "Examples:\n  weave-agent launch\n  weave-agent launch --iface eth1\n  weave-agent launch 192.168.56.101   (launch and join a peer)"
    )]
    Launch(LaunchArgs),

    /// Join the mesh through a peer: tells the running agent, or launches one.
    #[command(after_help = "Example:\n  weave-agent join 192.168.56.101")]
    Join {
        /// Address of any agent already in the mesh (IP or IP:PORT; the port defaults to
        /// --port, 6783).
        #[arg(value_name = "ADDR")]
        addr: String,
        #[command(flatten)]
        launch: LaunchArgs,
    },

    /// Connect to more peers and keep retrying them until they answer; prints the configured
    /// peers. Needs a running agent (`join` launches one).
    #[command(
        after_help = "Examples:\n  weave-agent connect 192.168.56.102 192.168.56.103\n  \
                            weave-agent connect --replace 192.168.56.104"
    )]
    Connect {
        /// Make these the only configured peers (the others are forgotten).
        #[arg(long)]
        replace: bool,
        /// Peers (IP, IP:PORT, HOST or HOST:PORT; the port defaults to the agent's --port).
        #[arg(value_name = "PEER", required = true)]
        peers: Vec<String>,
    },

    /// Stop retrying configured peers and drop them from the list kept across restarts;
    /// prints the configured peers. A live peer stays in the mesh while it gossips.
    #[command(after_help = "Example:\n  weave-agent forget 192.168.56.103")]
    Forget {
        /// Peers as they were given to launch, join or connect.
        #[arg(value_name = "PEER", required = true)]
        peers: Vec<String>,
    },

    /// Create and start a Docker container attached to the overlay; prints its id.
    ///
    /// The address comes first if given: a CIDR (ip:CIDR too), net:CIDR (a free address of
    /// that subnet of --ipalloc-range) or net:default; without one, a free address of the
    /// default subnet. One IPv6 CIDR may come beside it, after a comma.
    #[command(
        trailing_var_arg = true,
        after_help = "Examples:\n  weave-agent run 192.168.1.20/24 --name wet -it IMAGE sh\n  \
                      weave-agent run --name web -d IMAGE httpd -f   (an address of 10.32.0.0/12)\n  \
                      weave-agent run net:10.32.5.0/24 --name db -d IMAGE sh\n  \
                      weave-agent run 192.168.1.20/24,fd00:1::20/64 --name wet6 -it IMAGE sh"
    )]
    Run {
        /// MTU of `ethwe` (default: underlay MTU - 50). Goes before the address.
        #[arg(long)]
        mtu: Option<u32>,
        /// Leave out the route `224.0.0.0/4 dev ethwe` the container gets otherwise, which
        /// sends its multicast over the overlay. Goes before the address.
        #[arg(long)]
        no_multicast_route: bool,
        /// [ADDRESS], then `docker run` options, then IMAGE [CMD...].
        #[arg(
            value_name = "[ADDRESS] DOCKER_RUN_ARGS",
            allow_hyphen_values = true,
            required = true
        )]
        args: Vec<String>,
    },

    /// Give a running container an `ethwe` interface with an address on the overlay, or one
    /// more address on the `ethwe` it has.
    ///
    /// ADDRESS is a CIDR (ip:CIDR too), net:CIDR (a free address of that subnet of
    /// --ipalloc-range) or net:default; left out, a free address of the default subnet.
    /// Several (as separate arguments or comma-joined) give the container all of them; its
    /// MAC stays derived from its first address. One IPv6 CIDR may come beside them
    /// (fd00:1::10/64), or alone (the MAC then derived from it); every container also has
    /// its link-local IPv6 address.
    #[command(
        after_help = "CONTAINER is a Docker name or id, pid:PID, netns:NAME (/run/netns/NAME) or a netns path.\n\nExamples:\n  weave-agent attach 192.168.1.10/24 netns:ctr1\n  weave-agent attach netns:ctr2                   (an address of 10.32.0.0/12)\n  weave-agent attach net:10.32.5.0/24 netns:ctr3\n  weave-agent attach net:default net:10.32.5.0/24 netns:ctr4   (two addresses)\n  weave-agent attach 10.40.1.10/24,fd00:1::10/64 netns:ctr5   (IPv4 and IPv6)\n  weave-agent attach fd00:1::20/64 netns:ctr6                  (IPv6 alone)"
    )]
    Attach {
        /// [ADDRESS...] CONTAINER: the container is a Docker name/id, pid:PID, netns:NAME or
        /// a netns path.
        #[arg(value_name = "[ADDRESS...] CONTAINER", num_args = 1.., required = true)]
        args: Vec<String>,
        /// MTU of `ethwe` (default: underlay MTU - 50).
        #[arg(long)]
        mtu: Option<u32>,
        /// The container's name in DNS: NAME.weave.local on every host (a Docker container
        /// has its Docker name without this).
        #[arg(long, value_name = "NAME")]
        dns_name: Option<String>,
        /// For netns:NAME: write /etc/netns/NAME/resolv.conf (what `ip netns exec NAME` shows
        /// as /etc/resolv.conf) naming the agent's DNS server and domain.
        #[arg(long)]
        resolv_conf: bool,
        /// Leave out the route `224.0.0.0/4 dev ethwe` the container gets otherwise, which
        /// sends its multicast over the overlay.
        #[arg(long)]
        no_multicast_route: bool,
    },

    /// Remove a container's `ethwe` and withdraw its addresses from the mesh; with ADDRESS,
    /// only that one (its other addresses keep working).
    #[command(
        after_help = "Examples:\n  weave-agent detach netns:ctr1\n  weave-agent detach 10.32.5.7 netns:ctr4   (one address of several)"
    )]
    Detach {
        /// [ADDRESS] CONTAINER: an IP or CIDR the container holds, then the container (Docker
        /// name/id, pid:PID, netns:NAME or a netns path).
        #[arg(value_name = "[ADDRESS] CONTAINER", num_args = 1..=2, required = true)]
        args: Vec<String>,
    },

    /// List the containers attached on this host (container, MAC, CIDR), and the exposed
    /// addresses (`weave:expose`).
    Ps(OutputArgs),

    /// Show this agent: peer name, underlay, programs attached, routes, counters.
    ///
    /// `status connections` shows the link to each peer instead: direct (both hosts hear
    /// each other's hellos), relayed through another peer, and why it is not direct.
    #[command(
        after_help = "Examples:\n  weave-agent status\n  weave-agent status connections\n  weave-agent status --json"
    )]
    Status(StatusArgs),

    /// List the peers of the mesh: NAME ADDRESS STATE ROUTE [ENCRYPTION].
    ///
    /// ROUTE is `direct`, or `via NAME(ADDRESS)` when frames to the peer go through a relay
    /// because the two hosts do not reach each other (a firewall, a split network).
    /// With a password, ENCRYPTION is `sealed(session AGE)` (container traffic is encrypted),
    /// `trusted` (both hosts trust the path: in clear) or `waiting` (no key from the peer yet:
    /// nothing crosses). `--json` adds each session's handshakes, bytes sealed and opened,
    /// datagrams refused and frames dropped for want of a session.
    Peers(OutputArgs),

    /// Isolation rules: which subnets may talk to each other across subnets.
    ///
    /// By default a container talks only to containers in its own subnet. A rule
    /// covers both directions, reaches every host by gossip within about a second,
    /// is enforced by the eBPF data path, and adds (or removes) an on-link route to
    /// the other network through `ethwe` in the containers it concerns. Where rules
    /// overlap, the most specific one decides. A rule pairs two IPv4 networks or two
    /// IPv6 ones; IPv4 rules also decide for the link-local IPv6 addresses of containers
    /// that have no IPv6 address.
    #[command(
        subcommand,
        after_help = "Examples:\n  weave-agent policy allow 192.168.1.0/24 192.168.2.0/24\n  weave-agent policy deny 192.168.1.0/24 192.168.2.0/24   (isolated again)\n  weave-agent policy allow fd00:1::/64 fd00:2::/64\n  weave-agent policy list --json"
    )]
    Policy(PolicyCommand),

    /// Give this host an address on the overlay, so that host processes, and through the
    /// host's routing machines that run no agent, reach the containers of its subnet.
    ///
    /// The address is an endpoint of its subnet like a container's (isolation rules apply to
    /// it), on interface wexpHEX in this namespace, and is listed by `ps` as `weave:expose`.
    /// The subnet's containers on every host get routes to this host's directly connected
    /// networks through it (or to the networks of --routes), so they reach systems there and
    /// answer clients from there; traffic they send out of this host leaves with the
    /// host's own address. A client outside needs a route to the subnet through this host,
    /// e.g. `ip route add 10.40.1.0/24 via 192.168.56.101` (on the client or its router);
    /// with --masquerade the containers see the exposed address as the client instead.
    /// Turns on IPv4 forwarding here if it is off, and says so. Kept across restarts.
    #[command(after_help = "Examples:\n  weave-agent expose 10.40.1.1/24\n  \
                      weave-agent expose 10.40.2.1/24 --routes 192.168.56.0/24,10.1.0.0/16\n  \
                      weave-agent expose 10.40.3.1/24 --masquerade\n  \
                      weave-agent hide 10.40.1.1/24")]
    Expose {
        /// The host's address on the overlay with its subnet, e.g. 10.40.1.1/24, free in the
        /// whole mesh; or net:CIDR / net:default (left out: net:default) for one allocated
        /// from --ipalloc-range. One per subnet on each host.
        #[arg(value_name = "ADDRESS")]
        cidr: Option<String>,
        /// Networks the subnet's containers reach through this address (default: the
        /// host's directly connected IPv4 networks, looked up again at each start).
        #[arg(long, value_name = "CIDR[,CIDR...]", value_delimiter = ',')]
        routes: Option<Vec<String>>,
        /// Clients from outside reach the containers with the exposed address as their
        /// source, so the containers need no route back to them.
        #[arg(long)]
        masquerade: bool,
        #[command(flatten)]
        out: OutputArgs,
    },

    /// Take back an exposed address (CIDR or bare address), or all of them.
    #[command(after_help = "Examples:\n  weave-agent hide 10.40.1.1/24\n  weave-agent hide")]
    Hide {
        /// The exposed address, e.g. 10.40.1.1/24 or 10.40.1.1; none: every one.
        #[arg(value_name = "CIDR")]
        cidr: Option<String>,
        #[command(flatten)]
        out: OutputArgs,
    },

    /// The address space: the range, who owns which part of it, and what this host handed
    /// out to which container.
    Ipam(OutputArgs),

    /// Hand the address ranges of a host that is gone for good to the others.
    ///
    /// Each of its ranges goes to the owner of the range before it (the same host whichever
    /// host runs rmpeer, so running it on two at once is safe). Only for a host whose agent
    /// is dead and will not come back with its old allocations: its containers' addresses
    /// are handed out again.
    #[command(
        after_help = "Example:\n  weave-agent rmpeer hostc   (a nickname or peer name, as `peers` lists it)"
    )]
    Rmpeer {
        /// The peer's nickname or name (its underlay MAC).
        #[arg(value_name = "PEER")]
        peer: String,
    },

    /// List the names the DNS server answers (NAME.weave.local and its addresses), from
    /// every host.
    Dns(OutputArgs),

    /// Give addresses a name in DNS, for anything that is not a container attached here (a
    /// service outside the overlay, an alias). As Weave's: `-h` is the name; `--help` helps.
    #[command(
        disable_help_flag = true,
        after_help = "Example:\n  weave-agent dns-add 10.32.0.7 10.32.0.8 -h db   (db.weave.local, both addresses)"
    )]
    DnsAdd(DnsNameArgs),

    /// Take back a name that `dns-add` gave.
    #[command(
        disable_help_flag = true,
        after_help = "Example:\n  weave-agent dns-remove 10.32.0.8 -h db"
    )]
    DnsRemove(DnsNameArgs),

    /// The CNI plugin for container runtimes (Podman, Kubernetes): put it in place, or take
    /// it away.
    ///
    /// The plugin is this binary, run by the runtime as type "weave-agent"; it asks the
    /// agent of the namespace it runs in, which attaches the container as `attach` does
    /// (address from the IPAM, listed by `ps` as cni:CONTAINER-ID). The configuration list
    /// chains the reference portmap plugin (from containernetworking-plugins) for host ports.
    #[command(
        subcommand,
        after_help = "Examples:
  weave-agent cni install
  weave-agent cni install --subnet 10.32.1.0/24 --network weave1
  podman run --network weave IMAGE   (with network_backend = \"cni\" in containers.conf)
  weave-agent cni uninstall"
    )]
    Cni(CniCommand),

    /// Stop the agent; the pinned data path keeps forwarding. Returns once it has exited.
    Stop,

    /// Stop the agent and remove everything it made: programs, pins, state.
    Reset,

    /// Benchmark helper: a gossip-only peer that publishes synthetic endpoints, so
    /// `cargo xtask bench` can time how fast an agent learns many of them. Runs until killed.
    #[command(hide = true)]
    BenchPeer {
        /// Underlay address to gossip from (must be on an interface of this namespace).
        #[arg(long)]
        address: std::net::Ipv4Addr,
        /// Agent to join.
        #[arg(long)]
        seed: String,
        /// How many endpoints to publish, in 10.200.0.0/16.
        #[arg(long, default_value_t = 1000)]
        endpoints: u16,
    },
}

#[derive(Debug, Subcommand)]
pub enum CniCommand {
    /// Copy this binary in as the plugin and write the network configuration list.
    Install(CniInstallArgs),
    /// Remove the configuration list and the plugin that `install` wrote.
    Uninstall(CniInstallArgs),
}

#[derive(Debug, Args)]
pub struct CniInstallArgs {
    /// Where runtimes read network configurations.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub conf_dir: std::path::PathBuf,
    /// Where runtimes find plugins (Podman also looks in /usr/lib/cni, Kubernetes only here).
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub bin_dir: std::path::PathBuf,
    /// The network's name, as `podman run --network NAME` gives it.
    #[arg(long, value_name = "NAME", default_value = "weave")]
    pub network: String,
    /// Allocate in this subnet of --ipalloc-range instead of the default subnet.
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// Leave the portmap plugin out of the chain (no host ports).
    #[arg(long)]
    pub no_portmap: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Let containers in network A and network B talk, both directions.
    Allow(RulePair),
    /// Isolate A and B again (replaces an earlier `allow` of the same pair).
    Deny(RulePair),
    /// List the rules the mesh holds: A B ACTION.
    List(OutputArgs),
}

#[derive(Debug, Args, Clone)]
pub struct RulePair {
    /// A network with its prefix and no host bits, e.g. 192.168.1.0/24 or fd00:1::/64.
    #[arg(value_name = "CIDR_A")]
    pub a: String,
    /// The other network, e.g. 192.168.2.0/24.
    #[arg(value_name = "CIDR_B")]
    pub b: String,
}

#[derive(Debug, Args, Clone, Default)]
pub struct LaunchArgs {
    /// Peers to join (IP or IP:PORT; the port defaults to --port).
    #[arg(value_name = "PEER")]
    pub peers: Vec<String>,

    /// Underlay interface. Default: the one carrying the default route, else the
    /// only non-loopback interface with an IPv4 address.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// Peer nickname shown by `status` and `peers` (default: the namespace name).
    #[arg(long)]
    pub name: Option<String>,

    /// Run in the foreground (for service managers); logs go to stderr.
    #[arg(long)]
    pub foreground: bool,

    /// Mesh password: every gossip datagram is authenticated and encrypted with a key derived
    /// from it; peers without it never join. Prefer WEAVE_PASSWORD or --password-file, which
    /// keep it out of `ps`.
    #[arg(
        long,
        env = "WEAVE_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,

    /// File holding the mesh password (its first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// With a password, container traffic is encrypted too, except between two hosts whose
    /// underlay addresses are each inside the other's trusted subnets (and that reach each
    /// other directly): there it keeps the kernel's fast path, in clear. E.g.
    /// `--trusted-subnets 10.1.0.0/16,192.168.56.0/24`.
    #[arg(long, value_name = "CIDR[,CIDR...]")]
    pub trusted_subnets: Option<String>,

    /// How remote frames are encapsulated: `ebpf` (single packets get their VXLAN headers
    /// built and stripped by the eBPF programs; GSO bulk goes through the kernel VXLAN device,
    /// which measured faster for it) or `vxlan` (everything through the device). Both speak
    /// VXLAN on UDP 6784, so peers may differ.
    #[arg(long, env = "WEAVE_ENCAP", value_enum, default_value_t = Encap::Ebpf)]
    pub encap: Encap,

    /// Where Prometheus metrics are served (GET /metrics), inside this network namespace.
    /// Default: 127.0.0.1:6782, Weave Net's status port.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// UDP port of gossip; VXLAN uses the next one (Weave's 6783 and 6784), so a firewall
    /// between hosts opens exactly these two. Every host of a mesh must use the same.
    #[arg(long, value_name = "N", default_value_t = weave_common::GOSSIP_PORT,
          value_parser = clap::value_parser!(u16).range(1..65535))]
    pub port: u16,

    /// The range automatic addresses come from (`attach CONTAINER`, `net:CIDR`), split among
    /// the hosts so each allocates without asking. Every host of a mesh must use the same.
    /// Default: 10.32.0.0/12, as Weave Net's.
    #[arg(long, value_name = "CIDR")]
    pub ipalloc_range: Option<String>,

    /// The subnet `attach` without an address (or `net:default`) allocates in; inside
    /// --ipalloc-range. Default: the whole range.
    #[arg(long, value_name = "CIDR")]
    pub ipalloc_default_subnet: Option<String>,

    /// Whether this host may claim the whole range when no host has yet: `seed` (the first
    /// host of a mesh) or `observer` (gets space from the others). Default: seed when launched
    /// without peers, observer with. Two meshes whose seeds both claimed refuse to merge.
    #[arg(long, value_enum, value_name = "MODE")]
    pub ipalloc_init: Option<IpallocInit>,

    /// The name Docker knows this agent's network and IPAM driver by (`docker network create
    /// -d NAME`, `--ipam-driver NAME`), served on /run/docker/plugins/NAME.sock unless
    /// another agent on this machine serves that name already.
    #[arg(long, value_name = "NAME", default_value = "weave-agent")]
    pub docker_plugin: String,

    /// Serve no Docker network driver.
    #[arg(long, conflicts_with = "docker_plugin")]
    pub no_docker_plugin: bool,

    /// Broadcast and multicast frames per second each container may send, across the mesh
    /// (copies to its subnet's members); what is over it is dropped and counted as
    /// drop_rate_limited, so one container cannot flood every host. 0 removes the limit.
    #[arg(long, value_name = "PPS", default_value_t = weave_common::flood::DEFAULT_FLOOD_PPS)]
    pub flood_rate: u32,

    /// Run no DNS server: containers get no names, `run` leaves Docker's resolvers alone.
    #[arg(long, conflicts_with_all = ["dns_domain", "dns_upstream"])]
    pub no_dns: bool,

    /// The domain containers' names are in. Every host of a mesh should use the same.
    /// Default: weave.local, as Weave Net's.
    #[arg(long, value_name = "DOMAIN")]
    pub dns_domain: Option<String>,

    /// Where names outside the domain are asked, e.g. `10.0.0.2,10.0.0.3:5353`. Default: the
    /// resolvers of this network namespace's /etc/resolv.conf (for `ip netns exec HOST`,
    /// /etc/netns/HOST/resolv.conf), read at launch.
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    pub dns_upstream: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpallocInit {
    Seed,
    Observer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Encap {
    Vxlan,
    #[default]
    Ebpf,
}

#[derive(Debug, Args, Clone)]
pub struct DnsNameArgs {
    /// The addresses.
    #[arg(value_name = "IP", required = true)]
    pub ips: Vec<std::net::Ipv4Addr>,
    /// The name: `db` or `db.weave.local`.
    #[arg(short = 'h', long = "hostname", value_name = "NAME", required = true)]
    pub name: String,
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// What to show: the whole agent (default), or `connections` (the link to each peer).
    #[arg(value_enum)]
    pub view: Option<StatusView>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusView {
    /// Per peer: direct or relayed (and through whom), and why a link is not direct.
    Connections,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_passes_docker_options_through() {
        let cli = Cli::parse_from([
            "weave-agent",
            "run",
            "192.168.1.20/24",
            "--name",
            "wet",
            "-it",
            "busybox",
            "sh",
        ]);
        let Command::Run { args, .. } = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let (address, docker_args) = super::super::commands::split_run_args(&args).unwrap();
        assert_eq!(address.unwrap(), "192.168.1.20/24");
        assert_eq!(docker_args, ["--name", "wet", "-it", "busybox", "sh"]);
        let no_address: Vec<String> = ["--name", "x", "img"].map(String::from).to_vec();
        let (address, docker_args) = super::super::commands::split_run_args(&no_address).unwrap();
        assert_eq!(address, None);
        assert_eq!(docker_args, ["--name", "x", "img"]);
    }

    #[test]
    fn run_takes_an_ipv6_address_beside_the_ipv4_one_and_tells_images_apart() {
        let split = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            super::super::commands::split_run_args(&args)
                .map(|(address, rest)| (address, rest.len()))
        };
        assert_eq!(
            split(&["192.168.1.20/24,fd00:1::20/64", "img"]).unwrap(),
            (Some("192.168.1.20/24,fd00:1::20/64".to_owned()), 1)
        );
        assert_eq!(
            split(&["net:default,fd00:1::20/64", "img"]).unwrap(),
            (Some("net:default,fd00:1::20/64".to_owned()), 1)
        );
        // Image references with a registry port are not addresses.
        assert_eq!(split(&["10.0.0.1:5000/busybox"]).unwrap(), (None, 1));
        assert_eq!(split(&["registry:5000/busybox"]).unwrap(), (None, 1));
        // An IPv6 address alone is an address too.
        assert_eq!(
            split(&["fd00:1::20/64", "img"]).unwrap(),
            (Some("fd00:1::20/64".to_owned()), 1)
        );
        let err = split(&["10.1.0.1/24,10.1.0.2/24", "img"]).unwrap_err();
        assert!(format!("{err:#}").contains("one IPv4 address"), "{err:#}");
    }
}
