//! What a CNI invocation asks for, read from the network configuration and `CNI_ARGS`, and
//! the result built from the agent's answer. Pure, so every case is tested without a runtime.
//!
//! Addresses, in order of precedence: the runtime's `ips` capability (`podman run --ip`),
//! `IP=CIDR` in `CNI_ARGS`, the `ipam` section (`"subnet": "10.32.1.0/24"` or `"default"`,
//! `"addresses"` as CIDRs, `net:` requests or the static plugin's `{"address": ...}`), and
//! otherwise the agent's default subnet.

use std::{net::IpAddr, path::PathBuf};

use ipnet::IpNet;
use rscni_plugin::{
    error::Error,
    types::{CNIResult, Dns, Interface, IpConfig, NetConf},
};
use serde_json::Value;

use crate::control::api::{CniDns, EndpointInfo};

/// The `type` of this plugin's own `ipam` section; `weave-ipam` is Weave Net's, accepted so
/// its configurations keep working.
const IPAM_TYPES: [&str; 2] = ["weave-agent", "weave-ipam"];

/// Codes of the errors that are this plugin's own (the spec keeps 100 and up for them).
pub const AGENT_REFUSED: u32 = 100;
pub const CHECK_FAILED: u32 = 101;

/// What one invocation asks the agent for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// Comma-joined address requests, as `attach` takes them; empty: the default subnet.
    pub addresses: String,
    /// The container's name for DNS (`K8S_POD_NAME` in `CNI_ARGS`).
    pub dns_name: Option<String>,
    pub mtu: Option<u32>,
    /// The agent's control socket, when the configuration names one.
    pub socket: Option<PathBuf>,
}

fn invalid(why: impl Into<String>) -> Error {
    Error::InvalidNetworkConfig(why.into())
}

/// `CNI_ARGS`: `KEY=VALUE` pairs joined by `;`.
fn cni_arg<'a>(args: Option<&'a str>, key: &str) -> Option<&'a str> {
    args?
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A CIDR given to the plugin, checked here so the error names where it came from.
fn cidr(text: &str, from: &str) -> Result<String, Error> {
    let net: ipnet::Ipv4Net = text.parse().map_err(|_| {
        invalid(format!(
            "{from} gives {text:?}: give an IPv4 address with its prefix, e.g. 10.32.1.5/24"
        ))
    })?;
    Ok(net.to_string())
}

/// An address given to the plugin: an IPv4 CIDR, or one IPv6 CIDR beside them (the agent
/// checks that there is an IPv4 one too).
fn address(text: &str, from: &str) -> Result<String, Error> {
    match text.parse::<ipnet::Ipv6Net>() {
        Ok(net) => Ok(net.to_string()),
        Err(_) => cidr(text, from),
    }
}

fn strings(value: &Value, from: &str) -> Result<Vec<String>, Error> {
    let list = value
        .as_array()
        .ok_or_else(|| invalid(format!("{from} must be a list")))?;
    list.iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            // The static IPAM plugin's shape.
            Value::Object(o) => o
                .get("address")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("an entry of {from} has no \"address\""))),
            _ => Err(invalid(format!("{from} holds {item}, not an address"))),
        })
        .collect()
}

/// The addresses the `ipam` section asks for.
fn from_ipam(conf: &NetConf) -> Result<Vec<String>, Error> {
    let Some(ipam) = &conf.ipam else {
        return Ok(Vec::new());
    };
    if !IPAM_TYPES.contains(&ipam.r#type.as_str()) {
        return Err(invalid(format!(
            "ipam type {:?} is not supported: weave-agent hands out addresses from its own \
             IPAM. Leave \"ipam\" out (the default subnet), or give {{\"type\": \
             \"weave-agent\", \"subnet\": \"10.32.1.0/24\"}}",
            ipam.r#type
        )));
    }
    let mut out = Vec::new();
    match ipam.custom.get("subnet") {
        None => {}
        Some(Value::String(s)) if s == "default" => out.push("net:default".to_owned()),
        Some(Value::String(s)) => out.push(format!("net:{}", cidr(s, "ipam.subnet")?)),
        Some(other) => return Err(invalid(format!("ipam.subnet is {other}, not a CIDR"))),
    }
    if let Some(list) = ipam.custom.get("addresses") {
        for entry in strings(list, "ipam.addresses")? {
            out.push(match entry.strip_prefix("net:") {
                Some("default") => entry.clone(),
                Some(subnet) => format!("net:{}", cidr(subnet, "ipam.addresses")?),
                None => address(&entry, "ipam.addresses")?,
            });
        }
    }
    Ok(out)
}

