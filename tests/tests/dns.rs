//! Service discovery: containers resolve each other's names (`NAME.weave.local`) across hosts
//! through their own agent's DNS server, with busybox's own resolver tools; names go with the
//! container; several containers of one name are all answered, in rotating order; reverse
//! names of overlay addresses are answered; everything else goes to the host's resolvers.

use std::{net::Ipv4Addr, process::Output, time::Duration};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{
    Container, Host, Segment,
    docker::{self, Named, docker, docker_ok},
    etc_netns, require_root, spawn_in, unique_name, wait_until,
};

/// How long the tests wait for a name to appear or go. The 1 s goal is measured by the bench.
const SETTLE: Duration = Duration::from_secs(10);

/// A container on `host` attached with an automatic address, its resolv.conf naming the
/// agent's server (`attach --resolv-conf`), and maybe a DNS name.
fn named(host: &Host, name: &str, dns_name: Option<&str>) -> Result<(Container, Ipv4Addr)> {
    let c = Container::new(name, host)?;
    let spec = c.spec();
    let mut args = vec!["attach", "--resolv-conf"];
    if let Some(dns_name) = dns_name {
        args.extend(["--dns-name", dns_name]);
    }
    args.push(&spec);
    host.agent_ok(&args)?;
    let ip = ethwe_ip(&c)?;
    Ok((c, ip))
}

fn ethwe_ip(c: &Container) -> Result<Ipv4Addr> {
    let text = c.ip(["-4", "-o", "addr", "show", "dev", "ethwe"])?;
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .context("no address on ethwe")?;
    Ok(cidr.split('/').next().unwrap_or_default().parse()?)
}

/// What busybox's nslookup, run in `c` through its resolv.conf, answers for `name`: the IPv4
/// addresses in the order given, or None for a name that does not exist (NXDOMAIN).
/// nslookup asks for A and AAAA; only the A answer counts.
fn lookup(c: &Container, name: &str) -> Result<Option<Vec<Ipv4Addr>>> {
    let out = c.exec("busybox", &["nslookup", name])?;
    parse_nslookup(&out, name, &c.name)
}

fn parse_nslookup(out: &Output, name: &str, asker: &str) -> Result<Option<Vec<Ipv4Addr>>> {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // The server's own address comes first, before any "Name:" line; each answer is a
    // "Name:" line and an "Address:" line.
    let answers: Vec<Ipv4Addr> = text
        .split("Name:")
        .skip(1)
        .flat_map(|block| block.lines().skip(1).take(1))
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|a| a.split_whitespace().next()?.parse().ok())
        .collect();
    if answers.is_empty() {
        ensure!(
            text.contains("NXDOMAIN"),
            "nslookup {name} in {asker}: neither addresses nor NXDOMAIN: {text}"
        );
        return Ok(None);
    }
    Ok(Some(answers))
}

