//! Which peers' traffic may cross in clear: with a password, a frame between two peers is
//! sealed unless each one's underlay address is inside the other's `--trusted-subnets` and the
//! path between them is direct (a relay is a third host on the way). What each agent publishes
//! for it: its data plane public key and its trusted subnets.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use base64::Engine as _;

use crate::net::policy::Subnet;

/// Gossip key of the agent's data plane public key (base64).
pub const SEAL_KEY: &str = "seal_key";
/// Gossip key of the agent's trusted subnets (comma-separated CIDRs; empty for none).
pub const TRUSTED_KEY: &str = "trusted";

pub fn trusts(list: &[Subnet], ip: Ipv4Addr) -> bool {
    list.iter().any(|s| s.contains(&Subnet::new(ip, 32)))
}

/// The traffic between this host (`me`, trusting `mine`) and the peer at `peer`, which
/// publishes `theirs` (None: nothing yet), reached directly or not, may cross in clear.
pub fn plain(
    me: Ipv4Addr,
    mine: &[Subnet],
    peer: Ipv4Addr,
    theirs: Option<&str>,
    direct: bool,
) -> bool {
    let Some(theirs) = theirs.map(parse_trusted) else {
        return false;
    };
    // A list that does not parse trusts nothing.
    let theirs = theirs.unwrap_or_default();
    direct && trusts(mine, peer) && trusts(&theirs, me)
}

pub fn encode_trusted(list: &[Subnet]) -> String {
    list.iter()
        .map(Subnet::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_trusted(text: &str) -> Result<Vec<Subnet>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse())
        .collect()
}

pub fn encode_key(public: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(public)
}

pub fn parse_key(text: &str) -> Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("a data plane key that is not base64")?;
    bytes
        .as_slice()
        .try_into()
        .context("a data plane key that is not 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    fn subnets(text: &str) -> Vec<Subnet> {
        parse_trusted(text).unwrap()
    }

    #[test]
    fn clear_only_when_both_trust_each_other_over_a_direct_path() {
        let lan = subnets("10.1.0.0/24");
        assert!(plain(A, &lan, B, Some("10.1.0.0/16"), true));
        assert!(!plain(A, &lan, B, Some("10.1.0.0/16"), false), "relayed");
        assert!(
            !plain(A, &lan, B, Some(""), true),
            "the peer trusts nothing"
        );
        assert!(!plain(A, &lan, B, None, true), "not known yet");
        assert!(
            !plain(A, &[], B, Some("10.1.0.0/16"), true),
            "we trust nothing"
        );
        assert!(
            !plain(A, &lan, B, Some("10.2.0.0/16"), true),
            "the peer does not trust us"
        );
        assert!(!plain(A, &lan, B, Some("garbage"), true));
    }

    #[test]
    fn lists_and_keys_read_back() {
        let list = subnets("10.1.0.0/24, 192.168.0.0/16");
        assert_eq!(parse_trusted(&encode_trusted(&list)).unwrap(), list);
        assert!(parse_trusted("").unwrap().is_empty());
        assert!(parse_trusted("10.1.0.1/24").is_err(), "host bits");
        let key = [7u8; 32];
        assert_eq!(parse_key(&encode_key(&key)).unwrap(), key);
        assert!(parse_key("AAAA").is_err());
    }
}
