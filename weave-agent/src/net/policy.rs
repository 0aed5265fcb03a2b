//! Isolation rules. By default a subnet talks only to itself; `policy allow A B` opens A↔B (both
//! directions), `policy deny A B` closes it again. A and B are two IPv4 networks or two IPv6
//! ones: IPv4 rules also decide for the link-local IPv6 addresses of containers that have no
//! IPv6 address (their IPv6 link is their IPv4 subnet).
//!
//! Rules are replicated by gossip as last-writer-wins registers, one per unordered pair of
//! CIDRs: every agent republishes the newest rule it has seen for a pair, so a rule outlives the
//! agent that made it, and a later `deny` replaces an earlier `allow` everywhere. Where rules
//! overlap, the most specific one (longest prefixes) decides for a pair of endpoint subnets.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weave_common::{
    endpoint::ipv4_key,
    ipv6::{Ipv6Key, ipv4_link},
    policy::{LinkPair, SubnetPair},
};

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

/// An IPv6 network by its CIDR, host bits zero: `fd00:1::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet6 {
    pub network: Ipv6Addr,
    pub prefix: u8,
}

fn mask6(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

impl Subnet6 {
    pub fn new(ip: Ipv6Addr, prefix: u8) -> Self {
        Self {
            network: Ipv6Addr::from(u128::from(ip) & mask6(prefix)),
            prefix,
        }
    }

    /// `other` lies inside this network (or is it).
    pub fn contains(&self, other: &Self) -> bool {
        other.prefix >= self.prefix
            && u128::from(other.network) & mask6(self.prefix) == u128::from(self.network)
    }
}

impl FromStr for Subnet6 {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (ip, prefix) = text.split_once('/').with_context(|| {
            format!("{text:?} is not a CIDR: expected NETWORK/PREFIX, e.g. fd00:1::/64")
        })?;
        let ip: Ipv6Addr = ip
            .parse()
            .with_context(|| format!("{ip:?} in {text:?} is not an IPv6 address"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 128).with_context(|| {
            format!("prefix {prefix:?} in {text:?} must be a number from 0 to 128")
        })?;
        let subnet = Self::new(ip, prefix);
        if subnet.network != ip {
            bail!("{text} has host bits set; the network is {subnet}");
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// What a rule names: an IPv4 network or an IPv6 one (a rule pairs two of one family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Net {
    V4(Subnet),
    V6(Subnet6),
}

impl Net {
    /// `other` lies inside this network; never across families.
    pub fn contains(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::V4(a), Self::V4(b)) => a.contains(b),
            (Self::V6(a), Self::V6(b)) => a.contains(b),
            _ => false,
        }
    }

    pub fn prefix(&self) -> u8 {
        match self {
            Self::V4(s) => s.prefix,
            Self::V6(s) => s.prefix,
        }
    }

    fn is_v6(&self) -> bool {
        matches!(self, Self::V6(_))
    }

    /// The IPv6 link ([`weave_common::ipv6::Endpoint6::link`]) this network is: an IPv6
    /// subnet as it is, an IPv4 one in its IPv4-mapped form.
    fn link(&self) -> (Ipv6Key, u8) {
        match self {
            Self::V4(s) => ipv4_link(s.network.octets(), s.prefix),
            Self::V6(s) => (s.network.octets(), s.prefix),
        }
    }

    /// The network an IPv6 link stands for: the IPv4 subnet of an IPv4-mapped one.
    pub fn of_link(link: Ipv6Key, prefix: u8) -> Self {
        let ip = Ipv6Addr::from(link);
        match ip.to_ipv4_mapped() {
            Some(v4) if prefix >= 96 => Self::V4(Subnet::new(v4, prefix - 96)),
            _ => Self::V6(Subnet6::new(ip, prefix)),
        }
    }
}

impl From<Subnet> for Net {
    fn from(s: Subnet) -> Self {
        Self::V4(s)
    }
}

impl From<Subnet6> for Net {
    fn from(s: Subnet6) -> Self {
        Self::V6(s)
    }
}

impl FromStr for Net {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        Ok(if text.contains(':') {
            Self::V6(text.parse()?)
        } else {
            Self::V4(text.parse()?)
        })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(s) => s.fmt(f),
            Self::V6(s) => s.fmt(f),
        }
    }
}

