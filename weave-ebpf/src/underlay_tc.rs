//! TC ingress on the underlay NIC: every overlay packet for this host, after the peer check of
//! [`crate::prefilter`] (made here where no XDP runs, as on a veth underlay).
//!
//! - A link hello (see `weave_common::relay`) is noted as heard from its sender and dropped.
//! - A frame for a container on a third host is relayed: outer addresses rewritten towards the
//!   next hop, origin and hop count marked in the VXLAN header, sent back out of the underlay.
//!   Nothing of it reaches userspace.
//! - A frame for a container here: when the agent encapsulates in eBPF, it is checked,
//!   decapsulated and handed straight to the container, without the UDP socket and VXLAN
//!   device receive path. GSO super-packets (a peer's TCP bulk) too, unless their endpoint
//!   forwards (`ENDPOINT_FORWARDS`) on a kernel that cannot clear their UDP-tunnel GSO state
//!   while the tunnel is stripped (`Config::gso_decap` 0): a stale state breaks a packet only
//!   when it is segmented on its way out, which a container that does not forward never does;
//!   the others take the kernel VXLAN device, which clears it. A relayed frame that takes the
//!   device is first put back into plain form, its origin as outer source, as the device and
//!   `overlay_tc` expect.
//!
//! - A sealed datagram (see `weave_common::seal`) is handed to the agent's crypto device when
//!   it is for this host, and sent on towards its destination host unread when it is not
//!   (the seal is end to end). With a password, a plain frame from a peer whose traffic must
//!   be sealed is dropped: it is forged, or from a host that does not trust the path.
//!
//! Only packets for this host (its underlay address and MAC) are filtered or decapsulated: a
//! promiscuous or bridged underlay also shows other hosts' packets, which pass on untouched.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_MARK_MANGLED_0,
        BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    macros::classifier,
    programs::TcContext,
};
use weave_common::{
    counters::CounterId,
    endpoint::{Config, ENCAP_EBPF, Endpoint, ipv4_key},
    flood::group_mac,
    relay::{self, HELLO_VNI, MAX_RELAY_HOPS, VXLAN_FLAG_VNI, VxlanHdr},
    seal::{SEALED_VNI, marked_peer},
};

use crate::{
    counters::count,
    delivery::{admit, hand_to, sent_by},
    encap::ENCAP_LEN,
    headers::{
        ECN_CE, ECN_NOT_ECT, ETH_LEN, ETH_P_IP, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr, UdpHdr,
        is_gso, ptr_at,
    },
    ipv6::{admit6, hop},
    maps::{
        config, crypto_device, crypto_path, endpoint, exposed_behind, heard, is_peer, may_talk,
        must_seal, peer_route,
    },
    prefilter::{Arrival, arrival},
    verdict::stop,
};

/// adjust_room flag of newer kernels (not in this crate's bindings): on shrinking, clear the
/// UDP-tunnel GSO type and skb->encapsulation, as the kernel's own tunnel receive path does.
const BPF_F_ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;

/// Outer Ethernet + IPv4 (no options) + UDP + VXLAN, then inner Ethernet + IPv4.
const OUTER_LEN: usize = ETH_LEN + 20 + 8 + 8;
const HEADERS_LEN: u32 = (OUTER_LEN + ETH_LEN + 20) as u32;
const HEADERS6_LEN: u32 = (OUTER_LEN + ETH_LEN + 40) as u32;
/// Outer TTL of a relayed packet: a new IPv4 hop from this host, as the sender's is.
const RELAY_TTL: u8 = 64;
/// Where the outer UDP checksum sits (outer IPv4 without options).
const UDP_CSUM_OFFSET: usize = ETH_LEN + 20 + 6;

