//! Partial meshes: where a firewall cuts two hosts apart, their containers still talk, relayed
//! in the kernel by a host both reach; traffic goes back to the direct path when it returns,
//! and moves to another relay when one dies. Relaying forwards only for the mesh, never lets
//! a frame pass as another host's, keeps isolation, and ends a loop at the hop limit.
//!
//! The hosts sit on one switch (192.168.56.101, .102, ...); the firewall is nftables on the
//! switch's bridge, dropping everything between two of its ports both ways.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use weave_common::counters::CounterId;
use weave_tests::{
    BULK, Container, Host, Segment, bulk,
    crafted::{Receiver, inject, inject_args, injected, link_mac},
    frames::{ETHERTYPE_IPV4, Ip, VXLAN_I, endpoint_mac, ethernet, vxlan},
    require_root, run_ok, spawn_in, unique_name, wait_until,
};

const A: &str = "192.168.56.101";
const B: &str = "192.168.56.102";
const C: &str = "192.168.56.103";
const D: &str = "192.168.56.104";

/// `peers --json` on `host`: the route to the peer at `address` ("direct" or "via") and the
/// relay's address.
fn route_to(host: &Host, address: &str) -> Result<(String, Option<String>)> {
    let peer = host.listed_peer(&["peers", "--json"], address)?;
    Ok(route_of(&peer))
}

fn route_of(peer: &serde_json::Value) -> (String, Option<String>) {
    (
        peer["route"].as_str().unwrap_or_default().to_owned(),
        peer["via"].as_str().map(str::to_owned),
    )
}

/// `host` reaches `address` the way `via` says (None: directly); false while `host` does
/// not know the peer yet.
fn is_route(host: &Host, address: &str, via: Option<&str>) -> Result<bool> {
    let want = match via {
        None => ("direct".to_owned(), None),
        Some(relay) => ("via".to_owned(), Some(relay.to_owned())),
    };
    let peer = host.find_listed_peer(&["peers", "--json"], address)?;
    Ok(peer.is_some_and(|p| route_of(&p) == want))
}

/// Waits until `host` reaches `address` the way `via` says (None: directly); how long it took.
fn wait_route(host: &Host, address: &str, via: Option<&str>, within: Duration) -> Result<Duration> {
    wait_until(
        within,
        &format!("{} reaching {address} {via:?}", host.name),
        || is_route(host, address, via),
    )
}

/// Hosts 1-3 on one switch with the firewall cutting 1 from 3; agents on all three (3 joins
/// through 2, the only host it reaches).
fn cut_mesh(tag: &str, hosts: usize) -> Result<Segment> {
    let seg = Segment::new(&unique_name(tag), hosts)?;
    seg.cut(1, 3)?;
    let (a, b, c) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    ensure!(
        !a.exec("ping", &["-c", "1", "-W", "1", C])?.status.success(),
        "the firewall lets host 1 reach host 3, so it proves nothing"
    );
    a.agent_ok(&["launch"])?;
    b.agent_ok(&["join", A])?;
    c.agent_ok(&["join", B])?;
    Ok(seg)
}

/// Containers on host 1 (10.40.1.1) and host 3 (10.40.1.3) of a cut mesh, returned once
/// each host routes the other through host 2 and a ping crosses.
fn relayed_pair(seg: &Segment, tag: &str) -> Result<(Container, Container)> {
    let (a, c) = (&seg.hosts[0], &seg.hosts[2]);
    let tag = unique_name(tag);
    let ca = a.container(&format!("{tag}a"), "10.40.1.1/24")?;
    let cc = c.container(&format!("{tag}c"), "10.40.1.3/24")?;
    wait_until(
        Duration::from_secs(10),
        "routes through B both ways",
        || Ok(is_route(a, C, Some(B))? && is_route(c, A, Some(B))? && ca.ping("10.40.1.3", 1)?),
    )?;
    Ok((ca, cc))
}

