//! Broadcast and multicast inside a subnet, copied in the kernel (see `weave_common::flood`):
//! from the sending endpoint's veth to every other member here and once to each peer with
//! members, and from a peer's copy to every member here. `bpf_clone_redirect` sends each copy
//! at once and leaves the frame as it was for the next; the original then goes no further.

use aya_ebpf::{
    bindings::{BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::generated::{bpf_clone_redirect, bpf_ktime_get_ns, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use weave_common::{
    counters::CounterId,
    endpoint::{Config, Endpoint, ipv4_key},
    flood::{FLOOD_LOCAL, FLOOD_REMOTE, FloodKey, FloodSet, Kind, admit_at_rate, group_mac, kind},
    seal::marked_mac,
};

use crate::{
    counters::count,
    headers::{ETH_LEN, EthHdr, Ipv4Hdr, is_gso, ptr_at},
    maps::{
        WEAVE_FLOOD, WEAVE_FLOOD_RT, crypto_device, crypto_path, endpoint, must_seal, peer_route,
    },
};

/// Outer TTL of the copies sent to other hosts, as for unicast.
const TUNNEL_TTL: u8 = 64;

/// Copies the frame that the local endpoint `src` sent to the group destination of `eth` and
/// `ip`: to every other member of its subnet here and to each peer with members. The kind's
/// `*_sent` counter, or why nothing was copied.
#[inline(always)]
pub(crate) fn from_endpoint(
    ctx: &TcContext,
    src: &Endpoint,
    eth: &EthHdr,
    ip: &Ipv4Hdr,
    cfg: &Config,
) -> Result<CounterId, CounterId> {
    // Read now: the copies invalidate every packet pointer, and a reference lets the compiler
    // put the read off until after them, which the verifier refuses.
    // SAFETY: a valid reference.
    let group: [u8; 6] = unsafe { core::ptr::read_volatile(&eth.dst) };
    let kind =
        kind(&group, ip.dst, src.subnet, src.prefix_len).ok_or(CounterId::DropNotIpv4Unicast)?;
    within_rate(src.ifindex, cfg.flood_pps)?;
    let len = u64::from(ctx.len());
    if let Some(set) = members(src) {
        copy_here(ctx, set, src.ifindex, kind, len);
        copy_to_peers(ctx, set, kind, group, cfg, len);
    }
    Ok(match kind {
        Kind::Broadcast => CounterId::BroadcastSent,
        Kind::Multicast => CounterId::MulticastSent,
    })
}

/// Copies a group frame that the live peer `origin` sent to every member here of its
/// sender's subnet. None when the frame is not a group frame (unicast goes its own way); else
/// the kind's `*_received` counter, or the drop reason: the sender must be an endpoint that
/// peer holds, with its MAC, and the destination its own subnet's broadcast or a group.
#[inline(always)]
pub(crate) fn from_peer(
    ctx: &TcContext,
    eth: &EthHdr,
    ip: &Ipv4Hdr,
    room: u32,
    gso: bool,
    origin: u32,
) -> Option<Result<CounterId, CounterId>> {
    if eth.dst[0] & 1 == 0 {
        return None;
    }
    Some(copy_from_peer(ctx, eth, ip, room, gso, origin))
}

#[inline(always)]
fn copy_from_peer(
    ctx: &TcContext,
    eth: &EthHdr,
    ip: &Ipv4Hdr,
    room: u32,
    gso: bool,
    origin: u32,
) -> Result<CounterId, CounterId> {
    if eth.proto() != crate::headers::ETH_P_IP {
        return Err(CounterId::DropNotIpv4Unicast);
    }
    if !ip.is_sane(room, gso) {
        return Err(CounterId::DropMalformed);
    }
    let src = endpoint(ipv4_key(ip.src)).ok_or(CounterId::DropOverlayUnknownSrc)?;
    if src.is_local() || src.peer != origin || src.mac != eth.src {
        return Err(CounterId::DropOverlaySpoofed);
    }
    let kind =
        kind(&eth.dst, ip.dst, src.subnet, src.prefix_len).ok_or(CounterId::DropNotIpv4Unicast)?;
    if let Some(set) = members(&src) {
        copy_here(ctx, set, 0, kind, u64::from(ctx.len()));
    }
    Ok(match kind {
        Kind::Broadcast => CounterId::BroadcastReceived,
        Kind::Multicast => CounterId::MulticastReceived,
    })
}

/// Who gets copies of what `ep`'s subnet floods.
#[inline(always)]
fn members(ep: &Endpoint) -> Option<*const FloodSet> {
    let key = FloodKey {
        subnet: ep.subnet,
        prefix_len: u32::from(ep.prefix_len),
    };
    WEAVE_FLOOD.get_ptr(&key)
}

/// Lets the frame through if the endpoint behind `ifindex` is within its rate, and moves its
/// clock on. Two CPUs racing on one endpoint's clock may both pass a frame: the limit is
/// approximate by one frame per CPU, which a flood does not notice.
#[inline(always)]
fn within_rate(ifindex: u32, pps: u32) -> Result<(), CounterId> {
    if pps == 0 {
        return Ok(());
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out at once.
    let next = unsafe { WEAVE_FLOOD_RT.get(&ifindex).copied() }.unwrap_or(0);
    let next = admit_at_rate(next, now, pps).ok_or(CounterId::DropRateLimited)?;
    // A full map only forgets a clock, which lets one burst through again.
    let _ = WEAVE_FLOOD_RT.insert(&ifindex, &next, 0);
    Ok(())
}

/// One copy out of each member veth here but `except` (the sender's).
#[inline(always)]
fn copy_here(ctx: &TcContext, set: *const FloodSet, except: u32, kind: Kind, len: u64) {
    let delivered = match kind {
        Kind::Broadcast => CounterId::BroadcastDelivered,
        Kind::Multicast => CounterId::MulticastDelivered,
    };
    // SAFETY: the pointer comes from a successful lookup; map values stay put while the
    // program runs, and the agent replaces them whole.
    let n = unsafe { (*set).local_count } as usize;
    for i in 0..FLOOD_LOCAL {
        if i >= n {
            break;
        }
        // SAFETY: as above; `i` is within the array.
        let ifindex = unsafe { (*set).local[i] };
        if ifindex == 0 || ifindex == except {
            continue;
        }
        // Egress of the host-side veth: the copy arrives in the member's namespace (or, for
        // an exposed address, on the host's side).
        // SAFETY: the skb pointer is the program's context; no flags.
        if unsafe { bpf_clone_redirect(ctx.skb.skb, ifindex, 0) } == 0 {
            count(delivered, len);
        } else {
            count(CounterId::DropRedirectFailed, len);
        }
    }
}

/// One copy to each peer with members: through the VXLAN device to one reached directly and
/// in clear, through the agent's crypto device (marked with the peer, as a unicast frame to
/// seal is) to one whose traffic is sealed, relayed or not (the seal is end to end). A plain
/// copy for a relayed peer is not sent: the relay would take a group frame for its own, having
/// no destination endpoint to send it on to. Each copy left out is counted. `group`: the
/// frame's destination MAC, put back after each sealed copy.
#[inline(always)]
fn copy_to_peers(
    ctx: &TcContext,
    set: *const FloodSet,
    kind: Kind,
    group: [u8; 6],
    cfg: &Config,
    len: u64,
) {
    let sent = match kind {
        Kind::Broadcast => CounterId::BroadcastRemoteSent,
        Kind::Multicast => CounterId::MulticastRemoteSent,
    };
    let crypto = crypto_path();
    let device = crypto_device(&crypto).unwrap_or(0);
    // SAFETY: a zeroed tunnel key is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = cfg.vni;
    key.tunnel_ttl = TUNNEL_TTL;
    // SAFETY: as in copy_here.
    let n = unsafe { (*set).remote_count } as usize;
    for i in 0..FLOOD_REMOTE {
        if i >= n {
            break;
        }
        // SAFETY: as in copy_here; `i` is within the array.
        let peer = unsafe { (*set).remote[i] };
        // One count per copy, whichever way it went: every way then ends in the same state,
        // which keeps what the verifier walks linear in the peers.
        if let Some(outcome) = copy_to_peer(ctx, peer, group, &crypto, device, cfg, &mut key) {
            count(outcome.map_or_else(|reason| reason, |()| sent), len);
        }
    }
}

/// The copy for one `peer` (see [`copy_to_peers`]): None for a peer that is not live (it
/// gets none), else Ok or the reason it was not sent. `key`: the tunnel key, its remote
/// address written here.
#[inline(always)]
fn copy_to_peer(
    ctx: &TcContext,
    peer: u32,
    group: [u8; 6],
    crypto: &weave_common::seal::CryptoPath,
    device: u32,
    cfg: &Config,
    key: &mut bpf_tunnel_key,
) -> Option<Result<(), CounterId>> {
    let route = peer_route(peer)?;
    if must_seal(crypto, peer) {
        return Some(copy_sealed(ctx, peer, group, device));
    }
    if route.next_hop != 0 && route.next_hop != peer {
        return Some(Err(CounterId::DropFloodNotDirect));
    }
    if cfg.vxlan_ifindex == 0 {
        return Some(Err(CounterId::DropNoTunnel));
    }
    // The helper takes the remote address in host byte order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(peer);
    // SAFETY: the skb pointer is the program's context, the key a local of the size given.
    // The device builds the copy's headers as the copy is sent, before the next key replaces
    // this one.
    let done = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            u64::from(BPF_F_ZERO_CSUM_TX),
        ) == 0
            && bpf_clone_redirect(ctx.skb.skb, cfg.vxlan_ifindex, 0) == 0
    };
    Some(if done {
        Ok(())
    } else {
        Err(CounterId::DropRedirectFailed)
    })
}

/// One copy for `peer` to the agent's crypto `device`, the frame's destination MAC marked
/// with the peer for the time of the copy. Fail closed: no device (0), no copy.
#[inline(always)]
fn copy_sealed(ctx: &TcContext, peer: u32, group: [u8; 6], device: u32) -> Result<(), CounterId> {
    if device == 0 {
        return Err(CounterId::DropNoSession);
    }
    let refused = |_| CounterId::DropKernelRefused;
    ctx.store(0, &marked_mac(peer), 0).map_err(refused)?;
    // SAFETY: the skb pointer is the program's context; no flags.
    let done = unsafe { bpf_clone_redirect(ctx.skb.skb, device, 0) } == 0;
    ctx.store(0, &group, 0).map_err(refused)?;
    if done {
        Ok(())
    } else {
        Err(CounterId::DropRedirectFailed)
    }
}

/// A frame the agent opened from the peer `origin` (its destination MAC marks that peer): if
/// it is for a group of its sender's subnet, it gets the group MAC back and is copied to the
/// members here. None for unicast, and for a sender that is not known (left to the unicast
/// checks, which drop and count it).
#[inline(always)]
pub(crate) fn opened_from_peer(
    ctx: &TcContext,
    origin: u32,
) -> Option<Result<CounterId, CounterId>> {
    let dst: [u8; 4] = ctx.load(ETH_LEN + 16).ok()?;
    let src: [u8; 4] = ctx.load(ETH_LEN + 12).ok()?;
    let sender = endpoint(ipv4_key(src))?;
    let mac = group_mac(dst, sender.subnet, sender.prefix_len)?;
    if ctx.store(0, &mac, 0).is_err() {
        return Some(Err(CounterId::DropKernelRefused));
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth = ptr_at::<EthHdr>(start, end, 0)?;
    let ip = ptr_at::<Ipv4Hdr>(start, end, ETH_LEN)?;
    let room = ctx.len() - ETH_LEN as u32;
    // SAFETY: ptr_at checked both headers lie inside the packet.
    unsafe { from_peer(ctx, &*eth, &*ip, room, is_gso(ctx), origin) }
}
