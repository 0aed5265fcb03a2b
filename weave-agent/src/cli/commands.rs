//! What each subcommand does on the CLI side: send a request, print the answer.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::{
    args::{LaunchArgs, OutputArgs, PolicyCommand},
    launch,
};
use crate::{
    control::{
        api::{ExposeInfo, Request, Response},
        client::{self as api, Unreachable, unexpected},
        location::Location,
    },
    host::{netns, run_spec::RunSpec},
    ipam::request::AddressRequest,
    mesh::peer_addr::PeerSpec,
    net::policy::{Action, Net, Subnet},
};

pub fn policy(loc: &Location, command: PolicyCommand) -> Result<()> {
    let allow = matches!(command, PolicyCommand::Allow(_));
    let (request, out) = match command {
        PolicyCommand::Allow(pair) | PolicyCommand::Deny(pair) => {
            // Checked here too, so a typo is reported before anything is sent.
            let a: Net = pair.a.parse()?;
            let b: Net = pair.b.parse()?;
            let action = if allow { Action::Allow } else { Action::Deny };
            let request = Request::PolicySet {
                action,
                a: a.to_string(),
                b: b.to_string(),
            };
            (request, None)
        }
        PolicyCommand::List(out) => (Request::PolicyList, Some(out)),
    };
    let Response::Rules { rules } = api::call_agent(&loc.socket(), &request)? else {
        return Err(unexpected("policy"));
    };
    match out {
        Some(out) if out.json => println!("{}", serde_json::to_string_pretty(&rules)?),
        Some(_) => {
            for rule in &rules {
                println!("{} {} {}", rule.a, rule.b, rule.action);
            }
        }
        // allow/deny: silent on success, like `ip route add`.
        None => {}
    }
    Ok(())
}

/// Tells the running agent to connect to `addr`, or launches one that does.
pub fn join(
    global: &[String],
    addr: &str,
    launch_args: &mut LaunchArgs,
    loc: &Location,
) -> Result<()> {
    PeerSpec::parse(addr, launch_args.port)?;
    match api::call(
        &loc.socket(),
        &Request::Join {
            peer: addr.to_owned(),
        },
    ) {
        Ok(Response::Joined {
            address,
            answered: true,
        }) => {
            println!("joined the mesh through {address}");
            Ok(())
        }
        Ok(Response::Joined { address, .. }) => {
            println!(
                "contacting {address}: no answer yet; the agent keeps trying every second \
                 (`weave-agent peers` shows when it is live)"
            );
            Ok(())
        }
        Ok(Response::Error { message }) => bail!("the agent refused: {message}"),
        Ok(_) => Err(unexpected("join")),
        Err(Unreachable::NoAgent) => {
            launch_args.peers.push(addr.to_owned());
            launch::launch(global, launch_args, loc)
        }
        Err(Unreachable::Other(err)) => Err(err),
    }
}

/// `connect` and `forget`: sends the request, prints the configured peers it leaves.
pub fn configure_peers(loc: &Location, request: &Request) -> Result<()> {
    let Response::ConfiguredPeers { peers } = api::call_agent(&loc.socket(), request)? else {
        return Err(unexpected(request.name()));
    };
    if peers.is_empty() {
        println!("configured peers: none");
    } else {
        println!("configured peers: {}", peers.join(" "));
    }
    Ok(())
}

pub fn attach(
    loc: &Location,
    addresses: &[String],
    container_arg: &str,
    mtu: Option<u32>,
    dns: &AttachOptions,
) -> Result<()> {
    // Refuse bad input before anything is changed anywhere.
    let (parsed, ipv6) = crate::ipam::request::parse_with_ipv6(&addresses.join(","))?;
    let netns = netns::netns_path(container_arg)?;
    let resolv_conf = match (&dns.resolv_conf, container_arg.strip_prefix("netns:")) {
        (false, _) => None,
        (true, Some(name)) => Some(netns_resolv_conf(name)),
        (true, None) => bail!(
            "--resolv-conf writes /etc/netns/NAME/resolv.conf, which only netns:NAME containers \
             read (`ip netns exec`); `weave-agent run` gives Docker containers the server itself"
        ),
    };
    let request = Request::Attach {
        cidr: parsed
            .iter()
            .map(ToString::to_string)
            .chain(ipv6.map(|c| c.to_string()))
            .collect::<Vec<_>>()
            .join(","),
        container: container_arg.to_owned(),
        netns,
        mtu,
        dns_name: dns.dns_name.clone(),
        no_multicast_route: dns.no_multicast_route,
    };
    let Response::Attached { endpoints } = api::call_agent(&loc.socket(), &request)? else {
        return Err(unexpected("attach"));
    };
    for endpoint in endpoints {
        println!(
            "{} {} {}{} (ethwe, MTU {}){}",
            endpoint.container,
            endpoint.mac,
            endpoint.cidr,
            endpoint
                .ipv6
                .as_deref()
                .map(|c| format!(",{c}"))
                .unwrap_or_default(),
            endpoint.mtu,
            endpoint
                .dns_name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default()
        );
    }
    if let Some(path) = resolv_conf {
        write_resolv_conf(loc, &path)?;
    }
    Ok(())
}

