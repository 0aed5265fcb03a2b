//! The overlay across namespace hosts, driven through the real binary: walkthrough, isolation,
//! anti-spoofing, bulk TCP, host loss, refusals, detach. Counters come from `status`, which
//! reads them from the kernel's maps; links are checked with `ip`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{
    Container, Host, Segment, require_root, spawn_in, unique_name, wait_for_line, wait_until,
    walkthrough,
};

/// The walkthrough (both hosts, three containers, pings checked) on fresh namespaces.
fn walkthrough() -> Result<walkthrough::Walkthrough> {
    require_root();
    walkthrough::run(&unique_name("a"), &unique_name("b"), false)
}

fn same_inode(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn counter(host: &Host, name: &str) -> Result<u64> {
    host.counter_packets(name)
}

#[test]
fn walkthrough_pings_both_ways_isolates_other_subnet_and_counts_it() -> Result<()> {
    let w = walkthrough()?;

    // The packets went through the programs: encapsulated on one side, delivered on the other,
    // ARP answered in eBPF. (The cross-subnet ping never leaves 192.168.2.30: it has no route;
    // the test below forces one.)
    let sent = counter(&w.a, "remote_sent")?;
    let delivered = counter(&w.b, "overlay_delivered")?;
    assert!(
        sent >= 6 && delivered >= 6,
        "remote_sent {sent}, overlay_delivered {delivered}"
    );
    assert!(counter(&w.a, "arp_replied")? >= 1);
    // Single packets were decapsulated by the underlay TC program (the default eBPF
    // encapsulation), not by the VXLAN device.
    assert!(
        counter(&w.b, "underlay_decap")? >= 6,
        "eBPF decapsulation unused"
    );

    // peers --json: the other host, alive, with its underlay address.
    let peers: serde_json::Value = serde_json::from_str(&w.b.agent_ok(&["peers", "--json"])?)?;
    assert_eq!(peers[0]["address"], "192.168.56.101", "{peers}");
    assert_eq!(peers[0]["state"], "alive", "{peers}");
    assert!(peers[0]["name"].as_str().is_some_and(|n| !n.is_empty()));

    // ethwe: the address, MTU underlay - 50, the address-derived MAC, the subnet route, the
    // one to the agent's DNS server and the multicast route: nothing that could take other
    // traffic.
    let addr = w.c1.ip(["-o", "addr", "show", "dev", "ethwe"])?;
    assert!(addr.contains("192.168.1.10/24"), "{addr}");
    let link = w.c1.ip(["link", "show", "dev", "ethwe"])?;
    assert!(
        link.contains("mtu 1450") && link.contains("02:57:c0:a8:01:0a"),
        "{link}"
    );
    let routes = w.c1.ip(["route", "show"])?;
    assert_eq!(
        routes.lines().map(str::trim).collect::<Vec<_>>(),
        [
            "169.254.53.53 dev ethwe proto 53 scope link",
            "192.168.1.0/24 dev ethwe proto kernel scope link src 192.168.1.10",
            "224.0.0.0/4 dev ethwe scope link"
        ]
    );

    // No bridge and no learning VXLAN device on the hosts: only a collect_md one.
    for host in [&w.a, &w.b] {
        let links = host.ip(["-d", "link", "show"])?;
        assert!(
            !links.contains("bridge"),
            "{} has a bridge:\n{links}",
            host.name
        );
        let vxlan = host.ip(["-d", "link", "show", "dev", "vxlan-6784"])?;
        assert!(
            vxlan.contains("vxlan external") && vxlan.contains("nolearning"),
            "{vxlan}"
        );
    }
    Ok(())
}

#[test]
fn three_hosts_reach_each_other() -> Result<()> {
    require_root();
    let prefix = unique_name("t");
    let seg = Segment::new(&prefix, 3)?;
    let [h1, h2, h3] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    // Three ways in: launch alone, launch with a peer, and join told to a running agent
    // (which first points at an address where nobody answers: retried, shown, not fatal).
    h1.agent_ok(&["launch"])?;
    h2.agent_ok(&["launch", "192.168.56.101"])?;
    // Host 3 sends everything through the kernel VXLAN device: both encapsulations interoperate.
    h3.agent_ok(&["launch", "--encap", "vxlan", "192.168.56.199"])?;
    let peers = h3.agent_ok(&["peers"])?;
    assert!(peers.contains("192.168.56.199 connecting"), "{peers}");
    let joined = h3.agent_ok(&["join", "192.168.56.102"])?;
    assert!(
        joined.contains("joined the mesh through 192.168.56.102:6783"),
        "{joined}"
    );
    let cs = seg.attach_one_each(&prefix, |i| format!("10.32.0.{}/16", i + 1))?;
    for (i, c) in cs.iter().enumerate() {
        for j in 0..3 {
            if i != j {
                let ip = format!("10.32.0.{}", j + 1);
                ensure!(c.ping(&ip, 1)?, "{} cannot reach {ip}", c.name);
            }
        }
    }
    // Every host knows the two others as alive peers.
    for h in [h1, h2, h3] {
        let peers: serde_json::Value = serde_json::from_str(&h.agent_ok(&["peers", "--json"])?)?;
        let alive = peers
            .as_array()
            .context("peers --json is an array")?
            .iter()
            .filter(|p| p["state"] == "alive")
            .count();
        assert_eq!(alive, 2, "{}: {peers}", h.name);
    }
    let peers = h3.agent_ok(&["peers"])?;
    assert!(
        peers.contains("192.168.56.199 connecting"),
        "still retried: {peers}"
    );
    // Host 3 (--encap vxlan) received through its VXLAN device only; the others in eBPF.
    assert_eq!(counter(h3, "underlay_decap")?, 0);
    assert!(counter(h3, "overlay_delivered")? >= 2);
    assert!(counter(h1, "underlay_decap")? >= 2);
    Ok(())
}

#[test]
fn two_endpoints_on_one_host_talk_without_the_tunnel() -> Result<()> {
    require_root();
    let host = Host::new(&unique_name("l"))?;
    host.ip([
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])?;
    host.ip(["addr", "add", "192.168.56.101/24", "dev", "eth0"])?;
    host.ip(["link", "set", "eth0", "up"])?;
    host.agent_ok(&["launch", "--iface", "eth0"])?;
    let c1 = Container::new(&format!("{}c1", host.name), &host)?;
    let c2 = Container::new(&format!("{}c2", host.name), &host)?;
    host.attach("192.168.1.10/24", &c1)?;
    // The second container named by the pid of a process inside it, as `pid:PID`.
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &c2.name, "sleep", "600"])
        .spawn()?;
    // `ip netns exec` enters the namespace before it becomes `sleep`: wait for that, or
    // pid:PID would still name this test's own namespace.
    let pid_ns = format!("/proc/{}/ns/net", sleeper.id());
    let target = format!("/run/netns/{}", c2.name);
    let entered = wait_until(
        Duration::from_secs(5),
        "sleep entering the container",
        || Ok(same_inode(&pid_ns, &target)),
    );
    let out = entered.and_then(|_| {
        host.agent(&[
            "attach",
            "192.168.1.11/24",
            &format!("pid:{}", sleeper.id()),
        ])
    });
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let out = out?;
    ensure!(
        out.status.success(),
        "attach pid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = counter(&host, "local_delivered")?;
    ensure!(
        c1.ping("192.168.1.11", 3)?,
        "local endpoints cannot reach each other"
    );
    assert!(counter(&host, "local_delivered")? >= before + 6);
    assert_eq!(counter(&host, "remote_sent")?, 0);

    // Unknown destinations are dropped and counted, not flooded.
    c1.ip([
        "neigh",
        "replace",
        "192.168.1.99",
        "lladdr",
        "02:57:c0:a8:01:63",
        "dev",
        "ethwe",
    ])?;
    let unknown = counter(&host, "drop_unknown_dst")?;
    assert!(!c1.ping("192.168.1.99", 2)?);
    assert!(counter(&host, "drop_unknown_dst")? >= unknown + 2);
    // A broadcast reaches the other endpoint of the subnet, copied on the host: no tunnel.
    let out = c2.exec("sysctl", &["-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"])?;
    ensure!(out.status.success(), "sysctl: {out:?}");
    let delivered = counter(&host, "broadcast_delivered")?;
    let out = c1.exec(
        "ping",
        &["-b", "-c", "2", "-i", "0.2", "-W", "1", "192.168.1.255"],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("from 192.168.1.11:"),
        "no answer to the broadcast:\n{text}"
    );
    assert!(counter(&host, "broadcast_delivered")? >= delivered + 2);
    assert_eq!(counter(&host, "remote_sent")?, 0);
    assert_eq!(counter(&host, "broadcast_remote_sent")?, 0);
    let ps = host.agent_ok(&["ps"])?;
    assert!(
        ps.contains(&format!("{} 02:57:c0:a8:01:0a 192.168.1.10/24", c1.spec())),
        "{ps}"
    );
    Ok(())
}

