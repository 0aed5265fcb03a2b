//! What `run`, `attach` and `expose` are asked for, as Weave writes it: an explicit CIDR
//! (`10.32.5.7/24`, or `ip:10.32.5.7/24`), `net:CIDR` (any free address of that subnet),
//! `net:default` or nothing at all (the default subnet).

use std::{fmt, str::FromStr};

use anyhow::{Context as _, Result, bail};

use crate::net::{
    addressing::{Cidr, Cidr6},
    policy::Subnet,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRequest {
    /// This address, honoured as given (and marked used if it lies in the range).
    Explicit(Cidr),
    /// Any free address of this subnet, which must lie inside the allocation range.
    Subnet(Subnet),
    /// Any free address of the default subnet (`--ipalloc-default-subnet`).
    Default,
}

impl AddressRequest {
    /// The requests of an `attach`, comma-separated (`net:default,10.40.1.10/24`); none at
    /// all is the default subnet.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let requests: Vec<Self> = text
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::parse)
            .collect::<Result<_>>()?;
        Ok(if requests.is_empty() {
            vec![Self::Default]
        } else {
            requests
        })
    }
}

/// The requests of an `attach` that may hold IPv6 addresses beside the IPv4 ones
/// (`10.40.1.10/24,fd00:1::10/64`): the IPv4 requests, as [`AddressRequest::parse_list`]
/// reads them, and the one IPv6 address. An IPv6 address alone gives no IPv4 request at all
/// (not the default subnet's): only `attach` takes that, see [`needs_ipv4`].
pub fn parse_with_ipv6(text: &str) -> Result<(Vec<AddressRequest>, Option<Cidr6>)> {
    let mut ipv4 = Vec::new();
    let mut ipv6 = Vec::new();
    for item in text.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let bare = item.strip_prefix("ip:").unwrap_or(item);
        if bare.contains(':') && !item.starts_with("net:") {
            ipv6.push(bare.parse::<Cidr6>()?);
        } else {
            ipv4.push(item);
        }
    }
    if ipv6.len() > 1 {
        bail!("{text}: one IPv6 address per container for now");
    }
    if ipv4.is_empty()
        && let Some(alone) = ipv6.pop()
    {
        return Ok((Vec::new(), Some(alone)));
    }
    Ok((AddressRequest::parse_list(&ipv4.join(","))?, ipv6.pop()))
}

/// Refuses an IPv6 address alone where `what` (`run`, the CNI plugin) needs an IPv4 one.
pub fn needs_ipv4(what: &str, requests: &[AddressRequest], ipv6: Option<&Cidr6>) -> Result<()> {
    match ipv6 {
        Some(alone) if requests.is_empty() => bail!(
            "{what} needs an IPv4 address (or net:default) beside {alone} for now, e.g. \
             10.40.1.10/24,{alone}; `weave-agent attach` takes an IPv6 address alone"
        ),
        _ => Ok(()),
    }
}

impl FromStr for AddressRequest {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        if let Some(net) = text.strip_prefix("net:") {
            if net == "default" {
                return Ok(Self::Default);
            }
            let subnet: Subnet = net
                .parse()
                .with_context(|| format!("{text:?}: expected net:NETWORK/PREFIX or net:default"))?;
            if subnet.prefix > 30 {
                bail!(
                    "{text}: a /{} has no address to hand out besides its network and \
                     broadcast addresses; use a /30 or wider",
                    subnet.prefix
                );
            }
            return Ok(Self::Subnet(subnet));
        }
        let cidr = text.strip_prefix("ip:").unwrap_or(text);
        Ok(Self::Explicit(cidr.parse()?))
    }
}

impl fmt::Display for AddressRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Explicit(cidr) => write!(f, "{cidr}"),
            Self::Subnet(subnet) => write!(f, "net:{subnet}"),
            Self::Default => f.write_str("net:default"),
        }
    }
}

