//! TCP bulk from another host arrives as GSO super-packets. Decapsulated in eBPF on this
//! kernel, such a packet keeps its UDP-tunnel GSO state, which breaks it if its container sends
//! it on to a NIC with tunnel offloads (the NIC would take the stale tunnel offsets); so
//! super-packets for containers that forward take the kernel's VXLAN device, and those for
//! every other container the eBPF way. These tests check which way each took, that both carry
//! the data intact, and that the agent follows a container switching forwarding on and off.
//!
//! Veths have no offload hardware: the kernel's software segmentation handles the stale state
//! correctly (checked by forcing the eBPF way for the router: 30 MB still arrived intact), so
//! here the way taken, not the data, is what shows a wrong decision.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weave_tests::{BULK, Container, Host, Segment, bulk, require_root, unique_name, wait_until};

/// The ways a super-packet can take on the receiving host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Decapsulated in eBPF (`underlay_decap_gso`).
    Ebpf,
    /// Left to the VXLAN device because its endpoint forwards (`underlay_gso_forwarding`).
    Device,
}

/// The super-packet counters on `host`: (decapsulated in eBPF, left to the VXLAN device
/// because their endpoint forwards).
fn ways(host: &Host) -> Result<(u64, u64)> {
    Ok((
        host.counter_packets("underlay_decap_gso")?,
        host.counter_packets("underlay_gso_forwarding")?,
    ))
}

/// [`bulk`], then checks that `receiver` took the super-packets `way` and no other.
fn bulk_takes(
    way: Way,
    receiver: &Host,
    from: &Container,
    to_ip: &str,
    sink: (&str, &str),
) -> Result<()> {
    let before = ways(receiver)?;
    bulk(from, to_ip, sink.0, sink.1, BULK)?;
    let after = ways(receiver)?;
    let grew = (after.0 > before.0, after.1 > before.1);
    ensure!(
        grew == (way == Way::Ebpf, way == Way::Device),
        "super-packets should have taken {way:?}: counters (eBPF, device) went {before:?} -> \
         {after:?}"
    );
    Ok(())
}

/// Local endpoints `host`'s map marks as forwarding.
fn forwarding(host: &Host) -> Result<u64> {
    let status = host.status()?;
    status["endpoints"]["forwarding"]
        .as_u64()
        .with_context(|| format!("no endpoints.forwarding in status: {status}"))
}

fn sysctl(ctr: &Container, setting: &str) -> Result<()> {
    let out = ctr.exec("sysctl", &["-q", "-w", setting])?;
    ensure!(
        out.status.success(),
        "sysctl {setting} failed in {}",
        ctr.name
    );
    Ok(())
}

/// A DNAT rule in `ctr` sending TCP to `port` on `ethwe` on to `to`.
fn dnat(ctr: &Container, port: &str, to: &str) -> Result<()> {
    ctr.load_nft(&format!(
        "table ip nat {{
            chain pre {{
                type nat hook prerouting priority -100;
                iifname ethwe tcp dport {port} dnat to {to}
            }}
        }}"
    ))
}

/// The agent's mark follows the container within 1 s of the change (the command returning);
/// prints how long it took.
fn marked_within_a_second(host: &Host, expected: u64) -> Result<()> {
    let took = wait_until(Duration::from_secs(1), "the forwarding mark", || {
        Ok(forwarding(host)? == expected)
    })?;
    eprintln!("forwarding mark {expected} after {took:?}");
    Ok(())
}

