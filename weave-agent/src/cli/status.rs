//! `status`: the agent as an operator reads it.

use anyhow::Result;
use weave_common::counters::CounterId;

use super::args::{StatusArgs, StatusView};
use crate::control::{
    api::{self, Request, Response},
    client::{call_agent, unexpected},
    location::Location,
};

pub fn status(loc: &Location, args: StatusArgs) -> Result<()> {
    let Response::Status(status) = call_agent(&loc.socket(), &Request::Status)? else {
        return Err(unexpected("status"));
    };
    match (args.view, args.out.json) {
        (Some(StatusView::Connections), true) => {
            println!("{}", serde_json::to_string_pretty(&status.connections)?);
        }
        (Some(StatusView::Connections), false) => print_connections(&status.connections),
        (None, true) => println!("{}", serde_json::to_string_pretty(&status)?),
        (None, false) => {
            print_identity(&status);
            print_mesh(&status);
            print_counters(&status);
        }
    }
    Ok(())
}

/// One line per peer: address, name, state, the relay, and why the link is not direct.
fn print_connections(connections: &[api::ConnectionInfo]) {
    if connections.is_empty() {
        println!("no peers (`weave-agent join ADDR` connects to one)");
    }
    for c in connections {
        let name = if c.name.is_empty() {
            "-".to_owned()
        } else {
            format!("{}({})", c.name, c.nickname)
        };
        let via = c
            .via
            .as_deref()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        let reason = c
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let mtu = c.mtu.map(|m| format!(", path MTU {m}")).unwrap_or_default();
        println!("{:<15} {name} {}{via}{mtu}{reason}", c.address, c.state);
    }
}

fn print_identity(s: &api::Status) {
    println!("        Version: weave-agent {} (pid {})", s.version, s.pid);
    println!("      Peer name: {} ({})", s.peer_name, s.nickname);
    println!("      Namespace: {}", s.netns);
    println!(
        "       Underlay: {} (index {}) {}, MTU {}{}",
        s.underlay.name,
        s.underlay.ifindex,
        s.underlay.address,
        s.underlay.mtu,
        s.underlay
            .kind
            .as_deref()
            .map(|k| format!(", {k}"))
            .unwrap_or_default()
    );
    println!("          State: {}", s.state_dir);
    println!("           Pins: {}", s.pin_dir);
    println!("       Programs:");
    for p in &s.programs {
        println!("                 {} (id {}): {}", p.name, p.id, p.attached);
    }
    println!(
        "        Overlay: {} (VXLAN external, UDP {}), ethwe MTU {}",
        s.vxlan, s.data_port, s.mtu
    );
    println!("         Gossip: UDP {}", s.gossip_port);
    println!(
        "      Endpoints: {} local ({} forwarding), {} remote (kernel map)",
        s.endpoints.local, s.endpoints.forwarding, s.endpoints.remote
    );
    let super_packets = |name: &str| s.counters.get(name).map_or(0, |c| c.packets);
    println!(
        "  Super-packets: {} decapsulated in eBPF, {} by the VXLAN device for forwarding \
         endpoints, {} by it because eBPF was refused",
        super_packets(CounterId::UnderlayDecapGso.name()),
        super_packets(CounterId::UnderlayGsoForwarding.name()),
        super_packets(CounterId::UnderlayGsoRefused.name()),
    );
}

/// How container traffic with a peer crosses, for its `Peers:` line: nothing without a
/// password; `trusted`; or `sealed` with the session's age and counts.
fn encryption(p: &api::PeerInfo) -> String {
    match (p.encryption.as_str(), &p.session) {
        ("", _) => String::new(),
        ("sealed", Some(s)) => {
            let age = s.age_ms.map_or("no session yet".to_owned(), |ms| {
                format!("session {}s", ms / 1000)
            });
            format!(
                ", sealed: {age}, {} handshakes, {} B sealed, {} B opened, {} refused, {} dropped for no session",
                s.handshakes, s.sealed_bytes, s.opened_bytes, s.refused, s.dropped_no_session
            )
        }
        (other, _) => format!(", {other}"),
    }
}

fn print_mesh(s: &api::Status) {
    if s.peers.is_empty() {
        println!("          Peers: none (`weave-agent join ADDR` connects to one)");
    }
    for (i, p) in s.peers.iter().enumerate() {
        let label = if i == 0 { "Peers:" } else { "" };
        println!(
            "{label:>16} {}({}) {} {} ({} endpoints){}",
            p.name,
            p.nickname,
            p.address,
            p.state,
            p.endpoints,
            encryption(p)
        );
    }
    let relayed: Vec<String> = s
        .peers
        .iter()
        .filter(|p| p.route == "via")
        .map(|p| format!("{} via {}", p.address, p.via.as_deref().unwrap_or("?")))
        .collect();
    let direct = s.peers.iter().filter(|p| p.route == "direct").count();
    println!(
        "         Routes: {direct} direct, {} relayed{}",
        relayed.len(),
        if relayed.is_empty() {
            String::new()
        } else {
            format!(" ({})", relayed.join(", "))
        }
    );
    println!(
        "     Encryption: {}",
        if s.encryption {
            "on (password set): gossip, and container traffic except with trusted peers"
        } else {
            "off (no password)"
        }
    );
    if s.auth_failures > 0 {
        let sources: Vec<String> = s
            .auth_failure_sources
            .iter()
            .map(|(ip, n)| format!("{ip} ({n})"))
            .collect();
        println!(
            "  Auth failures: {} gossip datagrams refused, from {}",
            s.auth_failures,
            sources.join(", ")
        );
    }
    for conflict in &s.conflicts {
        println!("       Conflict: {conflict}");
    }
}

fn print_counters(s: &api::Status) {
    println!("       Counters:");
    // As wide as the longest name, so the columns stay aligned as counters are added.
    let width = s.counters.keys().map(String::len).max().unwrap_or(0);
    for (name, c) in &s.counters {
        println!(
            "                 {name:<width$} {:>12} packets {:>14} bytes",
            c.packets, c.bytes
        );
    }
}
