//! The Docker network driver and IPAM driver: libnetwork's remote protocols (`protocol`),
//! served by the agent on `/run/docker/plugins/weave-agent.sock`, so that `docker network
//! create -d weave-agent` and `--ipam-driver weave-agent` work. One agent per machine serves
//! the engine: the first to claim the socket (a socket nobody answers on is stale and taken
//! over). The agent does the work (`control::docker_driver`).

pub mod protocol;

use std::{convert::Infallible, path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::UnixListener;

use crate::control::{agent::Agent, docker_driver};

/// Where Docker looks for plugins.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// The socket of the driver Docker knows as `name` (`-d NAME`, `--ipam-driver NAME`).
pub fn socket_path(name: &str) -> std::path::PathBuf {
    Path::new(PLUGIN_DIR).join(format!("{name}.sock"))
}

/// Claims the plugin socket unless another live agent holds it. None: not serving.
pub fn claim(path: &Path) -> Result<Option<UnixListener>> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Ok(None);
    }
    std::fs::create_dir_all(PLUGIN_DIR).with_context(|| format!("creating {PLUGIN_DIR}"))?;
    // Nobody answers: a socket left by an agent that died.
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    Ok(Some(listener))
}

/// The socket file's identity, so the agent removes only its own.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Serves Docker until the agent stops, then removes the socket (unless another agent has
/// taken the name over meanwhile).
pub async fn serve(agent: Arc<Agent>, listener: UnixListener, path: std::path::PathBuf) {
    let ours = identity(&path);
    let mut stopping = agent.shutdown.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::debug!("accepting a Docker plugin connection: {err}");
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let agent = Arc::clone(&agent);
                async move { Ok::<_, Infallible>(respond(&agent, request).await) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("Docker plugin connection: {err}");
            }
        });
    }
    if ours.is_some() && identity(&path) == ours {
        let _ = std::fs::remove_file(&path);
    }
}

async fn respond(agent: &Agent, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return answer(StatusCode::BAD_REQUEST, &protocol::error(&err.to_string())),
    };
    match handle(agent, &path, &body).await {
        Ok(value) => answer(StatusCode::OK, &value),
        Err(err) => {
            tracing::warn!(call = %path, "Docker plugin call refused: {err:#}");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                &protocol::error(&format!("{err:#}")),
            )
        }
    }
}

fn answer(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.docker.plugins.v1.2+json"),
    );
    response
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).context("reading Docker's request")
}

/// One call of either protocol.
async fn handle(agent: &Agent, path: &str, body: &[u8]) -> Result<Value> {
    use protocol::*;
    Ok(match path {
        "Plugin.Activate" => activate(),
        "NetworkDriver.GetCapabilities" => network_capabilities(),
        "NetworkDriver.CreateNetwork"
        | "NetworkDriver.DeleteNetwork"
        | "NetworkDriver.Leave"
        | "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity" => json!({}),
        "NetworkDriver.EndpointOperInfo" => json!({ "Value": {} }),
        "NetworkDriver.CreateEndpoint" => {
            let req: CreateEndpoint = parse(body)?;
            let iface = req.interface.unwrap_or(InterfaceRequest {
                address: String::new(),
                address_ipv6: String::new(),
                mac_address: String::new(),
            });
            anyhow::ensure!(
                !iface.address.is_empty(),
                "Docker gave the endpoint no IPv4 address: a network of weave-agent's driver \
                 needs an IPv4 subnet, with an IPv6 one beside it if you like (--ipv6)"
            );
            let mac = docker_driver::create_endpoint(
                agent,
                &req.endpoint_id,
                (&iface.address, &iface.address_ipv6),
                &iface.mac_address,
            )
            .await?;
            created_endpoint(&iface.mac_address, &mac)
        }
        "NetworkDriver.Join" => {
            let req: Join = parse(body)?;
            let src = docker_driver::join(agent, &req.endpoint_id, &req.sandbox_key).await?;
            joined(&src, agent.dns.as_ref().map(|s| s.address))
        }
        "NetworkDriver.DeleteEndpoint" => {
            let req: EndpointRef = parse(body)?;
            docker_driver::delete_endpoint(agent, &req.endpoint_id).await?;
            json!({})
        }
        "IpamDriver.GetCapabilities" => json!({ "RequiresMACAddress": false }),
        "IpamDriver.GetDefaultAddressSpaces" => json!({
            "LocalDefaultAddressSpace": LOCAL_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_SPACE,
        }),
        "IpamDriver.RequestPool" => {
            let req: RequestPool = parse(body)?;
            anyhow::ensure!(
                req.sub_pool.is_empty(),
                "--ip-range is not supported by weave-agent's IPAM"
            );
            let pool = docker_driver::request_pool(agent, &req.pool, req.v6)
                .await?
                .to_string();
            json!({ "PoolID": pool, "Pool": pool, "Data": { GATEWAY_REQUEST: pool } })
        }
        "IpamDriver.ReleasePool" => json!({}),
        "IpamDriver.RequestAddress" => {
            let req: RequestAddress = parse(body)?;
            if req.is_gateway() {
                // Only with --gateway: echo it; no container gets it from this driver.
                let pool: crate::net::policy::Subnet = req.pool_id.parse()?;
                let ip = if req.address.is_empty() {
                    pool.network.to_string()
                } else {
                    req.address.clone()
                };
                json!({ "Address": format!("{ip}/{}", pool.prefix), "Data": {} })
            } else {
                let address =
                    docker_driver::request_address(agent, &req.pool_id, &req.address).await?;
                json!({ "Address": address, "Data": {} })
            }
        }
        "IpamDriver.ReleaseAddress" => {
            let req: ReleaseAddress = parse(body)?;
            let _ = req.pool_id;
            docker_driver::release_address(agent, &req.address).await?;
            json!({})
        }
        other => anyhow::bail!("weave-agent does not serve {other}"),
    })
}
