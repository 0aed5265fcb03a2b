//! TC ingress on the host side of a container veth: every frame a container sends.
//!
//! ARP requests are answered here from the endpoint map, so no broadcast ever leaves the host;
//! so are ARP probes (RFC 5227 duplicate address detection) for an address another endpoint
//! holds, so the prober sees the conflict.
//! IPv4 frames must come from the endpoint's own address and MAC (anti-spoofing) and go to an
//! endpoint in the same subnet or in one an isolation rule opens to it; they are then handed
//! straight to a local container or sent to the remote host. Broadcast and multicast within
//! the sender's subnet are copied to its members (`flood`). Everything else (IPv6, other
//! ethertypes) is dropped and counted.
//!
//! An exposed host address (`expose`) is an endpoint too, behind a veth whose other end is in
//! the host's namespace. Its frames may also come from outside every overlay subnet (a host
//! process's other address, or a machine the host routes in), never from another overlay
//! address; and a container's frame for a destination outside the overlay goes to the
//! exposed address whose MAC it is sent to, the gateway its route names.

use aya_ebpf::{
    bindings::{BPF_F_ZERO_CSUM_TX, TC_ACT_REDIRECT, bpf_tunnel_key},
    helpers::generated::{bpf_redirect, bpf_skb_set_tunnel_key},
    macros::classifier,
    programs::TcContext,
};
use weave_common::{
    OVERLAY_OVERHEAD,
    counters::CounterId,
    endpoint::{ENCAP_EBPF, Endpoint, endpoint_mac_address, ipv4_key},
    seal::marked_mac,
};

use crate::{
    counters::count,
    delivery::hand_to,
    encap::{Encap, encapsulate},
    flood,
    headers::{
        ARP_REPLY, ARP_REQUEST, ArpHdr, ETH_LEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr,
        IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, is_gso, ptr_at,
    },
    icmp::frag_needed,
    ipv6::{IPV6_LEN, answer_solicitation, hop, is_control, sender6},
    maps::{
        config, crypto_device, crypto_path, endpoint, endpoint6, exposed_behind, may_talk,
        may_talk6, must_seal, next_hop,
    },
    verdict::tc_verdict,
};

/// Outer TTL of encapsulated packets.
const TUNNEL_TTL: u8 = 64;
/// Bytes the programs read directly: Ethernet + ARP, which covers Ethernet + IPv4 too.
const HEADERS_LEN: u32 = (ETH_LEN + core::mem::size_of::<ArpHdr>()) as u32;

#[classifier]
pub fn container_tc(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    count(CounterId::ContainerRx, len);
    tc_verdict(&ctx, "container_tc", forward(&ctx), len)
}