impl Serialize for Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
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
    /// The smaller of the two networks; `b` the other, of the same family.
    pub a: Net,
    pub b: Net,
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
    pub fn new(
        x: impl Into<Net>,
        y: impl Into<Net>,
        action: Action,
        at_ms: u64,
        by: &str,
    ) -> Result<Self> {
        let (x, y) = (x.into(), y.into());
        if x == y {
            bail!("{x} always talks to itself; a rule needs two different networks");
        }
        if x.is_v6() != y.is_v6() {
            bail!("{x} and {y}: a rule pairs two IPv4 networks or two IPv6 networks");
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

    pub fn pair(&self) -> (Net, Net) {
        (self.a, self.b)
    }

    fn supersedes(&self, other: &Self) -> bool {
        (self.at_ms, &self.by) > (other.at_ms, &other.by)
    }

    /// Which side of the rule `subnet` falls on and the other side: both orientations when it
    /// lies inside both networks.
    fn others(&self, subnet: &Net) -> impl Iterator<Item = Net> + '_ {
        let first = self.a.contains(subnet).then_some(self.b);
        let second = self.b.contains(subnet).then_some(self.a);
        first.into_iter().chain(second)
    }

    /// Matches traffic between `x` and `y` in either direction.
    fn covers(&self, x: &Net, y: &Net) -> bool {
        (self.a.contains(x) && self.b.contains(y)) || (self.b.contains(x) && self.a.contains(y))
    }

    fn specificity(&self) -> u16 {
        u16::from(self.a.prefix()) + u16::from(self.b.prefix())
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
        let rule = Self::new(a.parse::<Net>()?, b.parse::<Net>()?, action, at_ms, by)?;
        // Only the canonical order is accepted, so one pair has one key.
        if rule.gossip_key() != key {
            bail!("rule key {key:?} is not in canonical order");
        }
        Ok(rule)
    }
}

/// The newest rule per pair among all `rules`.
pub fn merge<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> BTreeMap<(Net, Net), Rule> {
    let mut newest: BTreeMap<(Net, Net), Rule> = BTreeMap::new();
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
fn decision<'a>(rules: impl IntoIterator<Item = &'a Rule>, x: &Net, y: &Net) -> Action {
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
            if decision(rules, &Net::V4(*x), &Net::V4(*y)) == Action::Allow {
                out.insert(pair(x, y));
                out.insert(pair(y, x));
            }
        }
    }
    out
}

/// Both directions of every pair of different IPv6 links (`links`: network and prefix, as the
/// IPv6 endpoint map holds them) the rules allow: IPv6 rules between IPv6 subnets, IPv4 rules
/// between the IPv4-mapped links of containers without an IPv6 address. What the IPv6 policy
/// map must hold.
pub fn allowed_links(rules: &[Rule], links: &BTreeSet<(Ipv6Key, u8)>) -> BTreeSet<LinkPair> {
    let nets: BTreeSet<Net> = links.iter().map(|(l, p)| Net::of_link(*l, *p)).collect();
    let mut out = BTreeSet::new();
    for x in &nets {
        for y in nets.range(..*x).filter(|y| y.is_v6() == x.is_v6()) {
            if decision(rules, x, y) == Action::Allow {
                out.insert(link_pair(x, y));
                out.insert(link_pair(y, x));
            }
        }
    }
    out
}

fn link_pair(src: &Net, dst: &Net) -> LinkPair {
    let ((src_link, src_prefix), (dst_link, dst_prefix)) = (src.link(), dst.link());
    LinkPair {
        src_link,
        dst_link,
        src_prefix,
        dst_prefix,
        pad: [0; 2],
    }
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
    on_link(rules, &Net::V4(*own))
        .filter_map(|net| match net {
            Net::V4(s) => Some(s),
            Net::V6(_) => None,
        })
        .collect()
}