#[test]
fn hosts_cut_apart_talk_through_a_relay_and_go_direct_when_the_path_returns() -> Result<()> {
    require_root();
    let seg = cut_mesh("rl", 3)?;
    let (a, b, c) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    let tag = unique_name("rl");
    let ca = a.container(&format!("{tag}a"), "10.40.1.1/24")?;
    let cc = Container::new(&format!("{tag}c"), c)?;
    c.attach("10.40.1.3/24", &cc)?;
    let attached = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "a ping from A's container to C's",
        || ca.ping("10.40.1.3", 1),
    )?;
    eprintln!(
        "relayed ping answered {:?} after the attach",
        attached.elapsed()
    );

    ensure!(
        route_to(a, C)? == ("via".to_owned(), Some(B.to_owned())),
        "A should reach C via B: {:?}",
        route_to(a, C)?
    );
    let listing = a.agent_ok(&["peers"])?;
    ensure!(
        listing
            .lines()
            .any(|l| l.contains(C) && l.contains(&format!("({B})")) && l.contains("via")),
        "peers should show C via B(ADDRESS):\n{listing}"
    );
    let connections = a.agent_ok(&["status", "connections"])?;
    ensure!(
        connections
            .lines()
            .any(|l| l.starts_with(C) && l.contains("relayed via") && l.contains("hello")),
        "status connections should say C is relayed and why:\n{connections}"
    );
    let relayed = b.counter_packets("relay_forwarded")?;
    bulk(&ca, "10.40.1.3", &cc.name, "10.40.1.3", BULK)?;
    let after_bulk = b.counter_packets("relay_forwarded")?;
    ensure!(
        after_bulk > relayed,
        "B's relay counter did not grow ({relayed})"
    );
    ensure!(
        c.counter_packets("relay_received")? > 0,
        "C counted no relayed frames"
    );

    // The firewall goes: both ends go direct, and B relays no more.
    seg.lift_cut()?;
    let lifted = Instant::now();
    wait_route(a, C, None, Duration::from_secs(5))?;
    wait_route(
        c,
        A,
        None,
        Duration::from_secs(5) - lifted.elapsed().min(Duration::from_secs(5)),
    )?;
    eprintln!(
        "direct again {:?} after the firewall was lifted",
        lifted.elapsed()
    );
    let before = b.counter_packets("relay_forwarded")?;
    ensure!(ca.ping("10.40.1.3", 5)?, "no ping on the direct path");
    let after = b.counter_packets("relay_forwarded")?;
    ensure!(
        after == before,
        "B still relays on the direct path: {before} -> {after}"
    );

    // Back up: relayed again.
    seg.cut(1, 3)?;
    let cut_again = Instant::now();
    wait_until(Duration::from_secs(5), "relayed again", || {
        Ok(is_route(a, C, Some(B))? && is_route(c, A, Some(B))? && ca.ping("10.40.1.3", 1)?)
    })?;
    eprintln!(
        "relayed again {:?} after the firewall returned",
        cut_again.elapsed()
    );
    let before = b.counter_packets("relay_forwarded")?;
    ensure!(ca.ping("10.40.1.3", 3)?, "no ping once relayed again");
    ensure!(
        b.counter_packets("relay_forwarded")? > before,
        "the pings did not go through B"
    );
    Ok(())
}