#[test]
fn routing_the_other_subnet_through_ethwe_is_still_isolated() -> Result<()> {
    let w = walkthrough()?;
    // The walkthrough gave c3 an on-link route to the other subnet; a static neighbour entry
    // takes ARP out of the way too.
    w.c3.ip([
        "neigh",
        "replace",
        "192.168.1.10",
        "lladdr",
        "02:57:c0:a8:01:0a",
        "dev",
        "ethwe",
    ])?;
    let isolated = counter(&w.b, "drop_isolated")?;
    let delivered = counter(&w.a, "overlay_delivered")?;
    assert!(!w.c3.ping("192.168.1.10", 3)?, "isolation broken");
    assert!(counter(&w.b, "drop_isolated")? >= isolated + 3);
    assert_eq!(
        counter(&w.a, "overlay_delivered")?,
        delivered,
        "a frame crossed"
    );
    Ok(())
}

#[test]
fn spoofed_source_address_or_mac_never_arrives() -> Result<()> {
    let w = walkthrough()?;
    let delivered = counter(&w.a, "overlay_delivered")?;
    let spoofed = counter(&w.b, "drop_spoofed")?;

    // A second, unassigned address on ethwe, used as source.
    w.c2.ip(["addr", "add", "192.168.1.99/24", "dev", "ethwe"])?;
    w.c2.ip([
        "neigh",
        "replace",
        "192.168.1.10",
        "lladdr",
        "02:57:c0:a8:01:0a",
        "dev",
        "ethwe",
    ])?;
    let out = w.c2.exec(
        "ping",
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "192.168.1.99",
            "192.168.1.10",
        ],
    )?;
    assert!(!out.status.success(), "spoofed source got answers");
    assert!(counter(&w.b, "drop_spoofed")? >= spoofed + 3);

    // The right address with someone else's MAC.
    w.c2.ip(["addr", "del", "192.168.1.99/24", "dev", "ethwe"])?;
    w.c2.ip([
        "link",
        "set",
        "dev",
        "ethwe",
        "address",
        "02:57:00:00:00:99",
    ])?;
    assert!(!w.c2.ping("192.168.1.10", 3)?, "spoofed MAC got answers");
    assert_eq!(
        counter(&w.a, "overlay_delivered")?,
        delivered,
        "a spoofed frame arrived"
    );
    Ok(())
}

