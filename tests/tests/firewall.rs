//! A firewall between hosts needs exactly two holes: `launch --port N` moves gossip to UDP N
//! and VXLAN to UDP N+1, as Weave's 6783 and 6784.

use anyhow::{Result, ensure};
use weave_tests::{Segment, require_root, unique_name};

/// The switch passes ARP and UDP to 7000 and 7001 between its ports and drops everything else.
const FIREWALL: &str = "table bridge wall {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ether type arp accept
        udp dport { 7000, 7001 } accept
    }
}";

#[test]
fn with_port_n_the_mesh_needs_only_udp_n_and_n_plus_one() -> Result<()> {
    require_root();
    let seg = Segment::new(&unique_name("fw"), 2)?;
    seg.switch().load_nft(FIREWALL)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    // The firewall holds: the hosts cannot even ping each other.
    ensure!(
        !a.exec("ping", &["-c", "1", "-W", "1", "192.168.56.102"])?
            .status
            .success(),
        "the firewall lets ICMP through, so it proves nothing"
    );

    a.agent_ok(&["launch", "--port", "7000"])?;
    b.agent_ok(&["join", "192.168.56.101", "--port", "7000"])?;
    let status = a.status()?;
    ensure!(
        status["gossip_port"] == 7000 && status["data_port"] == 7001,
        "status reports other ports: {status}"
    );
    // Gossip crosses the firewall on 7000 (each host learns the other's container) ...
    let ctrs = seg.attach_one_each(&unique_name("fw"), |i| format!("192.168.1.{}0/24", i + 1))?;
    let (c1, c2) = (&ctrs[0], &ctrs[1]);
    // ... and container traffic on 7001, single packets and full-size ones.
    ensure!(c2.ping("192.168.1.10", 3)?, "no ping through the firewall");
    let big = c1.exec(
        "ping",
        &["-c", "3", "-s", "1400", "-W", "1", "192.168.1.20"],
    )?;
    ensure!(
        big.status.success(),
        "no full-size ping through the firewall"
    );

    // The ports cannot change under a running data path: a relaunch on others says what to do.
    a.agent_ok(&["stop"])?;
    let moved = a.agent(&["launch", "--port", "7100"])?;
    let err = String::from_utf8_lossy(&moved.stderr);
    ensure!(
        !moved.status.success() && err.contains("reset"),
        "a relaunch on other ports should be refused, naming `reset`: {err}"
    );
    Ok(())
}