#[classifier]
pub fn underlay_tc(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    let cfg = config();
    // Where XDP runs, it has counted and filtered this frame already.
    let counting = cfg.underlay_xdp == 0;
    if counting {
        count(CounterId::UnderlayRx, len);
    }
    let source = match arrival(&ctx, &cfg) {
        Arrival::Other => return TC_ACT_OK,
        Arrival::OtherHost => {
            if counting {
                count(CounterId::UnderlayOtherHost, len);
            }
            return TC_ACT_OK;
        }
        Arrival::Overlay(source) => source,
    };
    if !is_peer(source) {
        count(CounterId::DropOverlayNotPeer, len);
        return TC_ACT_SHOT;
    }
    if counting {
        count(CounterId::UnderlayOverlayPass, len);
    }
    // From here on, counters count the container frame inside (see Counter::bytes).
    let inner = len.saturating_sub(OUTER_LEN as u64);
    match overlay(&ctx, &cfg, source) {
        Ok(Outcome::Hello) => {
            count(CounterId::LinkHello, len);
            TC_ACT_SHOT
        }
        Ok(Outcome::Relayed) => {
            count(CounterId::RelayForwarded, inner);
            TC_ACT_REDIRECT as i32
        }
        Ok(Outcome::Sealed) => {
            count(CounterId::SealedReceived, len);
            TC_ACT_REDIRECT as i32
        }
        Ok(Outcome::SealedRelayed) => {
            count(CounterId::SealedRelayed, len);
            TC_ACT_REDIRECT as i32
        }
        Ok(Outcome::ToKernel { why, origin }) => {
            if origin != 0 {
                if let Err(reason) = restore_plain(&ctx, origin) {
                    return stop(&ctx, "underlay_tc", reason, inner);
                }
                count(CounterId::RelayReceived, inner);
            }
            if let Some(why) = why {
                count(why, inner);
            }
            TC_ACT_OK
        }
        Ok(Outcome::Delivered { gso, relayed, ipv6 }) => {
            count(CounterId::OverlayRx, inner);
            count(CounterId::UnderlayDecap, inner);
            if gso {
                count(CounterId::UnderlayDecapGso, inner);
            }
            if relayed {
                count(CounterId::RelayReceived, inner);
            }
            let delivered = if ipv6 {
                CounterId::Ipv6Delivered
            } else {
                CounterId::OverlayDelivered
            };
            count(delivered, inner);
            TC_ACT_REDIRECT as i32
        }
        Err(reason) => {
            count(CounterId::OverlayRx, inner);
            stop(&ctx, "underlay_tc", reason, inner)
        }
    }
}

/// What became of an overlay packet that was not dropped.
enum Outcome {
    /// A link hello, noted.
    Hello,
    /// Sent on towards the host of its destination.
    Relayed,
    /// A sealed datagram for this host, handed to the agent's crypto device.
    Sealed,
    /// A sealed datagram for a third host, sent on towards it.
    SealedRelayed,
    /// Decapsulated and redirected into the container.
    Delivered {
        gso: bool,
        relayed: bool,
        ipv6: bool,
    },
    /// Passed on to the kernel's VXLAN receive path; `why` says why where it is a choice worth
    /// counting. `origin`: a relayed frame's first sender, to restore as the outer source
    /// (0 for a plain frame).
    ToKernel { why: Option<CounterId>, origin: u32 },
}

impl Outcome {
    const KERNEL: Self = Self::ToKernel {
        why: None,
        origin: 0,
    };
}