/// Python is on every machine of this kind; these scripts stream bytes and print a SHA-256.
const SINK: &str = r#"
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"#;
const SOURCE: &str = r#"
import hashlib, random, socket, sys
data = random.Random(6784).randbytes(int(sys.argv[2]))
s = socket.create_connection((sys.argv[1], 5001), timeout=30); s.sendall(data); s.close()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// Sends `bytes` random bytes over TCP from `source` to `address` in `sink`; fails unless
/// they arrive intact.
fn tcp_transfer(sink: &Container, source: &Container, address: &str, bytes: usize) -> Result<()> {
    let (mut server, mut lines) = spawn_in(&sink.name, "python3", &["-c", SINK, address])?;
    wait_for_line(&mut lines, "listening")?;

    let sent = source.exec("python3", &["-c", SOURCE, address, &bytes.to_string()]);
    let sent = match sent {
        Ok(sent) if sent.status.success() => sent,
        failed => {
            let _ = server.kill();
            let _ = server.wait();
            let detail = match failed {
                Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(err) => format!("{err:#}"),
            };
            anyhow::bail!("source failed: {detail}");
        }
    };
    let received = lines.next().context("sink ended without a digest")??;
    server.wait()?;
    ensure!(
        received == String::from_utf8_lossy(&sent.stdout).trim(),
        "bytes changed on the way: {received}"
    );
    ensure!(received.starts_with(&bytes.to_string()), "{received}");
    Ok(())
}

