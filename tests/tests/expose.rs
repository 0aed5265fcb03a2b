//! `expose` and `hide`: a host's own address on the overlay. Host processes and containers of
//! the subnet reach each other through it; a machine that runs no agent (the "laptop") reaches
//! containers on other hosts through the exposed host, with or without masquerading, and
//! containers reach the laptop through it; isolation rules apply to it as to any endpoint.

use std::{
    io::{BufReader, Lines},
    process::{Child, ChildStdout},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{
    BULK, Container, Host, Segment, bulk_from, require_root, run, spawn_in, unique_name,
    wait_for_line, wait_until,
};

/// Serves argv[1]:argv[2] and answers every GET with "argv[3] sees CLIENT": who the server
/// believes it is talking to.
const SERVER: &str = r#"
import http.server, socket, sys
name = sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{name} sees {self.client_address[0]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler, False)
# IP_FREEBIND: bound to the address before it exists (before `expose`) and after it goes.
server.socket.setsockopt(socket.IPPROTO_IP, 15, 1)
server.server_bind()
server.server_activate()
print("ready", flush=True)
server.serve_forever()
"#;

/// Prints the body of GET http://argv[1]:argv[2]/, no proxy, with a short timeout.
const CLIENT: &str = r#"
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(f"http://{sys.argv[1]}:{sys.argv[2]}/", timeout=1).read().decode())
"#;

/// An HTTP server in a namespace, killed when dropped.
struct Server {
    child: Child,
    _lines: Lines<BufReader<ChildStdout>>,
}