/// The icmp_seq numbers `ping` printed as answered.
fn answered(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn when_the_relay_dies_traffic_moves_to_another_within_3_s() -> Result<()> {
    require_root();
    // 1 and 3 are cut apart; 2 and 4 both reach both. Ties go to the smaller address: 2.
    let seg = cut_mesh("rf", 4)?;
    let (a, b, d) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[3]);
    d.agent_ok(&["join", B])?;
    let (_ca, cc) = relayed_pair(&seg, "rf")?;
    wait_until(Duration::from_secs(5), "D hearing both A and C", || {
        Ok(is_route(d, A, None)? && is_route(d, C, None)?)
    })?;

    // 0.1 s between pings, 10 s long; B goes away 2 s in.
    let (mut ping, lines) = spawn_in(
        &cc.name,
        "ping",
        &["-i", "0.1", "-c", "100", "-W", "1", "10.40.1.1"],
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = b.agent_pid()?;
    run_ok("kill", ["-9", &pid.to_string()])?;
    b.ip(["link", "set", "eth0", "down"])?;
    let down = Instant::now();
    let output: Vec<String> = lines.collect::<Result<_, _>>()?;
    ping.wait()?;
    let seqs = answered(&output.join("\n"));
    let gap = seqs.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let lost_s = f64::from(gap.saturating_sub(1)) * 0.1;
    eprintln!(
        "{} of 100 pings answered; longest gap {lost_s:.1} s after B went down ({:?} ago)",
        seqs.len(),
        down.elapsed()
    );
    ensure!(
        seqs.last().is_some_and(|s| *s >= 95),
        "the pings did not continue to the end: answered {seqs:?}"
    );
    ensure!(
        lost_s <= 3.0,
        "the ping lost {lost_s:.1} s when B went down"
    );
    ensure!(route_to(a, C)? == ("via".to_owned(), Some(D.to_owned())));
    let before = d.counter_packets("relay_forwarded")?;
    ensure!(cc.ping("10.40.1.1", 3)?, "no ping through D");
    ensure!(
        d.counter_packets("relay_forwarded")? > before,
        "D's relay counter did not grow"
    );
    Ok(())
}

/// `ip` + `inner` as an overlay packet from host `from` (its own eth0 MAC and address) to
/// `to`, sent raw out of `from`'s eth0.
fn overlay_packet(from: &Host, to: &Host, to_ip: [u8; 4], inner: &[u8]) -> Result<Vec<u8>> {
    let from_ip: [u8; 4] = from_address(from)?;
    Ok(ethernet(
        link_mac(to, "eth0")?,
        link_mac(from, "eth0")?,
        ETHERTYPE_IPV4,
        &vxlan(from_ip, to_ip, VXLAN_I, weave_common::OVERLAY_VNI, inner).bytes(),
    ))
}

fn from_address(host: &Host) -> Result<[u8; 4]> {
    let json: serde_json::Value =
        serde_json::from_str(&host.ip(["-j", "-4", "addr", "show", "eth0"])?)?;
    let text = json[0]["addr_info"][0]["local"]
        .as_str()
        .context("eth0 has no address")?;
    let ip: std::net::Ipv4Addr = text.parse()?;
    Ok(ip.octets())
}

/// The inner frame a container at `src` sends to `dst`, with the endpoint MACs.
fn inner(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ethernet(
        endpoint_mac(dst),
        endpoint_mac(src),
        ETHERTYPE_IPV4,
        &Ip::udp(src, dst).bytes(),
    )
}

#[test]
fn relaying_is_for_the_mesh_only_and_keeps_sources_and_isolation() -> Result<()> {
    require_root();
    // Host 4 runs no agent: a machine on the underlay that is no peer.
    let seg = cut_mesh("rs", 4)?;
    let (a, b, c, x) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2], &seg.hosts[3]);
    let tag = unique_name("rs");
    let ca = a.container(&format!("{tag}a"), "10.40.1.1/24")?;
    let _cc = c.container(&format!("{tag}c"), "10.40.1.3/24")?;
    let cc3 = c.container(&format!("{tag}d"), "10.40.1.4/24")?;
    let _other = c.container(&format!("{tag}e"), "10.40.2.3/24")?;
    wait_until(Duration::from_secs(10), "a relayed ping", || {
        Ok(is_route(a, C, Some(B))? && ca.ping("10.40.1.4", 1)?)
    })?;
    let b_ip = [192, 168, 56, 102];
    let to_cc3 = Receiver {
        host: c,
        at: &cc3,
        src: [10, 40, 1, 3],
        dst: [10, 40, 1, 4],
    };
    let send_from = |host: &Host| {
        let name = host.name.clone();
        move |frames: &[String]| injected(run_ok_out(&name, &inject_args("eth0", frames))?)
    };

    // A machine that is no peer cannot use B as a relay.
    let frame = overlay_packet(x, b, b_ip, &inner([10, 40, 1, 1], [10, 40, 1, 4]))?;
    let from_x = send_from(x);
    let receiver = Receiver {
        src: [10, 40, 1, 1],
        ..to_cc3
    };
    inject(
        "relay asked by a non-peer",
        &from_x,
        &frame,
        (b, &receiver),
        "drop_overlay_not_peer",
        false,
    )?;

    // A's host sends B a frame claiming to come from C's container: not A's to send.
    let frame = overlay_packet(a, b, b_ip, &inner([10, 40, 1, 3], [10, 40, 1, 4]))?;
    let from_a = send_from(a);
    inject(
        "A passing a frame off as C's container's",
        &from_a,
        &frame,
        (b, &to_cc3),
        "drop_overlay_spoofed",
        false,
    )?;
    // Nor can A's container: it is stopped before it leaves A.
    ca.ip(["addr", "add", "10.40.1.3/32", "dev", "ethwe"])?;
    let spoofed_before = a.counter_packets("drop_spoofed")?;
    let spoofed = ca.exec(
        "ping",
        &["-c", "2", "-W", "1", "-I", "10.40.1.3", "10.40.1.4"],
    )?;
    ensure!(!spoofed.status.success(), "a spoofed ping was answered");
    ensure!(a.counter_packets("drop_spoofed")? >= spoofed_before + 2);
    ca.ip(["addr", "del", "10.40.1.3/32", "dev", "ethwe"])?;

    // Isolation holds for relayed frames: at A for its container, at B for a crafted frame.
    ca.ip(["route", "add", "10.40.2.0/24", "dev", "ethwe"])?;
    let isolated_before = a.counter_packets("drop_isolated")?;
    ensure!(
        !ca.ping("10.40.2.3", 2)?,
        "isolated subnets talk through the relay"
    );
    ensure!(a.counter_packets("drop_isolated")? >= isolated_before + 2);
    let frame = overlay_packet(a, b, b_ip, &inner([10, 40, 1, 1], [10, 40, 2, 3]))?;
    let to_other = Receiver {
        host: c,
        at: &cc3,
        src: [10, 40, 1, 1],
        dst: [10, 40, 2, 3],
    };
    inject(
        "a frame across subnets",
        &from_a,
        &frame,
        (b, &to_other),
        "drop_isolated",
        false,
    )?;
    Ok(())
}

