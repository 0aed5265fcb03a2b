//! Isolation rules. By default a subnet talks only to itself; `policy allow A B` opens A↔B (both
//! directions), `policy deny A B` closes it again.
//!
//! Rules are replicated by gossip as last-writer-wins registers, one per unordered pair of
//! CIDRs: every agent republishes the newest rule it has seen for a pair, so a rule outlives the
//! agent that made it, and a later `deny` replaces an earlier `allow` everywhere. Where rules
//! overlap, the most specific one (longest prefixes) decides for a pair of endpoint subnets.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weave_common::{endpoint::ipv4_key, policy::SubnetPair};

/// A network named by its CIDR, host bits zero: `192.168.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl Subnet {
    pub fn new(ip: Ipv4Addr, prefix: u8) -> Self {
        Self {
            network: Ipv4Addr::from(u32::from(ip) & mask(prefix)),
            prefix,
        }
    }

    /// `other` lies inside this network (or is it).
    pub fn contains(&self, other: &Self) -> bool {
        other.prefix >= self.prefix
            && u32::from(other.network) & mask(self.prefix) == u32::from(self.network)
    }
}

impl FromStr for Subnet {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (ip, prefix) = text.split_once('/').with_context(|| {
            format!("{text:?} is not a CIDR: expected NETWORK/PREFIX, e.g. 192.168.2.0/24")
        })?;
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("{ip:?} in {text:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).with_context(|| {
            format!("prefix {prefix:?} in {text:?} must be a number from 0 to 32")
        })?;
        let subnet = Self::new(ip, prefix);
        if subnet.network != ip {
            bail!("{text} has host bits set; the network is {subnet}");
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// The newest word on one unordered pair of networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The smaller of the two networks; `b` the other.
    pub a: Subnet,
    pub b: Subnet,
    pub action: Action,
    /// Wall-clock milliseconds when the rule was made: the later rule for a pair wins.
    pub at_ms: u64,
    /// Peer name of the agent the rule was made on; breaks ties in `at_ms`.
    pub by: String,
}

/// Key prefix of rules in an agent's gossip state.
pub const GOSSIP_PREFIX: &str = "rule:";

/// The end of the year 9999 in Unix milliseconds. A rule dated later would win every merge,
/// and a rule made to supersede it would overflow its time, so none is accepted.
pub const LATEST_MS: u64 = 253_402_300_799_999;

impl Rule {
    pub fn new(x: Subnet, y: Subnet, action: Action, at_ms: u64, by: &str) -> Result<Self> {
        if x == y {
            bail!("{x} always talks to itself; a rule needs two different networks");
        }
        if at_ms > LATEST_MS {
            bail!("a rule dated {at_ms} ms after 1970 lies beyond the year 9999");
        }
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Ok(Self {
            a,
            b,
            action,
            at_ms,
            by: by.to_owned(),
        })
    }

    pub fn pair(&self) -> (Subnet, Subnet) {
        (self.a, self.b)
    }

    fn supersedes(&self, other: &Self) -> bool {
        (self.at_ms, &self.by) > (other.at_ms, &other.by)
    }

    /// Which side of the rule `subnet` falls on and the other side: both orientations when it
    /// lies inside both networks.
    fn others(&self, subnet: &Subnet) -> impl Iterator<Item = Subnet> + '_ {
        let first = self.a.contains(subnet).then_some(self.b);
        let second = self.b.contains(subnet).then_some(self.a);
        first.into_iter().chain(second)
    }

    /// Matches traffic between `x` and `y` in either direction.
    fn covers(&self, x: &Subnet, y: &Subnet) -> bool {
        (self.a.contains(x) && self.b.contains(y)) || (self.b.contains(x) && self.a.contains(y))
    }

    fn specificity(&self) -> u16 {
        u16::from(self.a.prefix) + u16::from(self.b.prefix)
    }

    pub fn gossip_key(&self) -> String {
        format!("{GOSSIP_PREFIX}{},{}", self.a, self.b)
    }

    pub fn gossip_value(&self) -> String {
        format!("{} {} {}", self.action, self.at_ms, self.by)
    }

    /// The rule behind a gossip key/value, if both are well-formed.
    pub fn from_gossip(key: &str, value: &str) -> Result<Self> {
        let pair = key
            .strip_prefix(GOSSIP_PREFIX)
            .with_context(|| format!("{key:?} is not a rule key"))?;
        let (a, b) = pair
            .split_once(',')
            .with_context(|| format!("malformed rule key {key:?}"))?;
        let mut parts = value.splitn(3, ' ');
        let (Some(action), Some(at_ms), Some(by)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("malformed rule value {value:?}");
        };
        let action = match action {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => bail!("unknown rule action {other:?}"),
        };
        let at_ms = at_ms
            .parse()
            .with_context(|| format!("malformed rule time {at_ms:?}"))?;
        let rule = Self::new(a.parse()?, b.parse()?, action, at_ms, by)?;
        // Only the canonical order is accepted, so one pair has one key.
        if rule.gossip_key() != key {
            bail!("rule key {key:?} is not in canonical order");
        }
        Ok(rule)
    }
}