/// The first line of a resolv.conf that `attach --resolv-conf` wrote: `detach` removes only
/// such a file, never one the user wrote.
const RESOLV_CONF_MARK: &str = "# written by weave-agent attach --resolv-conf";

/// A netns container's resolv.conf, as `ip netns exec NAME` shows it.
fn netns_resolv_conf(name: &str) -> std::path::PathBuf {
    Path::new("/etc/netns").join(name).join("resolv.conf")
}

/// Removes what `attach --resolv-conf netns:NAME` wrote, once the container has no address
/// left: its directory too if nothing else is in it.
fn remove_resolv_conf(name: &str) {
    let path = netns_resolv_conf(name);
    let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(RESOLV_CONF_MARK));
    if ours && std::fs::remove_file(&path).is_ok() {
        if let Some(dir) = path.parent() {
            // Fails, as it should, while the user keeps other files there.
            let _ = std::fs::remove_dir(dir);
        }
        println!("{} removed", path.display());
    }
}

/// Names the agent's DNS server and domain in `path` (a netns container's resolv.conf).
fn write_resolv_conf(loc: &Location, path: &Path) -> Result<()> {
    let Response::Status(status) = api::call_agent(&loc.socket(), &Request::Status)? else {
        return Err(unexpected("status"));
    };
    let Some(address) = status.dns.address else {
        bail!("the agent serves no names (launched with --no-dns): no resolv.conf written");
    };
    let dir = path
        .parent()
        .context("a resolv.conf path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = format!(
        "{RESOLV_CONF_MARK}\nnameserver {address}\nsearch {}\n",
        status.dns.domain
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{} names {address} (search {})",
        path.display(),
        status.dns.domain
    );
    Ok(())
}

/// What `attach` is told about names.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub dns_name: Option<String>,
    pub resolv_conf: bool,
    pub no_multicast_route: bool,
}

pub fn detach(loc: &Location, container_arg: &str, address: Option<&str>) -> Result<()> {
    let request = Request::Detach {
        container: container_arg.to_owned(),
        netns: netns::netns_path(container_arg).ok().flatten(),
        address: address.map(str::to_owned),
    };
    let Response::Detached { endpoints } = api::call_agent(&loc.socket(), &request)? else {
        return Err(unexpected("detach"));
    };
    for ep in endpoints {
        println!("{} {} {} detached", ep.container, ep.mac, ep.cidr);
    }
    if let (None, Some(name)) = (address, container_arg.strip_prefix("netns:")) {
        remove_resolv_conf(name);
    }
    Ok(())
}

pub fn ps(loc: &Location, out: OutputArgs) -> Result<()> {
    let Response::Endpoints { endpoints } = api::call_agent(&loc.socket(), &Request::Ps)? else {
        return Err(unexpected("ps"));
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&endpoints)?);
        return Ok(());
    }
    for ep in endpoints {
        // A container's IPv6 address follows the IPv4 address it is kept with, as Weave lists
        // a container's addresses.
        let cidr = match &ep.ipv6 {
            Some(ipv6) => format!("{} {ipv6}", ep.cidr),
            None => ep.cidr.clone(),
        };
        if let Some(x) = &ep.expose {
            println!("{} {} {cidr} ({})", ep.container, ep.mac, exposure_text(x));
        } else if ep.forwards.is_empty() {
            println!("{} {} {cidr}", ep.container, ep.mac);
        } else {
            println!(
                "{} {} {cidr} (forwards: {})",
                ep.container,
                ep.mac,
                ep.forwards.join("; ")
            );
        }
    }
    Ok(())
}