/// An overlay packet from the live peer `source`: a hello, a frame to relay, one to deliver
/// or leave to the kernel, or the reason to drop it.
#[inline(always)]
fn overlay(ctx: &TcContext, cfg: &Config, source: u32) -> Result<Outcome, CounterId> {
    if ctx.len() < OUTER_LEN as u32 {
        return Ok(Outcome::KERNEL);
    }
    // Enough for an inner IPv6 header where the packet has it, else an IPv4 one.
    let want = if ctx.len() >= HEADERS6_LEN {
        HEADERS6_LEN
    } else if ctx.len() >= HEADERS_LEN {
        HEADERS_LEN
    } else {
        OUTER_LEN as u32
    };
    if ctx.data_end() - ctx.data() < want as usize {
        ctx.pull_data(want)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let (Some(outer_eth), Some(outer_ip), Some(udp), Some(vxlan)) = (
        ptr_at::<EthHdr>(start, end, 0),
        ptr_at::<Ipv4Hdr>(start, end, ETH_LEN),
        ptr_at::<UdpHdr>(start, end, ETH_LEN + 20),
        ptr_at::<VxlanHdr>(start, end, ETH_LEN + 28),
    ) else {
        return Ok(Outcome::KERNEL);
    };
    let gso = is_gso(ctx);
    // SAFETY: ptr_at checked every header lies inside the packet; TC may write packet data.
    let (dst, inner_src, relayed) = unsafe {
        // The prefilter found UDP to the VXLAN port; IP options are left to the kernel.
        if (*outer_eth).proto() != ETH_P_IP || (*outer_ip).ver_ihl != 0x45 {
            return Ok(Outcome::KERNEL);
        }
        // A piece of a larger datagram: the kernel reassembles it and hands it to the VXLAN
        // device, whose program checks it whole.
        if (*outer_ip).is_fragment() {
            count(CounterId::OverlayFragment, u64::from(ctx.len()));
            return Ok(Outcome::KERNEL);
        }
        let hdr = *vxlan;
        if hdr[0] & VXLAN_FLAG_VNI == 0 {
            return Err(CounterId::DropBadVxlan);
        }
        match relay::vni(&hdr) {
            HELLO_VNI => {
                heard(source, ctx.len() - ETH_LEN as u32);
                return Ok(Outcome::Hello);
            }
            SEALED_VNI => return sealed(ctx, cfg, source, &hdr),
            vni if vni != cfg.vni => return Err(CounterId::DropBadVxlan),
            _ => {}
        }
        let claimed = relay::origin(&hdr);
        if claimed != 0 && !is_peer(claimed) {
            return Err(CounterId::DropRelayOriginNotPeer);
        }
        let origin = if claimed == 0 { source } else { claimed };
        // Relayed frames are always sealed where there is a password: only a direct path can
        // be one both hosts trust.
        let crypto = crypto_path();
        if crypto.seal != 0 && (claimed != 0 || must_seal(&crypto, source)) {
            return Err(CounterId::DropNotSealed);
        }
        let (Some(eth), Some(ip)) = (
            ptr_at::<EthHdr>(start, end, OUTER_LEN),
            ptr_at::<Ipv4Hdr>(start, end, OUTER_LEN + ETH_LEN),
        ) else {
            return if claimed == 0 {
                Ok(Outcome::KERNEL)
            } else {
                Err(CounterId::DropMalformed)
            };
        };
        // IPv6 is not relayed here yet: a relayed frame takes the device, whose program checks
        // it; so does one when the agent encapsulates through the device.
        if (*eth).proto() == ETH_P_IPV6 {
            let kernel = Outcome::ToKernel {
                why: None,
                origin: claimed,
            };
            if claimed != 0 || cfg.encap != ENCAP_EBPF {
                return Ok(kernel);
            }
            let Some(ip6) = ptr_at::<Ipv6Hdr>(start, end, OUTER_LEN + ETH_LEN) else {
                return Ok(kernel);
            };
            let room = ctx.len() - OUTER_LEN as u32 - ETH_LEN as u32;
            let dst = hop(&admit6(&*eth, &*ip6, room, gso, origin)?);
            if gso && cfg.gso_decap == 0 && dst.forwards() {
                return Ok(Outcome::ToKernel {
                    why: Some(CounterId::UnderlayGsoForwarding),
                    origin: claimed,
                });
            }
            pass_on_congestion6(&*outer_ip, &mut *ip6)?;
            let inner_src = (*eth).src;
            return strip_and_deliver(ctx, gso, cfg.gso_decap != 0, &dst, inner_src, 0, true);
        }
        let room = ctx.len() - OUTER_LEN as u32 - ETH_LEN as u32;
        let frame = Frame {
            eth: &*eth,
            ip: &*ip,
            room,
            gso,
            origin,
        };
        // A broadcast or multicast copy for a host this one relays to: its inner MAC names
        // that host (see `flood`).
        if let Some(dest) = marked_peer(&(*eth).dst) {
            if dest != cfg.underlay_ip {
                let src = endpoint(ipv4_key((*ip).src)).ok_or(CounterId::DropOverlayUnknownSrc)?;
                let to = Endpoint { peer: dest, ..src };
                return relay(cfg, &frame, &to, relay::hops(&hdr), outer_ip, udp, vxlan);
            }
            let src = sent_by(&*eth, &*ip, room, gso, origin)?;
            (*eth).dst = group_mac((*ip).dst, src.subnet, src.prefix_len)
                .ok_or(CounterId::DropNotIpv4Unicast)?;
            return Ok(Outcome::ToKernel {
                why: None,
                origin: claimed,
            });
        }
        // A frame for outside the overlay is for the exposed address it was sent to as a
        // gateway (its MAC), which may sit on a third host.
        if let Some(dst) =
            endpoint(ipv4_key((*ip).dst)).or_else(|| exposed_behind(&(*eth).dst, (*ip).dst))
            && !dst.is_local()
        {
            return relay(cfg, &frame, &dst, relay::hops(&hdr), outer_ip, udp, vxlan);
        }
        if cfg.encap != ENCAP_EBPF {
            return Ok(Outcome::ToKernel {
                why: None,
                origin: claimed,
            });
        }
        // Broadcast and multicast take the device, whose program copies them to the members
        // here: they are few (rate-limited at the sender), and copies need no decapsulation
        // of their own.
        if (*eth).dst[0] & 1 != 0 {
            return Ok(Outcome::ToKernel {
                why: None,
                origin: claimed,
            });
        }
        let dst = admit(&*eth, &*ip, room, gso, origin)?;
        if gso && cfg.gso_decap == 0 && dst.forwards() {
            return Ok(Outcome::ToKernel {
                why: Some(CounterId::UnderlayGsoForwarding),
                origin: claimed,
            });
        }
        pass_on_congestion(&*outer_ip, &mut *ip)?;
        (dst, (*eth).src, claimed)
    };
    strip_and_deliver(
        ctx,
        gso,
        cfg.gso_decap != 0,
        &dst,
        inner_src,
        relayed,
        false,
    )
}

/// The inner frame of an overlay packet and the host that sent it first.
struct Frame<'a> {
    eth: &'a EthHdr,
    ip: &'a Ipv4Hdr,
    /// Bytes from the inner IPv4 header on.
    room: u32,
    gso: bool,
    origin: u32,
}

