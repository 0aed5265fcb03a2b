//! The maps the agent fills; layouts from `weave_common`. All pinned by name so forwarding
//! survives agent restarts.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
};
use weave_common::{
    endpoint::{
        Config, Endpoint, Heard, Ipv4Key, OverlaySubnet, PeerRoute, endpoint_mac_address, ipv4_key,
    },
    flood::{FloodKey, FloodSet},
    ipv6::{Endpoint6, Ipv6Key},
    policy::{LinkPair, POLICY_CAPACITY, SubnetPair},
    seal::CryptoPath,
};

/// Container addresses, local and remote.
#[map]
pub(crate) static WEAVE_ENDPOINTS: HashMap<Ipv4Key, Endpoint> = HashMap::pinned(65_536, 0);

/// Live peers by underlay address, and where their frames go.
#[map]
pub(crate) static WEAVE_PEERS: HashMap<Ipv4Key, PeerRoute> = HashMap::pinned(4_096, 0);

/// What each peer's hellos showed: when the last arrived, and the largest of the window.
#[map]
pub(crate) static WEAVE_HEARD: HashMap<Ipv4Key, Heard> = HashMap::pinned(4_096, 0);

/// Cross-subnet directions the isolation rules allow.
#[map]
pub(crate) static WEAVE_POLICY: HashMap<SubnetPair, u8> = HashMap::pinned(POLICY_CAPACITY, 0);

/// Directions between different IPv6 links the isolation rules allow.
#[map]
pub(crate) static WEAVE_POLICY6: HashMap<LinkPair, u8> = HashMap::pinned(POLICY_CAPACITY, 0);

#[map]
pub(crate) static WEAVE_CONFIG: Array<Config> = Array::pinned(1, 0);

/// Whether frames must be sealed, and the agent's device that seals and opens them.
#[map]
pub(crate) static WEAVE_CRYPTO: Array<CryptoPath> = Array::pinned(1, 0);

/// Every overlay subnet in the mesh, with this host's exposed address in it.
#[map]
pub(crate) static WEAVE_SUBNETS: LpmTrie<Ipv4Key, OverlaySubnet> = LpmTrie::pinned(4_096, 0);

/// Who gets a copy of each subnet's broadcast and multicast frames.
#[map]
pub(crate) static WEAVE_FLOOD: HashMap<FloodKey, FloodSet> = HashMap::pinned(4_096, 0);

/// Each local endpoint's rate clock for broadcast and multicast (see
/// `weave_common::flood::admit_at_rate`); LRU, so endpoints long gone make room.
#[map]
pub(crate) static WEAVE_FLOOD_RT: LruHashMap<u32, u64> = LruHashMap::pinned(65_536, 0);

/// Every endpoint's IPv6 addresses, link-local ones included, local and remote.
#[map]
pub(crate) static WEAVE_ENDPTS6: HashMap<Ipv6Key, Endpoint6> = HashMap::pinned(65_536, 0);

/// A copy of the endpoint with IPv6 address `key`, if any.
#[inline(always)]
pub(crate) fn endpoint6(key: &Ipv6Key) -> Option<Endpoint6> {
    // SAFETY: copied out at once; the agent replaces entries whole.
    unsafe { WEAVE_ENDPTS6.get(key).copied() }
}

/// The address `ip` lies inside some overlay subnet (attached or not).
#[inline(always)]
pub(crate) fn in_overlay(ip: Ipv4Key) -> bool {
    WEAVE_SUBNETS.get(Key::new(32, ip)).is_some()
}

/// This host's exposed endpoint in `ep`'s subnet, if it exposes one: where a frame from `ep`
/// for a destination outside the overlay goes.
#[inline(always)]
pub(crate) fn exposed_here(ep: &Endpoint) -> Option<Endpoint> {
    let subnet = WEAVE_SUBNETS.get(Key::new(u32::from(ep.prefix_len), ep.subnet))?;
    let exposed = endpoint(subnet.exposed_here)?;
    (exposed.is_local() && exposed.exposed()).then_some(exposed)
}