/// [`routes_for`] for a container's IPv6 subnet.
pub fn routes_for6(rules: &[Rule], own: &Subnet6) -> BTreeSet<Subnet6> {
    on_link(rules, &Net::V6(*own))
        .filter_map(|net| match net {
            Net::V6(s) => Some(s),
            Net::V4(_) => None,
        })
        .collect()
}

fn on_link<'a>(rules: &'a [Rule], own: &'a Net) -> impl Iterator<Item = Net> + 'a {
    rules
        .iter()
        .filter(|r| r.action == Action::Allow)
        .flat_map(|r| r.others(own))
        .filter(move |other| other != own && decision(rules, own, other) == Action::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    fn net6(text: &str) -> Subnet6 {
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

    #[test]
    fn a_rule_pairs_networks_of_one_family() {
        let err = Rule::new(
            net("10.0.0.0/8"),
            net6("fd00:1::/64"),
            Action::Allow,
            0,
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("two IPv4 networks or two IPv6"), "{err}");
        assert!("fd00:1::1/64".parse::<Subnet6>().is_err());
        assert!("fd00:1::/129".parse::<Subnet6>().is_err());
        assert!(net6("fd00::/16").contains(&net6("fd00:1::/64")));
        assert!(!net6("fd00:1::/64").contains(&net6("fd00::/16")));
        let r = Rule::new(
            net6("fd00:2::/64"),
            net6("fd00:1::/64"),
            Action::Allow,
            7,
            "p",
        )
        .unwrap();
        assert_eq!(r.gossip_key(), "rule:fd00:1::/64,fd00:2::/64");
        assert_eq!(
            Rule::from_gossip(&r.gossip_key(), &r.gossip_value()).unwrap(),
            r
        );
        assert!(Rule::from_gossip("rule:10.0.0.0/8,fd00:1::/64", "allow 1 p").is_err());
        // Kept in the state file as the IPv4 rules always were: CIDR strings.
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""a":"fd00:1::/64""#), "{json}");
        assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), r);
    }

    fn links(list: &[Net]) -> BTreeSet<(Ipv6Key, u8)> {
        list.iter().map(Net::link).collect()
    }

    #[test]
    fn ipv6_rules_open_ipv6_links_and_ipv4_rules_the_mapped_ones() {
        let (one, two, three) = (
            net6("fd00:1::/64"),
            net6("fd00:2::/64"),
            net6("fd00:3::/64"),
        );
        let (v4a, v4b) = (net("10.40.1.0/24"), net("10.40.2.0/24"));
        let all = links(&[one.into(), two.into(), three.into(), v4a.into(), v4b.into()]);
        assert!(allowed_links(&[], &all).is_empty());
        let rules = [
            Rule::new(one, two, Action::Allow, 1, "p").unwrap(),
            Rule::new(v4a, v4b, Action::Allow, 1, "p").unwrap(),
        ];
        let pairs = allowed_links(&rules, &all);
        let allowed = |x: Net, y: Net| pairs.contains(&link_pair(&x, &y));
        assert_eq!(pairs.len(), 4, "{pairs:?}");
        assert!(allowed(one.into(), two.into()) && allowed(two.into(), one.into()));
        assert!(allowed(v4a.into(), v4b.into()) && allowed(v4b.into(), v4a.into()));
        assert!(!allowed(one.into(), three.into()));
        // The mapped link names the IPv4 subnet again.
        let (link, prefix) = Net::from(v4a).link();
        assert_eq!(Net::of_link(link, prefix), Net::V4(v4a));
        assert_eq!(Net::of_link(one.network.octets(), 64), Net::V6(one));
        // A deny that is newer closes the IPv6 pair again.
        let deny = Rule::new(two, one, Action::Deny, 2, "p").unwrap();
        let merged: Vec<Rule> = merge([&rules[0], &deny]).into_values().collect();
        assert!(allowed_links(&merged, &all).is_empty());
        assert_eq!(routes_for6(&rules, &one), BTreeSet::from([two]));
        assert!(routes_for6(&rules, &three).is_empty());
        assert!(routes_for(&rules, &v4a).contains(&v4b));
    }
}