/// Sends a frame for the remote endpoint `dst` on towards its host, if this host may relay
/// it: its destination lives on a host other than its origin (a host never sends its own
/// containers' frames away), it has passed fewer than [`MAX_RELAY_HOPS`] relays, its
/// destination host is a live peer, its inner source is an endpoint of its origin, and
/// isolation lets the two talk (the last host checks again; checking here keeps what it would
/// drop off the next link).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn relay(
    cfg: &Config,
    frame: &Frame<'_>,
    dst: &Endpoint,
    hops: u8,
    outer_ip: *mut Ipv4Hdr,
    udp: *mut UdpHdr,
    vxlan: *mut VxlanHdr,
) -> Result<Outcome, CounterId> {
    if dst.peer == frame.origin {
        return Err(CounterId::DropUnknownDst);
    }
    if hops >= MAX_RELAY_HOPS {
        return Err(CounterId::DropRelayHopLimit);
    }
    let route = peer_route(dst.peer).ok_or(CounterId::DropRelayNoRoute)?;
    let src = sent_by(frame.eth, frame.ip, frame.room, frame.gso, frame.origin)?;
    if !may_talk(&src, dst) {
        return Err(CounterId::DropIsolated);
    }
    let next = if route.next_hop == 0 {
        dst.peer
    } else {
        route.next_hop
    };
    // SAFETY: the caller checked these headers lie inside the packet, and no helper that
    // changes packet data has run since; TC may write packet data.
    unsafe {
        if (*udp).csum != [0, 0] {
            return Err(CounterId::DropRelayUdpChecksum);
        }
        (*outer_ip).src = cfg.underlay_ip.to_ne_bytes();
        (*outer_ip).dst = next.to_ne_bytes();
        (*outer_ip).ttl = RELAY_TTL;
        (*outer_ip).fill_checksum();
        relay::set_relayed(&mut *vxlan, frame.origin, hops + 1);
        // The FIB and neighbour tables pick the next hop's MAC, as for a frame sent here.
        let sent = bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0);
        if sent != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
    }
    Ok(Outcome::Relayed)
}