pub fn peers(loc: &Location, out: OutputArgs) -> Result<()> {
    let Response::Peers { peers } = api::call_agent(&loc.socket(), &Request::Peers)? else {
        return Err(unexpected("peers"));
    };
    if out.json {
        let list: Vec<_> = peers
            .iter()
            .map(|p| {
                let mut entry = serde_json::json!({
                    "name": p.name, "address": p.address, "state": p.state,
                });
                if !p.route.is_empty() {
                    entry["route"] = p.route.clone().into();
                }
                if let Some(via) = &p.via {
                    entry["via"] = via.clone().into();
                }
                if !p.encryption.is_empty() {
                    entry["encryption"] = p.encryption.clone().into();
                }
                if let Some(session) = &p.session {
                    entry["session_age_ms"] = session.age_ms.into();
                    entry["handshakes"] = session.handshakes.into();
                    entry["sealed_bytes"] = session.sealed_bytes.into();
                    entry["opened_bytes"] = session.opened_bytes.into();
                    entry["refused"] = session.refused.into();
                    entry["dropped_no_session"] = session.dropped_no_session.into();
                }
                entry
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for p in peers {
        let name = if p.name.is_empty() {
            "-".to_owned()
        } else {
            format!("{}({})", p.name, p.nickname)
        };
        let route = match (p.route.as_str(), &p.via) {
            ("via", Some(via)) => {
                format!(" via {}({via})", p.via_nickname.as_deref().unwrap_or("?"))
            }
            ("", _) => String::new(),
            (route, _) => format!(" {route}"),
        };
        let encryption = match (p.encryption.as_str(), &p.session) {
            ("", _) => String::new(),
            ("sealed", Some(s)) => match s.age_ms {
                Some(age) => format!(" sealed(session {}s)", age / 1000),
                None => " sealed(no session yet)".to_owned(),
            },
            (other, _) => format!(" {other}"),
        };
        println!("{name} {} {}{route}{encryption}", p.address, p.state);
    }
    Ok(())
}

/// `run`'s arguments: the address, if the first one is one (a CIDR, `ip:`, `net:`), and the
/// `docker run` arguments after it.
/// `run`'s own address (checked, in the form the agent reads: `V4[,V6]`) and the `docker run`
/// arguments after it. The first argument is an address when each of its comma-separated
/// items is `net:…`, `ip:…` or an IP address with a prefix, which no image reference is.
pub fn split_run_args(args: &[String]) -> Result<(Option<String>, &[String])> {
    let Some(first) = args.first() else {
        return Ok((None, args));
    };
    let is_address = |item: &str| {
        item.starts_with("net:")
            || item.starts_with("ip:")
            || item
                .split_once('/')
                .is_some_and(|(ip, _)| ip.parse::<std::net::IpAddr>().is_ok())
    };
    if !first.split(',').all(is_address) {
        return Ok((None, args));
    }
    let (parsed, ipv6) = crate::ipam::request::parse_with_ipv6(first)?;
    if let (true, Some(alone)) = (parsed.is_empty(), ipv6) {
        return Ok((Some(alone.to_string()), &args[1..]));
    }
    let [request] = parsed.as_slice() else {
        bail!(
            "{first}: run takes one IPv4 address (and one IPv6 beside it); \
             `weave-agent attach` gives the container more once it runs"
        );
    };
    let text = match ipv6 {
        Some(cidr) => format!("{request},{cidr}"),
        None => request.to_string(),
    };
    Ok((Some(text), &args[1..]))
}

/// `run`: the full container id alone on stdout, so `id=$(weave-agent run ...)` works.
pub fn run_container(
    loc: &Location,
    args: &[String],
    mtu: Option<u32>,
    no_multicast_route: bool,
) -> Result<()> {
    // Refuse bad input before Docker creates anything.
    let (address, docker_args) = split_run_args(args)?;
    let spec = RunSpec::parse(docker_args)?;
    let request = Request::Run {
        cidr: address.unwrap_or_else(|| AddressRequest::Default.to_string()),
        spec: Box::new(spec),
        mtu,
        no_multicast_route,
    };
    let Response::Ran { id } = api::call_agent(&loc.socket(), &request)? else {
        return Err(unexpected("run"));
    };
    println!("{id}");
    Ok(())
}

fn exposure_text(x: &ExposeInfo) -> String {
    let routes = if x.routes.is_empty() {
        "no routes".to_owned()
    } else {
        format!("routes {}", x.routes.join(","))
    };
    let nat = if x.masquerade { ", masquerade" } else { "" };
    format!("on {}, {routes}{nat}", x.interface)
}

pub fn expose(
    loc: &Location,
    address: Option<&str>,
    routes: Option<Vec<String>>,
    masquerade: bool,
    out: OutputArgs,
) -> Result<()> {
    // Refuse bad input before anything is sent.
    let parsed: AddressRequest = address.unwrap_or("net:default").parse()?;
    for route in routes.iter().flatten() {
        route
            .parse::<Subnet>()
            .with_context(|| format!("--routes {route}"))?;
    }
    let request = Request::Expose {
        cidr: parsed.to_string(),
        routes,
        masquerade,
    };
    let Response::Exposed {
        endpoint,
        forwarding_turned_on,
    } = api::call_agent(&loc.socket(), &request)?
    else {
        return Err(unexpected("expose"));
    };
    if out.json {
        let mut value = serde_json::to_value(&endpoint)?;
        value["forwarding_turned_on"] = forwarding_turned_on.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let x = endpoint
        .expose
        .as_ref()
        .ok_or_else(|| unexpected("expose"))?;
    println!("{} exposed {}", endpoint.cidr, exposure_text(x));
    if forwarding_turned_on {
        println!("turned on IPv4 forwarding (net.ipv4.ip_forward=1), which exposing needs");
    }
    Ok(())
}

pub fn hide(loc: &Location, cidr: Option<String>, out: OutputArgs) -> Result<()> {
    let Response::Hidden { endpoints } = api::call_agent(&loc.socket(), &Request::Hide { cidr })?
    else {
        return Err(unexpected("hide"));
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&endpoints)?);
        return Ok(());
    }
    for ep in endpoints {
        println!("{} hidden", ep.cidr);
    }
    Ok(())
}

pub fn rmpeer(loc: &Location, peer: String) -> Result<()> {
    let Response::PeerRemoved {
        name,
        nickname,
        taken_over,
    } = api::call_agent(&loc.socket(), &Request::RmPeer { peer })?
    else {
        return Err(unexpected("rmpeer"));
    };
    println!("removed peer {nickname} ({name}); {taken_over} of its addresses are this host's now");
    Ok(())
}

/// `dns`, `dns-add`, `dns-remove`: sends `request`, lists the names the server answers.
pub fn dns(loc: &Location, request: &Request, out: OutputArgs) -> Result<()> {
    let Response::DnsRecords { records } = api::call_agent(&loc.socket(), request)? else {
        return Err(unexpected(request.name()));
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    for r in &records {
        println!("{:<40} {}", r.name, r.ip);
    }
    Ok(())
}

pub fn ipam(loc: &Location, out: OutputArgs) -> Result<()> {
    let Response::Ipam {
        info,
        ranges,
        allocations,
    } = api::call_agent(&loc.socket(), &Request::Ipam)?
    else {
        return Err(unexpected("ipam"));
    };
    if out.json {
        let value = serde_json::json!({
            "info": info, "ranges": ranges, "allocations": allocations,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "range {} (default subnet {}), this host {}: owns {} addresses, {} allocated",
        info.range, info.default_subnet, info.init, info.owned, info.allocated
    );
    if !info.claimed {
        println!("no host has claimed the range yet");
    }
    for message in &info.refused {
        println!("refused: {message}");
    }
    for s in &info.subnets {
        println!(
            "subnet {}: {} addresses, {} used, {} free",
            s.subnet, s.addresses, s.used, s.free
        );
        for share in &s.owners {
            let who = if share.nickname.is_empty() {
                share.owner.clone()
            } else {
                format!("{} {}", share.owner, share.nickname)
            };
            println!("  {who} owns {}, {} used", share.owned, share.used);
        }
    }
    println!("ranges:");
    for r in &ranges {
        let who = if r.nickname.is_empty() {
            r.owner.clone()
        } else {
            format!("{} {}", r.owner, r.nickname)
        };
        println!("{}-{} {} {who}", r.first, r.last, r.addresses);
    }
    if !allocations.is_empty() {
        println!("handed out here:");
    }
    for a in &allocations {
        println!("{} {}", a.address, a.holder);
    }
    Ok(())
}

/// `cni install` and `cni uninstall`.
pub fn cni(command: crate::cli::args::CniCommand) -> Result<()> {
    use crate::{cli::args::CniCommand, plugins::cni::install};
    let to_install = |a: crate::cli::args::CniInstallArgs| install::Install {
        conf_dir: a.conf_dir,
        bin_dir: a.bin_dir,
        network: a.network,
        subnet: a.subnet,
        portmap: !a.no_portmap,
    };
    match command {
        CniCommand::Install(args) => {
            if let Some(subnet) = &args.subnet {
                AddressRequest::parse_list(&format!("net:{subnet}"))
                    .with_context(|| format!("--subnet {subnet}"))?;
            }
            let it = to_install(args);
            let (plugin, list) = install::install(&it)?;
            println!("plugin {}", plugin.display());
            println!(
                "network {} in {}{}",
                it.network,
                list.display(),
                if it.portmap {
                    ", chained with portmap"
                } else {
                    ""
                }
            );
            if it.portmap {
                println!(
                    "host ports need this host on the overlay: `weave-agent expose net:default` \
                     (or an address of the plugin's subnet)"
                );
            }
        }
        CniCommand::Uninstall(args) => {
            let removed = install::uninstall(&to_install(args))?;
            if removed.is_empty() {
                println!("nothing to remove");
            }
            for path in removed {
                println!("removed {}", path.display());
            }
        }
    }
    Ok(())
}
