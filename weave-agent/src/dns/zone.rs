//! The names the server answers for, as one immutable table built from the mesh's records
//! (each host's containers and `dns-add` entries, gossiped) so that a lookup is a map read and
//! never waits on the network.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Result, bail};

use crate::net::policy::Subnet;

/// The domain when `launch --dns-domain` is not given (Weave's).
pub const DEFAULT_DOMAIN: &str = "weave.local";

/// A domain or host name, lower-cased, without the final dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Checks a DNS label (RFC 1123: letters, digits and inner hyphens, 1 to 63 bytes).
fn check_label(label: &str, whole: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if !ok {
        bail!(
            "{whole:?} is not a DNS name: each dot-separated part must be 1 to 63 letters, \
             digits or inner hyphens"
        );
    }
    Ok(())
}

/// Checks a domain such as `weave.local` and returns it normalized.
pub fn parse_domain(domain: &str) -> Result<String> {
    let domain = normalize(domain);
    if domain.len() > 200 {
        bail!("{domain:?} is too long for a DNS domain");
    }
    for label in domain.split('.') {
        check_label(label, &domain)?;
    }
    Ok(domain)
}

/// The full name a container name stands for: `web` is `web.DOMAIN`; a name already in the
/// domain stays as it is. A name with dots outside the domain is refused: it would never be
/// answered from here.
pub fn qualify(name: &str, domain: &str) -> Result<String> {
    let name = normalize(name);
    let full = if name == domain || name.ends_with(&format!(".{domain}")) {
        name
    } else if name.contains('.') {
        bail!(
            "{name:?} is outside the DNS domain {domain}: give a plain name (such as `web`) or \
             one ending in .{domain}"
        );
    } else {
        format!("{name}.{domain}")
    };
    if full.len() > 253 {
        bail!("{full:?} is longer than a DNS name may be");
    }
    for label in full.split('.') {
        check_label(label, &full)?;
    }
    Ok(full)
}

/// What the server answers from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// Normalized, e.g. `weave.local`.
    pub domain: String,
    by_name: BTreeMap<String, Vec<Ipv4Addr>>,
    by_ip: BTreeMap<Ipv4Addr, Vec<String>>,
    /// Networks whose reverse names are answered here, found or not: the overlay's. Reverse
    /// lookups of other addresses go upstream.
    reverse: Vec<Subnet>,
}

impl Zone {
    /// A zone for `domain` holding `records` (address, full name), answering reverse lookups
    /// for `reverse`.
    pub fn new(
        domain: &str,
        records: impl IntoIterator<Item = (Ipv4Addr, String)>,
        reverse: Vec<Subnet>,
    ) -> Self {
        let mut pairs = BTreeSet::new();
        for (ip, name) in records {
            pairs.insert((normalize(&name), ip));
        }
        let mut by_name: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
        let mut by_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
        for (name, ip) in pairs {
            by_name.entry(name.clone()).or_default().push(ip);
            by_ip.entry(ip).or_default().push(name);
        }
        Self {
            domain: normalize(domain),
            by_name,
            by_ip,
            reverse,
        }
    }

    /// `name` (normalized) is the domain or under it.
    pub fn holds(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// The addresses of `name` (normalized), sorted.
    pub fn addresses(&self, name: &str) -> &[Ipv4Addr] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The names of `ip`, sorted.
    pub fn names(&self, ip: Ipv4Addr) -> &[String] {
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }

    /// The reverse name of `ip` is answered here (found or not).
    pub fn answers_reverse(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
            || self
                .reverse
                .iter()
                .any(|net| net.contains(&Subnet::new(ip, 32)))
    }

    /// Every record, by name, for `weave-agent dns`.
    pub fn records(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.by_name
            .iter()
            .flat_map(|(name, ips)| ips.iter().map(move |ip| (name.as_str(), *ip)))
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_join_the_domain_and_foreign_ones_are_refused() {
        assert_eq!(qualify("web", "weave.local").unwrap(), "web.weave.local");
        assert_eq!(
            qualify("Web.Weave.Local.", "weave.local").unwrap(),
            "web.weave.local"
        );
        assert_eq!(
            qualify("a.web.weave.local", "weave.local").unwrap(),
            "a.web.weave.local"
        );
        assert!(qualify("web.example.com", "weave.local").is_err());
        assert!(qualify("we_b", "weave.local").is_err());
        assert!(qualify("-web", "weave.local").is_err());
        assert!(qualify("", "weave.local").is_err());
        assert!(qualify(&"a".repeat(64), "weave.local").is_err());
        assert!(parse_domain("weave..local").is_err());
        assert_eq!(parse_domain("Corp.Example.").unwrap(), "corp.example");
    }

    #[test]
    fn several_containers_of_one_name_give_all_addresses_and_reverse_names() {
        let a: Ipv4Addr = "10.32.0.1".parse().unwrap();
        let b: Ipv4Addr = "10.32.0.2".parse().unwrap();
        let zone = Zone::new(
            "weave.local",
            [
                (b, "db.weave.local".to_owned()),
                (a, "DB.weave.local".to_owned()),
                (a, "web.weave.local".to_owned()),
                (a, "web.weave.local".to_owned()),
            ],
            vec!["10.32.0.0/12".parse().unwrap()],
        );
        assert_eq!(zone.addresses("db.weave.local"), [a, b]);
        assert_eq!(zone.names(a), ["db.weave.local", "web.weave.local"]);
        assert_eq!(zone.len(), 3);
        assert!(zone.holds("x.weave.local") && zone.holds("weave.local"));
        assert!(!zone.holds("xweave.local"));
        assert!(zone.answers_reverse("10.33.1.1".parse().unwrap()));
        assert!(!zone.answers_reverse("192.168.1.1".parse().unwrap()));
    }
}