/// The request an ADD makes of `conf` and `CNI_ARGS`.
pub fn ask(conf: &NetConf, cni_args: Option<&str>) -> Result<Ask, Error> {
    let from_runtime = match conf
        .runtime_config
        .as_ref()
        .and_then(|rc| rc.custom.get("ips"))
    {
        Some(ips) => strings(ips, "runtimeConfig.ips")?
            .iter()
            .map(|ip| address(ip, "runtimeConfig.ips"))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let addresses = if !from_runtime.is_empty() {
        from_runtime
    } else if let Some(ip) = cni_arg(cni_args, "IP") {
        ip.split(',')
            .map(|ip| address(ip.trim(), "CNI_ARGS IP"))
            .collect::<Result<_, _>>()?
    } else {
        from_ipam(conf)?
    };
    let mtu = match conf.custom.get("mtu") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (576..=65535).contains(m))
                .ok_or_else(|| invalid(format!("mtu is {v}: give a number from 576 to 65535")))?,
        ),
    };
    let socket = match conf.custom.get("socket") {
        None => None,
        Some(Value::String(s)) => Some(PathBuf::from(s)),
        Some(other) => return Err(invalid(format!("socket is {other}, not a path"))),
    };
    Ok(Ask {
        addresses: addresses.join(","),
        dns_name: cni_arg(cni_args, "K8S_POD_NAME").map(str::to_owned),
        mtu,
        socket,
    })
}