/// A container that routes to a network behind it (IPv4 forwarding on, a DNAT rule sending
/// port 5201 on to a namespace behind it): 30 MB of TCP bulk from another host arrive intact
/// in that namespace, and its super-packets took the kernel's VXLAN device, not eBPF; also
/// right after the agent restarts.
#[test]
fn a_router_container_passes_tcp_bulk_intact_to_the_namespace_behind_it() -> Result<()> {
    require_root();
    let seg = Segment::mesh(&unique_name("fr"), 2)?;
    let b = &seg.hosts[1];
    // 192.168.1.10 on host A, 192.168.1.20 on host B, each known to the other host.
    let ctrs = seg.attach_one_each(&unique_name("fr"), |i| format!("192.168.1.{}0/24", i + 1))?;
    let (client, router) = (&ctrs[0], &ctrs[1]);
    let behind = Container::new(&unique_name("frn"), b)?;
    router.ip([
        "link",
        "add",
        "inner",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &behind.name,
    ])?;
    router.ip(["addr", "add", "172.30.0.1/24", "dev", "inner"])?;
    // The router segments what it sends on, as it would for a NIC without TSO: the data must
    // survive that on the kernel's way.
    router.ip(["link", "set", "inner", "gso_max_segs", "1", "up"])?;
    behind.ip(["addr", "add", "172.30.0.2/24", "dev", "eth0"])?;
    behind.ip(["link", "set", "eth0", "up"])?;
    behind.ip(["route", "add", "default", "via", "172.30.0.1"])?;
    dnat(router, "5201", "172.30.0.2")?;
    sysctl(router, "net.ipv4.ip_forward=1")?;
    marked_within_a_second(b, 1)?;

    let behind_sink = (behind.name.as_str(), "172.30.0.2");
    bulk_takes(Way::Device, b, client, "192.168.1.20", behind_sink)?;

    // A restarted agent writes the mark it kept, before it has looked again.
    b.agent_ok(&["stop"])?;
    b.agent_ok(&["launch"])?;
    ensure!(forwarding(b)? == 1, "the mark was lost across a restart");
    bulk_takes(Way::Device, b, client, "192.168.1.20", behind_sink).context("after a restart")
}

/// A change made to a container, what it is called, and which way its super-packets must take
/// afterwards.
type Step<'a> = (&'a str, &'a dyn Fn() -> Result<()>, Way);

/// A container that does not forward gets its super-packets decapsulated in eBPF, even with
/// IPv4 forwarding on (which most containers inherit from their host): nothing sends a packet
/// for its own address on. A DNAT rule makes it a router, and its super-packets move to the
/// kernel's VXLAN device within 1 s; switching forwarding off moves them back to eBPF, and on
/// again to the device. The data (to a local sink, on a port the rule leaves alone) arrives
/// intact every time.
#[test]
fn switching_forwarding_moves_super_packets_between_the_two_ways() -> Result<()> {
    require_root();
    let seg = Segment::mesh(&unique_name("fs"), 2)?;
    let b = &seg.hosts[1];
    // 192.168.1.10 on host A, 192.168.1.20 on host B, each known to the other host.
    let ctrs = seg.attach_one_each(&unique_name("fs"), |i| format!("192.168.1.{}0/24", i + 1))?;
    let (client, server) = (&ctrs[0], &ctrs[1]);
    let steps: [Step; 4] = [
        (
            "forwarding on",
            &|| sysctl(server, "net.ipv4.ip_forward=1"),
            Way::Ebpf,
        ),
        (
            "a DNAT rule",
            &|| dnat(server, "5202", "172.30.0.2"),
            Way::Device,
        ),
        (
            "forwarding off",
            &|| sysctl(server, "net.ipv4.ip_forward=0"),
            Way::Ebpf,
        ),
        (
            "forwarding on again",
            &|| sysctl(server, "net.ipv4.ip_forward=1"),
            Way::Device,
        ),
    ];
    for (change, make, way) in steps {
        make()?;
        marked_within_a_second(b, u64::from(way == Way::Device))
            .with_context(|| format!("after {change}"))?;
        bulk_takes(
            way,
            b,
            client,
            "192.168.1.20",
            (&server.name, "192.168.1.20"),
        )
        .with_context(|| format!("after {change}"))?;
    }
    Ok(())
}