impl Server {
    fn start(ns: &str, ip: &str, port: u16, name: &str) -> Result<Self> {
        let port = port.to_string();
        let (child, mut lines) = spawn_in(ns, "python3", &["-c", SERVER, ip, &port, name])?;
        wait_for_line(&mut lines, "ready").with_context(|| format!("HTTP server in {ns}"))?;
        Ok(Self {
            child,
            _lines: lines,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer of the server at `ip:port` to a client in namespace `ns`, or None if none came.
fn fetch(ns: &str, ip: &str, port: u16) -> Result<Option<String>> {
    let out = run(
        "ip",
        [
            "netns",
            "exec",
            ns,
            "python3",
            "-c",
            CLIENT,
            ip,
            &port.to_string(),
        ],
    )?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// Waits until a client in `ns` gets `expected` from `ip:port`.
fn answers(ns: &str, ip: &str, port: u16, expected: &str) -> Result<()> {
    let mut last = None;
    wait_until(
        Duration::from_secs(5),
        &format!("{ns} fetching from {ip}:{port}"),
        || {
            last = fetch(ns, ip, port)?;
            Ok(last.as_deref() == Some(expected))
        },
    )
    .with_context(|| format!("expected {expected:?}, last answer {last:?}"))?;
    Ok(())
}

/// Waits until a client in `ns` gets nothing from `ip:port`, then checks it stays so.
fn cut_off(ns: &str, ip: &str, port: u16) -> Result<()> {
    wait_until(
        Duration::from_secs(5),
        &format!("{ns} losing {ip}:{port}"),
        || Ok(fetch(ns, ip, port)?.is_none()),
    )?;
    let again = fetch(ns, ip, port)?;
    ensure!(again.is_none(), "{ns} reached {ip}:{port} again: {again:?}");
    Ok(())
}

fn ip_forward(host: &Host) -> Result<String> {
    let out = host.exec("cat", &["/proc/sys/net/ipv4/ip_forward"])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The agent added the route through the exposed address in the container.
fn wait_for_gateway_route(container: &Container, network: &str, gateway: &str) -> Result<()> {
    wait_until(
        Duration::from_secs(5),
        &format!(
            "{} getting a route to {network} via {gateway}",
            container.name
        ),
        || {
            let routes = container.ip(["route", "show", network])?;
            Ok(routes.contains(&format!("via {gateway} dev ethwe")))
        },
    )?;
    Ok(())
}

/// The stderr of a command that must fail, for its message.
fn refused(host: &Host, args: &[&str]) -> Result<String> {
    let out = host.agent(args)?;
    ensure!(
        !out.status.success(),
        "`weave-agent {}` succeeded: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_host_and_a_container_on_another_host_reach_each_other_until_hide() -> Result<()> {
    require_root();
    let prefix = unique_name("x");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let cb = b.container(&format!("{prefix}cb"), "10.40.1.20/24")?;
    let _web_b = Server::start(&cb.name, "10.40.1.20", 8080, "cb")?;
    let _web_a = Server::start(&a.name, "10.40.1.1", 8081, "A")?;
    ensure!(
        fetch(&a.name, "10.40.1.20", 8080)?.is_none(),
        "reached before expose"
    );

    let forwarding_was = ip_forward(a)?;
    let out = a.agent_ok(&["expose", "10.40.1.1/24"])?;
    ensure!(
        out.contains("10.40.1.1/24 exposed"),
        "expose printed: {out}"
    );
    ensure!(ip_forward(a)? == "1", "IPv4 forwarding is off after expose");
    if forwarding_was == "0" {
        ensure!(
            out.contains("turned on IPv4 forwarding"),
            "expose did not say it turned forwarding on: {out}"
        );
    }
    let ps = a.agent_ok(&["ps"])?;
    ensure!(
        ps.lines()
            .any(|l| l.starts_with("weave:expose ") && l.contains("10.40.1.1/24")),
        "ps does not list the exposed address: {ps}"
    );
    answers(&a.name, "10.40.1.20", 8080, "cb sees 10.40.1.1")?;
    answers(&cb.name, "10.40.1.1", 8081, "A sees 10.40.1.20")?;

    let out = a.agent_ok(&["hide", "10.40.1.1/24"])?;
    ensure!(out.contains("10.40.1.1/24 hidden"), "hide printed: {out}");
    cut_off(&a.name, "10.40.1.20", 8080)?;
    cut_off(&cb.name, "10.40.1.1", 8081)?;
    ensure!(
        !a.agent_ok(&["ps"])?.contains("weave:expose"),
        "ps still lists an exposed address after hide"
    );

    // Exposed again, it outlives a restart of the agent.
    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    answers(&a.name, "10.40.1.20", 8080, "cb sees 10.40.1.1")?;
    a.agent_ok(&["stop"])?;
    a.agent_ok(&["launch"])?;
    let ps = a.agent_ok(&["ps", "--json"])?;
    let listed: serde_json::Value = serde_json::from_str(&ps)?;
    ensure!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["cidr"] == "10.40.1.1/24"
                && e["container"] == "weave:expose"
                && e["expose"]["interface"].is_string())),
        "the restarted agent does not list the exposed address: {ps}"
    );
    answers(&a.name, "10.40.1.20", 8080, "cb sees 10.40.1.1")?;
    answers(&cb.name, "10.40.1.1", 8081, "A sees 10.40.1.20")?;
    Ok(())
}

#[test]
fn a_machine_without_an_agent_reaches_containers_through_the_exposed_host() -> Result<()> {
    require_root();
    let prefix = unique_name("x");
    let seg = Segment::new(&prefix, 3)?;
    let [a, b, laptop] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    a.agent_ok(&["launch"])?;
    b.agent_ok(&["join", "192.168.56.101"])?;
    let cb = b.container(&format!("{prefix}cb"), "10.40.1.20/24")?;
    let _web_b = Server::start(&cb.name, "10.40.1.20", 8080, "cb")?;
    let _web_laptop = Server::start(&laptop.name, "192.168.56.103", 8082, "laptop")?;
    // What the user configures: the laptop's route to the overlay subnet.
    laptop.ip(["route", "add", "10.40.1.0/24", "via", "192.168.56.101"])?;

    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    // The way back is the agent's job: the container gets a route to A's LAN through A.
    wait_for_gateway_route(&cb, "192.168.56.0/24", "10.40.1.1")?;
    answers(&laptop.name, "10.40.1.20", 8080, "cb sees 192.168.56.103")?;
    bulk_from(&laptop.name, "10.40.1.20", &cb.name, "10.40.1.20", BULK)
        .context("30 MB from the laptop to the container through A")?;
    ensure!(
        a.counter_packets("exposed_from_outside")? > 0,
        "A counted nothing entering the overlay from outside"
    );
    // Inside out: the container reaches the laptop through A, and leaves A as A.
    answers(
        &cb.name,
        "192.168.56.103",
        8082,
        "laptop sees 192.168.56.101",
    )?;
    ensure!(
        b.counter_packets("exposed_to_outside")? > 0,
        "B counted nothing leaving for outside through the exposed address"
    );

    // Masquerading: the container sees A's exposed address as the client.
    a.agent_ok(&["hide"])?;
    cut_off(&laptop.name, "10.40.1.20", 8080)?;
    a.agent_ok(&["expose", "10.40.1.1/24", "--masquerade"])?;
    answers(&laptop.name, "10.40.1.20", 8080, "cb sees 10.40.1.1")?;
    bulk_from(&laptop.name, "10.40.1.20", &cb.name, "10.40.1.20", BULK)
        .context("30 MB from the laptop to the container through A, masqueraded")?;
    Ok(())
}

#[test]
fn another_subnet_reaches_the_exposed_address_only_when_a_rule_allows_it() -> Result<()> {
    require_root();
    let prefix = unique_name("x");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let cc = b.container(&format!("{prefix}cc"), "10.40.2.30/24")?;
    let _web_a = Server::start(&a.name, "10.40.1.1", 8081, "A")?;
    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    b.wait_for_remote(1)?;
    // A route by hand, so only the data path stands in the way.
    cc.ip(["route", "add", "10.40.1.0/24", "dev", "ethwe"])?;
    let dropped = b.counter_packets("drop_isolated")?;
    ensure!(
        fetch(&cc.name, "10.40.1.1", 8081)?.is_none(),
        "another subnet reached the exposed address"
    );
    ensure!(
        b.counter_packets("drop_isolated")? > dropped,
        "the data path did not drop the frames as isolated"
    );

    a.agent_ok(&["policy", "allow", "10.40.1.0/24", "10.40.2.0/24"])?;
    answers(&cc.name, "10.40.1.1", 8081, "A sees 10.40.2.30")?;
    // The host gets the rule's route too, on the exposed interface.
    let _web_c = Server::start(&cc.name, "10.40.2.30", 8080, "cc")?;
    answers(&a.name, "10.40.2.30", 8080, "cc sees 10.40.1.1")?;

    a.agent_ok(&["policy", "deny", "10.40.1.0/24", "10.40.2.0/24"])?;
    cc.ip(["route", "replace", "10.40.1.0/24", "dev", "ethwe"])?;
    cut_off(&cc.name, "10.40.1.1", 8081)?;
    Ok(())
}

#[test]
fn bad_input_is_refused_with_the_address_and_changes_nothing() -> Result<()> {
    require_root();
    let prefix = unique_name("x");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let _cb = b.container(&format!("{prefix}cb"), "10.40.1.20/24")?;
    a.wait_for_remote(1)?;

    let links_before = a.ip(["-o", "link", "show"])?.lines().count();
    for (args, named) in [
        (&["expose", "10.40.1.20/24"][..], "10.40.1.20"),
        (&["expose", "10.40.1.300/24"], "10.40.1.300"),
        (&["expose", "10.40.1.1"], "10.40.1.1"),
        (
            &["expose", "10.40.1.1/24", "--routes", "192.168.56.0/33"],
            "192.168.56.0/33",
        ),
        (&["hide", "10.40.1.1/24"], "10.40.1.1/24"),
        (&["hide"], "exposes nothing"),
    ] {
        let message = refused(a, args)?;
        ensure!(
            message.contains(named),
            "`{}` was refused without naming {named}: {message}",
            args.join(" ")
        );
    }
    ensure!(
        a.ip(["-o", "link", "show"])?.lines().count() == links_before,
        "a refused expose left a link behind"
    );
    ensure!(
        !a.agent_ok(&["ps"])?.contains("weave:expose"),
        "a refused expose is listed"
    );

    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    b.wait_for_remote(1)?;
    for (host, args, named) in [
        (b, &["expose", "10.40.1.1/24"][..], "10.40.1.1"),
        (a, &["expose", "10.40.1.2/24"], "10.40.1.0/24"),
        (a, &["hide", "10.40.1.2"], "10.40.1.2"),
    ] {
        let message = refused(host, args)?;
        ensure!(
            message.contains(named),
            "`{}` on {} was refused without naming {named}: {message}",
            args.join(" "),
            host.name
        );
    }
    let ps = a.agent_ok(&["ps"])?;
    ensure!(
        ps.lines()
            .filter(|l| l.starts_with("weave:expose "))
            .count()
            == 1,
        "refusals changed what is exposed: {ps}"
    );
    // Several subnets may be exposed; `hide` alone takes back all of them.
    a.agent_ok(&["expose", "10.40.2.1/24"])?;
    let ps = a.agent_ok(&["ps"])?;
    let listed = ps
        .lines()
        .filter(|l| l.starts_with("weave:expose "))
        .count();
    ensure!(listed == 2, "two exposed subnets are not both listed: {ps}");
    let hidden = a.agent_ok(&["hide"])?;
    ensure!(
        hidden.contains("10.40.1.1/24 hidden") && hidden.contains("10.40.2.1/24 hidden"),
        "hide did not take back both: {hidden}"
    );
    ensure!(
        !a.agent_ok(&["ps"])?.contains("weave:expose"),
        "an exposed address is left after hide"
    );
    let links = a.ip(["-o", "link", "show"])?;
    ensure!(!links.contains("wexp"), "hide left an interface: {links}");
    Ok(())
}

#[test]
fn the_host_side_cannot_send_from_another_overlay_address() -> Result<()> {
    require_root();
    let prefix = unique_name("x");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let cb = b.container(&format!("{prefix}cb"), "10.40.1.20/24")?;
    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    wait_for_gateway_route(&cb, "192.168.56.0/24", "10.40.1.1")?;
    let ping = |from: &str| -> Result<bool> {
        let out = a.exec("ping", &["-c", "1", "-W", "1", "-I", from, "10.40.1.20"])?;
        Ok(out.status.success())
    };
    ensure!(
        ping("10.40.1.1")?,
        "the exposed address does not reach the container"
    );
    // A source outside every overlay subnet is a client the host routes in: let through.
    ensure!(
        ping("192.168.56.101")?,
        "the host's LAN address does not reach the container"
    );
    // An overlay address that is not the exposed one is forged, whoever holds it on the host.
    let iface = a
        .agent_ok(&["ps", "--json"])
        .and_then(|text| Ok(serde_json::from_str::<serde_json::Value>(&text)?))?[0]["expose"]
        ["interface"]
        .as_str()
        .context("ps --json names no interface for the exposed address")?
        .to_owned();
    a.ip(["addr", "add", "10.40.1.99/32", "dev", &iface])?;
    let spoofed = a.counter_packets("drop_spoofed")?;
    ensure!(
        !ping("10.40.1.99")?,
        "a forged overlay source reached the container"
    );
    ensure!(
        a.counter_packets("drop_spoofed")? > spoofed,
        "the forged frames were not dropped as spoofed"
    );
    Ok(())
}

#[test]
fn an_exposed_address_works_over_the_sealed_and_the_relayed_paths() -> Result<()> {
    require_root();
    // Sealed: with a password, the exposed address's traffic is encrypted like a container's.
    let prefix = unique_name("x");
    let seg = Segment::new(&prefix, 3)?;
    let [a, b, laptop] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    a.agent_ok(&["launch", "--password", "expose-test"])?;
    b.agent_ok(&["join", "192.168.56.101", "--password", "expose-test"])?;
    let cb = b.container(&format!("{prefix}cb"), "10.40.1.20/24")?;
    let _web_b = Server::start(&cb.name, "10.40.1.20", 8080, "cb")?;
    let _web_a = Server::start(&a.name, "10.40.1.1", 8081, "A")?;
    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    answers(&a.name, "10.40.1.20", 8080, "cb sees 10.40.1.1")?;
    answers(&cb.name, "10.40.1.1", 8081, "A sees 10.40.1.20")?;
    // Outside in and inside out, sealed between A and B.
    laptop.ip(["route", "add", "10.40.1.0/24", "via", "192.168.56.101"])?;
    let _web_laptop = Server::start(&laptop.name, "192.168.56.103", 8082, "laptop")?;
    wait_for_gateway_route(&cb, "192.168.56.0/24", "10.40.1.1")?;
    answers(&laptop.name, "10.40.1.20", 8080, "cb sees 192.168.56.103")?;
    answers(
        &cb.name,
        "192.168.56.103",
        8082,
        "laptop sees 192.168.56.101",
    )?;
    ensure!(
        a.counter_packets("opened_delivered")? > 0,
        "nothing reached the exposed address through the sealed path"
    );

    // Relayed: hosts 1 and 3 cannot reach each other; host 2 relays.
    let prefix = unique_name("x");
    let seg = Segment::new(&prefix, 3)?;
    seg.cut(1, 3)?;
    let [a, relay, c] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    a.agent_ok(&["launch"])?;
    relay.agent_ok(&["join", "192.168.56.101"])?;
    c.agent_ok(&["join", "192.168.56.102"])?;
    let cc = c.container(&format!("{prefix}cc"), "10.40.1.30/24")?;
    let _web_c = Server::start(&cc.name, "10.40.1.30", 8080, "cc")?;
    let _web_a = Server::start(&a.name, "10.40.1.1", 8081, "A")?;
    a.agent_ok(&["expose", "10.40.1.1/24"])?;
    wait_until(
        Duration::from_secs(10),
        "A learning the relayed container",
        || Ok(a.endpoint_counts()?.1 == 1),
    )?;
    answers(&a.name, "10.40.1.30", 8080, "cc sees 10.40.1.1")?;
    answers(&cc.name, "10.40.1.1", 8081, "A sees 10.40.1.30")?;
    ensure!(
        relay.counter_packets("relay_forwarded")? > 0,
        "the exposed address's traffic did not cross the relay"
    );
    Ok(())
}