/// A sealed datagram from the live peer `source` with VXLAN-shaped header `hdr`: handed to the
/// agent when it is for this host, else sent on unread.
#[inline(always)]
fn sealed(
    ctx: &TcContext,
    cfg: &Config,
    source: u32,
    hdr: &VxlanHdr,
) -> Result<Outcome, CounterId> {
    let dest = ctx
        .load::<[u8; 4]>(OUTER_LEN)
        .map(u32::from_ne_bytes)
        .map_err(|_| CounterId::DropMalformed)?;
    if dest != cfg.underlay_ip {
        return relay_sealed(ctx, cfg, source, dest, hdr);
    }
    let device = crypto_device(&crypto_path()).ok_or(CounterId::DropNoSession)?;
    // SAFETY: a redirect helper with no flags has no preconditions.
    if unsafe { bpf_redirect(device, 0) } != i64::from(TC_ACT_REDIRECT) {
        return Err(CounterId::DropRedirectFailed);
    }
    Ok(Outcome::Sealed)
}

/// Sends a sealed datagram for the host at `dest` on towards it, as [`relay`] does a plain
/// frame: outer addresses rewritten, the relay marked. Nothing inside can be checked here; the
/// destination host opens it and checks the frame. The outer UDP checksum the agent's socket
/// fills in is kept valid (a GSO train's, which the kernel completes on the way out, is the
/// pseudo-header's, and the helper knows it).
#[inline(always)]
fn relay_sealed(
    ctx: &TcContext,
    cfg: &Config,
    source: u32,
    dest: u32,
    hdr: &VxlanHdr,
) -> Result<Outcome, CounterId> {
    let claimed = relay::origin(hdr);
    let origin = if claimed == 0 { source } else { claimed };
    if dest == origin || dest == 0 {
        return Err(CounterId::DropUnknownDst);
    }
    let hops = relay::hops(hdr);
    if hops >= MAX_RELAY_HOPS {
        return Err(CounterId::DropRelayHopLimit);
    }
    let route = peer_route(dest).ok_or(CounterId::DropRelayNoRoute)?;
    let next = if route.next_hop == 0 {
        dest
    } else {
        route.next_hop
    };
    let mut marked = *hdr;
    relay::set_relayed(&mut marked, origin, hops + 1);
    let refused = |_| CounterId::DropKernelRefused;
    let old_src: u32 = ctx.load(ETH_LEN + 12).map_err(refused)?;
    let old_dst: u32 = ctx.load(ETH_LEN + 16).map_err(refused)?;
    let csum: u16 = ctx.load(UDP_CSUM_OFFSET).map_err(refused)?;
    if csum != 0 {
        let udp = u64::from(BPF_F_MARK_MANGLED_0);
        let pseudo = udp | u64::from(BPF_F_PSEUDO_HDR) | 4;
        let words =
            |h: &VxlanHdr, i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let changes = [
            (old_src, cfg.underlay_ip, pseudo),
            (old_dst, next, pseudo),
            (words(hdr, 0), words(&marked, 0), udp | 4),
            (words(hdr, 4), words(&marked, 4), udp | 4),
        ];
        for (from, to, flags) in changes {
            ctx.l4_csum_replace(UDP_CSUM_OFFSET, u64::from(from), u64::from(to), flags)
                .map_err(refused)?;
        }
    }
    ctx.store(ETH_LEN + 12, &cfg.underlay_ip, 0)
        .map_err(refused)?;
    ctx.store(ETH_LEN + 16, &next, 0).map_err(refused)?;
    ctx.store(ETH_LEN + 8, &RELAY_TTL, 0).map_err(refused)?;
    ctx.store(ETH_LEN + 28, &marked, 0).map_err(refused)?;
    let (start, end) = (ctx.data(), ctx.data_end());
    let outer_ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropKernelRefused)?;
    // SAFETY: ptr_at checked the header lies inside the packet; TC may write packet data.
    unsafe {
        (*outer_ip).fill_checksum();
        if bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0)
            != i64::from(TC_ACT_REDIRECT)
        {
            return Err(CounterId::DropRedirectFailed);
        }
    }
    Ok(Outcome::SealedRelayed)
}

