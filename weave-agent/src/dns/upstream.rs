//! The host's own resolvers, where names outside the zone go: those of the resolv.conf that
//! the processes of the agent's network namespace see (`ip netns exec HOST` binds
//! `/etc/netns/HOST/resolv.conf` over `/etc/resolv.conf`), unless `launch --dns-upstream`
//! names them.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result};

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` lines of a resolv.conf, as UDP addresses on port 53. IPv6 servers are
/// kept: the forwarding socket is dual-stack only where the host is, so unreachable ones
/// simply time out and the next is asked.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scope (fe80::1%eth0) is not an address std parses; such servers are skipped.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// `--dns-upstream ADDR[,ADDR]`: addresses, each with an optional port.
pub fn parse_list(list: &str) -> Result<Vec<SocketAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .with_context(|| {
                    format!(
                        "{s:?} is not a resolver address: expected IP or IP:PORT, e.g. 10.0.0.2"
                    )
                })
        })
        .collect()
}

/// The resolvers of this namespace's resolv.conf; none if it is missing.
pub fn from_host() -> Vec<SocketAddr> {
    std::fs::read_to_string(RESOLV_CONF)
        .map(|text| nameservers(&text))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read_and_the_rest_ignored() {
        let text = "# generated\nsearch corp.example\nnameserver 10.0.0.2\nnameserver  ::1\n\
                    nameserver fe80::1%eth0\noptions ndots:2\nnameserver bogus\n";
        let found: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(found, ["10.0.0.2:53", "[::1]:53"]);
    }

    #[test]
    fn upstream_lists_take_ports_or_default_to_53() {
        let list = parse_list("10.0.0.2, 10.0.0.3:5353").unwrap();
        let found: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(found, ["10.0.0.2:53", "10.0.0.3:5353"]);
        assert!(parse_list("10.0.0.2,resolver").is_err());
    }
}