#[test]
fn containers_find_each_other_by_name_across_hosts_and_names_go_with_them() -> Result<()> {
    require_root();
    let prefix = unique_name("d");
    let seg = Segment::mesh(&prefix, 2)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    let (client, _) = named(a, &format!("{prefix}cl"), None)?;
    let (web, web_ip) = named(b, &format!("{prefix}web"), Some("web"))?;
    let took = wait_until(SETTLE, "web.weave.local resolves on the other host", || {
        Ok(lookup(&client, "web.weave.local")? == Some(vec![web_ip]))
    })?;
    eprintln!("web.weave.local answered on host A {took:?} after attach returned on B");
    // The search domain: busybox's ping resolves the plain name through libc.
    let ping = client.exec("busybox", &["ping", "-c", "1", "-W", "2", "web"])?;
    ensure!(
        ping.status.success(),
        "ping web: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    // Reverse: the address gives the name.
    let out = client.exec("busybox", &["nslookup", &web_ip.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("web.weave.local"),
        "reverse lookup of {web_ip}: {text}"
    );
    // The host lists it, with the address.
    let listed: serde_json::Value = serde_json::from_str(&a.agent_ok(&["dns", "--json"])?)?;
    ensure!(
        listed
            .as_array()
            .context("dns --json printed no list")?
            .iter()
            .any(|r| r["name"] == "web.weave.local" && r["ip"] == web_ip.to_string()),
        "{listed}"
    );
    // Detach: gone on both hosts, and the resolv.conf attach wrote goes with the container.
    let resolv_conf = etc_netns(&web.name).join("resolv.conf");
    ensure!(resolv_conf.exists(), "attach --resolv-conf wrote no file");
    b.agent_ok(&["detach", &web.spec()])?;
    ensure!(
        !resolv_conf.exists(),
        "{} outlived the detach",
        resolv_conf.display()
    );
    wait_until(SETTLE, "web.weave.local is gone on host A", || {
        Ok(lookup(&client, "web.weave.local")?.is_none())
    })?;
    let (other, _) = named(b, &format!("{prefix}ot"), None)?;
    ensure!(lookup(&other, "web.weave.local")?.is_none());
    Ok(())
}

#[test]
fn two_containers_of_one_name_are_both_answered_in_rotating_order() -> Result<()> {
    require_root();
    let prefix = unique_name("d");
    let seg = Segment::mesh(&prefix, 2)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    let (_db1, ip1) = named(a, &format!("{prefix}db1"), Some("db"))?;
    let (_db2, ip2) = named(b, &format!("{prefix}db2"), Some("db.weave.local"))?;
    let (client, _) = named(a, &format!("{prefix}cl"), None)?;
    let mut both = vec![ip1, ip2];
    both.sort();
    wait_until(SETTLE, "db.weave.local has both addresses", || {
        Ok(lookup(&client, "db.weave.local")?.is_some_and(|mut got| {
            got.sort();
            got == both
        }))
    })?;
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let got = lookup(&client, "db")?.context("db vanished")?;
        ensure!(got.len() == 2, "{got:?}");
        firsts.insert(got[0]);
    }
    ensure!(
        firsts.len() == 2,
        "the first address never changed over 6 lookups: {firsts:?}"
    );
    Ok(())
}

#[test]
fn names_outside_the_domain_go_to_the_hosts_resolver_and_dns_add_names_anything() -> Result<()> {
    require_root();
    let prefix = unique_name("d");
    let seg = Segment::new(&prefix, 2)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    // Host B runs the upstream resolver (Debian's dnsmasq) on its underlay address; host A's
    // resolv.conf, as `ip netns exec` shows it to A's agent, names it.
    let _upstream = Upstream::start(b, "192.168.56.102")?;
    std::fs::create_dir_all(etc_netns(&a.name))?;
    std::fs::write(
        etc_netns(&a.name).join("resolv.conf"),
        "nameserver 192.168.56.102\n",
    )?;
    a.agent_ok(&["launch"])?;
    let status = a.status()?;
    ensure!(
        status["dns"]["upstreams"] == serde_json::json!(["192.168.56.102:53"]),
        "{}",
        status["dns"]
    );
    let (client, _) = named(a, &format!("{prefix}cl"), None)?;
    ensure!(
        lookup(&client, "outside.test")? == Some(vec![Ipv4Addr::new(192, 0, 2, 7)]),
        "outside.test was not forwarded"
    );
    ensure!(lookup(&client, "missing.test")?.is_none());
    // dns-add names an address outside any container; dns-remove takes it back.
    a.agent_ok(&["dns-add", "192.0.2.80", "-h", "printer"])?;
    ensure!(lookup(&client, "printer.weave.local")? == Some(vec![Ipv4Addr::new(192, 0, 2, 80)]));
    let status = a.status()?;
    ensure!(
        status["dns"]["forwarded"].as_u64() >= Some(2)
            && status["dns"]["answered"].as_u64() >= Some(1),
        "{}",
        status["dns"]
    );
    // Names survive a restart of the agent: dns-add's and a container's.
    let (_named, named_ip) = named(a, &format!("{prefix}nm"), Some("named"))?;
    a.agent_ok(&["stop"])?;
    a.agent_ok(&["launch"])?;
    ensure!(lookup(&client, "printer.weave.local")? == Some(vec![Ipv4Addr::new(192, 0, 2, 80)]));
    ensure!(lookup(&client, "named.weave.local")? == Some(vec![named_ip]));
    a.agent_ok(&["dns-remove", "192.0.2.80", "-h", "printer.weave.local"])?;
    ensure!(lookup(&client, "printer.weave.local")?.is_none());
    Ok(())
}

/// dnsmasq answering `outside.test` on `address`:53 in `host`, stopped when dropped.
struct Upstream(std::process::Child);

impl Upstream {
    fn start(host: &Host, address: &str) -> Result<Self> {
        let listen = format!("--listen-address={address}");
        let (child, mut lines) = spawn_in(
            &host.name,
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--log-facility=/dev/stdout",
                "--log-queries",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--except-interface=lo",
                &listen,
                "--address=/outside.test/192.0.2.7",
                "--address=/missing.test/",
                "--pid-file=",
                "--user=root",
            ],
        )?;
        // dnsmasq logs "started" once its sockets are bound.
        weave_tests::wait_for_line(&mut lines, "started")?;
        Ok(Self(child))
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `nslookup NAME` in Docker container `ctr` answers: as [`lookup`].
fn docker_lookup(ctr: &str, name: &str) -> Result<Option<Vec<Ipv4Addr>>> {
    let out = docker(&["exec", ctr, "nslookup", name])?;
    parse_nslookup(&out, name, ctr)
}

#[test]
fn docker_containers_run_by_the_agent_resolve_each_other_and_rm_takes_the_name() -> Result<()> {
    require_root();
    docker::require()?;
    let prefix = unique_name("d");
    let seg = Segment::mesh(&prefix, 2)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    let web = Named::new(format!("{prefix}web"));
    let cli = Named::new(format!("{prefix}cli"));
    b.agent_ok(&["run", "--name", &web.0, docker::IMAGE, "sleep", "600"])?;
    a.agent_ok(&["run", "--name", &cli.0, docker::IMAGE, "sleep", "600"])?;
    let text = docker_ok(&["exec", &web.0, "ip", "-4", "-o", "addr", "show", "ethwe"])?;
    let web_ip: Ipv4Addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .context("no address on ethwe")?
        .parse()?;
    let full = format!("{}.weave.local", web.0);
    wait_until(SETTLE, "the Docker name resolves on the other host", || {
        Ok(docker_lookup(&cli.0, &full)? == Some(vec![web_ip]))
    })?;
    // `run` gave the container the search domain: the plain name works for ping.
    let ping = docker(&["exec", &cli.0, "ping", "-c", "1", "-W", "2", &web.0])?;
    ensure!(
        ping.status.success(),
        "ping {}: {}{}",
        web.0,
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    // docker rm -f: the name goes on every host.
    let (local, _) = named(b, &format!("{prefix}lo"), None)?;
    docker_ok(&["rm", "-f", &web.0])?;
    wait_until(
        SETTLE,
        "the removed container's name is gone on host A",
        || Ok(docker_lookup(&cli.0, &full)?.is_none()),
    )?;
    wait_until(
        SETTLE,
        "the removed container's name is gone on host B",
        || Ok(lookup(&local, &full)?.is_none()),
    )?;
    Ok(())
}

/// Sends bad datagrams and then a flood of queries from one container; prints what came back.
const ABUSE: &str = r#"
import os, socket, sys, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server = ("169.254.53.53", 53)
bad = [b"", b"\x12", b"\x12\x34\x01\x00", b"\xab\xcd\x01\x00\x00\x01" + b"\xff" * 30,
       os.urandom(512), b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" * 9000]
for packet in bad:
    s.sendto(packet, server)
def query(i):
    name = b"".join(bytes([len(l)]) + l for l in [b"flood%d" % i, b"weave", b"local"]) + b"\x00"
    return struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
for i in range(int(sys.argv[1])):
    s.sendto(query(i), server)
s.settimeout(2)
answered = 0
try:
    while True:
        s.recv(4096)
        answered += 1
except socket.timeout:
    pass
print("answered", answered)
"#;

#[test]
fn bad_datagrams_and_a_flood_from_one_container_leave_the_server_answering_others() -> Result<()> {
    require_root();
    let prefix = unique_name("d");
    let seg = Segment::mesh(&prefix, 1)?;
    let a = &seg.hosts[0];
    let (abuser, _) = named(a, &format!("{prefix}ab"), None)?;
    let (_web, web_ip) = named(a, &format!("{prefix}web"), Some("web"))?;
    let (other, _) = named(a, &format!("{prefix}ot"), None)?;
    let flooding = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &abuser.name,
            "python3",
            "-c",
            ABUSE,
            "50000",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // While it floods: the other container is answered.
    for _ in 0..3 {
        ensure!(
            lookup(&other, "web.weave.local")? == Some(vec![web_ip]),
            "the server did not answer another container during the flood"
        );
    }
    let flood = flooding.wait_with_output()?;
    let said = String::from_utf8_lossy(&flood.stdout).into_owned();
    ensure!(flood.status.success(), "the flood script failed: {said}");
    let answered: u64 = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("the flood script printed no count")?;
    // The flooder reads its answers only after sending all: its own receive buffer keeps few.
    eprintln!("{answered} of 50000 flood queries answered and still queued at the flooder");
    ensure!(
        lookup(&other, "web.weave.local")? == Some(vec![web_ip]),
        "the server stopped answering after the flood"
    );
    let status = a.status()?;
    // The header-bearing junk got FORMERR (counted as answered); the rest was counted refused.
    ensure!(
        status["dns"]["malformed"].as_u64() >= Some(3),
        "{}",
        status["dns"]
    );
    ensure!(answered > 0, "no flood query was answered at all");
    Ok(())
}
