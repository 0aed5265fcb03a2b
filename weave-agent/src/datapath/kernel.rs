//! What the running kernel can do, read from its BTF.

use std::{fs, path::Path};

/// Where the kernel describes itself, including every flag its helpers take.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Whether this kernel's bpf_skb_adjust_room can clear a packet's UDP-tunnel GSO state while
/// eBPF strips the tunnel (`BPF_F_ADJ_ROOM_DECAP_L4_UDP`, newer than Linux 6.18). Without it a
/// decapsulated super-packet keeps that state, which breaks it if its container sends it on
/// (segmentation then follows stale tunnel offsets), so super-packets for endpoints that
/// forward are left to the kernel VXLAN device.
pub(super) fn kernel_clears_tunnel_gso() -> bool {
    btf_has(Path::new(KERNEL_BTF), "BPF_F_ADJ_ROOM_DECAP_L4_UDP")
}

/// Whether the BTF at `path` names `name`; false where the kernel has no BTF to ask, so the
/// agent takes the path every kernel has.
fn btf_has(path: &Path, name: &str) -> bool {
    fs::File::open(path)
        .and_then(|btf| btf_names(btf, name))
        .unwrap_or(false)
}

/// Whether `name` is a whole string in a BTF blob's string section (NUL-separated names); an
/// enumerator's name is there exactly when the kernel has the enumerator. Read in chunks: the
/// kernel's BTF is megabytes, which the agent should not keep as resident memory.
fn btf_names(mut btf: impl std::io::Read, name: &str) -> std::io::Result<bool> {
    let needle = [b"\0", name.as_bytes(), b"\0"].concat();
    let mut window = Vec::with_capacity(64 * 1024 + needle.len());
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let read = btf.read(&mut chunk)?;
        if read == 0 {
            return Ok(false);
        }
        window.extend_from_slice(&chunk[..read]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        // Keep the tail, which may hold the start of a match that continues in the next chunk.
        let keep = window.len().min(needle.len() - 1);
        window.drain(..window.len() - keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_names_finds_whole_names_only() {
        let btf: &[u8] = b"\x9f\xeb\x01\0BPF_F_ADJ_ROOM_FIXED_GSO\0BPF_F_ADJ_ROOM_DECAP_L3_IPV4\0";
        let names = |name| btf_names(btf, name).unwrap();
        assert!(names("BPF_F_ADJ_ROOM_DECAP_L3_IPV4"));
        assert!(!names("BPF_F_ADJ_ROOM_DECAP_L4_UDP"));
        // A prefix or suffix of a name is not the name.
        assert!(!names("ADJ_ROOM_FIXED_GSO"));
        assert!(!names("BPF_F_ADJ_ROOM_FIXED"));
    }

    /// Reads one byte at a time: every match straddles a chunk boundary.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn btf_names_finds_a_name_split_across_reads() {
        let btf = b"\0AB\0BPF_F_ADJ_ROOM_DECAP_L4_UDP\0";
        assert!(btf_names(Trickle(btf), "BPF_F_ADJ_ROOM_DECAP_L4_UDP").unwrap());
        assert!(!btf_names(Trickle(btf), "BPF_F_ADJ_ROOM_DECAP_L3_IPV4").unwrap());
    }

    #[test]
    fn without_btf_the_probe_says_no() {
        let missing = Path::new("/nonexistent/btf/vmlinux");
        assert!(!btf_has(missing, "BPF_F_ADJ_ROOM_ENCAP_L4_UDP"));
    }

    /// The data path needs TCX links (Linux 6.6+), and every kernel of that age that the
    /// project supports is built with BTF: a kernel without it fails here rather than passing
    /// a check it never made.
    #[test]
    fn the_running_kernel_names_its_adjust_room_flags() {
        let btf = Path::new(KERNEL_BTF);
        assert!(
            btf.exists(),
            "{KERNEL_BTF} is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), so the \
             agent cannot probe its helpers' flags"
        );
        // In every kernel with BTF (since Linux 4.20): the probe finds a flag that is there.
        assert!(btf_has(btf, "BPF_F_ADJ_ROOM_ENCAP_L4_UDP"));
        assert!(!btf_has(btf, "BPF_F_ADJ_ROOM_NO_SUCH_FLAG"));
    }
}