/// Runs python3 with `args` in namespace `ns`, whatever its exit status.
fn run_ok_out(ns: &str, args: &[&str]) -> Result<std::process::Output> {
    let mut all = vec!["netns", "exec", ns, "python3"];
    all.extend_from_slice(args);
    weave_tests::run("ip", &all)
}

#[test]
fn a_routing_loop_ends_at_the_hop_limit_and_is_counted() -> Result<()> {
    require_root();
    // 1 and 3 are cut apart; 1 reaches 3 through 2 (or 4).
    let seg = cut_mesh("rp", 4)?;
    let (b, d) = (&seg.hosts[1], &seg.hosts[3]);
    d.agent_ok(&["join", B])?;
    let (ca, _cc) = relayed_pair(&seg, "rp")?;
    b.wait_for_remote(2)?;
    d.wait_for_remote(2)?;
    wait_until(
        Duration::from_secs(5),
        "2 and 4 reaching 1 and 3 directly",
        || {
            Ok(is_route(b, C, None)?
                && is_route(b, D, None)?
                && is_route(d, C, None)?
                && is_route(d, A, None)?
                && is_route(d, B, None)?)
        },
    )?;
    // 2 and 4 are each told that 3 is reached through the other, while 1 sends 3's frames to
    // 2: a loop between 2 and 4 that the origin is not part of (a frame back at its origin is
    // dropped there at once). Their agents keep running (stopped, they would be dead peers
    // within 2 s) and rewrite a route only when theirs changes, which it does not while the
    // links stay as they are.
    // An agent whose routes change in the moment rewrites its whole map and undoes the loop:
    // the attempt is then made again, and only one with the loop in place throughout counts.
    for attempt in 1..=3 {
        for (relay, other) in [(b, D), (d, B)] {
            set_next_hop(relay, C, other)?;
        }
        let (b0, d0) = (snapshot(b)?, snapshot(d)?);
        let answered = ca.ping("10.40.1.3", 1)?;
        if next_hop(b, C)? != D || next_hop(d, C)? != B {
            eprintln!(
                "attempt {attempt}: an agent rewrote its route during the ping (answered {answered}, now {} and {})",
                next_hop(b, C)?,
                next_hop(d, C)?
            );
            // Routes of the new mesh were still settling: give them a moment, not a race.
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        ensure!(!answered, "a ping crossed the loop");
        let moved = |h: &Host, start: &[u64], id: CounterId| -> Result<u64> {
            Ok(pinned_counter(h, id)? - start[id.index() as usize])
        };
        let drops = moved(b, &b0, CounterId::DropRelayHopLimit)?
            + moved(d, &d0, CounterId::DropRelayHopLimit)?;
        let relayed = moved(b, &b0, CounterId::RelayForwarded)?;
        eprintln!("hop-limit drops +{drops}, relays by 2 +{relayed}");
        ensure!(drops >= 1, "no frame was dropped at the hop limit");
        ensure!(
            relayed >= 3,
            "a looping frame should pass 2 several times ({relayed})"
        );
        return Ok(());
    }
    anyhow::bail!("the agents rewrote their routes during every attempt")
}

/// Every counter of `host`, by slot, from its pinned map.
fn snapshot(host: &Host) -> Result<Vec<u64>> {
    CounterId::ALL
        .iter()
        .map(|id| pinned_counter(host, *id))
        .collect()
}

/// The peers map pinned for `host`, as bpftool reads it.
fn peers_pin(host: &Host) -> Result<String> {
    let pin = host.pin_dir().join(weave_common::maps::PEERS);
    Ok(pin.to_str().context("pin path")?.to_owned())
}

fn octets(ip: &str) -> Result<Vec<String>> {
    let ip: std::net::Ipv4Addr = ip.parse()?;
    Ok(ip.octets().iter().map(u8::to_string).collect())
}

/// Writes `host`'s peers map entry for `peer`: reached through `hop`.
fn set_next_hop(host: &Host, peer: &str, hop: &str) -> Result<()> {
    let mut args = vec!["map".to_owned(), "update".to_owned(), "pinned".to_owned()];
    args.push(peers_pin(host)?);
    args.push("key".to_owned());
    args.extend(octets(peer)?);
    args.push("value".to_owned());
    args.extend(octets(hop)?);
    args.extend(["0", "0", "0", "0"].map(str::to_owned));
    run_ok("bpftool", &args)?;
    Ok(())
}

/// The next hop `host`'s peers map holds for `peer`.
fn next_hop(host: &Host, peer: &str) -> Result<&'static str> {
    let mut args = vec!["-j".to_owned(), "map".to_owned(), "lookup".to_owned()];
    args.push("pinned".to_owned());
    args.push(peers_pin(host)?);
    args.push("key".to_owned());
    args.extend(octets(peer)?);
    let out: serde_json::Value = serde_json::from_str(&run_ok("bpftool", &args)?)?;
    let bytes: Vec<u8> = out["value"]
        .as_array()
        .with_context(|| format!("unexpected bpftool output: {out}"))?
        .iter()
        .take(4)
        .map(|b| u8::from_str_radix(b.as_str().unwrap_or("").trim_start_matches("0x"), 16))
        .collect::<Result<_, _>>()?;
    let hop = std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string();
    Ok([A, B, C, D]
        .into_iter()
        .find(|h| *h == hop)
        .unwrap_or("another"))
}

