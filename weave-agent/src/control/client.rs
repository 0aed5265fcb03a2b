//! The CLI's side of the control socket: send one request, wait for its answer as long as
//! the daemon may take and keeps saying it is working, and say plainly what went wrong.

use std::{
    io::{BufRead as _, BufReader, ErrorKind, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::api::{QUICK_REPLY, Request, Response};

/// Why a request could not reach a daemon.
#[derive(Debug)]
pub enum Unreachable {
    /// No socket, or nobody listening on it.
    NoAgent,
    Other(anyhow::Error),
}

pub const NO_AGENT: &str = "no agent running here; start one with `weave-agent launch`";

/// Sends one request to the daemon behind `socket` and returns its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, Unreachable> {
    let stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Unreachable::NoAgent);
        }
        Err(err) if err.kind() == ErrorKind::PermissionDenied => {
            return Err(Unreachable::Other(anyhow!(
                "permission denied on {}: the control socket is root-only; run as root",
                socket.display()
            )));
        }
        Err(err) => {
            return Err(Unreachable::Other(
                anyhow::Error::new(err).context(format!("connecting to {}", socket.display())),
            ));
        }
    };
    exchange(stream, request).map_err(Unreachable::Other)
}

/// Like [`call`], but "no agent" is an error telling the user how to start one.
pub fn call_agent(socket: &Path, request: &Request) -> Result<Response> {
    match call(socket, request) {
        Ok(Response::Error { message }) => bail!("the agent refused: {message}"),
        Ok(response) => Ok(response),
        Err(Unreachable::NoAgent) => bail!(NO_AGENT),
        Err(Unreachable::Other(err)) => Err(err),
    }
}

/// The answer was not the one `op` asks for: the daemon speaks another version of the
/// protocol.
pub fn unexpected(op: &str) -> anyhow::Error {
    anyhow!(
        "the running agent answered {op} with something else: it is another version of \
         weave-agent than this command; restart it with this binary (`weave-agent stop`, then \
         `weave-agent launch`)"
    )
}

fn exchange(stream: UnixStream, request: &Request) -> Result<Response> {
    exchange_within(stream, request, QUICK_REPLY, request.working_limit())
}

/// Sends `request` and reads lines until the answer: each within `silence`, all within
/// `limit`.
fn exchange_within(
    mut stream: UnixStream,
    request: &Request,
    silence: Duration,
    limit: Duration,
) -> Result<Response> {
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .context("sending the request to the agent")?;
    const CHECK: &str = "it may still complete it: check with `weave-agent ps` (and `docker \
                         ps` for a container), and see the agent's log";
    let started = Instant::now();
    let mut lines = BufReader::new(stream.try_clone()?);
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            bail!(
                "the agent has been at {} for {} s without finishing; {CHECK}",
                request.name(),
                limit.as_secs()
            );
        }
        stream.set_read_timeout(Some(silence.min(left)))?;
        let mut reply = String::new();
        match lines.read_line(&mut reply) {
            Ok(_) => {}
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if started.elapsed() >= limit {
                    continue;
                }
                bail!(
                    "the agent did not answer {} within {} s; {CHECK}",
                    request.name(),
                    silence.as_secs()
                )
            }
            Err(err) => return Err(err).context("waiting for the agent's reply"),
        }
        if reply.is_empty() {
            bail!("the agent closed the connection without answering; see its log");
        }
        match serde_json::from_str(&reply).map_err(|_| unexpected(request.name()))? {
            Response::Working => continue,
            response => return Ok(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::docker::DOCKER_CALL_TIMEOUT;

    /// The CLI must outwait the daemon: a `run` whose Docker calls are slow but succeed is
    /// reported as done, not as failed while the container ends up attached.
    #[test]
    fn the_cli_waits_longer_than_the_docker_calls_a_request_makes() {
        let run = Request::Run {
            cidr: "10.0.0.1/24".into(),
            spec: Box::default(),
            mtu: None,
            no_multicast_route: false,
        };
        let attach = Request::Attach {
            cidr: "10.0.0.1/24".into(),
            container: "web".into(),
            netns: None,
            mtu: None,
            dns_name: None,
            no_multicast_route: false,
        };
        for request in [run, attach, Request::Status] {
            assert!(
                request.reply_timeout() > DOCKER_CALL_TIMEOUT * request.docker_calls(),
                "{}",
                request.name()
            );
        }
        assert!(
            Request::Run {
                cidr: String::new(),
                spec: Box::default(),
                mtu: None,
                no_multicast_route: false,
            }
            .reply_timeout()
                > DOCKER_CALL_TIMEOUT * 4
        );
    }

    #[test]
    fn a_reply_that_does_not_come_says_the_request_may_have_completed() {
        let (client, _daemon) = UnixStream::pair().unwrap();
        let wait = Duration::from_millis(50);
        let err = exchange_within(client, &Request::Ps, wait, wait * 10)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("may still complete") && err.contains("weave-agent ps"),
            "{err}"
        );
    }

    #[test]
    fn an_answer_this_version_cannot_read_names_the_version_mismatch() {
        let (client, mut daemon) = UnixStream::pair().unwrap();
        daemon
            .write_all(b"{\"result\":\"from_the_future\"}\n")
            .unwrap();
        let wait = Duration::from_secs(5);
        let err = exchange_within(client, &Request::Ps, wait, wait)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another version"), "{err}");
    }

    /// A daemon that keeps saying it is working is waited for past the silence limit, and
    /// its answer is the one returned; one that works past the limit is given up on.
    #[test]
    fn working_lines_keep_the_cli_waiting_up_to_the_limit() {
        let silence = Duration::from_millis(200);
        let (client, mut daemon) = UnixStream::pair().unwrap();
        let talker = std::thread::spawn(move || {
            for _ in 0..5 {
                std::thread::sleep(silence / 2);
                daemon.write_all(b"{\"result\":\"working\"}\n").unwrap();
            }
            daemon
                .write_all(b"{\"result\":\"endpoints\",\"endpoints\":[]}\n")
                .unwrap();
        });
        let response = exchange_within(client, &Request::Ps, silence, silence * 20).unwrap();
        assert!(
            matches!(&response, Response::Endpoints { endpoints } if endpoints.is_empty()),
            "{response:?}"
        );
        talker.join().unwrap();

        let (client, mut daemon) = UnixStream::pair().unwrap();
        let talker = std::thread::spawn(move || {
            // Working for longer than the limit: the CLI gives up, the writes may then fail.
            for _ in 0..10 {
                std::thread::sleep(silence / 2);
                if daemon.write_all(b"{\"result\":\"working\"}\n").is_err() {
                    break;
                }
            }
        });
        let err = exchange_within(client, &Request::Ps, silence, silence * 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("without finishing"), "{err}");
        talker.join().unwrap();
    }

    #[test]
    fn missing_socket_means_no_agent() {
        let dir = std::env::temp_dir().join(format!("weave-api-test-{}", std::process::id()));
        let result = call(&dir.join("absent.sock"), &Request::Status);
        assert!(matches!(result, Err(Unreachable::NoAgent)), "{result:?}");
        let err = call_agent(&dir.join("absent.sock"), &Request::Status).unwrap_err();
        assert_eq!(err.to_string(), NO_AGENT);
    }
}
