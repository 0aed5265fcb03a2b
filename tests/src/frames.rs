//! Crafted frames, byte by byte: what the hostile-input tests inject into namespaces and what
//! the in-kernel program tests feed to BPF_PROG_TEST_RUN. Written out by hand so that every
//! malformed variant (a wrong version, a length that lies, a clear VXLAN flag) is one knob.

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;
/// VXLAN flags byte with the I flag (a valid VNI follows).
pub const VXLAN_I: u8 = 0x08;
/// Outer Ethernet + IPv4 + UDP + VXLAN around an overlay frame.
pub const VXLAN_OVERHEAD: usize = 50;

/// The MAC the agent gives the endpoint with address `ip`, written out here rather than taken
/// from weave-common so that the tests do not share a mistake with the code they test.
pub fn endpoint_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x57, ip[0], ip[1], ip[2], ip[3]]
}

/// RFC 791 header checksum (ones' complement of the ones' complement sum).
pub fn checksum(header: &[u8]) -> [u8; 2] {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Knobs for one IPv4 packet; `Default` is a well-formed UDP datagram 0.0.0.0 -> 0.0.0.0.
#[derive(Clone)]
pub struct Ip {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub version: u8,
    /// 32-bit words of options (NOPs).
    pub option_words: u8,
    /// Type of service: DSCP and ECN field.
    pub tos: u8,
    /// Flags and fragment offset field.
    pub frag: u16,
    /// Overrides the total length field.
    pub claimed_len: Option<u16>,
    pub proto: u8,
    pub payload: Vec<u8>,
}

impl Default for Ip {
    fn default() -> Self {
        Self {
            src: [0; 4],
            dst: [0; 4],
            version: 4,
            option_words: 0,
            tos: 0,
            frag: 0,
            claimed_len: None,
            proto: IPPROTO_UDP,
            // UDP 9999 -> 9999, no checksum, 8 bytes of data.
            payload: [&[0x27, 0x0f, 0x27, 0x0f, 0, 16, 0, 0][..], b"crafted!"].concat(),
        }
    }
}

impl Ip {
    /// A well-formed UDP datagram from `src` to `dst`.
    pub fn udp(src: [u8; 4], dst: [u8; 4]) -> Self {
        Self {
            src,
            dst,
            ..Self::default()
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let ihl = 5 + self.option_words;
        let total = u16::from(ihl) * 4 + self.payload.len() as u16;
        let mut h = vec![(self.version << 4) | ihl, self.tos];
        h.extend_from_slice(&self.claimed_len.unwrap_or(total).to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.extend_from_slice(&[64, self.proto, 0, 0]);
        h.extend_from_slice(&self.src);
        h.extend_from_slice(&self.dst);
        h.extend(std::iter::repeat_n(1u8, usize::from(self.option_words) * 4));
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum);
        h.extend_from_slice(&self.payload);
        h
    }
}

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    [&dst[..], &src[..], &ethertype.to_be_bytes()[..], payload].concat()
}

/// A broadcast ARP request (IPv4 over Ethernet) for `tpa`; `spa` 0.0.0.0 makes it an RFC 5227
/// probe.
pub fn arp_request(eth_src: [u8; 6], sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&sha);
    arp.extend_from_slice(&spa);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&tpa);
    ethernet([0xff; 6], eth_src, ETHERTYPE_ARP, &arp)
}

/// UDP to the VXLAN port carrying `inner`, with the given flags byte and VNI: the payload of
/// an outer [`Ip`].
pub fn vxlan_udp(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut udp = vec![0xc0, 0x00];
    udp.extend_from_slice(&weave_common::VXLAN_PORT.to_be_bytes());
    udp.extend_from_slice(&(16 + inner.len() as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0, flags, 0, 0, 0]);
    udp.extend_from_slice(&(vni << 8).to_be_bytes());
    udp.extend_from_slice(inner);
    udp
}

/// A VXLAN datagram from underlay address `src` to `dst` carrying `inner`, with the given flags
/// byte and VNI.
pub fn vxlan(src: [u8; 4], dst: [u8; 4], flags: u8, vni: u32, inner: &[u8]) -> Ip {
    Ip {
        payload: vxlan_udp(flags, vni, inner),
        ..Ip::udp(src, dst)
    }
}

/// A VXLAN datagram from underlay address `src` to `dst` carrying `inner` on behalf of `origin`
/// after `hops` relays: the relay marks written out by hand (the low three bits of the flags,
/// the origin in the reserved bytes 1-3 and 7 of the VXLAN header), as `weave_common::relay`
/// defines them.
pub fn relayed_vxlan(
    src: [u8; 4],
    dst: [u8; 4],
    origin: [u8; 4],
    hops: u8,
    vni: u32,
    inner: &[u8],
) -> Ip {
    let mut ip = vxlan(src, dst, VXLAN_I | hops, vni, inner);
    ip.payload[9..12].copy_from_slice(&origin[..3]);
    ip.payload[15] = origin[3];
    ip
}

pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// An IPv6 packet: `next` header, `hop` limit, then `payload`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram (no checksum) in IPv6 from `src` to `dst`.
pub fn udp6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let udp = [&[0x27, 0x0f, 0x27, 0x0f, 0, 16, 0, 0][..], b"crafted!"].concat();
    ipv6(src, dst, IPPROTO_UDP, 64, &udp)
}

/// The solicited-node group of `addr` (RFC 4291 2.7.1) and its MAC.
pub fn solicited_node(addr: [u8; 16]) -> ([u8; 16], [u8; 6]) {
    let mut group = [0u8; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[11..13].copy_from_slice(&[0x01, 0xff]);
    group[13..].copy_from_slice(&addr[13..]);
    (group, [0x33, 0x33, 0xff, addr[13], addr[14], addr[15]])
}

/// An ICMPv6 message of `kind` whose body after the 4-byte header is `body`, checksummed.
pub fn icmpv6(src: [u8; 16], dst: [u8; 16], kind: u8, body: &[u8]) -> Vec<u8> {
    let mut msg = [&[kind, 0, 0, 0][..], body].concat();
    let sum = weave_common::ipv6::icmpv6_checksum(&src, &dst, &msg);
    msg[2..4].copy_from_slice(&sum);
    ipv6(src, dst, 58, 255, &msg)
}

/// A neighbour solicitation as the kernel sends one to resolve `target` from `src` (MAC
/// `mac`): to the target's solicited-node group, with a source link-layer address option.
pub fn neighbour_solicitation(mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let body = [&[0u8; 4][..], &target, &[1, 1], &mac].concat();
    ethernet(
        group_mac,
        mac,
        ETHERTYPE_IPV6,
        &icmpv6(src, group, 135, &body),
    )
}

/// The advertisement that answers [`neighbour_solicitation`] from `target` (MAC
/// `target_mac`) to `asker` (MAC `asker_mac`): solicited, override.
pub fn neighbour_advertisement(
    target_mac: [u8; 6],
    target: [u8; 16],
    asker_mac: [u8; 6],
    asker: [u8; 16],
) -> Vec<u8> {
    let body = [&[0x60, 0, 0, 0][..], &target, &[2, 1], &target_mac].concat();
    ethernet(
        asker_mac,
        target_mac,
        ETHERTYPE_IPV6,
        &icmpv6(target, asker, 136, &body),
    )
}
