//! Prometheus metrics on 127.0.0.1:6782/metrics inside each host's namespace.

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Host, Segment, require_root, unique_name};

const SCRAPE: &str = "import urllib.request
print(urllib.request.urlopen('http://127.0.0.1:6782/metrics', timeout=5).read().decode())";

fn scrape(host: &Host) -> Result<String> {
    let out = host.exec("python3", &["-c", SCRAPE])?;
    ensure!(
        out.status.success(),
        "scraping {}: {}",
        host.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The value of the sample `name{labels}` (exactly as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_show_peers_endpoints_paths_drops_and_gossip() -> Result<()> {
    require_root();
    let prefix = unique_name("m");
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let _c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    let c3 = h1.container(&format!("{prefix}c3"), "192.168.2.30/24")?;
    h1.wait_for_remote(1)?;
    ensure!(c1.ping("192.168.1.20", 3)?, "no connectivity");
    // One isolated attempt, so a drop reason has a count.
    c3.ip(["route", "add", "192.168.1.0/24", "dev", "ethwe"])?;
    ensure!(!c3.ping("192.168.1.10", 1)?);

    let text = scrape(h1)?;
    eprintln!("{text}");
    let get = |series: &str| {
        sample(&text, series).with_context(|| format!("no sample {series} in:\n{text}"))
    };
    ensure!(get("weave_peers{state=\"alive\"}")? == 1.0);
    ensure!(get("weave_peers{state=\"dead\"}")? == 0.0);
    ensure!(get("weave_endpoints{kind=\"local\"}")? == 2.0);
    ensure!(get("weave_endpoints{kind=\"remote\"}")? == 1.0);
    ensure!(get("weave_datapath_packets_total{path=\"remote_sent\"}")? >= 3.0);
    ensure!(get("weave_datapath_bytes_total{path=\"remote_sent\"}")? > 0.0);
    ensure!(get("weave_datapath_drops_total{reason=\"isolated\"}")? >= 1.0);
    ensure!(get("weave_gossip_bytes_total{direction=\"sent\"}")? > 0.0);
    ensure!(get("weave_gossip_messages_total{direction=\"received\"}")? > 0.0);
    ensure!(get("weave_gossip_auth_failures_total")? == 0.0);
    // Each agent serves its own namespace's loopback.
    let other = scrape(h2)?;
    ensure!(sample(&other, "weave_endpoints{kind=\"local\"}") == Some(1.0));
    Ok(())
}
