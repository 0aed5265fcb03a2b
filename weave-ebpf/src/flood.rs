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
    flood::{FLOOD_LOCAL, FLOOD_REMOTE, FloodKey, FloodSet, Kind, admit_at_rate, kind},
};

use crate::{
    counters::count,
    headers::{EthHdr, Ipv4Hdr},
    maps::{WEAVE_FLOOD, WEAVE_FLOOD_RT, crypto_path, endpoint, must_seal, peer_route},
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
    let kind =
        kind(&eth.dst, ip.dst, src.subnet, src.prefix_len).ok_or(CounterId::DropNotIpv4Unicast)?;
    within_rate(src.ifindex, cfg.flood_pps)?;
    let len = u64::from(ctx.len());
    if let Some(set) = members(src) {
        copy_here(ctx, set, src.ifindex, kind, len);
        copy_to_peers(ctx, set, kind, cfg, len);
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

/// One copy through the VXLAN device to each peer with members that is reached directly and
/// in clear. A relay would take a group frame for its own (it has no destination endpoint to
/// send it on to), and the sealed path carries what the agent seals frame by frame: neither
/// gets copies, and each copy left out is counted.
#[inline(always)]
fn copy_to_peers(ctx: &TcContext, set: *const FloodSet, kind: Kind, cfg: &Config, len: u64) {
    let sent = match kind {
        Kind::Broadcast => CounterId::BroadcastRemoteSent,
        Kind::Multicast => CounterId::MulticastRemoteSent,
    };
    if cfg.vxlan_ifindex == 0 {
        return;
    }
    let crypto = crypto_path();
    // SAFETY: as in copy_here.
    let n = unsafe { (*set).remote_count } as usize;
    for i in 0..FLOOD_REMOTE {
        if i >= n {
            break;
        }
        // SAFETY: as in copy_here; `i` is within the array.
        let peer = unsafe { (*set).remote[i] };
        let Some(route) = peer_route(peer) else {
            continue;
        };
        if (route.next_hop != 0 && route.next_hop != peer) || must_seal(&crypto, peer) {
            count(CounterId::DropFloodNotDirect, len);
            continue;
        }
        // SAFETY: a zeroed tunnel key is valid.
        let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
        key.tunnel_id = cfg.vni;
        // The helper takes the remote address in host byte order.
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be(peer);
        key.tunnel_ttl = TUNNEL_TTL;
        // SAFETY: the skb pointer is the program's context, the key a local of the size
        // given. The device builds the copy's headers as the copy is sent, before the next
        // key replaces this one.
        let done = unsafe {
            bpf_skb_set_tunnel_key(
                ctx.skb.skb,
                &mut key,
                core::mem::size_of::<bpf_tunnel_key>() as u32,
                u64::from(BPF_F_ZERO_CSUM_TX),
            ) == 0
                && bpf_clone_redirect(ctx.skb.skb, cfg.vxlan_ifindex, 0) == 0
        };
        count(
            if done {
                sent
            } else {
                CounterId::DropRedirectFailed
            },
            len,
        );
    }
}