/// The exposed endpoint whose MAC `mac` is, for a frame with an address outside the overlay
/// (`ip`): the gateway a container routed it through, or the exposed address a machine
/// outside came in behind. None for an address inside the overlay: that one must be an
/// endpoint's own.
#[inline(always)]
pub(crate) fn exposed_behind(mac: &[u8; 6], ip: [u8; 4]) -> Option<Endpoint> {
    if in_overlay(ipv4_key(ip)) {
        return None;
    }
    let ep = endpoint(ipv4_key(endpoint_mac_address(mac)?))?;
    (ep.exposed() && ep.mac == *mac).then_some(ep)
}

/// A copy of the endpoint with address `key`, if any.
#[inline(always)]
pub(crate) fn endpoint(key: Ipv4Key) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; the agent replaces entries whole, so a
    // concurrent update yields either the old or the new endpoint.
    unsafe { WEAVE_ENDPOINTS.get(&key).copied() }
}

#[inline(always)]
pub(crate) fn is_peer(key: Ipv4Key) -> bool {
    // SAFETY: only presence is checked.
    unsafe { WEAVE_PEERS.get(&key).is_some() }
}

/// How to reach the live peer at underlay address `key`, if it is one.
#[inline(always)]
pub(crate) fn peer_route(key: Ipv4Key) -> Option<PeerRoute> {
    // SAFETY: the value is copied out at once; the agent replaces entries whole.
    unsafe { WEAVE_PEERS.get(&key).copied() }
}

/// Where to send frames for the host at underlay address `peer`, and the path MTU towards it
/// (0: not learned): its next hop, or the host itself when it is not a live peer (yet), as
/// before relaying existed.
#[inline(always)]
pub(crate) fn next_hop(peer: Ipv4Key) -> (Ipv4Key, u16) {
    match peer_route(peer) {
        Some(route) if route.next_hop != 0 => (route.next_hop, route.mtu),
        Some(route) => (peer, route.mtu),
        None => (peer, 0),
    }
}

/// Notes that a link hello of IPv4 total length `len` from `peer` arrived now.
#[inline(always)]
pub(crate) fn heard(peer: Ipv4Key, len: u32) {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // SAFETY: copied out at once; only this program writes the map (per peer, the rare race
    // between two CPUs loses one hello's news, which the next one brings).
    let before = unsafe { WEAVE_HEARD.get(&peer).copied() }.unwrap_or_default();
    // A full map only loses the news of a new peer, which the agent cleans up after.
    let _ = WEAVE_HEARD.insert(&peer, &before.after(len, now), 0);
}

#[inline(always)]
pub(crate) fn crypto_path() -> CryptoPath {
    WEAVE_CRYPTO.get(0).copied().unwrap_or_default()
}

/// Frames to and from the peer at underlay address `peer` must be sealed: the mesh has a
/// password and the peer is not one both hosts trust the path to (an unknown peer is not).
#[inline(always)]
pub(crate) fn must_seal(crypto: &CryptoPath, peer: Ipv4Key) -> bool {
    crypto.seal != 0 && !peer_route(peer).is_some_and(|route| route.plain())
}

/// The agent's crypto device, if the agent is reading it now.
#[inline(always)]
pub(crate) fn crypto_device(crypto: &CryptoPath) -> Option<u32> {
    // SAFETY: the helper has no preconditions.
    crypto.device(unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() })
}

#[inline(always)]
pub(crate) fn config() -> Config {
    WEAVE_CONFIG.get(0).copied().unwrap_or_default()
}

/// `src` may send to `dst`: same subnet, a local endpoint and the agent's service, or an
/// isolation rule allows the pair.
#[inline(always)]
pub(crate) fn may_talk(src: &Endpoint, dst: &Endpoint) -> bool {
    // SAFETY: only presence is checked.
    src.same_subnet(dst)
        || src.local_service_pair(dst)
        || unsafe { WEAVE_POLICY.get(&SubnetPair::between(src, dst)).is_some() }
}

/// Whether IPv6 traffic from `src` to `dst` is allowed: one link, or a rule opened the pair.
#[inline(always)]
pub(crate) fn may_talk6(src: &Endpoint6, dst: &Endpoint6) -> bool {
    // SAFETY: only presence is checked.
    src.same_link(dst) || unsafe { WEAVE_POLICY6.get(&LinkPair::between(src, dst)).is_some() }
}