/// The newest rule per pair among all `rules`.
pub fn merge<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> BTreeMap<(Subnet, Subnet), Rule> {
    let mut newest: BTreeMap<(Subnet, Subnet), Rule> = BTreeMap::new();
    for rule in rules {
        match newest.get(&rule.pair()) {
            Some(seen) if !rule.supersedes(seen) => {}
            _ => {
                newest.insert(rule.pair(), rule.clone());
            }
        }
    }
    newest
}

/// What the rules say about traffic between `x` and `y` (either direction): the most specific
/// matching rule decides, the newer one among equally specific ones; none means isolated.
fn decision<'a>(rules: impl IntoIterator<Item = &'a Rule>, x: &Subnet, y: &Subnet) -> Action {
    rules
        .into_iter()
        .filter(|r| r.covers(x, y))
        .max_by(|r, s| {
            r.specificity()
                .cmp(&s.specificity())
                .then_with(|| (r.at_ms, &r.by).cmp(&(s.at_ms, &s.by)))
        })
        .map_or(Action::Deny, |r| r.action)
}

/// Both directions of every pair of different endpoint subnets the rules allow: what the
/// policy map must hold.
pub fn allowed_pairs(rules: &[Rule], subnets: &BTreeSet<Subnet>) -> BTreeSet<SubnetPair> {
    let mut out = BTreeSet::new();
    for x in subnets {
        for y in subnets.range(..*x) {
            if decision(rules, x, y) == Action::Allow {
                out.insert(pair(x, y));
                out.insert(pair(y, x));
            }
        }
    }
    out
}

fn pair(src: &Subnet, dst: &Subnet) -> SubnetPair {
    SubnetPair {
        src_subnet: ipv4_key(src.network.octets()),
        dst_subnet: ipv4_key(dst.network.octets()),
        src_prefix: src.prefix,
        dst_prefix: dst.prefix,
        pad: [0; 2],
    }
}