#[test]
fn large_tcp_transfer_arrives_intact() -> Result<()> {
    let w = walkthrough()?;
    tcp_transfer(&w.c1, &w.c2, "192.168.1.10", 64 << 20)
}

/// A container that runs a VXLAN tunnel of its own over `ethwe` (kind, flannel in a
/// container): the kernel marks its TCP packets as tunnelled, and eBPF cannot wrap them a
/// second time, so they must take the VXLAN device instead of being dropped.
#[test]
fn a_tunnel_inside_containers_carries_tcp() -> Result<()> {
    let w = walkthrough()?;
    for (c, local, remote, inner) in [
        (&w.c1, "192.168.1.10", "192.168.1.20", "10.77.0.1/24"),
        (&w.c2, "192.168.1.20", "192.168.1.10", "10.77.0.2/24"),
    ] {
        c.ip([
            "link", "add", "vx0", "type", "vxlan", "id", "7", "local", local, "remote", remote,
            "dstport", "4789", "dev", "ethwe",
        ])?;
        c.ip(["addr", "add", inner, "dev", "vx0"])?;
        c.ip(["link", "set", "vx0", "up"])?;
    }
    tcp_transfer(&w.c1, &w.c2, "10.77.0.1", 1 << 20)?;
    assert_eq!(counter(&w.a, "drop_redirect_failed")?, 0);
    assert_eq!(counter(&w.b, "drop_redirect_failed")?, 0);
    assert!(counter(&w.b, "remote_sent_device")? > 0);
    Ok(())
}

/// `--mtu` may give `ethwe` the underlay's own MTU. Full-size frames then no longer fit the
/// underlay once wrapped: eBPF cannot fragment, so they must take the VXLAN device, which
/// fragments the outer packet, rather than vanish.
#[test]
fn frames_too_big_for_the_underlay_once_wrapped_still_arrive() -> Result<()> {
    let w = walkthrough()?;
    let big_a = Container::new(&unique_name("big"), &w.a)?;
    let big_b = Container::new(&unique_name("big"), &w.b)?;
    w.a.agent_ok(&["attach", "--mtu", "1500", "192.168.1.11/24", &big_a.spec()])?;
    w.b.agent_ok(&["attach", "--mtu", "1500", "192.168.1.21/24", &big_b.spec()])?;
    w.a.wait_for_remote(3)?;
    w.b.wait_for_remote(2)?;
    // 1472 bytes of payload: a 1500-byte IP packet that may not be fragmented itself.
    let ping = big_b.exec(
        "ping",
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            "1472",
            "192.168.1.11",
        ],
    )?;
    let report = String::from_utf8_lossy(&ping.stdout);
    assert!(report.contains(" 0% packet loss"), "{report}");
    assert!(counter(&w.b, "remote_sent_device")? >= 3);
    assert!(counter(&w.a, "remote_sent_device")? >= 3);
    Ok(())
}

