//! Broadcast and multicast inside a subnet, copied in the kernel (see `weave_common::flood`):
//! from the sending endpoint's veth to every other member here and once to each peer with
//! members, and from a peer's copy to every member here. `bpf_clone_redirect` sends each copy
//! at once and leaves the frame as it was for the next; the original then goes no further.

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::generated::{
        bpf_clone_redirect, bpf_ktime_get_ns, bpf_skb_set_tunnel_key, bpf_skb_store_bytes,
    },
    macros::map,
    maps::PerCpuArray,
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
        WEAVE_CONFIG, WEAVE_CRYPTO, WEAVE_FLOOD, WEAVE_FLOOD_RT, crypto_device, endpoint,
        must_seal, peer_route,
    },
};

/// Outer TTL of the copies sent to other hosts, as for unicast.
const TUNNEL_TTL: u8 = 64;

/// Where a copy's tunnel key is built: off the stack, which the caller's frame and the copy's
/// must share within BPF's 512 bytes. Scratch, never read by the agent, so not pinned.
#[map]
static FLOOD_KEY: PerCpuArray<bpf_tunnel_key> = PerCpuArray::with_max_entries(1, 0);

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
        copy_to_peers(ctx, set, kind, group, len);
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

/// One copy to each peer with members: through the VXLAN device to one in clear (to the
/// relay towards it, the copy's inner MAC naming it, where it is not reached directly), through
/// the agent's crypto device (marked with the peer, as a unicast frame to seal is) to one whose
/// traffic is sealed (relayed or not: the seal is end to end). Each copy that could not be sent
/// is counted. `group`: the frame's destination MAC, put back after each marked copy.
#[inline(always)]
fn copy_to_peers(ctx: &TcContext, set: *const FloodSet, kind: Kind, group: [u8; 6], len: u64) {
    let multicast = u32::from(kind == Kind::Multicast);
    let group = mac_word(group);
    // SAFETY: as in copy_here.
    let n = unsafe { (*set).remote_count } as usize;
    for i in 0..FLOOD_REMOTE {
        if i >= n {
            break;
        }
        // SAFETY: as in copy_here; `i` is within the array.
        let peer = unsafe { (*set).remote[i] };
        copy_counted(ctx.skb.skb, peer, group, multicast, len);
    }
}

/// One peer's copy, counted: a function of its own, not inlined, because the ways a copy can
/// go differ in what they leave on the stack; in a subprogram that goes with its frame, every
/// way returns to the loop in the same state, and the verifier walks the loop once per peer
/// instead of once per combination of ways. Scalars only, five at most: a BPF call's limits.
#[inline(never)]
fn copy_counted(skb: *mut __sk_buff, peer: u32, group: u64, multicast: u32, len: u64) {
    let ctx = TcContext::new(skb);
    let sent = if multicast != 0 {
        CounterId::MulticastRemoteSent
    } else {
        CounterId::BroadcastRemoteSent
    };
    // The map values are read in place: the two frames together must fit BPF's 512 bytes of
    // stack, and the caller's takes most.
    let (vni, vxlan) = WEAVE_CONFIG
        .get(0)
        .map_or((0, 0), |c| (c.vni, c.vxlan_ifindex));
    let crypto = WEAVE_CRYPTO.get(0);
    let sealed = crypto.is_some_and(|c| must_seal(c, peer));
    let device = crypto.and_then(crypto_device).unwrap_or(0);
    let way = if sealed {
        Some(copy_sealed(&ctx, peer, group, device))
    } else {
        match FLOOD_KEY.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot, used only while this program runs on it.
            Some(key) => unsafe {
                *key = core::mem::zeroed();
                (*key).tunnel_id = vni;
                (*key).tunnel_ttl = TUNNEL_TTL;
                copy_plain(&ctx, peer, group, vxlan, &mut *key)
            },
            None => Some(Err(CounterId::DropKernelRefused)),
        }
    };
    if let Some(outcome) = way {
        count(outcome.map_or_else(|reason| reason, |()| sent), len);
    }
}

/// The copy in clear for one `peer` through the VXLAN device `vxlan` (see [`copy_to_peers`]):
/// None for a peer that is not live (it gets none), else Ok or the reason it was not sent.
/// `key`: the tunnel key, its remote address written here.
#[inline(always)]
fn copy_plain(
    ctx: &TcContext,
    peer: u32,
    group: u64,
    vxlan: u32,
    key: &mut bpf_tunnel_key,
) -> Option<Result<(), CounterId>> {
    let route = peer_route(peer)?;
    if vxlan == 0 {
        return Some(Err(CounterId::DropNoTunnel));
    }
    let relayed = route.next_hop != 0 && route.next_hop != peer;
    let next = if relayed { route.next_hop } else { peer };
    // A relay decides by the inner destination, which a group frame lacks: the copy names its
    // host in its inner MAC, as a frame to seal does, for the time of the copy.
    if relayed && !set_dst_mac(ctx, mac_word(marked_mac(peer))) {
        return Some(Err(CounterId::DropKernelRefused));
    }
    // The helper takes the remote address in host byte order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(next);
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
            && bpf_clone_redirect(ctx.skb.skb, vxlan, 0) == 0
    };
    if relayed && !set_dst_mac(ctx, group) {
        return Some(Err(CounterId::DropKernelRefused));
    }
    Some(if done {
        Ok(())
    } else {
        Err(CounterId::DropRedirectFailed)
    })
}

/// One copy for `peer` to the agent's crypto `device`, the frame's destination MAC marked
/// with the peer for the time of the copy. Fail closed: no device (0), no copy.
#[inline(always)]
fn copy_sealed(ctx: &TcContext, peer: u32, group: u64, device: u32) -> Result<(), CounterId> {
    if device == 0 {
        return Err(CounterId::DropNoSession);
    }
    if !set_dst_mac(ctx, mac_word(marked_mac(peer))) {
        return Err(CounterId::DropKernelRefused);
    }
    // SAFETY: the skb pointer is the program's context; no flags.
    let done = unsafe { bpf_clone_redirect(ctx.skb.skb, device, 0) } == 0;
    if !set_dst_mac(ctx, group) {
        return Err(CounterId::DropKernelRefused);
    }
    if done {
        Ok(())
    } else {
        Err(CounterId::DropRedirectFailed)
    }
}

/// A MAC as the low six bytes of a word: the copies keep MACs in registers, their stack being
/// short (see [`copy_counted`]).
#[inline(always)]
fn mac_word(mac: [u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// Writes the MAC in the low six bytes of `mac` as the frame's destination.
#[inline(always)]
fn set_dst_mac(ctx: &TcContext, mac: u64) -> bool {
    let bytes = mac.to_le_bytes();
    // SAFETY: the skb pointer is the program's context; six bytes of a local are read.
    unsafe { bpf_skb_store_bytes(ctx.skb.skb, 0, bytes.as_ptr().cast(), 6, 0) == 0 }
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
    let proto: [u8; 2] = ctx.load(12).ok()?;
    if proto != crate::headers::ETH_P_IP.to_be_bytes() {
        return None;
    }
    let dst: [u8; 4] = ctx.load(ETH_LEN + 16).ok()?;
    // Every opened frame passes here: most are unicast, and most unicast addresses cannot be
    // a group or a broadcast address (of a subnet up to /30, whose last two bits are set), so
    // they skip the sender lookup.
    if dst[0] & 0xf0 != 0xe0 && dst[3] & 0x03 != 0x03 {
        return None;
    }
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
