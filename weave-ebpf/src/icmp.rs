//! ICMP "fragmentation needed" (RFC 792 type 3 code 4, with RFC 1191's next-hop MTU), made in
//! eBPF for a container packet too big for the path to its host: a hop with a smaller MTU
//! than the underlay NIC (a switch port, a tunnel) drops such a packet silently, and the ICMP
//! a router on the way might send reaches the host, never the container. Answered here, the
//! container's stack learns the MTU that fits for that destination and sends smaller packets
//! (TCP lowers its segment size; a large ping is fragmented smaller).

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::generated::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use weave_common::counters::CounterId;

use crate::headers::{ETH_LEN, EthHdr, internet_checksum};

/// IPv4 header (no options) and the first 8 bytes of its payload: what an ICMP error quotes.
const QUOTED: usize = 28;
/// The answer's IPv4 header, ICMP header and quote.
const ANSWER_IP_LEN: usize = 20 + 8 + QUOTED;
const IPPROTO_ICMP: u8 = 1;
/// Internetwork control, as the kernel's own ICMP errors carry.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// Turns the container's IPv4 packet into the ICMP answer saying `mtu` fits, and sends it
/// back out of the container's veth `ifindex`. The answer comes from the packet's destination
/// (its address and, in the Ethernet header the caller has rewritten, its MAC), so it is the
/// destination's path MTU that the container's stack lowers.
#[inline(always)]
pub(crate) fn frag_needed(ctx: &TcContext, ifindex: u32, mtu: u16) -> Result<CounterId, CounterId> {
    let eth: EthHdr = ctx.load(0).map_err(|_| CounterId::DropKernelRefused)?;
    let quoted: [u8; QUOTED] = ctx
        .load(ETH_LEN)
        .map_err(|_| CounterId::DropKernelRefused)?;
    // An options-bearing header would need a quote of another length; rare enough to drop.
    if quoted[0] != 0x45 {
        return Err(CounterId::DropTooBig);
    }
    // SAFETY: the context pointer is the program's skb; shrinking takes no flags.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_LEN + ANSWER_IP_LEN) as u32, 0) } != 0 {
        return Err(CounterId::DropKernelRefused);
    }
    let mut out = [0u8; ETH_LEN + ANSWER_IP_LEN];
    // Ethernet: back to the container, from the destination.
    out[0..6].copy_from_slice(&eth.src);
    out[6..12].copy_from_slice(&eth.dst);
    out[12..14].copy_from_slice(&eth.proto);
    let ip = ETH_LEN;
    out[ip] = 0x45;
    out[ip + 1] = TOS_INTERNETWORK_CONTROL;
    out[ip + 2..ip + 4].copy_from_slice(&(ANSWER_IP_LEN as u16).to_be_bytes());
    out[ip + 8] = 64;
    out[ip + 9] = IPPROTO_ICMP;
    // From the packet's destination to its source.
    let (src, dst) = (&quoted[16..20], &quoted[12..16]);
    out[ip + 12..ip + 16].copy_from_slice(src);
    out[ip + 16..ip + 20].copy_from_slice(dst);
    let csum = internet_checksum(&out, ip, 20);
    out[ip + 10..ip + 12].copy_from_slice(&csum.to_be_bytes());
    let icmp = ip + 20;
    out[icmp] = 3;
    out[icmp + 1] = 4;
    out[icmp + 6..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
    out[icmp + 8..icmp + 8 + QUOTED].copy_from_slice(&quoted);
    let csum = internet_checksum(&out, icmp, 8 + QUOTED);
    out[icmp + 2..icmp + 4].copy_from_slice(&csum.to_be_bytes());
    ctx.store(0, &out, 0)
        .map_err(|_| CounterId::DropKernelRefused)?;
    // SAFETY: a redirect helper with no flags has no preconditions.
    if unsafe { bpf_redirect(ifindex, 0) } != i64::from(TC_ACT_REDIRECT) {
        return Err(CounterId::DropRedirectFailed);
    }
    Ok(CounterId::IcmpFragNeeded)
}
