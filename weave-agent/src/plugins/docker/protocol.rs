//! libnetwork's remote network driver and remote IPAM driver protocols: the requests Docker
//! POSTs to `/<Interface>.<Method>` and the answers it expects (field names as Docker's Go
//! structs spell them). Pure, so every shape is tested without an engine.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// The interface name prefix Docker gives the moved veth end: Docker appends a counter, so
/// the container sees `ethwe0`.
pub const DST_PREFIX: &str = "ethwe";
/// The address spaces this IPAM driver answers `GetDefaultAddressSpaces` with.
pub const LOCAL_SPACE: &str = "weavelocal";
pub const GLOBAL_SPACE: &str = "weaveglobal";
/// What `RequestAddress` carries in its options when Docker asks for a network's gateway.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceRequest {
    #[serde(default)]
    pub address: String,
    #[serde(default, rename = "AddressIPv6")]
    pub address_ipv6: String,
    #[serde(default)]
    pub mac_address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<InterfaceRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub sub_pool: String,
    #[serde(default, rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub options: Option<BTreeMap<String, Value>>,
}

impl RequestAddress {
    pub fn is_gateway(&self) -> bool {
        self.options
            .as_ref()
            .and_then(|o| o.get("RequestAddressType"))
            .and_then(Value::as_str)
            == Some(GATEWAY_REQUEST)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

/// The answer to `Plugin.Activate`.
pub fn activate() -> Value {
    serde_json::json!({ "Implements": ["NetworkDriver", "IpamDriver"] })
}

/// `NetworkDriver.GetCapabilities`: one engine's networks, no cluster store.
pub fn network_capabilities() -> Value {
    serde_json::json!({ "Scope": "local", "ConnectivityScope": "global" })
}

/// `CreateEndpoint`'s answer: the MAC the agent derives from the address, unless Docker set
/// one already (it refuses an answer that changes what it gave).
pub fn created_endpoint(requested_mac: &str, mac: &str) -> Value {
    if requested_mac.is_empty() {
        serde_json::json!({ "Interface": { "MacAddress": mac } })
    } else {
        serde_json::json!({ "Interface": {} })
    }
}

/// `Join`'s answer: the veth end for Docker to move in as `ethwe0`, the route to the agent's
/// name server, and no gateway: the overlay is the container's only network through this
/// driver (no docker_gwbridge).
pub fn joined(src_name: &str, dns_server: Option<std::net::Ipv4Addr>) -> Value {
    // RouteType 1: on-link through the interface. Multicast crosses the overlay, as a
    // container `run` or `attach` gives it.
    let routes: Vec<Value> = dns_server
        .map(|ip| serde_json::json!({ "Destination": format!("{ip}/32"), "RouteType": 1 }))
        .into_iter()
        .chain([serde_json::json!({ "Destination": "224.0.0.0/4", "RouteType": 1 })])
        .collect();
    serde_json::json!({
        "InterfaceName": { "SrcName": src_name, "DstPrefix": DST_PREFIX },
        "StaticRoutes": routes,
        "DisableGatewayService": true,
    })
}

/// An error as Docker reads it from a non-200 answer.
pub fn error(message: &str) -> Value {
    serde_json::json!({ "Err": message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_as_docker_sends_them() {
        let ce: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"n1","EndpointID":"e1","Options":{"com.docker.network.endpoint.exposedports":[]},
                "Interface":{"Address":"10.32.1.2/24","AddressIPv6":"","MacAddress":""}}"#,
        )
        .unwrap();
        assert_eq!(ce.interface.unwrap().address, "10.32.1.2/24");
        let join: Join = serde_json::from_str(
            r#"{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/abc","Options":null}"#,
        )
        .unwrap();
        assert_eq!(join.sandbox_key, "/var/run/docker/netns/abc");
        let gw: RequestAddress = serde_json::from_str(
            r#"{"PoolID":"10.32.1.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert!(gw.is_gateway());
        let ep: RequestAddress =
            serde_json::from_str(r#"{"PoolID":"10.32.1.0/24","Address":"","Options":null}"#)
                .unwrap();
        assert!(!ep.is_gateway());
        let pool: RequestPool = serde_json::from_str(
            r#"{"AddressSpace":"weavelocal","Pool":"","SubPool":"","Options":null,"V6":false}"#,
        )
        .unwrap();
        assert!(pool.pool.is_empty() && !pool.v6);
    }

    #[test]
    fn answers_have_the_shapes_docker_reads() {
        assert_eq!(
            created_endpoint("", "7e:0a:20:01:00:02")["Interface"]["MacAddress"],
            "7e:0a:20:01:00:02"
        );
        assert_eq!(
            created_endpoint("02:42:00:00:00:01", "7e:0a:20:01:00:02"),
            serde_json::json!({"Interface": {}}),
            "Docker refuses an answer that changes the MAC it set"
        );
        let j = joined("vwd0a200102", Some("169.254.53.53".parse().unwrap()));
        assert_eq!(j["InterfaceName"]["SrcName"], "vwd0a200102");
        assert_eq!(j["InterfaceName"]["DstPrefix"], "ethwe");
        assert_eq!(j["StaticRoutes"][0]["Destination"], "169.254.53.53/32");
        assert_eq!(j["StaticRoutes"][1]["Destination"], "224.0.0.0/4");
        assert_eq!(j["StaticRoutes"][0]["RouteType"], 1);
        assert_eq!(activate()["Implements"][1], "IpamDriver");
    }
}
