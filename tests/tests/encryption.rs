//! The encrypted data plane: with a password, what crosses the underlay between two hosts is
//! sealed datagrams only; forged, replayed and outsiders' datagrams reach no container; hosts
//! that trust each other's path keep the plain kernel path.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weave_agent::crypto::{
    handshake::Identity,
    keys,
    wire::{Header, Kind},
};
use weave_common::{
    OVERLAY_VNI, VXLAN_PORT,
    seal::{KIND_DATA, SEALED_HEADER_LEN, SEALED_VNI},
};
use weave_tests::{
    BULK, Container, Host, Segment, bulk_of,
    capture::{Capture, vxlan_vni},
    crafted::{inject_args, injected, link_mac},
    frames, ping_result, require_root, start_pinging, unique_name, wait_until,
};

const PASSWORD: &str = "correct horse battery staple";
/// What the transfer carries, over and over: an eavesdropper must never see it.
const MARKER: &str = "weave-agent-secret-marker-0123456789";
const A: &str = "10.40.1.1";
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

/// A sealed datagram to the data port from `src` to `dst`, as raw Ethernet from `eth_src` to
/// `eth_dst`, carrying `payload` (the UDP payload).
fn datagram(eth: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> String {
    let mut udp = vec![0x9c, 0x40];
    udp.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    udp.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let ip = frames::Ip {
        payload: udp,
        ..frames::Ip::udp(src, dst)
    };
    frames::hex(&frames::ethernet(
        eth.1,
        eth.0,
        frames::ETHERTYPE_IPV4,
        &ip.bytes(),
    ))
}

/// What host 2 knows of its session with host 1.
fn session(host: &Host) -> Result<serde_json::Value> {
    host.listed_peer(&["peers", "--json"], "192.168.56.101")
}

#[test]
fn replayed_flipped_and_outsiders_datagrams_reach_no_container() -> Result<()> {
    require_root();
    let prefix = unique_name("enf");
    let seg = Segment::new(&prefix, 3)?;
    let (h1, h2, h3) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    h1.agent_ok(&["launch", "--password", PASSWORD])?;
    h2.agent_ok(&["join", "--password", PASSWORD, "192.168.56.101"])?;
    let c1 = Container::new(&format!("{prefix}c1"), h1)?;
    let c2 = Container::new(&format!("{prefix}c2"), h2)?;
    h1.attach(&format!("{A}/24"), &c1)?;
    h2.attach(&format!("{B}/24"), &c2)?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    wait_until(Duration::from_secs(10), "a sealed ping answered", || {
        c1.ping(B, 1)
    })?;

    // One real datagram of h1's, as an attacker on the switch records it.
    let capture = Capture::start(&seg.switch().name, "br0", 4096)?;
    ensure!(c1.ping(B, 1)?, "a ping to record");
    let frames = capture.stop_after_ping(&h1.name, "192.168.56.102")?;
    let recorded = frames
        .iter()
        .filter_map(|f| f.udp_payload_to(VXLAN_PORT))
        .find(|p| vxlan_vni(p) == Some(SEALED_VNI) && p.get(12) == Some(&KIND_DATA))
        .context("no sealed data datagram recorded")?
        .to_vec();
    let (h1_ip, h2_ip, h3_ip) = (
        [192, 168, 56, 101],
        [192, 168, 56, 102],
        [192, 168, 56, 103],
    );
    let eth = (link_mac(h3, "eth0")?, link_mac(h2, "eth0")?);
    let mut flipped_body = recorded.clone();
    *flipped_body.last_mut().context("empty")? ^= 0x01;
    let mut flipped_header = recorded.clone();
    flipped_header[20] ^= 0x80;
    // A host that knows h2's public key (it is no secret) but not the password.
    let key = std::fs::read(h2.state_dir().join(keys::KEY_FILE))?;
    let outsider = Identity::new(Identity::generate_pair()?, keys::derive_psk("guess")?);
    let (_, message) = outsider.initiate(key[32..].try_into()?, 7, u64::MAX / 2)?;
    let mut initiation = vec![0u8; SEALED_HEADER_LEN];
    Header::handshake(Kind::Initiation, h2_ip.into(), 7, 0)
        .write(initiation.as_mut_slice().try_into()?);
    initiation.extend_from_slice(&message);

    let cases: [(&str, [u8; 4], &[u8]); 4] = [
        ("replayed", h1_ip, &recorded),
        ("bit-flipped body", h1_ip, &flipped_body),
        ("bit-flipped header", h1_ip, &flipped_header),
        ("an outsider's handshake", h1_ip, &initiation),
    ];
    let handshakes = session(h2)?["handshakes"].as_u64().context("handshakes")?;
    for (case, src, payload) in cases {
        let (refused, received, delivered) = (
            session(h2)?["refused"].as_u64().context("refused")?,
            h2.counter_packets("sealed_received")?,
            h2.counter_packets("opened_delivered")?,
        );
        let frame = datagram(eth, src, h2_ip, payload);
        injected(h3.exec("python3", &inject_args("eth0", &[frame]))?)?;
        wait_until(
            Duration::from_secs(5),
            &format!("the {case} datagram refused"),
            || Ok(session(h2)?["refused"].as_u64().unwrap_or(0) > refused),
        )?;
        ensure!(
            h2.counter_packets("sealed_received")? > received,
            "the {case} datagram never reached h2's crypto path"
        );
        ensure!(
            h2.counter_packets("opened_delivered")? == delivered,
            "the {case} datagram reached a container"
        );
    }
    ensure!(
        session(h2)?["handshakes"].as_u64() == Some(handshakes),
        "the outsider's handshake made a session"
    );
    // From an address that is no peer, the underlay program drops it before the agent.
    let not_peer = h2.counter_packets("drop_overlay_not_peer")?;
    let frame = datagram(eth, h3_ip, h2_ip, &recorded);
    injected(h3.exec("python3", &inject_args("eth0", &[frame]))?)?;
    wait_until(
        Duration::from_secs(5),
        "a non-peer's datagram dropped",
        || Ok(h2.counter_packets("drop_overlay_not_peer")? > not_peer),
    )?;
    // The real session still carries traffic.
    ensure!(c1.ping(B, 2)?, "the session survived the attempts");
    Ok(())
}

/// Sealed datagrams and overlay VXLAN frames among `frames`.
fn kinds(frames: &[weave_tests::capture::Frame]) -> (usize, usize) {
    let vnis: Vec<_> = frames
        .iter()
        .filter_map(|f| f.udp_payload_to(VXLAN_PORT).and_then(vxlan_vni))
        .collect();
    let sealed = vnis.iter().filter(|v| **v == SEALED_VNI).count();
    let vxlan = vnis.iter().filter(|v| **v == OVERLAY_VNI).count();
    (sealed, vxlan)
}

/// Crypto-path counters that move when anything is sealed or opened.
const CRYPTO_COUNTERS: [&str; 3] = ["seal_to_agent", "sealed_received", "opened_delivered"];

fn crypto_counts(host: &Host) -> Result<Vec<u64>> {
    CRYPTO_COUNTERS
        .iter()
        .map(|c| host.counter_packets(c))
        .collect()
}

#[test]
fn hosts_that_trust_each_other_keep_the_plain_kernel_path() -> Result<()> {
    require_root();
    let prefix = unique_name("ent");
    let (seg, c) = pair(&prefix, &["--trusted-subnets", "192.168.56.0/24"])?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    wait_until(
        Duration::from_secs(10),
        "both hosts to trust the path",
        || {
            Ok(
                h1.listed_peer(&["peers", "--json"], "192.168.56.102")?["encryption"] == "trusted"
                    && h2.listed_peer(&["peers", "--json"], "192.168.56.101")?["encryption"]
                        == "trusted",
            )
        },
    )?;
    let before = (crypto_counts(h1)?, crypto_counts(h2)?);
    let capture = Capture::start(&seg.switch().name, "br0", 256)?;
    ensure!(c[0].ping(B, 3)?, "pings over the trusted path");
    bulk_of(&c[0], B, &c[1].name, B, BULK / 10, Some(MARKER))?;
    let frames = capture.stop_after_ping(&h1.name, "192.168.56.102")?;
    let (sealed, vxlan) = kinds(&frames);
    ensure!(
        vxlan > 0 && sealed == 0,
        "{vxlan} VXLAN and {sealed} sealed datagrams"
    );
    ensure!(
        frames.iter().any(|f| f.contains(MARKER.as_bytes())),
        "the trusted path is meant to be clear, yet the marker never showed"
    );
    ensure!(
        (crypto_counts(h1)?, crypto_counts(h2)?) == before,
        "the crypto path moved on a trusted path"
    );

    // Trust must be mutual: h2 relaunched without the option seals again, both ways.
    h2.agent_ok(&["stop"])?;
    h2.agent_ok(&["launch", "--password", PASSWORD])?;
    wait_until(
        Duration::from_secs(10),
        "a sealed ping after h2 stops trusting",
        || c[0].ping(B, 1),
    )?;
    ensure!(
        h1.listed_peer(&["peers", "--json"], "192.168.56.102")?["encryption"] == "sealed",
        "h1 still sends h2's traffic in clear"
    );
    let capture = Capture::start(&seg.switch().name, "br0", 256)?;
    ensure!(c[0].ping(B, 3)?, "pings over the sealed path");
    let frames = capture.stop_after_ping(&h1.name, "192.168.56.102")?;
    let (sealed, vxlan) = kinds(&frames);
    ensure!(
        sealed > 0 && vxlan == 0,
        "{vxlan} VXLAN and {sealed} sealed datagrams"
    );
    Ok(())
}

#[test]
fn a_killed_agent_is_back_within_a_second_and_a_stopped_one_sends_nothing() -> Result<()> {
    require_root();
    let prefix = unique_name("enk");
    let (seg, c) = pair(&prefix, &[])?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    wait_until(Duration::from_secs(10), "a sealed ping answered", || {
        c[0].ping(B, 1)
    })?;
    let pinging = start_pinging(&c[0], B, 6)?;
    wait_until(Duration::from_secs(5), "ping under way", || {
        Ok(h1.counter_packets("seal_to_agent")? > 20)
    })?;
    let pid = h2.agent_pid()?;
    weave_tests::run_ok("kill", ["-9", &pid.to_string()])?;
    // Gone once every thread is (the crypto workers included): the last one closes the lock.
    wait_until(
        Duration::from_secs(5),
        "the killed agent to be gone",
        || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return Ok(true);
            };
            Ok(tasks.flatten().all(|task| {
                std::fs::read_to_string(task.path().join("stat"))
                    .map_or(true, |s| s.contains(") Z "))
            }))
        },
    )?;
    h2.agent_ok(&["launch", "--password", PASSWORD])?;
    let (sent, received) = ping_result(pinging)?;
    eprintln!("kill -9 + launch: {received}/{sent} pings answered");
    ensure!(sent >= 500, "ping sent only {sent}");
    ensure!(
        sent - received <= 100,
        "{} pings lost across kill -9 + launch (more than a second at 100/s)",
        sent - received
    );

    // Stopped for good: nothing gets through, and nothing crosses in clear.
    let dropped = h2.counter_packets("drop_no_session")?;
    h2.agent_ok(&["stop"])?;
    let capture = Capture::start(&seg.switch().name, "br0", 256)?;
    ensure!(
        !c[1].ping(A, 3)?,
        "pings from h2's container crossed with its agent stopped"
    );
    ensure!(!c[0].ping(B, 3)?, "pings crossed with h2's agent stopped");
    let frames = capture.stop_after_ping(&h1.name, "192.168.56.102")?;
    let (_, vxlan) = kinds(&frames);
    ensure!(
        vxlan == 0,
        "{vxlan} VXLAN frames in clear with h2's agent stopped"
    );
    for pair in address_pairs() {
        ensure!(
            !frames.iter().any(|f| f.contains(&pair)),
            "addresses in clear"
        );
    }
    // The pinned counters outlive the agent: the next one reads what the data path refused.
    // Only c[1]'s three pings are sure to be counted here: h1 seals c[0]'s to h2 until it
    // declares h2 dead (about 1.6 s of silence), then drops them itself as for an unknown
    // address, and where that falls among the pings depends on the machine's load.
    h2.agent_ok(&["launch", "--password", PASSWORD])?;
    let refused = h2
        .counter_packets("drop_no_session")?
        .saturating_sub(dropped);
    ensure!(
        refused >= 3,
        "h2's data path counted {refused} refused frames, not its container's 3 pings"
    );
    Ok(())
}

