//! `weave-agent run CIDR [docker run options] IMAGE [CMD...]`: the `docker run` options we pass
//! through to Docker's API, parsed the way `docker run` reads them.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A container to create, as `docker run` would from the same arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub image: String,
    pub cmd: Vec<String>,
    pub name: Option<String>,
    /// -i: keep stdin open.
    pub interactive: bool,
    /// -t: allocate a TTY.
    pub tty: bool,
    pub env: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: Vec<String>,
    pub network: Option<String>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub entrypoint: Option<String>,
    pub user: Option<String>,
    pub restart: Option<String>,
    pub cap_add: Vec<String>,
    pub privileged: bool,
    pub auto_remove: bool,
    pub init: bool,
    /// --dns: the container's resolvers (the agent's DNS server when none is given).
    pub dns: Vec<String>,
    /// --dns-search: its search domains (the agent adds the overlay's domain).
    pub dns_search: Vec<String>,
}

/// Options that take a value, with every name `docker run` knows them by.
const VALUED: &[&[&str]] = &[
    &["--name"],
    &["-e", "--env"],
    &["-v", "--volume"],
    &["-l", "--label"],
    &["--network", "--net"],
    &["-w", "--workdir"],
    &["-h", "--hostname"],
    &["--entrypoint"],
    &["-u", "--user"],
    &["--restart"],
    &["--cap-add"],
    &["--dns"],
    &["--dns-search"],
];

impl RunSpec {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut spec = Self::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if !arg.starts_with('-') || arg == "-" {
                spec.image.clone_from(arg);
                spec.cmd = it.cloned().collect();
                break;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            if let Some(names) = VALUED.iter().find(|names| names.contains(&flag)) {
                let value = match inline {
                    Some(v) => v,
                    None => match it.next() {
                        Some(v) => v.clone(),
                        None => bail!("docker run option {flag} needs a value"),
                    },
                };
                spec.set(names[0], value);
                continue;
            }
            match flag {
                "-i" | "--interactive" => spec.interactive = true,
                "-t" | "--tty" => spec.tty = true,
                // Always detached: weave-agent returns the id; `docker attach` connects later.
                "-d" | "--detach" => {}
                "--rm" => spec.auto_remove = true,
                "--privileged" => spec.privileged = true,
                "--init" => spec.init = true,
                short if is_short_cluster(short) => {
                    for c in short[1..].chars() {
                        match c {
                            'i' => spec.interactive = true,
                            't' => spec.tty = true,
                            'd' => {}
                            other => bail!(
                                "docker run option -{other} (in {short}) is not supported by weave-agent run"
                            ),
                        }
                    }
                }
                other => bail!(
                    "docker run option {other} is not supported by weave-agent run; supported: \
                     -i -t -d --rm --privileged --init {}",
                    VALUED
                        .iter()
                        .map(|n| n.join("/"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            }
        }
        // The container would share the host's network namespace: its ethwe would land in
        // the host itself.
        if spec.network.as_deref() == Some("host") {
            bail!("weave-agent run cannot attach a container that uses --network host");
        }
        if spec.image.is_empty() {
            bail!("no IMAGE given: weave-agent run CIDR [docker run options] IMAGE [CMD...]");
        }
        Ok(spec)
    }

    fn set(&mut self, option: &str, value: String) {
        match option {
            "--name" => self.name = Some(value),
            "-e" => self.env.push(value),
            "-v" => self.volumes.push(value),
            "-l" => self.labels.push(value),
            "--network" => self.network = Some(value),
            "-w" => self.workdir = Some(value),
            "-h" => self.hostname = Some(value),
            "--entrypoint" => self.entrypoint = Some(value),
            "-u" => self.user = Some(value),
            "--restart" => self.restart = Some(value),
            "--cap-add" => self.cap_add.push(value),
            "--dns" => self.dns.push(value),
            "--dns-search" => self.dns_search.push(value),
            _ => unreachable!("every VALUED option is handled"),
        }
    }
}

/// `-it`, `-dit`: several one-letter flags in one word.
fn is_short_cluster(arg: &str) -> bool {
    arg.len() > 2 && arg.starts_with('-') && !arg.starts_with("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunSpec> {
        RunSpec::parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn weave_walkthrough_arguments() {
        let spec = parse(&["--name", "wet", "-it", "busybox", "sh", "-c", "echo -x"]).unwrap();
        assert_eq!(spec.name.as_deref(), Some("wet"));
        assert!(spec.interactive && spec.tty);
        assert_eq!(spec.image, "busybox");
        assert_eq!(spec.cmd, ["sh", "-c", "echo -x"]);
    }

    #[test]
    fn valued_options_in_every_spelling() {
        let spec = parse(&[
            "-e",
            "A=1",
            "--env=B=2",
            "-v",
            "/a:/b",
            "--network=none",
            "--restart",
            "always",
            "-d",
            "--rm",
            "img",
        ])
        .unwrap();
        assert_eq!(spec.env, ["A=1", "B=2"]);
        assert_eq!(spec.volumes, ["/a:/b"]);
        assert_eq!(spec.network.as_deref(), Some("none"));
        assert_eq!(spec.restart.as_deref(), Some("always"));
        assert!(spec.auto_remove && !spec.tty);
        assert!(spec.cmd.is_empty());
    }

    #[test]
    fn unknown_or_incomplete_options_are_refused() {
        let err = parse(&["--gpus", "all", "img"]).unwrap_err().to_string();
        assert!(
            err.contains("--gpus") && err.contains("not supported"),
            "{err}"
        );
        assert!(parse(&["--name"]).is_err());
        assert!(
            parse(&["-it"])
                .unwrap_err()
                .to_string()
                .contains("no IMAGE")
        );
        assert!(parse(&["-ix", "img"]).is_err());
        assert!(parse(&["--network", "host", "img"]).is_err());
    }
}