impl AddressRequest {
    /// The subnet to allocate in, given the range and default subnet; None for an explicit
    /// address. An error, naming both, if a `net:` subnet does not lie inside the range.
    pub fn subnet_in(&self, range: &Subnet, default: &Subnet) -> Result<Option<Subnet>> {
        match self {
            Self::Explicit(_) => Ok(None),
            Self::Default => Ok(Some(*default)),
            Self::Subnet(subnet) if range.contains(subnet) => Ok(Some(*subnet)),
            Self::Subnet(subnet) => bail!(
                "net:{subnet} is not inside the allocation range {range}: pick a subnet of \
                 it, or give an explicit address"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> AddressRequest {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_come_beside_ipv4_ones() {
        let (v4, v6) = parse_with_ipv6("10.40.1.10/24, fd00:1::10/64").unwrap();
        assert_eq!(
            v4,
            [AddressRequest::Explicit("10.40.1.10/24".parse().unwrap())]
        );
        assert_eq!(v6, Some("fd00:1::10/64".parse().unwrap()));
        let (v4, v6) = parse_with_ipv6("net:default,ip:fd00:1::10/64").unwrap();
        assert_eq!(v4, [AddressRequest::Default]);
        assert!(v6.is_some());
        assert_eq!(parse_with_ipv6("10.40.1.10/24").unwrap().1, None);
        let (v4, v6) = parse_with_ipv6("fd00:1::10/64").unwrap();
        assert!(
            v4.is_empty(),
            "an IPv6 address alone asks for no IPv4 address"
        );
        assert_eq!(v6.unwrap().to_string(), "fd00:1::10/64");
        let err = needs_ipv4("run", &v4, v6.as_ref()).unwrap_err().to_string();
        assert!(err.contains("needs an IPv4 address"), "{err}");
        assert!(parse_with_ipv6("10.40.1.10/24,fd00:1::10/64,fd00:1::11/64").is_err());
        assert!(parse_with_ipv6("10.40.1.10/24,fe80::10/64").is_err());
        assert!(parse_with_ipv6("10.40.1.10/24,fd00:1::10").is_err());
    }

    #[test]
    fn several_requests_come_comma_joined_and_none_is_the_default() {
        let list = AddressRequest::parse_list("net:default, 10.40.1.10/24,,").unwrap();
        assert_eq!(
            list,
            [
                AddressRequest::Default,
                AddressRequest::Explicit("10.40.1.10/24".parse().unwrap())
            ]
        );
        assert_eq!(
            AddressRequest::parse_list("").unwrap(),
            [AddressRequest::Default]
        );
        assert!(AddressRequest::parse_list("net:default,bogus").is_err());
    }

    #[test]
    fn weaves_forms_are_understood() {
        let cidr: Cidr = "10.32.5.7/24".parse().unwrap();
        assert_eq!(parsed("10.32.5.7/24"), AddressRequest::Explicit(cidr));
        assert_eq!(parsed("ip:10.32.5.7/24"), AddressRequest::Explicit(cidr));
        assert_eq!(parsed("net:default"), AddressRequest::Default);
        let subnet: Subnet = "10.32.5.0/24".parse().unwrap();
        assert_eq!(parsed("net:10.32.5.0/24"), AddressRequest::Subnet(subnet));
        for text in ["10.32.5.7/24", "net:10.32.5.0/24", "net:default"] {
            assert_eq!(parsed(text).to_string(), text);
        }
    }

    #[test]
    fn bad_forms_are_refused_naming_what_was_given() {
        for text in ["net:10.32.5.0", "net:10.32.5.4/31", "ip:10.32.5.7", "net:"] {
            let err = text.parse::<AddressRequest>().unwrap_err();
            let message = format!("{err:#}");
            assert!(
                message.contains(text.trim_start_matches("ip:")),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn a_subnet_must_lie_inside_the_range() {
        let range: Subnet = "10.32.0.0/12".parse().unwrap();
        let default = range;
        let inside = parsed("net:10.32.5.0/24");
        assert_eq!(
            inside.subnet_in(&range, &default).unwrap(),
            Some("10.32.5.0/24".parse().unwrap())
        );
        assert_eq!(
            parsed("net:default").subnet_in(&range, &default).unwrap(),
            Some(range)
        );
        let outside = parsed("net:10.50.0.0/24").subnet_in(&range, &default);
        let message = format!("{:#}", outside.unwrap_err());
        assert!(message.contains("10.50.0.0/24") && message.contains("10.32.0.0/12"));
    }
}