/// The ADD result: the container's interface, its addresses and the agent's name server.
pub fn result(
    iface: &str,
    netns: &str,
    endpoints: &[EndpointInfo],
    dns: Option<&CniDns>,
) -> Result<CNIResult, Error> {
    let Some(first) = endpoints.first() else {
        return Err(Error::Custom(
            AGENT_REFUSED,
            "no address attached".to_owned(),
            "the agent attached nothing".to_owned(),
        ));
    };
    let ips = endpoints
        .iter()
        .flat_map(|ep| std::iter::once(&ep.cidr).chain(&ep.ipv6))
        .map(|cidr| {
            let address: IpNet = cidr.parse().map_err(|_| {
                Error::FailedToDecode(format!("the agent answered the address {cidr:?}"))
            })?;
            Ok(IpConfig {
                interface: Some(0),
                address,
                gateway: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(CNIResult {
        interfaces: vec![Interface {
            name: iface.to_owned(),
            mac: first.mac.clone(),
            mtu: Some(first.mtu),
            sandbox: Some(netns.to_owned()),
            socket_path: None,
            pci_id: None,
        }],
        ips,
        routes: Vec::new(),
        dns: dns.map(|d| Dns {
            nameservers: vec![IpAddr::V4(d.nameserver).to_string()],
            domain: Some(d.domain.clone()),
            search: Some(vec![d.domain.clone()]),
            options: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> NetConf {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn no_ipam_section_is_the_default_subnet() {
        let a = ask(
            &conf(r#"{"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent"}"#),
            None,
        )
        .unwrap();
        assert_eq!(a.addresses, "");
        assert_eq!((a.mtu, a.socket, a.dns_name), (None, None, None));
    }

    #[test]
    fn the_ipam_section_picks_subnets_and_addresses() {
        let c = conf(
            r#"{"cniVersion": "0.4.0", "name": "weave", "type": "weave-agent", "mtu": 1400,
                "socket": "/run/weave-agent/h1/agent.sock",
                "ipam": {"type": "weave-agent", "subnet": "10.32.1.0/24",
                         "addresses": ["10.40.0.5/24", "net:default", {"address": "10.41.0.2/16"}]}}"#,
        );
        let a = ask(
            &c,
            Some("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=x"),
        )
        .unwrap();
        assert_eq!(
            a.addresses,
            "net:10.32.1.0/24,10.40.0.5/24,net:default,10.41.0.2/16"
        );
        assert_eq!(a.mtu, Some(1400));
        assert_eq!(a.dns_name.as_deref(), Some("web"));
        assert_eq!(
            a.socket,
            Some(PathBuf::from("/run/weave-agent/h1/agent.sock"))
        );
    }

    #[test]
    fn an_ipv6_address_may_come_beside_the_ipv4_ones_but_no_ipv6_subnet() {
        let c = conf(
            r#"{"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent",
                "runtimeConfig": {"ips": ["10.32.0.9/12", "fd00:1::9/64"]}}"#,
        );
        assert_eq!(
            ask(&c, None).unwrap().addresses,
            "10.32.0.9/12,fd00:1::9/64"
        );
        let c = conf(
            r#"{"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent",
                "ipam": {"type": "weave-agent", "addresses": ["net:default", "fd00:1::9/64"]}}"#,
        );
        assert_eq!(ask(&c, None).unwrap().addresses, "net:default,fd00:1::9/64");
        // The agent allocates IPv4 addresses only.
        let c = conf(
            r#"{"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent",
                "ipam": {"type": "weave-agent", "subnet": "fd00:1::/64"}}"#,
        );
        assert!(ask(&c, None).is_err());
    }

    #[test]
    fn the_runtime_and_cni_args_override_the_ipam_section() {
        let c = conf(
            r#"{"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent",
                "ipam": {"type": "weave-agent", "subnet": "default"},
                "runtimeConfig": {"ips": ["10.32.0.9/12"]}}"#,
        );
        assert_eq!(
            ask(&c, Some("IP=10.32.0.8/12")).unwrap().addresses,
            "10.32.0.9/12"
        );
        let c = conf(
            r#"{"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent",
                "ipam": {"type": "weave-agent", "subnet": "default"}}"#,
        );
        assert_eq!(
            ask(&c, Some("IP=10.32.0.8/12")).unwrap().addresses,
            "10.32.0.8/12"
        );
        assert_eq!(ask(&c, None).unwrap().addresses, "net:default");
    }

    #[test]
    fn what_cannot_be_served_is_an_invalid_config_naming_it() {
        for (json, args, names) in [
            (
                r#"{"cniVersion": "1.0.0", "name": "w", "type": "weave-agent",
                    "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}}"#,
                None,
                "host-local",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "w", "type": "weave-agent",
                    "ipam": {"type": "weave-agent", "subnet": "10.1.0.0"}}"#,
                None,
                "ipam.subnet",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "w", "type": "weave-agent", "mtu": 70000}"#,
                None,
                "mtu",
            ),
            (
                r#"{"cniVersion": "1.0.0", "name": "w", "type": "weave-agent"}"#,
                Some("IP=10.32.0.8"),
                "CNI_ARGS IP",
            ),
        ] {
            let err = ask(&conf(json), args).unwrap_err();
            assert!(matches!(err, Error::InvalidNetworkConfig(_)), "{err:?}");
            assert!(err.to_string().contains(names), "{err}");
        }
    }

    #[test]
    fn the_result_names_the_interface_its_addresses_and_the_name_server() {
        let ep = EndpointInfo {
            container: "cni:abc".into(),
            mac: "7e:0a:20:00:00:01".into(),
            cidr: "10.32.0.1/12".into(),
            host_veth: "vethwe0a200001".into(),
            mtu: 1410,
            forwards: Vec::new(),
            expose: None,
            dns_name: None,
            ipv6: Some("fd00:1::1/64".into()),
        };
        let dns = CniDns {
            nameserver: "169.254.53.53".parse().unwrap(),
            domain: "weave.local.".into(),
        };
        let r = result("eth0", "/run/netns/c", &[ep], Some(&dns)).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["interfaces"][0]["name"], "eth0");
        assert_eq!(json["interfaces"][0]["mac"], "7e:0a:20:00:00:01");
        assert_eq!(json["interfaces"][0]["sandbox"], "/run/netns/c");
        assert_eq!(json["ips"][0]["address"], "10.32.0.1/12");
        assert_eq!(json["ips"][0]["interface"], 0);
        assert_eq!(json["ips"][1]["address"], "fd00:1::1/64");
        assert_eq!(json["ips"][1]["interface"], 0);
        assert_eq!(json["dns"]["nameservers"][0], "169.254.53.53");
        assert!(result("eth0", "/run/netns/c", &[], None).is_err());
    }
}