/// On-link routes an endpoint in `own` needs besides its subnet route: the far side of every
/// allow rule that covers it, unless a more specific rule denies that far side again.
pub fn routes_for(rules: &[Rule], own: &Subnet) -> BTreeSet<Subnet> {
    rules
        .iter()
        .filter(|r| r.action == Action::Allow)
        .flat_map(|r| r.others(own))
        .filter(|other| other != own && decision(rules, own, other) == Action::Allow)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    fn rule(a: &str, b: &str, action: Action, at_ms: u64) -> Rule {
        Rule::new(net(a), net(b), action, at_ms, "peer").unwrap()
    }

    fn subnets(list: &[&str]) -> BTreeSet<Subnet> {
        list.iter().map(|s| net(s)).collect()
    }

    #[test]
    fn subnets_parse_strictly() {
        assert_eq!(net("192.168.2.0/24").to_string(), "192.168.2.0/24");
        assert_eq!(net("0.0.0.0/0").prefix, 0);
        let err = "192.168.2.7/24".parse::<Subnet>().unwrap_err().to_string();
        assert!(err.contains("192.168.2.0/24"), "{err}");
        assert!("192.168.2.0".parse::<Subnet>().is_err());
        assert!("192.168.2.0/33".parse::<Subnet>().is_err());
        assert!("nonsense/8".parse::<Subnet>().is_err());
    }

    #[test]
    fn default_is_isolated_and_allow_opens_both_directions_only() {
        let all = subnets(&["192.168.1.0/24", "192.168.2.0/24", "192.168.3.0/24"]);
        assert!(allowed_pairs(&[], &all).is_empty());
        let rules = [rule("192.168.2.0/24", "192.168.1.0/24", Action::Allow, 1)];
        let pairs = allowed_pairs(&rules, &all);
        assert_eq!(pairs.len(), 2, "{pairs:?}");
        assert!(pairs.contains(&pair(&net("192.168.1.0/24"), &net("192.168.2.0/24"))));
        assert!(pairs.contains(&pair(&net("192.168.2.0/24"), &net("192.168.1.0/24"))));
    }

    #[test]
    fn newest_rule_per_pair_wins_whatever_the_order() {
        let allow = rule("192.168.1.0/24", "192.168.2.0/24", Action::Allow, 10);
        let deny = rule("192.168.2.0/24", "192.168.1.0/24", Action::Deny, 20);
        for order in [[&allow, &deny], [&deny, &allow]] {
            let merged = merge(order);
            assert_eq!(merged.len(), 1);
            assert_eq!(merged.values().next().unwrap().action, Action::Deny);
        }
        let merged: Vec<Rule> = merge([&allow, &deny]).into_values().collect();
        let all = subnets(&["192.168.1.0/24", "192.168.2.0/24"]);
        assert!(allowed_pairs(&merged, &all).is_empty());
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let rules = [
            rule("10.0.0.0/8", "192.168.0.0/16", Action::Allow, 1),
            rule("10.1.0.0/16", "192.168.1.0/24", Action::Deny, 0),
        ];
        let all = subnets(&[
            "10.1.0.0/16",
            "10.2.0.0/16",
            "192.168.1.0/24",
            "192.168.2.0/24",
        ]);
        let pairs = allowed_pairs(&rules, &all);
        let allowed = |x: &str, y: &str| pairs.contains(&pair(&net(x), &net(y)));
        assert!(allowed("10.2.0.0/16", "192.168.1.0/24"));
        assert!(allowed("10.1.0.0/16", "192.168.2.0/24"));
        assert!(!allowed("10.1.0.0/16", "192.168.1.0/24"));
        assert!(!allowed("192.168.1.0/24", "10.1.0.0/16"));
        // Same side of the rule: not opened by it.
        assert!(!allowed("10.1.0.0/16", "10.2.0.0/16"));
    }

    #[test]
    fn routes_follow_allow_rules_and_go_with_them() {
        let own = net("192.168.1.0/24");
        let allow = rule("192.168.1.0/24", "192.168.2.0/24", Action::Allow, 1);
        assert_eq!(
            routes_for(std::slice::from_ref(&allow), &own),
            subnets(&["192.168.2.0/24"])
        );
        assert_eq!(
            routes_for(std::slice::from_ref(&allow), &net("192.168.2.0/24")),
            subnets(&["192.168.1.0/24"])
        );
        assert!(routes_for(std::slice::from_ref(&allow), &net("192.168.3.0/24")).is_empty());
        let deny = rule("192.168.1.0/24", "192.168.2.0/24", Action::Deny, 2);
        let merged: Vec<Rule> = merge([&allow, &deny]).into_values().collect();
        assert!(routes_for(&merged, &own).is_empty());
        // A wide allow with a narrower deny for this subnet: no route to a closed network.
        let rules = [
            rule("192.168.0.0/16", "10.0.0.0/8", Action::Allow, 1),
            rule("192.168.1.0/24", "10.0.0.0/8", Action::Deny, 1),
        ];
        assert!(routes_for(&rules, &own).is_empty());
        assert_eq!(
            routes_for(&rules, &net("192.168.2.0/24")),
            subnets(&["10.0.0.0/8"])
        );
    }

    #[test]
    fn gossip_form_round_trips_and_rejects_garbage() {
        let r = rule("192.168.2.0/24", "192.168.1.0/24", Action::Allow, 42);
        assert_eq!(r.gossip_key(), "rule:192.168.1.0/24,192.168.2.0/24");
        assert_eq!(
            Rule::from_gossip(&r.gossip_key(), &r.gossip_value()).unwrap(),
            r
        );
        for (key, value) in [
            ("rule:192.168.2.0/24,192.168.1.0/24", "allow 1 p"),
            ("rule:192.168.1.0/24,192.168.1.0/24", "allow 1 p"),
            ("rule:192.168.1.0/24", "allow 1 p"),
            ("rule:192.168.1.0/24,192.168.2.0/24", "open 1 p"),
            ("rule:192.168.1.0/24,192.168.2.0/24", "allow x p"),
            ("rule:192.168.1.0/24,192.168.2.0/24", "allow 1"),
            (
                "rule:192.168.1.0/24,192.168.2.0/24",
                "allow 18446744073709551615 p",
            ),
            (
                "rule:192.168.1.0/24,192.168.2.0/24",
                "allow 253402300800000 p",
            ),
            ("ep:192.168.1.0", "allow 1 p"),
        ] {
            assert!(Rule::from_gossip(key, value).is_err(), "{key} {value}");
        }
    }

    #[test]
    fn same_network_twice_is_refused() {
        assert!(Rule::new(net("10.0.0.0/8"), net("10.0.0.0/8"), Action::Allow, 0, "p").is_err());
    }
}
