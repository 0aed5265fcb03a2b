//! Prometheus metrics on `127.0.0.1:6782/metrics` (Weave Net's status port): peers by state,
//! endpoints, the data path's packets and bytes per path and drops per reason, gossip traffic
//! and authentication failures, and each peer's encrypted session. Rendered from a fresh snapshot at every scrape.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context as _, Result};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::watch};

use super::{agent::Agent, api, status};
use crate::mesh::counting_transport::GossipTraffic;

/// Where metrics are served unless `--metrics-addr` says otherwise.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6782);

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

/// The Prometheus text exposition of one status snapshot.
pub fn render(status: &api::Status, gossip: &GossipTraffic) -> Result<String> {
    let mut registry = Registry::with_prefix("weave");
    register_mesh(&mut registry, status);
    register_datapath(&mut registry, status);
    register_gossip(&mut registry, status, gossip);
    register_sessions(&mut registry, status);
    register_ipam(&mut registry, status);
    register_dns(&mut registry, status);
    let mut text = String::new();
    encode(&mut text, &registry).context("encoding metrics")?;
    Ok(text)
}

fn register_mesh(registry: &mut Registry, status: &api::Status) {
    let peers = gauge_family(registry, "peers", "Peers of the mesh by state");
    for state in ["alive", "dead", "connecting"] {
        let n = status.peers.iter().filter(|p| p.state == state).count();
        peers.get_or_create(&label("state", state)).set(n as i64);
    }
    let endpoints = gauge_family(
        registry,
        "endpoints",
        "Entries in the kernel endpoint map by kind",
    );
    endpoints
        .get_or_create(&label("kind", "local"))
        .set(status.endpoints.local as i64);
    endpoints
        .get_or_create(&label("kind", "remote"))
        .set(status.endpoints.remote as i64);
    let conflicts = Gauge::<i64>::default();
    conflicts.set(status.conflicts.len() as i64);
    registry.register(
        "address_conflicts",
        "Addresses claimed by more than one host",
        conflicts,
    );
}

