//! TC ingress on the underlay NIC. Where no XDP program runs (a veth underlay), it makes the
//! peer check of [`crate::prefilter`] and counts arrivals. When the agent encapsulates in eBPF,
//! it also checks and decapsulates overlay frames and hands them straight to the container,
//! without the UDP socket and VXLAN device receive path. GSO super-packets (a peer's TCP bulk)
//! too, unless their endpoint forwards (`ENDPOINT_FORWARDS`) on a kernel that cannot clear
//! their UDP-tunnel GSO state while the tunnel is stripped (`Config::gso_decap` 0): a stale
//! state breaks a packet only when it is segmented on its way out, which a container that
//! does not forward never does; the others take the kernel VXLAN device, which clears it.
//!
//! Only packets for this host (its underlay address and MAC) are filtered or decapsulated: a
//! promiscuous or bridged underlay also shows other hosts' packets, which pass on untouched.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use weave_common::{
    counters::CounterId,
    endpoint::{Config, ENCAP_EBPF, Endpoint},
};

use crate::{
    counters::count,
    delivery::admit,
    encap::ENCAP_LEN,
    headers::{ECN_CE, ECN_NOT_ECT, ETH_LEN, ETH_P_IP, EthHdr, Ipv4Hdr, is_gso, ptr_at},
    maps::{config, is_peer},
    prefilter::{Arrival, arrival},
    verdict::stop,
};

/// adjust_room flag of newer kernels (not in this crate's bindings): on shrinking, clear the
/// UDP-tunnel GSO type and skb->encapsulation, as the kernel's own tunnel receive path does.
const BPF_F_ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;

/// Outer Ethernet + IPv4 (no options) + UDP + VXLAN, then inner Ethernet + IPv4.
const OUTER_LEN: usize = ETH_LEN + 20 + 8 + 8;
const HEADERS_LEN: u32 = (OUTER_LEN + ETH_LEN + 20) as u32;

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
    match decapsulate(&ctx, &cfg, source) {
        Ok(Decap::ToKernel(None)) => TC_ACT_OK,
        Ok(Decap::ToKernel(Some(why))) => {
            count(why, inner);
            TC_ACT_OK
        }
        Ok(Decap::Delivered { gso }) => {
            count(CounterId::OverlayRx, inner);
            count(CounterId::UnderlayDecap, inner);
            if gso {
                count(CounterId::UnderlayDecapGso, inner);
            }
            count(CounterId::OverlayDelivered, inner);
            TC_ACT_REDIRECT as i32
        }
        Err(reason) => {
            count(CounterId::OverlayRx, inner);
            stop(&ctx, "underlay_tc", reason, inner)
        }
    }
}

/// What became of an overlay packet that was not dropped.
enum Decap {
    /// Decapsulated and redirected into the container.
    Delivered { gso: bool },
    /// Passed on to the kernel's VXLAN receive path; the counter says why, where it is a
    /// choice worth counting.
    ToKernel(Option<CounterId>),
}

/// An overlay packet from the live peer `source`: decapsulated and delivered, left to the
/// kernel, or the reason to drop it.
#[inline(always)]
fn decapsulate(ctx: &TcContext, cfg: &Config, source: u32) -> Result<Decap, CounterId> {
    let gso = is_gso(ctx);
    if cfg.encap != ENCAP_EBPF || ctx.len() < HEADERS_LEN {
        return Ok(Decap::ToKernel(None));
    }
    if ctx.data_end() - ctx.data() < HEADERS_LEN as usize {
        ctx.pull_data(HEADERS_LEN)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let (Some(outer_eth), Some(outer_ip), Some(vxlan), Some(eth), Some(ip)) = (
        ptr_at::<EthHdr>(start, end, 0),
        ptr_at::<Ipv4Hdr>(start, end, ETH_LEN),
        ptr_at::<[u8; 8]>(start, end, ETH_LEN + 28),
        ptr_at::<EthHdr>(start, end, OUTER_LEN),
        ptr_at::<Ipv4Hdr>(start, end, OUTER_LEN + ETH_LEN),
    ) else {
        return Ok(Decap::ToKernel(None));
    };
    // SAFETY: ptr_at checked every header lies inside the packet; TC may write packet data.
    let (dst, inner_src) = unsafe {
        // The prefilter found UDP to the VXLAN port; IP options are left to the kernel.
        if (*outer_eth).proto() != ETH_P_IP || (*outer_ip).ver_ihl != 0x45 {
            return Ok(Decap::ToKernel(None));
        }
        // A piece of a larger datagram: the kernel reassembles it and hands it to the VXLAN
        // device, whose program checks it whole.
        if (*outer_ip).is_fragment() {
            count(CounterId::OverlayFragment, u64::from(ctx.len()));
            return Ok(Decap::ToKernel(None));
        }
        let vni = u32::from_be_bytes([(*vxlan)[4], (*vxlan)[5], (*vxlan)[6], 0]) >> 8;
        if (*vxlan)[0] & 0x08 == 0 || vni != cfg.vni {
            return Err(CounterId::DropBadVxlan);
        }
        let room = ctx.len() - OUTER_LEN as u32 - ETH_LEN as u32;
        let dst = admit(&*eth, &*ip, room, gso, source)?;
        if gso && cfg.gso_decap == 0 && dst.forwards() {
            return Ok(Decap::ToKernel(Some(CounterId::UnderlayGsoForwarding)));
        }
        pass_on_congestion(&*outer_ip, &mut *ip)?;
        (dst, (*eth).src)
    };
    strip_and_deliver(ctx, gso, cfg.gso_decap != 0, &dst, inner_src)
}

/// RFC 6040, as the kernel's tunnels do: congestion the underlay marked on the outer header
/// goes on to the inner one, unless its sender does not do ECN.
#[inline(always)]
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
/// have the kernel clear a super-packet's tunnel GSO state (where it can).
#[inline(always)]
fn strip_and_deliver(
    ctx: &TcContext,
    gso: bool,
    clear_gso: bool,
    dst: &Endpoint,
    inner_src: [u8; 6],
) -> Result<Decap, CounterId> {
    // A super-packet keeps its segment size: the sender's gso_size is the inner one.
    let flags = match (gso, clear_gso) {
        (false, _) => 0,
        (true, false) => u64::from(BPF_F_ADJ_ROOM_FIXED_GSO),
        (true, true) => u64::from(BPF_F_ADJ_ROOM_FIXED_GSO) | BPF_F_ADJ_ROOM_DECAP_L4_UDP,
    };
    if ctx
        .adjust_room(-(ENCAP_LEN as i32), BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        // A kernel that does not know a flag refuses before changing anything, so a
        // super-packet can still take the VXLAN device.
        return if gso {
            Ok(Decap::ToKernel(Some(CounterId::UnderlayGsoRefused)))
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
        if bpf_redirect_peer(dst.ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
    }
    Ok(Decap::Delivered { gso })
}