/// Redirects the frame: the counter for what was done, or why the frame stops here (a drop
/// reason, or an ARP probe that silence answers).
#[inline(always)]
fn forward(ctx: &TcContext) -> Result<CounterId, CounterId> {
    // Headers may sit in paged data; pull them into the linear part we can read directly.
    if ctx.data_end() - ctx.data() < HEADERS_LEN as usize && ctx.len() >= HEADERS_LEN {
        ctx.pull_data(HEADERS_LEN)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(CounterId::DropMalformed)?;
    // SAFETY: the skb pointer is the program's context.
    let ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: ptr_at checked the header lies inside the packet.
    match unsafe { (*eth).proto() } {
        ETH_P_ARP => answer_arp(start, end, eth, ifindex),
        ETH_P_IP => send_ipv4(ctx, start, end, eth, ifindex),
        ETH_P_IPV6 => send_ipv6(ctx, ifindex),
        _ => Err(CounterId::DropNotIpv4Unicast),
    }
}

/// The local endpoint that owns `ifindex` and claims `ip`/`mac`, or a spoofing drop.
#[inline(always)]
fn sender(ip: [u8; 4], mac: &[u8; 6], ifindex: u32) -> Result<Endpoint, CounterId> {
    match endpoint(ipv4_key(ip)) {
        Some(ep) if ep.is_local() && ep.ifindex == ifindex && ep.mac == *mac => Ok(ep),
        _ => Err(CounterId::DropSpoofed),
    }
}

/// Answers an ARP request or probe in place and sends the reply back to the container.
#[inline(always)]
fn answer_arp(
    start: usize,
    end: usize,
    eth: *mut EthHdr,
    ifindex: u32,
) -> Result<CounterId, CounterId> {
    let arp: *mut ArpHdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
    // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
    unsafe {
        if !(*arp).is_ipv4_ethernet() || u16::from_be_bytes((*arp).op) != ARP_REQUEST {
            return Err(CounterId::DropArp);
        }
        if (*arp).sha != (*eth).src {
            return Err(CounterId::DropSpoofed);
        }
        let wanted = (*arp).tpa;
        let (target, answered) = if (*arp).spa == [0; 4] {
            (
                probed(&(*arp).sha, wanted, ifindex)?,
                CounterId::ArpProbeAnswered,
            )
        } else {
            let asker = sender((*arp).spa, &(*eth).src, ifindex)?;
            let target = endpoint(ipv4_key(wanted)).ok_or(CounterId::DropArp)?;
            if !may_talk(&asker, &target) {
                return Err(CounterId::DropIsolated);
            }
            (target, CounterId::ArpReplied)
        };
        // Turn the request into the reply, in place; a probe's reply goes to 0.0.0.0 at the
        // prober's MAC, as the kernel answers one.
        (*arp).op = ARP_REPLY.to_be_bytes();
        (*arp).tha = (*arp).sha;
        (*arp).tpa = (*arp).spa;
        (*arp).sha = target.mac;
        (*arp).spa = wanted;
        (*eth).dst = (*eth).src;
        (*eth).src = target.mac;
        // Back out of the same veth: egress towards the container that asked.
        if bpf_redirect(ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
        Ok(answered)
    }
}

/// The endpoint to answer an ARP probe (sender address 0.0.0.0) for `wanted` with: another
/// endpoint holding it that the prober may talk to. A probe carries no address of its own, so
/// the prober is found from its MAC, which must be the endpoint MAC of the endpoint on this
/// veth. Its own address and a free one get silence, which tells the prober it may use the
/// address (answering its own would make its detection fail).
#[inline(always)]
fn probed(sha: &[u8; 6], wanted: [u8; 4], ifindex: u32) -> Result<Endpoint, CounterId> {
    let own = endpoint_mac_address(sha).ok_or(CounterId::DropSpoofed)?;
    let prober = sender(own, sha, ifindex)?;
    if wanted == own {
        return Err(CounterId::ArpProbeUnanswered);
    }
    let holder = endpoint(ipv4_key(wanted)).ok_or(CounterId::ArpProbeUnanswered)?;
    if !may_talk(&prober, &holder) {
        return Err(CounterId::DropIsolated);
    }
    Ok(holder)
}

#[inline(always)]
fn send_ipv4(
    ctx: &TcContext,
    start: usize,
    end: usize,
    eth: *mut EthHdr,
    ifindex: u32,
) -> Result<CounterId, CounterId> {
    let ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
    // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
    unsafe {
        let gso = is_gso(ctx);
        if !(*ip).is_sane(ctx.len() - ETH_LEN as u32, gso) {
            return Err(CounterId::DropMalformed);
        }
        // Broadcast and multicast: only from the endpoint's own address, and only within its
        // subnet.
        if (*eth).dst[0] & 1 != 0 {
            let src = sender((*ip).src, &(*eth).src, ifindex)?;
            return flood::from_endpoint(ctx, &src, &*eth, &*ip, &config());
        }
        let src = match sender((*ip).src, &(*eth).src, ifindex) {
            Ok(src) => src,
            Err(spoofed) => {
                let from_outside = exposed_behind(&(*eth).src, (*ip).src)
                    .filter(|ep| ep.is_local() && ep.ifindex == ifindex)
                    .ok_or(spoofed)?;
                count(CounterId::ExposedFromOutside, u64::from(ctx.len()));
                from_outside
            }
        };
        let dst = match endpoint(ipv4_key((*ip).dst)) {
            Some(dst) => dst,
            None => {
                // Outside to outside would make the overlay a transit network.
                let gateway = exposed_behind(&(*eth).dst, (*ip).dst)
                    .filter(|_| !src.exposed())
                    .ok_or(CounterId::DropUnknownDst)?;
                count(CounterId::ExposedToOutside, u64::from(ctx.len()));
                gateway
            }
        };
        if !may_talk(&src, &dst) {
            return Err(CounterId::DropIsolated);
        }
        // Always the endpoint's current MAC: a stale neighbour entry cannot black-hole traffic.
        (*eth).dst = dst.mac;
        if dst.is_local() {
            hand_to(&dst)?;
            return Ok(CounterId::LocalDelivered);
        }
        let crypto = crypto_path();
        if must_seal(&crypto, dst.peer) {
            // The agent cuts what it seals to the path's MTU itself, super-packets too.
            (*eth).dst = marked_mac(dst.peer);
            let device = crypto_device(&crypto).ok_or(CounterId::DropNoSession)?;
            if bpf_redirect(device, 0) != i64::from(TC_ACT_REDIRECT) {
                return Err(CounterId::DropRedirectFailed);
            }
            return Ok(CounterId::SealToAgent);
        }
        let (next, mtu) = next_hop(dst.peer);
        if mtu != 0 && too_big(ctx, &*ip, gso, mtu) {
            return frag_needed(ctx, ifindex, mtu - OVERLAY_OVERHEAD as u16);
        }
        send_remote(ctx, next, (*ip).tos, gso)
    }
}

/// A container's IPv6 frame: a neighbour solicitation answered here, control traffic the
/// overlay does not carry dropped, unicast from the endpoint's own address (global or
/// link-local) and MAC to an endpoint on its link handed over or sent to its host.
#[inline(always)]
fn send_ipv6(ctx: &TcContext, ifindex: u32) -> Result<CounterId, CounterId> {
    const LEN: usize = ETH_LEN + IPV6_LEN;
    if ctx.data_end() - ctx.data() < LEN && ctx.len() >= LEN as u32 {
        ctx.pull_data(LEN as u32)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(CounterId::DropMalformed)?;
    let ip: *mut Ipv6Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
    let gso = is_gso(ctx);
    // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
    let (dst, tos) = unsafe {
        if !(*ip).is_sane(ctx.len() - ETH_LEN as u32, gso) {
            return Err(CounterId::DropMalformed);
        }
        if (*ip).next == weave_common::ipv6::IPPROTO_ICMPV6 {
            let kind: u8 = ctx.load(LEN).map_err(|_| CounterId::DropMalformed)?;
            if kind == weave_common::ipv6::ND_NEIGHBOUR_SOLICIT {
                return answer_solicitation(ctx, ifindex);
            }
            if is_control(kind) {
                return Err(CounterId::DropIpv6Control);
            }
        }
        // Multicast beyond neighbour discovery is not carried (yet): no group is ever joined
        // across hosts, and a switch's flooding of it would cross isolation.
        if (*eth).dst[0] & 1 != 0 || (*ip).dst[0] == 0xff {
            return Err(CounterId::DropIpv6Control);
        }
        let src = sender6(&(*ip).src, &(*eth).src, ifindex)?;
        let dst = endpoint6(&(*ip).dst).ok_or(CounterId::DropUnknownDst)?;
        if !may_talk6(&src, &dst) {
            return Err(CounterId::DropIsolated);
        }
        (*eth).dst = dst.mac;
        (hop(&dst), (*ip).traffic_class())
    };
    if dst.is_local() {
        hand_to(&dst)?;
        return Ok(CounterId::Ipv6LocalDelivered);
    }
    let crypto = crypto_path();
    if must_seal(&crypto, dst.peer) {
        if ctx.store(0, &marked_mac(dst.peer), 0).is_err() {
            return Err(CounterId::DropKernelRefused);
        }
        let device = crypto_device(&crypto).ok_or(CounterId::DropNoSession)?;
        // SAFETY: a redirect helper with no flags has no preconditions.
        if unsafe { bpf_redirect(device, 0) } != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
        return Ok(CounterId::SealToAgent);
    }
    let (next, mtu) = next_hop(dst.peer);
    // No ICMPv6 "packet too big" is built yet: a packet over a narrower path is dropped.
    if mtu != 0 && !gso && ctx.len() - ETH_LEN as u32 > u32::from(mtu) - OVERLAY_OVERHEAD {
        return Err(CounterId::DropTooBig);
    }
    send_remote(ctx, next, tos, gso).map(|_| CounterId::Ipv6RemoteSent)
}

/// The container's IPv4 packet (`ip`), or each segment of a super-packet, would make an outer
/// packet bigger than the path MTU `mtu` once wrapped.
#[inline(always)]
fn too_big(ctx: &TcContext, ip: &Ipv4Hdr, gso: bool, mtu: u16) -> bool {
    let limit = u32::from(mtu).saturating_sub(OVERLAY_OVERHEAD);
    if !gso {
        return ctx.len() - ETH_LEN as u32 > limit;
    }
    // A segment: the segment size plus the IPv4 and transport headers it is cut with.
    let ihl = u32::from(ip.ver_ihl & 0x0f) * 4;
    let l4 = match ip.proto {
        IPPROTO_TCP => ctx
            .load::<u8>(ETH_LEN + ihl as usize + 12)
            .map_or(20, |doff| u32::from(doff >> 4) * 4),
        IPPROTO_UDP => 8,
        _ => 0,
    };
    // SAFETY: the context pointer is the program's skb.
    let segment = unsafe { (*ctx.skb.skb).gso_size };
    segment + ihl + l4 > limit
}

/// Sends a frame for a remote endpoint, whose IPv4 header has `tos`, to underlay address
/// `next`: wrapped in eBPF where the agent says so, else (and for what eBPF cannot wrap)
/// through the VXLAN device; to the host that holds it, or to the relay the agent names as the
/// next hop towards it (a plain frame either way: the relay sees from the outer source who
/// sent it first).
#[inline(always)]
fn send_remote(ctx: &TcContext, next: u32, tos: u8, gso: bool) -> Result<CounterId, CounterId> {
    let cfg = config();
    // GSO super-packets (TCP bulk) go through the VXLAN device, which measured faster for
    // them; single packets skip its transmit path unless eBPF cannot wrap them.
    let mut sent = CounterId::RemoteSent;
    if cfg.encap == ENCAP_EBPF && !gso {
        match encapsulate(ctx, next, tos, &cfg)? {
            Encap::Sent => return Ok(CounterId::RemoteSent),
            Encap::Declined => sent = CounterId::RemoteSentDevice,
        }
    }
    if cfg.vxlan_ifindex == 0 {
        return Err(CounterId::DropNoTunnel);
    }
    // SAFETY: a zeroed tunnel key is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = cfg.vni;
    // The helper takes the remote address in host byte order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(next);
    key.tunnel_ttl = TUNNEL_TTL;
    // Zero outer UDP checksum, as the eBPF-built headers carry (RFC 7348 allows it over IPv4,
    // and it is the kernel VXLAN device's default): one kind of packet from one overlay.
    // Measured no different in throughput on this testbed (see the commit that chose it).
    // SAFETY: the skb pointer is the program's context, the key a local of the size given.
    let set = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            u64::from(BPF_F_ZERO_CSUM_TX),
        )
    };
    // SAFETY: a redirect helper with no flags has no preconditions.
    if set < 0 || unsafe { bpf_redirect(cfg.vxlan_ifindex, 0) } != i64::from(TC_ACT_REDIRECT) {
        return Err(CounterId::DropRedirectFailed);
    }
    Ok(sent)
}