fn register_ipam(registry: &mut Registry, status: &api::Status) {
    let addresses = gauge_family(
        registry,
        "ipam_addresses",
        "Addresses of the allocation range this host owns, and those it handed out",
    );
    addresses
        .get_or_create(&label("state", "owned"))
        .set(status.ipam.owned as i64);
    addresses
        .get_or_create(&label("state", "allocated"))
        .set(status.ipam.allocated as i64);
    let subnets = gauge_family(
        registry,
        "ipam_subnet_addresses",
        "Addresses of each subnet in use, used and free across the mesh",
    );
    for s in &status.ipam.subnets {
        for (state, value) in [("used", s.used), ("free", s.free)] {
            subnets
                .get_or_create(&vec![
                    ("subnet".to_owned(), s.subnet.clone()),
                    ("state".to_owned(), state.to_owned()),
                ])
                .set(value as i64);
        }
    }
    for (name, value, help) in [
        (
            "ipam_refused_peers",
            status.ipam.refused.len() as i64,
            "Peers whose address ring was refused (claimed apart)",
        ),
        (
            "ipam_conflicting_writes",
            status.ipam.conflicting_writes as i64,
            "Ring writes that disagreed at one version (zero in a healthy mesh)",
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
}

fn register_dns(registry: &mut Registry, status: &api::Status) {
    if !status.dns.enabled {
        return;
    }
    let records = Gauge::<i64>::default();
    records.set(status.dns.records as i64);
    registry.register("dns_records", "Names the DNS server answers", records);
    let queries = counter_family(
        registry,
        "dns_queries",
        "Queries the DNS server took, by outcome",
    );
    for (outcome, n) in [
        ("answered", status.dns.answered),
        ("forwarded", status.dns.forwarded),
        ("upstream_failed", status.dns.upstream_failed),
        ("malformed", status.dns.malformed),
    ] {
        queries.get_or_create(&label("outcome", outcome)).inc_by(n);
    }
}

fn register_datapath(registry: &mut Registry, status: &api::Status) {
    let packets = counter_family(
        registry,
        "datapath_packets",
        "Packets seen or forwarded by the eBPF programs, per path",
    );
    let bytes = counter_family(
        registry,
        "datapath_bytes",
        "Bytes seen or forwarded by the eBPF programs, per path",
    );
    let drops = counter_family(
        registry,
        "datapath_drops",
        "Packets dropped by the eBPF programs, per reason",
    );
    let dropped_bytes = counter_family(
        registry,
        "datapath_dropped_bytes",
        "Bytes dropped by the eBPF programs, per reason",
    );
    for (name, counter) in &status.counters {
        // Drop counters become a reason of the drop families, the rest a path of the others.
        let (packet_family, byte_family, labels) = match name.strip_prefix("drop_") {
            Some(reason) => (&drops, &dropped_bytes, label("reason", reason)),
            None => (&packets, &bytes, label("path", name)),
        };
        packet_family.get_or_create(&labels).inc_by(counter.packets);
        byte_family.get_or_create(&labels).inc_by(counter.bytes);
    }
}

fn register_gossip(registry: &mut Registry, status: &api::Status, gossip: &GossipTraffic) {
    let messages = counter_family(registry, "gossip_messages", "Gossip messages by direction");
    let gossip_bytes = counter_family(
        registry,
        "gossip_bytes",
        "Encoded size of gossip messages (before sealing) by direction",
    );
    for (direction, n, size) in [
        ("sent", &gossip.sent_messages, &gossip.sent_bytes),
        (
            "received",
            &gossip.received_messages,
            &gossip.received_bytes,
        ),
    ] {
        messages
            .get_or_create(&label("direction", direction))
            .inc_by(n.load(Ordering::Relaxed));
        gossip_bytes
            .get_or_create(&label("direction", direction))
            .inc_by(size.load(Ordering::Relaxed));
    }
    let failed = Counter::<u64>::default();
    failed.inc_by(gossip.send_failures.load(Ordering::Relaxed));
    registry.register(
        "gossip_send_failures",
        "Gossip datagrams the socket refused to send (no route, no buffer space)",
        failed,
    );
    let auth = Counter::<u64>::default();
    auth.inc_by(status.auth_failures);
    registry.register(
        "gossip_auth_failures",
        "Gossip datagrams refused for failing authentication",
        auth,
    );
}

/// The encrypted data plane's sessions, per peer (present only with a password).
fn register_sessions(registry: &mut Registry, status: &api::Status) {
    let sessions: Vec<(&str, &api::SessionInfo)> = status
        .peers
        .iter()
        .filter_map(|p| p.session.as_ref().map(|s| (p.address.as_str(), s)))
        .collect();
    if sessions.is_empty() {
        return;
    }
    let counters = [
        (
            "sealed_bytes",
            "Bytes of container frames sealed to the peer",
        ),
        (
            "opened_bytes",
            "Bytes of container frames opened from the peer",
        ),
        (
            "sealed_refused",
            "Sealed datagrams from the peer refused: forged, replayed, for no session here",
        ),
        ("sealed_handshakes", "Handshakes completed with the peer"),
        (
            "sealed_no_session_drops",
            "Frames to the peer dropped while no session was ready",
        ),
    ];
    for (name, help) in counters {
        let family = counter_family(registry, name, help);
        for (peer, s) in &sessions {
            let value = match name {
                "sealed_bytes" => s.sealed_bytes,
                "opened_bytes" => s.opened_bytes,
                "sealed_refused" => s.refused,
                "sealed_handshakes" => s.handshakes,
                _ => s.dropped_no_session,
            };
            family.get_or_create(&label("peer", peer)).inc_by(value);
        }
    }
    let age = gauge_family(
        registry,
        "sealed_session_age_seconds",
        "Age of the session in use with the peer (absent: none)",
    );
    for (peer, s) in &sessions {
        if let Some(ms) = s.age_ms {
            age.get_or_create(&label("peer", peer))
                .set((ms / 1000) as i64);
        }
    }
}

/// Serves the agent's metrics on `addr` (default [`DEFAULT_ADDR`]). A port already taken is a
/// warning, not a failed launch: metrics are worth less than a data path without an agent.
pub async fn spawn(
    agent: &Arc<Agent>,
    addr: Option<SocketAddr>,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = addr.unwrap_or(DEFAULT_ADDR);
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!("not serving metrics on {addr}: {err}");
            return None;
        }
    };
    let scrape = {
        let agent = Arc::clone(agent);
        move || {
            let agent = Arc::clone(&agent);
            async move { render(&status::status(&agent).await?, &agent.traffic) }
        }
    };
    Some(tokio::spawn(serve(
        listener,
        scrape,
        agent.shutdown.subscribe(),
    )))
}