/// Packets of counter `id` on `host`, summed over CPUs from its pinned counters map (read
/// straight from the kernel, not through the agent, so it cannot lag).
fn pinned_counter(host: &Host, id: CounterId) -> Result<u64> {
    let pin = host.pin_dir().join(weave_common::maps::COUNTERS);
    let index = id.index().to_le_bytes();
    let key: Vec<String> = index.iter().map(u8::to_string).collect();
    let mut args = vec![
        "-j".to_owned(),
        "map".to_owned(),
        "lookup".to_owned(),
        "pinned".to_owned(),
        pin.to_str().context("pin path")?.to_owned(),
        "key".to_owned(),
    ];
    args.extend(key);
    let out: serde_json::Value = serde_json::from_str(&run_ok("bpftool", &args)?)?;
    // Raw per-CPU values (the maps carry no BTF): the packets u64 first, little-endian, as
    // hex strings.
    let per_cpu = out["values"]
        .as_array()
        .with_context(|| format!("unexpected bpftool output: {out}"))?;
    let mut total = 0;
    for cpu in per_cpu {
        let bytes = cpu["value"].as_array().context("no value bytes")?;
        let mut packets = [0u8; 8];
        for (byte, text) in packets.iter_mut().zip(bytes) {
            let text = text.as_str().context("a value byte that is no string")?;
            *byte = u8::from_str_radix(text.trim_start_matches("0x"), 16)?;
        }
        total += u64::from_le_bytes(packets);
    }
    Ok(total)
}

#[test]
fn restarting_the_relay_loses_no_relayed_ping() -> Result<()> {
    require_root();
    let seg = cut_mesh("rr", 3)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    let (_ca, cc) = relayed_pair(&seg, "rr")?;
    // 100 pings a second for 4 s; B's agent stops and starts again 1 s in. Its pinned data
    // path relays meanwhile, and the new agent publishes whom it hears from its first word.
    let (mut ping, lines) = spawn_in(
        &cc.name,
        "ping",
        &["-i", "0.01", "-c", "400", "-W", "1", "10.40.1.1"],
    )?;
    std::thread::sleep(Duration::from_secs(1));
    b.agent_ok(&["stop"])?;
    b.agent_ok(&["launch"])?;
    let output: Vec<String> = lines.collect::<Result<_, _>>()?;
    ping.wait()?;
    let seqs = answered(&output.join("\n"));
    eprintln!(
        "{} of 400 relayed pings answered across B's restart",
        seqs.len()
    );
    ensure!(
        seqs.len() == 400,
        "relayed pings were lost across B's restart: {} of 400",
        seqs.len()
    );
    ensure!(route_to(a, C)? == ("via".to_owned(), Some(B.to_owned())));
    Ok(())
}
