//! This host's address space as the daemon keeps it: the `ipam::space` it allocates from,
//! persisted in the data directory, with what it answered and refused, and what `status`
//! shows of it. No I/O but its own file; the daemon's side of IPAM is the parent module.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{ErrorKind, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    control::{api, config::IpamConfig},
    ipam::space::{Init, Space},
    net::policy::Subnet,
};

pub struct Ipam {
    pub space: Space,
    file: PathBuf,
    /// Addresses handed to attaches that have not finished: not released by the sweep.
    pub(super) in_flight: BTreeSet<Ipv4Addr>,
    /// Requests for space already answered: peer, subnet, request id.
    pub(super) answered: BTreeSet<(String, Subnet, String)>,
    /// Peers whose ring could not be taken in, and why (two meshes that claimed apart).
    pub refused: BTreeMap<String, String>,
    /// The ring as last published.
    published: Option<String>,
    /// Disagreeing writes of one version seen in merges (see `api::IpamInfo`).
    pub(super) conflicting_writes: u64,
}

impl Ipam {
    /// This host's space from `file`, or a new one. The range must be the one the file was
    /// made with, and the file this peer's.
    pub fn load(file: &Path, me: &str, config: &IpamConfig, with_peers: bool) -> Result<Self> {
        let space = match fs::read_to_string(file) {
            Ok(text) => {
                let mut space: Space = serde_json::from_str(&text).with_context(|| {
                    format!("reading the address allocations {}", file.display())
                })?;
                if space.range != config.range {
                    bail!(
                        "this host allocated from {} before, not --ipalloc-range {}: launch \
                         with --ipalloc-range {}, or `weave-agent reset` to start afresh \
                         (forgetting its allocations)",
                        space.range,
                        config.range,
                        space.range
                    );
                }
                if space.me != me {
                    bail!(
                        "{} belongs to peer {}, and this host is {me} (its underlay MAC \
                         changed?): `weave-agent reset` to start afresh",
                        file.display(),
                        space.me
                    );
                }
                if let Some(subnet) = config.default_subnet {
                    if !space.range.contains(&subnet) {
                        bail!(
                            "--ipalloc-default-subnet {subnet} is not inside --ipalloc-range {}",
                            space.range
                        );
                    }
                    space.default_subnet = subnet;
                }
                space
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {
                let init = config.init.unwrap_or(if with_peers {
                    Init::Observer
                } else {
                    Init::Seed
                });
                let default = config.default_subnet.unwrap_or(config.range);
                Space::new(me, init, config.range, default)?
            }
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", file.display()));
            }
        };
        Ok(Self {
            space,
            file: file.to_owned(),
            in_flight: BTreeSet::new(),
            answered: BTreeSet::new(),
            refused: BTreeMap::new(),
            published: None,
            conflicting_writes: 0,
        })
    }

    /// Writes the space atomically (temp file + rename), so a crash leaves the old or the new.
    pub fn save(&self) -> Result<()> {
        let dir = self
            .file
            .parent()
            .context("the allocations file has no directory")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = self.file.with_extension("json.tmp");
        let text = serde_json::to_string(&self.space)?;
        let mut out =
            fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        fs::rename(&tmp, &self.file).with_context(|| format!("replacing {}", self.file.display()))
    }

    /// The ring to publish, if it changed since it was last published.
    pub(super) fn ring_to_publish(&mut self) -> Option<String> {
        if !self.space.ring.is_claimed() {
            return None;
        }
        let json = serde_json::to_string(&self.space.ring).ok()?;
        if self.published.as_ref() == Some(&json) {
            return None;
        }
        self.published = Some(json.clone());
        Some(json)
    }

    /// Releases every allocation no endpoint here holds and no attach is using.
    pub(super) fn sweep(&mut self, held: &BTreeSet<Ipv4Addr>) -> bool {
        let before = self.space.allocated.len();
        let in_flight = &self.in_flight;
        self.space
            .allocated
            .retain(|ip, _| held.contains(ip) || in_flight.contains(ip));
        self.space.allocated.len() != before
    }
}

/// What `status` shows of the address space.
pub fn info(ipam: &Ipam) -> api::IpamInfo {
    let space = &ipam.space;
    api::IpamInfo {
        range: space.range.to_string(),
        default_subnet: space.default_subnet.to_string(),
        init: match space.init {
            Init::Seed => "seed",
            Init::Observer => "observer",
        }
        .to_owned(),
        claimed: space.ring.is_claimed(),
        owned: space
            .ring
            .ranges_of(&space.me)
            .iter()
            .map(|(lo, hi)| hi - u64::from(*lo))
            .sum(),
        allocated: space.allocated.len(),
        refused: ipam.refused.values().cloned().collect(),
        conflicting_writes: ipam.conflicting_writes,
        removed: space.ring.tombstones.iter().cloned().collect(),
        // Needs the mesh's endpoints: `control::ipam::subnet_usage` fills it in.
        subnets: Vec::new(),
    }
}