/// Serves `GET /metrics` with what `snapshot` renders, until `stopping` changes.
pub async fn serve<F, Fut>(listener: TcpListener, snapshot: F, mut stopping: watch::Receiver<bool>)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String>> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::debug!("accepting a metrics connection: {err}");
                    continue;
                }
            },
            _ = stopping.changed() => return,
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let snapshot = snapshot.clone();
                async move { Ok::<_, Infallible>(respond(request.uri().path(), snapshot).await) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection: {err}");
            }
        });
    }
}

async fn respond<F, Fut>(path: &str, snapshot: F) -> Response<Full<Bytes>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String>>,
{
    let (status, content_type, body) = match path {
        "/metrics" => match snapshot().await {
            Ok(text) => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            Err(err) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{err:#}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "weave-agent serves /metrics here\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_peers_endpoints_drops_and_gossip() {
        let status: api::Status = serde_json::from_value(serde_json::json!({
            "version": "0", "pid": 1, "peer_name": "p", "nickname": "n", "netns": "x",
            "state_dir": "", "pin_dir": "", "vxlan": "vxlan-6784", "mtu": 1450,
            "underlay": {"name": "eth0", "ifindex": 2, "address": "10.0.0.1/24", "mtu": 1500, "kind": null},
            "programs": [], "endpoints": {"local": 2, "remote": 5},
            "peers": [
                {"name": "a", "nickname": "a", "address": "10.0.0.2", "state": "alive", "endpoints": 1,
                 "encryption": "sealed", "session": {"age_ms": 12500, "handshakes": 2,
                 "sealed_bytes": 700, "opened_bytes": 800, "refused": 9, "dropped_no_session": 1}},
                {"name": "b", "nickname": "b", "address": "10.0.0.3", "state": "dead", "endpoints": 0}
            ],
            "conflicts": [], "encryption": false, "auth_failures": 3, "auth_failure_sources": {},
            "counters": {
                "remote_sent": {"packets": 10, "bytes": 1000},
                "drop_isolated": {"packets": 4, "bytes": 400}
            },
            "ipam": {"range": "10.32.0.0/12", "default_subnet": "10.32.0.0/12", "init": "seed",
                     "claimed": true, "owned": 1048576, "allocated": 7, "refused": ["q: apart"],
                     "conflicting_writes": 0, "removed": [],
                     "subnets": [{"subnet": "10.32.0.0/12", "addresses": 1048574, "used": 7,
                                  "free": 1048567, "owners": []}]},
            "dns": {"enabled": true, "address": "169.254.53.53", "domain": "weave.local",
                    "upstreams": [], "records": 4, "answered": 30, "forwarded": 2,
                    "upstream_failed": 1, "malformed": 5}
        }))
        .unwrap();
        let gossip = GossipTraffic::default();
        gossip.sent_bytes.store(123, Ordering::Relaxed);
        let text = render(&status, &gossip).unwrap();
        for line in [
            "weave_peers{state=\"alive\"} 1",
            "weave_peers{state=\"dead\"} 1",
            "weave_peers{state=\"connecting\"} 0",
            "weave_endpoints{kind=\"remote\"} 5",
            "weave_datapath_packets_total{path=\"remote_sent\"} 10",
            "weave_datapath_drops_total{reason=\"isolated\"} 4",
            "weave_gossip_bytes_total{direction=\"sent\"} 123",
            "weave_gossip_auth_failures_total 3",
            "weave_sealed_bytes_total{peer=\"10.0.0.2\"} 700",
            "weave_opened_bytes_total{peer=\"10.0.0.2\"} 800",
            "weave_sealed_refused_total{peer=\"10.0.0.2\"} 9",
            "weave_sealed_handshakes_total{peer=\"10.0.0.2\"} 2",
            "weave_sealed_no_session_drops_total{peer=\"10.0.0.2\"} 1",
            "weave_sealed_session_age_seconds{peer=\"10.0.0.2\"} 12",
            "weave_ipam_addresses{state=\"owned\"} 1048576",
            "weave_ipam_addresses{state=\"allocated\"} 7",
            "weave_ipam_subnet_addresses{subnet=\"10.32.0.0/12\",state=\"used\"} 7",
            "weave_ipam_subnet_addresses{subnet=\"10.32.0.0/12\",state=\"free\"} 1048567",
            "weave_ipam_refused_peers 1",
            "weave_ipam_conflicting_writes 0",
            "weave_dns_records 4",
            "weave_dns_queries_total{outcome=\"answered\"} 30",
            "weave_dns_queries_total{outcome=\"malformed\"} 5",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