#[test]
fn relayed_traffic_stays_sealed_end_to_end_and_the_relay_reads_none_of_it() -> Result<()> {
    require_root();
    let prefix = unique_name("enr");
    let seg = Segment::new(&prefix, 3)?;
    // Hosts 1 and 3 cannot reach each other: host 2 relays.
    seg.cut(1, 3)?;
    let (h1, h2, h3) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
    h1.agent_ok(&["launch", "--password", PASSWORD])?;
    h2.agent_ok(&["join", "--password", PASSWORD, "192.168.56.101"])?;
    h3.agent_ok(&["join", "--password", PASSWORD, "192.168.56.102"])?;
    let c1 = Container::new(&format!("{prefix}c1"), h1)?;
    let c3 = Container::new(&format!("{prefix}c3"), h3)?;
    h1.attach(&format!("{A}/24"), &c1)?;
    h3.attach(&format!("{B}/24"), &c3)?;
    h1.wait_for_remote(1)?;
    h3.wait_for_remote(1)?;
    wait_until(
        Duration::from_secs(15),
        "a sealed ping through the relay",
        || c1.ping(B, 1),
    )?;
    let relayed = h2.counter_packets("sealed_relayed")?;
    let opened = h2.counter_packets("opened_delivered")?;
    let capture = Capture::start(&seg.switch().name, "br0", 256)?;
    ensure!(c1.ping(B, 3)?, "pings through the relay");
    bulk_of(&c1, B, &c3.name, B, BULK / 10, Some(MARKER))?;
    let frames = capture.stop_after_ping(&h1.name, "192.168.56.102")?;
    let (sealed, vxlan) = kinds(&frames);
    ensure!(
        sealed > 0 && vxlan == 0,
        "{vxlan} VXLAN and {sealed} sealed datagrams"
    );
    ensure!(
        !frames.iter().any(|f| f.contains(MARKER.as_bytes())),
        "the marker crossed in clear"
    );
    ensure!(
        h2.counter_packets("sealed_relayed")? > relayed + 100,
        "the relay did not carry the sealed traffic"
    );
    ensure!(
        h2.counter_packets("opened_delivered")? == opened,
        "the relay opened what it carried"
    );
    let peer = h1.listed_peer(&["peers", "--json"], "192.168.56.103")?;
    ensure!(
        peer["encryption"] == "sealed" && peer["route"] == "via",
        "h1 lists h3 as {peer}"
    );
    Ok(())
}
