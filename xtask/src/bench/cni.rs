//! CNI ADD latency, from the runtime's exec of the plugin to its result: weave-agent's plugin
//! (which asks the agent, which makes the veth, allocates and publishes) against Debian's
//! reference `bridge` plugin with `host-local` IPAM, in the same namespace host, samples
//! interleaved. Each ADD is undone by an untimed DEL.

use std::{path::Path, time::Instant};

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use weave_tests::{
    Container, Segment,
    cni::{Invocation, invoke_plugin},
    unique_name,
};

use super::median;
use crate::progress;

const ROUNDS: usize = 5;
const PER_ROUND: usize = 40;
const REFERENCE: &str = "/usr/lib/cni/bridge";

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// One ADD timed, its DEL not.
fn cycle(seg: &Segment, bin: &Path, ctr: &Container, id: &str, conf: &Value) -> Result<f64> {
    let host = &seg.hosts[0];
    let netns = format!("/run/netns/{}", ctr.name);
    let call = |command| Invocation {
        command,
        container_id: id,
        netns: &netns,
        ifname: "eth0",
        args: "",
    };
    let started = Instant::now();
    let add = invoke_plugin(host, bin, &call("ADD"), conf)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    ensure!(
        add.ok,
        "{} ADD: {} {}",
        bin.display(),
        add.stdout,
        add.stderr
    );
    let del = invoke_plugin(host, bin, &call("DEL"), conf)?;
    ensure!(
        del.ok,
        "{} DEL: {} {}",
        bin.display(),
        del.stdout,
        del.stderr
    );
    Ok(ms)
}

pub fn run(agent: &Path) -> Result<Value> {
    ensure!(
        Path::new(REFERENCE).is_file(),
        "{REFERENCE} missing: install containernetworking-plugins (`cargo xtask setup`)"
    );
    let step = progress::step("bench: cni, building the testbed");
    let seg = Segment::new(&unique_name("bn"), 1)?;
    seg.hosts[0].agent_ok(&["launch"])?;
    let ours_ctr = Container::new(&unique_name("bno"), &seg.hosts[0])?;
    let ref_ctr = Container::new(&unique_name("bnr"), &seg.hosts[0])?;
    let data_dir = std::env::temp_dir().join(unique_name("bn-host-local"));
    let ours_conf = json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent"});
    let ref_conf = json!({
        "cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cniref0",
        "ipam": {"type": "host-local", "subnet": "10.99.0.0/16",
                 "dataDir": data_dir.display().to_string()},
    });
    step.finish();
    let (mut ours, mut reference, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let result = (|| -> Result<()> {
        for round in 1..=ROUNDS {
            let step = progress::step(format!(
                "bench cni round {round}/{ROUNDS}: {PER_ROUND} ADDs each, interleaved"
            ));
            let (mut o, mut r) = (Vec::new(), Vec::new());
            for i in 0..PER_ROUND {
                let id = format!("bench-{round}-{i}");
                o.push(cycle(&seg, agent, &ours_ctr, &id, &ours_conf)?);
                r.push(cycle(&seg, Path::new(REFERENCE), &ref_ctr, &id, &ref_conf)?);
            }
            ratios.push(median(&o) / median(&r));
            ours.extend(o);
            reference.extend(r);
            step.finish();
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&data_dir);
    result?;
    let report = json!({
        "weave_add_ms_p50": median(&ours),
        "weave_add_ms_p99": percentile(&ours, 99.0),
        "reference_add_ms_p50": median(&reference),
        "reference_add_ms_p99": percentile(&reference, 99.0),
        "p50_ratio": median(&ratios),
        "p99_ratio": percentile(&ours, 99.0) / percentile(&reference, 99.0),
        "reference": "containernetworking-plugins bridge + host-local",
        "samples_each": ours.len(),
    });
    println!(
        "cni ADD: weave-agent p50 {:.1} ms p99 {:.1} ms; bridge + host-local p50 {:.1} ms \
         p99 {:.1} ms (p50 ratio {:.2}x)",
        report["weave_add_ms_p50"].as_f64().unwrap_or_default(),
        report["weave_add_ms_p99"].as_f64().unwrap_or_default(),
        report["reference_add_ms_p50"].as_f64().unwrap_or_default(),
        report["reference_add_ms_p99"].as_f64().unwrap_or_default(),
        report["p50_ratio"].as_f64().unwrap_or_default(),
    );
    Ok(report)
}