#[test]
fn killed_host_is_withdrawn_within_5s_and_survivors_keep_talking() -> Result<()> {
    require_root();
    let prefix = unique_name("k");
    let seg = Segment::new(&prefix, 3)?;
    seg.hosts[0].agent_ok(&["launch"])?;
    for h in &seg.hosts[1..] {
        h.agent_ok(&["join", "192.168.56.101"])?;
    }
    let cs = seg.attach_one_each(&prefix, |i| format!("192.168.1.{}/24", 10 + i))?;

    // Host 3 dies: its agent is killed and its NIC goes dark.
    let victim = &seg.hosts[2];
    let pid = victim.agent_pid()?;
    let killed = Instant::now();
    weave_tests::run_ok("kill", ["-9", &pid.to_string()])?;
    victim.ip(["link", "set", "eth0", "down"])?;
    for h in &seg.hosts[..2] {
        wait_until(
            Duration::from_secs(10),
            "withdrawing the dead host's endpoint",
            || Ok(h.endpoint_counts()?.1 == 1),
        )?;
    }
    let took = killed.elapsed();
    println!("dead host's endpoints withdrawn from both survivors after {took:?}");
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    let peers = seg.hosts[0].agent_ok(&["peers"])?;
    assert!(peers.contains("192.168.56.103 dead"), "{peers}");
    ensure!(cs[0].ping("192.168.1.11", 3)?, "survivors stopped talking");
    ensure!(!cs[0].ping("192.168.1.12", 1)?, "dead host still reachable");
    Ok(())
}

/// Two attaches of one address that reach the agent together, while a third attach holds it
/// busy: exactly one may win, and the loser must not touch the winner's veth.
#[test]
fn concurrent_attaches_of_one_address_leave_exactly_one() -> Result<()> {
    require_root();
    let seg = Segment::mesh(&unique_name("ca"), 1)?;
    let host = &seg.hosts[0];
    for round in 0..5 {
        let busy = Container::new(&unique_name("cab"), host)?;
        let rivals = [
            Container::new(&unique_name("car"), host)?,
            Container::new(&unique_name("car"), host)?,
        ];
        let busy_cidr = format!("10.9.{round}.6/24");
        let cidr = format!("10.9.{round}.5/24");
        let won: Vec<bool> = std::thread::scope(|s| {
            let busy = s.spawn(|| host.agent(&["attach", &busy_cidr, &busy.spec()]));
            let rivals: Vec<_> = rivals
                .iter()
                .map(|c| s.spawn(|| host.agent(&["attach", &cidr, &c.spec()])))
                .collect();
            busy.join().expect("attach thread")?;
            rivals
                .into_iter()
                .map(|r| Ok(r.join().expect("attach thread")?.status.success()))
                .collect::<Result<_>>()
        })?;
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
        let ps = host.agent_ok(&["ps"])?;
        let listed = ps.lines().filter(|l| l.ends_with(&format!(" {cidr}")));
        assert_eq!(listed.count(), 1, "{ps}");
        for (rival, won) in rivals.iter().zip(&won) {
            let has_ethwe = rival
                .exec("ip", &["link", "show", "ethwe"])?
                .status
                .success();
            assert_eq!(has_ethwe, *won, "round {round}: {}\n{ps}", rival.name);
        }
    }
    Ok(())
}

