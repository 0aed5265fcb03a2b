//! Every verdict of the eBPF programs, asserted in the kernel on crafted frames through
//! BPF_PROG_TEST_RUN (see `weave_tests::programs`): the return code, the frame as the program
//! left it where it rewrites one, and exactly which counters moved, by how many bytes.
//!
//! The test host: this host is H1 (192.168.56.101) with local endpoints C1 and C3 in
//! 192.168.1.0/24 and D1 in 192.168.2.0/24; peer H2 hosts C2 (192.168.1.0/24) and D2
//! (192.168.2.0/24), peer H3 hosts C4.

mod arp;
mod container;
mod decap;
mod ipv6;
mod overlay;
mod relay;
mod underlay;

use anyhow::Result;
use weave_common::{
    OVERLAY_VNI,
    endpoint::{Config, ENCAP_EBPF, ENDPOINT_LOCAL, ENDPOINT_SERVICE, Endpoint, ipv4_key},
};
use weave_tests::programs::{Programs, require_root};

const H1: [u8; 4] = [192, 168, 56, 101];
const H2: [u8; 4] = [192, 168, 56, 102];
const H3: [u8; 4] = [192, 168, 56, 103];
const H1_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x38, 0x65];
const H2_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x38, 0x66];
const H3_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x38, 0x67];

const C1: [u8; 4] = [192, 168, 1, 10];
const C2: [u8; 4] = [192, 168, 1, 20];
const C3: [u8; 4] = [192, 168, 1, 30];
const C4: [u8; 4] = [192, 168, 1, 40];
const D1: [u8; 4] = [192, 168, 2, 10];
const D2: [u8; 4] = [192, 168, 2, 20];
/// The agent's DNS server (`ENDPOINT_SERVICE`) on this host, behind its own veth.
const SERVICE: [u8; 4] = [169, 254, 53, 53];
const SERVICE_VETH: u32 = 31;
/// No endpoint has it.
const NOBODY: [u8; 4] = [192, 168, 1, 99];

/// Host-side veths of the local endpoints (a test run only records redirect targets, so they
/// need not exist).
const C1_VETH: u32 = 11;
const C3_VETH: u32 = 13;
const D1_VETH: u32 = 21;
const VXLAN_IFINDEX: u32 = 9;
/// The underlay is loopback: bpf_check_mtu needs a device that exists in every network
/// namespace, and loopback's MTU takes any frame a test run can carry.
const UNDERLAY_IFINDEX: u32 = 1;

/// A MAC a container's neighbour cache may still hold for an address: delivery replaces it.
const STALE_MAC: [u8; 6] = [0x02, 0x57, 0xde, 0xad, 0xbe, 0xef];

fn mac(ip: [u8; 4]) -> [u8; 6] {
    weave_tests::frames::endpoint_mac(ip)
}

fn subnet_of(ip: [u8; 4]) -> [u8; 4] {
    [ip[0], ip[1], ip[2], 0]
}

fn local(ip: [u8; 4], veth: u32) -> Endpoint {
    Endpoint {
        mac: mac(ip),
        prefix_len: 24,
        flags: ENDPOINT_LOCAL,
        ifindex: veth,
        peer: 0,
        subnet: ipv4_key(subnet_of(ip)),
    }
}

fn remote(ip: [u8; 4], peer: [u8; 4]) -> Endpoint {
    Endpoint {
        mac: mac(ip),
        prefix_len: 24,
        flags: 0,
        ifindex: 0,
        peer: ipv4_key(peer),
        subnet: ipv4_key(subnet_of(ip)),
    }
}

/// H1's DNS server as the agent enters it: a local /32 of its own, flagged a service.
fn service() -> Endpoint {
    Endpoint {
        prefix_len: 32,
        flags: ENDPOINT_LOCAL | ENDPOINT_SERVICE,
        subnet: ipv4_key(SERVICE),
        ..local(SERVICE, SERVICE_VETH)
    }
}

/// H1's data-path settings with eBPF encapsulation and no XDP on the underlay.
fn config() -> Config {
    Config {
        vxlan_ifindex: VXLAN_IFINDEX,
        vni: OVERLAY_VNI,
        encap: ENCAP_EBPF,
        underlay_ifindex: UNDERLAY_IFINDEX,
        underlay_ip: ipv4_key(H1),
        underlay_xdp: 0,
        gso_decap: 0,
        underlay_mac: H1_MAC,
        vxlan_port: weave_common::VXLAN_PORT,
        flood_pps: weave_common::flood::DEFAULT_FLOOD_PPS,
    }
}

/// Host H1 with `programs` loaded, its endpoints and peers in the maps, and `config`.
fn host(programs: &[&str], config: Config) -> Result<Programs> {
    require_root();
    let mut host = Programs::load(programs)?;
    host.set_config(config)?;
    host.add_endpoint(C1, local(C1, C1_VETH))?;
    host.add_endpoint(C3, local(C3, C3_VETH))?;
    host.add_endpoint(D1, local(D1, D1_VETH))?;
    host.add_endpoint(C2, remote(C2, H2))?;
    host.add_endpoint(D2, remote(D2, H2))?;
    host.add_endpoint(C4, remote(C4, H3))?;
    host.add_peer(H2)?;
    host.add_peer(H3)?;
    Ok(host)
}

/// Checks each case, then fails once, naming every case that went wrong.
fn all_cases(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
