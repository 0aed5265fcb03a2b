//! The crypto TAP's queue choice (`TUNSETSTEERINGEBPF`): which of the agent's workers reads a
//! frame the kernel hands the device. A frame to seal is steered by its flow, a sealed
//! datagram by its UDP source port, which the sending worker chose to match its own queue
//! (`weave_common::seal::flow_hint`). So a request and its response meet the same worker on
//! each host, while it still polls for the answer to what it just sent.
//!
//! The kernel takes the returned value modulo the queue count; a frame this program cannot
//! read goes to queue 0.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext as _, bindings::bpf_hdr_start_off::BPF_HDR_START_MAC,
    helpers::generated::bpf_skb_load_bytes_relative, macros::socket_filter,
    programs::SkBuffContext,
};
use weave_common::seal::{flow_hint, marked_peer};

use crate::headers::{ETH_LEN, ETH_P_IP, EthHdr, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr};

#[socket_filter]
pub fn tap_steering(ctx: SkBuffContext) -> i64 {
    i64::from(hint(&ctx).unwrap_or(0))
}

/// `T` at `offset` from the frame's Ethernet header. A socket filter's packet offsets start
/// wherever the caller left the data pointer; the MAC header is where the frame starts both
/// at the device's queue choice and in a test run.
#[inline(always)]
fn load<T>(ctx: &SkBuffContext, offset: usize) -> Option<T> {
    let mut out = MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `out`.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.as_ptr(),
            offset as u32,
            out.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            BPF_HDR_START_MAC,
        )
    };
    // SAFETY: on success the helper filled all of it.
    (ret == 0).then(|| unsafe { out.assume_init() })
}

#[inline(always)]
fn hint(ctx: &SkBuffContext) -> Option<u16> {
    let eth: EthHdr = load(ctx, 0)?;
    if eth.proto() != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Hdr = load(ctx, ETH_LEN)?;
    let l4 = ETH_LEN + usize::from(ip.ver_ihl & 0x0f) * 4;
    if marked_peer(&eth.dst).is_none() {
        // A sealed datagram: its source port names the sending worker's queue index.
        let ports: [u8; 2] = load(ctx, l4)?;
        return Some(u16::from_be_bytes(ports));
    }
    // A fragment after the first has no ports; the first one's are not known here.
    let whole = u16::from_be_bytes(ip.frag) & 0x3fff == 0;
    let ports = if whole && (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) {
        load(ctx, l4).unwrap_or([0; 4])
    } else {
        [0; 4]
    };
    Some(flow_hint(ip.src, ip.dst, ports))
}