#[test]
fn duplicate_address_and_invalid_cidr_are_refused_with_nothing_changed() -> Result<()> {
    let w = walkthrough()?;
    let extra = Container::new(&format!("{}-x", w.a.name), &w.a)?;
    let links_before = w.a.ip(["-o", "link"])?.lines().count();
    let ps_before = w.a.agent_ok(&["ps"])?;

    let out = w.a.agent(&["attach", "192.168.1.20/24", &extra.spec()])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("192.168.1.20 is already in use") && err.contains(&w.c2.spec()),
        "{err}"
    );
    for bad in [
        "192.168.1.0/24",
        "192.168.1.30",
        "300.1.1.1/24",
        "192.168.1.30/40",
    ] {
        let out = w.a.agent(&["attach", bad, &extra.spec()])?;
        assert!(!out.status.success(), "{bad} accepted");
    }
    assert_eq!(
        w.a.ip(["-o", "link"])?.lines().count(),
        links_before,
        "links changed"
    );
    assert_eq!(w.a.agent_ok(&["ps"])?, ps_before, "endpoints changed");
    assert!(
        !extra.ip(["link"])?.contains("ethwe"),
        "container got an ethwe"
    );
    Ok(())
}

#[test]
fn detach_removes_reachability_everywhere() -> Result<()> {
    let w = walkthrough()?;
    let out = w.b.agent_ok(&["detach", &w.c2.spec()])?;
    assert!(out.contains("192.168.1.20/24 detached"), "{out}");
    assert!(
        !w.c2.ip(["link"])?.contains("ethwe"),
        "ethwe left in the container"
    );
    // Host A forgets it through gossip.
    w.a.wait_for_remote(1)?;
    assert!(
        !w.c1.ping("192.168.1.20", 1)?,
        "detached address still answers"
    );
    assert!(!w.b.agent_ok(&["ps"])?.contains("192.168.1.20"));
    Ok(())
}

/// A VXLAN frame, built by hand: VXLAN header (VNI 6784) + Ethernet + IPv4 + ICMP echo from
/// 192.168.1.20 to 192.168.1.10, sent to UDP 6784 of 192.168.56.101.
const FORGED_VXLAN: &str = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); return ~(s + (s >> 16)) & 0xffff
icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"forged"
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                 socket.inet_aton("192.168.1.20"), socket.inet_aton("192.168.1.10"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex("0257c0a8010a" "0257c0a80114" "0800")
vxlan = struct.pack("!II", 0x08000000, 6784 << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(vxlan + eth + ip + icmp, ("192.168.56.101", 6784))
"#;

/// Sends [`FORGED_VXLAN`]'s five frames from `sender` and waits for `receiver`'s `counter`
/// to count them.
fn send_forged_vxlan(sender: &Host, receiver: &Host, counter_name: &str) -> Result<()> {
    let before = counter(receiver, counter_name)?;
    let out = sender.exec("python3", &["-c", FORGED_VXLAN])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(5),
        &format!("{counter_name} counting the forged frames"),
        || Ok(counter(receiver, counter_name)? >= before + 5),
    )?;
    Ok(())
}

#[test]
fn overlay_packets_from_a_non_peer_are_dropped_at_the_underlay() -> Result<()> {
    require_root();
    let prefix = unique_name("x");
    let seg = Segment::new(&prefix, 3)?;
    let (h1, h2, outsider) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    h1.agent_ok(&["launch"])?;
    h2.agent_ok(&["join", "192.168.56.101"])?;
    let c1 = Container::new(&format!("{prefix}c1"), h1)?;
    let c2 = Container::new(&format!("{prefix}c2"), h2)?;
    h1.attach("192.168.1.10/24", &c1)?;
    h2.attach("192.168.1.20/24", &c2)?;
    h1.wait_for_remote(1)?;

    // The outsider runs no agent, so it is no peer: its forged frames die in the underlay filter.
    let delivered = counter(h1, "overlay_delivered")?;
    send_forged_vxlan(outsider, h1, "drop_overlay_not_peer")?;
    assert_eq!(
        counter(h1, "overlay_delivered")?,
        delivered,
        "a forged frame was delivered"
    );
    // The same frames from a live peer pass the filter (and reach decapsulation).
    send_forged_vxlan(h2, h1, "underlay_overlay_pass")?;
    Ok(())
}
