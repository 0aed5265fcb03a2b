//! The control socket: one JSON request line in, one JSON response line out, per connection.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{
    agent::Agent,
    api::{self, Request, Response},
    cni, dns, endpoints, expose, ipam, peers, rule_set, rules, status,
};

/// Binds the control socket, root-only. The state-directory lock proves no live daemon owns an
/// existing socket file, so it is a leftover of a crash and can go.
pub fn bind_socket(socket: &Path) -> Result<UnixListener> {
    match fs::remove_file(socket) {
        Ok(()) => tracing::debug!("removed stale socket {}", socket.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", socket.display()))?;
    Ok(listener)
}

pub async fn handle_connection(agent: &Agent, stream: UnixStream) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    // One byte over the limit is enough to know it is too long.
    BufReader::new(read)
        .take(api::MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    let response = match api::parse_request(&line) {
        Ok(request) => working_meanwhile(&mut write, respond(agent, request))
            .await
            .unwrap_or_else(|err| Response::Error {
                message: format!("{err:#}"),
            }),
        Err(err) => Response::Error {
            message: format!("{err:#}"),
        },
    };
    let mut reply = serde_json::to_string(&response)?;
    reply.push('\n');
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await?;
    if matches!(response, Response::ShuttingDown { .. }) {
        let _ = agent.shutdown.send(true);
    }
    Ok(())
}

/// Awaits `work`, telling the client every [`api::WORKING_EVERY`] that it is still under way,
/// so a request queued behind many others is not given up on as if the daemon had hung. A
/// client that went away does not stop the work: it finishes, whoever is listening.
async fn working_meanwhile<W, T>(write: &mut W, work: impl Future<Output = T>) -> T
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut line = serde_json::to_string(&Response::Working).expect("a unit variant");
    line.push('\n');
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + api::WORKING_EVERY,
        api::WORKING_EVERY,
    );
    let mut listening = true;
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick(), if listening => {
                listening = write.write_all(line.as_bytes()).await.is_ok();
            }
        }
    }
}

async fn respond(agent: &Agent, request: Request) -> Result<Response> {
    Ok(match request {
        Request::Status => Response::Status(Box::new(status::status(agent).await?)),
        Request::Shutdown => Response::ShuttingDown {
            pid: agent.base.pid,
        },
        Request::Attach {
            cidr,
            container,
            netns,
            mtu,
            dns_name,
            no_multicast_route,
        } => Response::Attached {
            endpoints: endpoints::attach(
                agent,
                &cidr,
                &container,
                netns,
                mtu,
                dns_name,
                !no_multicast_route,
            )
            .await?,
        },
        Request::Run {
            cidr,
            spec,
            mtu,
            no_multicast_route,
        } => Response::Ran {
            id: endpoints::run_container(agent, &cidr, &spec, mtu, !no_multicast_route).await?,
        },
        Request::Detach {
            container,
            netns,
            address,
        } => Response::Detached {
            endpoints: endpoints::detach(agent, &container, netns.as_deref(), address.as_deref())
                .await?,
        },
        Request::CniAdd {
            container_id,
            netns,
            iface,
            addresses,
            dns_name,
            mtu,
        } => {
            let attachment = cni::Attachment::new(&container_id, &iface)?;
            let endpoints = cni::add(agent, &attachment, netns, &addresses, dns_name, mtu).await?;
            Response::CniAdded {
                endpoints,
                dns: cni::dns(agent),
            }
        }
        Request::CniDel {
            container_id,
            iface,
        } => Response::Detached {
            endpoints: cni::del(agent, &cni::Attachment::new(&container_id, &iface)?).await?,
        },
        Request::CniCheck {
            container_id,
            netns,
            iface,
        } => {
            cni::check(agent, &cni::Attachment::new(&container_id, &iface)?, &netns).await?;
            Response::CniChecked
        }
        Request::CniGc { keep } => Response::Detached {
            endpoints: cni::gc(agent, &keep).await?,
        },
        Request::Ps => Response::Endpoints {
            endpoints: status::endpoint_infos(&*agent.inner.lock().await),
        },
        Request::Peers => Response::Peers {
            peers: status::peer_infos(agent, &*agent.inner.lock().await),
        },
        Request::Join { peer } => {
            let (address, answered) = peers::join(agent, &peer).await?;
            Response::Joined { address, answered }
        }
        Request::Connect {
            peers: list,
            replace,
        } => Response::ConfiguredPeers {
            peers: peers::connect(agent, &list, replace).await?,
        },
        Request::Forget { peers: list } => Response::ConfiguredPeers {
            peers: peers::forget(agent, &list).await?,
        },
        Request::PolicySet { action, a, b } => Response::Rules {
            rules: rule_set::set_rule(agent, action, &a, &b).await?,
        },
        Request::PolicyList => Response::Rules {
            rules: rules::rule_infos(&*agent.inner.lock().await),
        },
        Request::Expose {
            cidr,
            routes,
            masquerade,
        } => {
            let (endpoint, forwarding_turned_on) =
                expose::expose(agent, &cidr, routes.as_deref(), masquerade).await?;
            Response::Exposed {
                endpoint,
                forwarding_turned_on,
            }
        }
        Request::Hide { cidr } => Response::Hidden {
            endpoints: expose::hide(agent, cidr.as_deref()).await?,
        },
        Request::RmPeer { peer } => ipam::remove_peer(agent, &peer).await?,
        Request::Ipam => ipam::listing(&*agent.inner.lock().await),
        Request::DnsChange { ips, name, add } => Response::DnsRecords {
            records: dns::change(agent, &ips, &name, add).await?,
        },
        Request::Dns => Response::DnsRecords {
            records: dns::listing(agent),
        },
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// Work that takes five ticks is accompanied by a working line per tick, then returns
    /// its own result; no line is written for work that finishes within the first tick.
    #[tokio::test(start_paused = true)]
    async fn long_work_is_accompanied_by_working_lines() {
        let (mut client, mut daemon) = tokio::io::duplex(4096);
        let five_ticks = tokio::time::sleep(api::WORKING_EVERY * 5 + api::WORKING_EVERY / 2);
        let done = working_meanwhile(&mut daemon, async {
            five_ticks.await;
            7
        })
        .await;
        assert_eq!(done, 7);
        let quick = working_meanwhile(&mut daemon, async { 8 }).await;
        assert_eq!(quick, 8);
        drop(daemon);
        let mut heard = String::new();
        client.read_to_string(&mut heard).await.unwrap();
        assert_eq!(heard, "{\"result\":\"working\"}\n".repeat(5));
    }
}
