//! The encrypted data plane: with a password, what crosses the underlay between two hosts is
//! sealed datagrams only; forged, replayed and outsiders' datagrams reach no container; hosts
//! that trust each other's path keep the plain kernel path.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weave_common::{OVERLAY_VNI, VXLAN_PORT, seal::SEALED_VNI};
use weave_tests::{
    BULK, Container, Segment, bulk_of, capture::Capture, capture::vxlan_vni, require_root,
    unique_name, wait_until,
};

const PASSWORD: &str = "correct horse battery staple";
/// What the transfer carries, over and over: an eavesdropper must never see it.
const MARKER: &str = "weave-agent-secret-marker-0123456789";
const B: &str = "10.40.1.2";

/// Two hosts with the password (and `extra` launch flags), one container each.
fn pair(prefix: &str, extra: &[&str]) -> Result<(Segment, Vec<Container>)> {
    let seg = Segment::new(prefix, 2)?;
    let mut launch = vec!["launch", "--password", PASSWORD];
    launch.extend(extra);
    seg.hosts[0].agent_ok(&launch)?;
    let mut join = vec!["join", "--password", PASSWORD];
    join.extend(extra);
    join.push("192.168.56.101");
    seg.hosts[1].agent_ok(&join)?;
    let containers = seg.attach_one_each(prefix, |i| format!("10.40.1.{}/24", i + 1))?;
    Ok((seg, containers))
}

/// Both orders of the containers' addresses side by side, as an IPv4 header carries them.
fn address_pairs() -> [Vec<u8>; 2] {
    let (a, b) = ([10u8, 40, 1, 1], [10u8, 40, 1, 2]);
    [[a, b].concat(), [b, a].concat()]
}

#[test]
fn an_eavesdropper_on_the_switch_sees_only_sealed_datagrams() -> Result<()> {
    require_root();
    let prefix = unique_name("enc");
    let (seg, c) = pair(&prefix, &[])?;
    // Ready once a session stands: the first ping that gets through.
    wait_until(Duration::from_secs(10), "a sealed ping answered", || {
        c[0].ping(B, 1)
    })?;
    let capture = Capture::start(&seg.switch().name, "br0", 256)?;
    ensure!(c[0].ping(B, 5)?, "pings over the sealed path");
    bulk_of(&c[0], B, &c[1].name, B, BULK, Some(MARKER))?;
    let frames = capture.stop_after_ping(&seg.hosts[0].name, "192.168.56.102")?;

    let to_data_port: Vec<_> = frames
        .iter()
        .filter_map(|f| f.udp_payload_to(VXLAN_PORT).map(|p| (f, p)))
        .collect();
    let sealed_bytes: usize = to_data_port
        .iter()
        .filter(|(_, p)| vxlan_vni(p) == Some(SEALED_VNI))
        .map(|(f, _)| f.wire_len)
        .sum();
    ensure!(
        sealed_bytes >= BULK,
        "the capture holds {sealed_bytes} bytes of sealed datagrams, less than the {BULK} sent"
    );
    let vxlan = to_data_port
        .iter()
        .filter(|(_, p)| vxlan_vni(p) == Some(OVERLAY_VNI))
        .count();
    ensure!(vxlan == 0, "{vxlan} plain VXLAN frames crossed the switch");
    let marked = frames
        .iter()
        .filter(|f| f.contains(MARKER.as_bytes()))
        .count();
    ensure!(marked == 0, "{marked} frames carry the marker in clear");
    for pair in address_pairs() {
        let seen = frames.iter().filter(|f| f.contains(&pair)).count();
        ensure!(seen == 0, "{seen} frames show the containers' addresses");
    }
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    ensure!(
        h1.counter_packets("seal_to_agent")? > 0,
        "h1 sealed nothing"
    );
    ensure!(
        h2.counter_packets("opened_delivered")? > 0,
        "h2 opened nothing"
    );
    let peer = h1.listed_peer(&["peers", "--json"], "192.168.56.102")?;
    ensure!(peer["encryption"] == "sealed", "h1 lists h2 as {peer}");
    ensure!(
        peer["sealed_bytes"].as_u64().context("sealed_bytes")? >= BULK as u64,
        "{peer}"
    );
    Ok(())
}