/// Puts a relayed frame back into plain form for the kernel's VXLAN device: its first
/// sender `origin` as the outer source, the reserved bits zero.
#[inline(always)]
fn restore_plain(ctx: &TcContext, origin: u32) -> Result<(), CounterId> {
    let (start, end) = (ctx.data(), ctx.data_end());
    let (Some(outer_ip), Some(vxlan)) = (
        ptr_at::<Ipv4Hdr>(start, end, ETH_LEN),
        ptr_at::<VxlanHdr>(start, end, ETH_LEN + 28),
    ) else {
        return Err(CounterId::DropKernelRefused);
    };
    // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
    unsafe {
        (*outer_ip).src = origin.to_ne_bytes();
        (*outer_ip).fill_checksum();
        relay::clear_relayed(&mut *vxlan);
    }
    Ok(())
}

/// RFC 6040, as the kernel's tunnels do: congestion the underlay marked on the outer header
/// goes on to the inner one, unless its sender does not do ECN.
#[inline(always)]
fn pass_on_congestion6(outer: &Ipv4Hdr, inner: &mut Ipv6Hdr) -> Result<(), CounterId> {
    if outer.ecn() == ECN_CE {
        // The ECN field is the traffic class's low two bits: bits 4-5 of the second byte.
        match (inner.vtc_flow[1] >> 4) & ECN_CE {
            ECN_NOT_ECT => return Err(CounterId::DropCeOnNotEct),
            ECN_CE => {}
            // No header checksum in IPv6 to mend.
            _ => inner.vtc_flow[1] |= ECN_CE << 4,
        }
    }
    Ok(())
}

fn pass_on_congestion(outer: &Ipv4Hdr, inner: &mut Ipv4Hdr) -> Result<(), CounterId> {
    if outer.ecn() == ECN_CE {
        match inner.ecn() {
            ECN_NOT_ECT => return Err(CounterId::DropCeOnNotEct),
            ECN_CE => {}
            _ => inner.set_ce(),
        }
    }
    Ok(())
}

/// Drops outer IPv4, UDP, VXLAN and the inner Ethernet header (the outer Ethernet header stays
/// and takes the inner addresses, the destination `dst`'s current MAC) and hands the frame to
/// `dst`. A super-packet the kernel refuses to strip is left to the VXLAN device. `clear_gso`:
/// have the kernel clear a super-packet's tunnel GSO state (where it can). `origin`: a relayed
/// frame's first sender, 0 for a plain frame.
#[inline(always)]
fn strip_and_deliver(
    ctx: &TcContext,
    gso: bool,
    clear_gso: bool,
    dst: &Endpoint,
    inner_src: [u8; 6],
    origin: u32,
    ipv6: bool,
) -> Result<Outcome, CounterId> {
    // A super-packet keeps its segment size: the sender's gso_size is the inner one.
    let mut flags = match (gso, clear_gso) {
        (false, _) => 0,
        (true, false) => u64::from(BPF_F_ADJ_ROOM_FIXED_GSO),
        (true, true) => u64::from(BPF_F_ADJ_ROOM_FIXED_GSO) | BPF_F_ADJ_ROOM_DECAP_L4_UDP,
    };
    // The skb's protocol is the outer header's until the kernel is told the inner one differs
    // (Linux 6.3 and later); the stack would hand an IPv6 packet to IPv4.
    if ipv6 {
        flags |= u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV6);
    }
    if ctx
        .adjust_room(-(ENCAP_LEN as i32), BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        // A kernel that does not know a flag refuses before changing anything, so a
        // super-packet can still take the VXLAN device.
        return if gso {
            Ok(Outcome::ToKernel {
                why: Some(CounterId::UnderlayGsoRefused),
                origin,
            })
        } else {
            Err(CounterId::DropKernelRefused)
        };
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(CounterId::DropKernelRefused)?;
    // SAFETY: ptr_at checked the header lies inside the packet; TC may write packet data.
    unsafe {
        (*eth).dst = dst.mac;
        (*eth).src = inner_src;
        if ipv6 {
            (*eth).proto = ETH_P_IPV6.to_be_bytes();
        }
    }
    hand_to(dst)?;
    Ok(Outcome::Delivered {
        gso,
        relayed: origin != 0,
        ipv6,
    })
}
