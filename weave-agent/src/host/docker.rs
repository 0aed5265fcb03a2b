//! Docker's API over /var/run/docker.sock (bollard): creating containers for `run`, finding
//! containers by name, following their life through events.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use bollard::{
    API_DEFAULT_VERSION, Docker,
    models::{ContainerCreateBody, EventMessage, HostConfig, RestartPolicy, RestartPolicyNameEnum},
    query_parameters::{
        CreateContainerOptions, EventsOptions, InspectContainerOptions, RemoveContainerOptions,
    },
};
use futures_util::Stream;

use super::run_spec::RunSpec;

/// Docker's socket, unless DOCKER_HOST names another (unix://PATH).
const SOCKET: &str = "/var/run/docker.sock";
/// How long one Docker API call may take before the agent gives up on it. The CLI's wait is
/// derived from this (`control::api::Request::reply_timeout`), so it always outlasts the
/// daemon's.
pub const DOCKER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Label naming the peer whose agent created the container with `run`; agents sharing one
/// Docker engine act only on their own containers.
pub const PEER_LABEL: &str = "weave-agent.peer";
/// Label holding the container's overlay address, so a restarted container gets it back.
pub const CIDR_LABEL: &str = "weave-agent.cidr";

/// A running (or stopped) container, as far as the overlay cares.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    /// As Docker shows it, with its leading `/`.
    pub name: String,
    /// Main process, 0 when not running.
    pub pid: u32,
}

impl Container {
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }
}

pub async fn connect() -> Result<Docker> {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| SOCKET.to_owned());
    let not_running = || {
        format!(
            "Docker is not running (no answer on {socket}); start dockerd, or attach \
             containers by netns:NAME, pid:PID or a netns path"
        )
    };
    Docker::connect_with_unix(&socket, DOCKER_CALL_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
        .with_context(not_running)?
        .negotiate_version()
        .await
        .with_context(not_running)
}

/// The container called `name_or_id`, or None if Docker has no such container.
pub async fn inspect(docker: &Docker, name_or_id: &str) -> Result<Option<Container>> {
    match docker
        .inspect_container(name_or_id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => {
            let state = info.state.unwrap_or_default();
            let pid = if state.running.unwrap_or(false) {
                u32::try_from(state.pid.unwrap_or(0)).unwrap_or(0)
            } else {
                0
            };
            Ok(Some(Container {
                id: info.id.unwrap_or_default(),
                name: info.name.unwrap_or_default(),
                pid,
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(err) => Err(err).with_context(|| format!("inspecting container {name_or_id}")),
    }
}

/// Creates and starts a container like `docker run -d` would; returns its full id.
pub async fn create_and_start(
    docker: &Docker,
    spec: &RunSpec,
    peer: &str,
    cidr: &str,
) -> Result<String> {
    let body = create_body(spec, peer, cidr)?;
    let options = CreateContainerOptions {
        name: spec.name.clone(),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("creating a container from {}", spec.image))?;
    if let Err(err) = docker.start_container(&created.id, None).await {
        let _ = remove(docker, &created.id).await;
        return Err(err).with_context(|| {
            format!(
                "starting container {} failed, so it was removed again",
                created.id
            )
        });
    }
    Ok(created.id)
}

/// What `docker run` would send to create the container, with our labels added.
fn create_body(spec: &RunSpec, peer: &str, cidr: &str) -> Result<ContainerCreateBody> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect();
    labels.insert(PEER_LABEL.to_owned(), peer.to_owned());
    labels.insert(CIDR_LABEL.to_owned(), cidr.to_owned());
    let restart = restart_policy(spec.restart.as_deref())?;
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        entrypoint: spec.entrypoint.clone().map(|e| vec![e]),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        tty: Some(spec.tty),
        open_stdin: Some(spec.interactive),
        attach_stdin: Some(spec.interactive),
        working_dir: spec.workdir.clone(),
        hostname: spec.hostname.clone(),
        user: spec.user.clone(),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            network_mode: spec.network.clone(),
            restart_policy: restart,
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            dns_search: (!spec.dns_search.is_empty()).then(|| spec.dns_search.clone()),
            privileged: Some(spec.privileged),
            auto_remove: Some(spec.auto_remove),
            init: spec.init.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `--restart NAME[:RETRIES]` as Docker's API takes it.
fn restart_policy(text: Option<&str>) -> Result<Option<RestartPolicy>> {
    text.map(|policy| {
        let (name, retries) = policy.split_once(':').unwrap_or((policy, ""));
        let name = match name {
            "no" => RestartPolicyNameEnum::NO,
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            other => bail!("unknown restart policy {other:?}"),
        };
        Ok(RestartPolicy {
            name: Some(name),
            maximum_retry_count: retries.parse().ok(),
        })
    })
    .transpose()
}

/// Removes a container, running or not.
pub async fn remove(docker: &Docker, id: &str) -> Result<()> {
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .with_context(|| format!("removing container {id}"))
}

/// Container start/die/destroy events.
pub fn events(docker: &Docker) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            vec!["start".to_owned(), "die".to_owned(), "destroy".to_owned()],
        ),
    ]);
    docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }))
}

/// Short id as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_ids_are_twelve_hex() {
        assert_eq!(super::short_id("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(super::short_id("abc"), "abc");
    }
}
