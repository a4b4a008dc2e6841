//! The per-core L2 size, which sets how many widened weight rows a GEMM keeps hot ([`super_block_bytes`]).
//! L2 sizes differ fourfold between the CPUs the engine meets (512 KiB on AMD Zen 2/3, 1 MiB on Zen 4,
//! 1.25–2 MiB on recent Intel cores), and a super-block that fills the whole L2 leaves no room for the
//! activations it is multiplied with: on a 512 KiB Zen 3 the old fixed 512 KiB block measured 8 % below a
//! 192 KiB one (`cargo bench --bench ops -- gemm/bf16-weights/bf16-act/n256`, qkv and gate_up shapes).
//!
//! Operations: [`l2_bytes`], [`super_block_bytes`].

use std::sync::OnceLock;

/// The largest super-block: what the AVX-512 kernels were measured with on a 2 MiB L2.
const MAX_SUPER_BLOCK: usize = 512 << 10;
/// The smallest super-block (a few row blocks of the widest projection).
const MIN_SUPER_BLOCK: usize = 64 << 10;

/// The L2 data (or unified) cache of cpu 0 in bytes, from Linux sysfs; None where it cannot be read.
pub fn l2_bytes() -> Option<usize> {
    static L2: OnceLock<Option<usize>> = OnceLock::new();
    *L2.get_or_init(read_l2)
}

/// Bytes of widened weights per GEMM super-block: 3/8 of the L2, within [64 KiB, 512 KiB]; 512 KiB where
/// the L2 size is unknown.
pub fn super_block_bytes() -> usize {
    super_block_for(l2_bytes())
}

fn super_block_for(l2: Option<usize>) -> usize {
    l2.map_or(MAX_SUPER_BLOCK, |b| (b / 8 * 3).clamp(MIN_SUPER_BLOCK, MAX_SUPER_BLOCK))
}

fn read_l2() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let read = |name: &str| std::fs::read_to_string(entry.path().join(name)).ok();
        let level = read("level").map(|s| s.trim() == "2").unwrap_or(false);
        let kind = read("type").map(|s| matches!(s.trim(), "Data" | "Unified")).unwrap_or(false);
        if level && kind {
            return read("size").and_then(|s| parse_size(&s));
        }
    }
    None
}

/// A sysfs cache size: `512K`, `2048K`, `1M`, or plain bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok().filter(|&v| v > 0).map(|v| v * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_sizes_parse() {
        assert_eq!(parse_size("512K\n"), Some(512 << 10));
        assert_eq!(parse_size("2048K"), Some(2 << 20));
        assert_eq!(parse_size("1M"), Some(1 << 20));
        assert_eq!(parse_size("65536"), Some(65536));
        for bad in ["", "K", "0K", "-1K", "12Q", "big"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_super_block_leaves_most_of_the_l2_to_the_activations() {
        assert_eq!(super_block_for(Some(512 << 10)), 192 << 10); // Zen 2/3
        assert_eq!(super_block_for(Some(1 << 20)), 384 << 10); // Zen 4
        assert_eq!(super_block_for(Some(2 << 20)), 512 << 10); // Sapphire Rapids: as measured there
        assert_eq!(super_block_for(Some(128 << 10)), 64 << 10);
        assert_eq!(super_block_for(None), 512 << 10);
    }
}
