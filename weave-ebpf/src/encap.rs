//! VXLAN encapsulation built in eBPF (the alternative to the kernel VXLAN device): outer IPv4,
//! UDP and VXLAN headers are written in place, the kernel is told it is a UDP tunnel so GSO
//! still works, and the neighbour subsystem fills in the outer Ethernet header.

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::{bpf_check_mtu, bpf_get_hash_recalc, bpf_redirect_neigh},
    programs::TcContext,
};
use weave_common::{counters::CounterId, endpoint::Config};

use crate::headers::{ECN_CE, ETH_LEN, EthHdr, IPPROTO_UDP, internet_checksum};

/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub(crate) const ENCAP_LEN: usize = 50;
/// Shift of the inner L2 length in adjust_room's flags (BPF_ADJ_ROOM_ENCAP_L2_SHIFT).
const ENCAP_L2_SHIFT: u64 = 56;
const TUNNEL_TTL: u8 = 64;

/// What [`encapsulate`] did with a frame.
pub(crate) enum Encap {
    /// Wrapped and sent out of the underlay interface.
    Sent,
    /// Left untouched for the kernel VXLAN device.
    Declined,
}

/// Wraps the frame, whose IPv4 header has `tos`, for the peer at underlay address `peer`
/// (packet byte order) and sends it out of the underlay interface. Declines frames the device
/// handles and this cannot: one too big for the underlay once wrapped (eBPF cannot fragment,
/// the device fragments the outer packet) and one the kernel already marks as tunnelled,
/// which `bpf_skb_adjust_room` refuses to wrap again (a tunnel inside the container, or a
/// frame decapsulated here and forwarded by a container).
#[inline(always)]
pub(crate) fn encapsulate(
    ctx: &TcContext,
    peer: u32,
    tos: u8,
    cfg: &Config,
) -> Result<Encap, CounterId> {
    let mut mtu = 0u32;
    // SAFETY: the context pointer is the program's skb; `mtu` is a valid out-parameter, and
    // zero on input asks the helper to check the skb's own length.
    let fits = unsafe {
        bpf_check_mtu(
            ctx.skb.skb.cast(),
            cfg.underlay_ifindex,
            &mut mtu,
            ENCAP_LEN as i32,
            0,
        )
    } == 0;
    if !fits {
        return Ok(Encap::Declined);
    }
    let inner_len = ctx.len() as usize;
    // SAFETY: the context pointer is the program's skb.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let inner_eth: EthHdr = ctx.load(0).map_err(|_| CounterId::DropKernelRefused)?;
    let flags = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO)
        | u64::from(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)
        | u64::from(BPF_F_ADJ_ROOM_ENCAP_L4_UDP)
        | u64::from(BPF_F_ADJ_ROOM_ENCAP_L2_ETH)
        | ((ETH_LEN as u64) << ENCAP_L2_SHIFT);
    // A refusal leaves the frame as it was.
    if ctx
        .adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags)
        .is_err()
    {
        return Ok(Encap::Declined);
    }

    let ip_len = (inner_len + ENCAP_LEN - ETH_LEN) as u16;
    let mut hdr = [0u8; ENCAP_LEN];
    // Outer IPv4: version 4, IHL 5, the inner ECN field (RFC 6040: congestion marked on the
    // way reaches the inner packet at the far end), DF, TTL, UDP.
    hdr[0] = 0x45;
    hdr[1] = tos & ECN_CE;
    hdr[2..4].copy_from_slice(&ip_len.to_be_bytes());
    hdr[6] = 0x40;
    hdr[8] = TUNNEL_TTL;
    hdr[9] = IPPROTO_UDP;
    hdr[12..16].copy_from_slice(&cfg.underlay_ip.to_ne_bytes());
    hdr[16..20].copy_from_slice(&peer.to_ne_bytes());
    let csum = internet_checksum(&hdr, 0, 20);
    hdr[10..12].copy_from_slice(&csum.to_be_bytes());
    // UDP: a source port from the inner flow's hash spreads flows over receive queues; a zero
    // checksum is allowed for IPv4 tunnels.
    let sport = 0xc000 | (hash as u16 & 0x3fff);
    hdr[20..22].copy_from_slice(&sport.to_be_bytes());
    hdr[22..24].copy_from_slice(&cfg.vxlan_port.to_be_bytes());
    hdr[24..26].copy_from_slice(&(ip_len - 20).to_be_bytes());
    // VXLAN: the I flag, then the VNI in the upper 24 bits of the second word.
    hdr[28] = 0x08;
    hdr[32..36].copy_from_slice(&(cfg.vni << 8).to_be_bytes());
    // The inner Ethernet header is the frame's own (its destination already rewritten).
    hdr[36..42].copy_from_slice(&inner_eth.dst);
    hdr[42..48].copy_from_slice(&inner_eth.src);
    hdr[48..50].copy_from_slice(&inner_eth.proto);
    ctx.store(ETH_LEN, &hdr, 0)
        .map_err(|_| CounterId::DropKernelRefused)?;

    // The FIB and neighbour tables pick the next hop and write the outer Ethernet header.
    // SAFETY: a null parameter block asks the helper to look the route up itself.
    let sent = unsafe { bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0) };
    if sent != i64::from(TC_ACT_REDIRECT) {
        return Err(CounterId::DropRedirectFailed);
    }
    Ok(Encap::Sent)
}
