//! How deep a GEMM's sums run before they are added into the output, and
//! the portable mode that pins it.
//!
//! The `gemm` crate (candle's CPU matmul, and every product in `kernels`)
//! computes each output element as a chain of fused multiply-adds from
//! zero over a block of the depth `k`, and adds the blocks into the output
//! in order. On its general route (`m` or `n` above 64, not a matrix-vector
//! product) the block length comes from `gemm_common::cache::kernel_params`,
//! which sizes it to the L1 data cache that Linux reports under
//! `/sys/devices/system/cpu/cpu*/cache` (size divided by the hardware
//! threads sharing it, associativity, line): at least 512, then split
//! evenly, so a product deeper than 512 is rounded differently on CPUs
//! with different L1 caches. Measured (DESIGN.md, "Reproducibility across
//! machines"): a 32 KiB 8-way L1 (Zen 4, Skylake-SP) gives blocks of up to
//! 512, a 48 KiB 12-way one (Zen 5, Sapphire Rapids) up to 1024, the same
//! shared by two hardware threads up to 672. Everything else in the f32 CPU
//! arithmetic is the same on every x86-64 CPU with AVX2 and FMA.
//!
//! Portable mode (`MARLHF_PORTABLE=1`) pins that one parameter: a product
//! the crate would block by cache size is cut here into depth blocks of at
//! most [`PINNED_DEPTH`], split evenly as the crate splits, and each block
//! is one `gemm` call (which, no deeper than 512, the crate never splits
//! again) accumulating into the output in order. That is exactly the
//! crate's own arithmetic on a machine whose L1 gives blocks of 512, so
//! portable results are the default results of such a machine, and the
//! same bytes on any x86-64-v3 CPU.

use std::sync::atomic::{AtomicBool, Ordering};

use super::View;

/// The environment variable that turns portable mode on (`1`) or off (`0`
/// or unset), read once by every stage binary (`marlhf_cli::stage_main`).
pub const ENV: &str = "MARLHF_PORTABLE";

/// The depth block portable mode pins: the smallest the crate ever picks
/// (`kernel_params` never goes below 512), so no machine splits it again.
pub const PINNED_DEPTH: usize = 512;

static PORTABLE: AtomicBool = AtomicBool::new(false);

/// Whose depth blocking a product follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Blocking {
    /// The `gemm` crate's, from this machine's L1 cache (the default).
    Machine,
    /// Blocks of at most [`PINNED_DEPTH`], the same on every machine.
    Portable,
}

/// Turns portable mode on or off for every product that follows in this
/// process. Stage binaries call it once, before any work, from [`ENV`].
pub fn set_portable(on: bool) {
    PORTABLE.store(on, Ordering::Relaxed);
}

/// The blocking products follow now.
pub fn current() -> Blocking {
    if PORTABLE.load(Ordering::Relaxed) {
        Blocking::Portable
    } else {
        Blocking::Machine
    }
}

/// Whether [`ENV`] asks for portable mode: unset, empty or `0` is off, `1`
/// on; anything else is an error naming the variable.
pub fn portable_from_env() -> Result<bool, String> {
    match std::env::var(ENV) {
        Err(std::env::VarError::NotPresent) => Ok(false),
        Ok(v) if v.is_empty() || v == "0" => Ok(false),
        Ok(v) if v == "1" => Ok(true),
        Ok(v) => Err(format!("{ENV} must be 0 or 1, not {v:?}")),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!("{ENV} must be 0 or 1, not {v:?}")),
    }
}

/// The depth block the `gemm` crate uses on this machine for a deep product
/// on its general route (what portable mode replaces by 512).
pub fn machine_depth() -> usize {
    // A depth that every base block up to 4096 divides into blocks of
    // exactly the base (the crate splits k evenly after choosing it).
    let k = 1 << 20;
    gemm_common::cache::kernel_params(4096, 4096, k, MR, NR, 4).kc
}

/// One line for logs and benchmarks: the blocking in force and, in the
/// default mode, this machine's depth block.
pub fn describe() -> String {
    match current() {
        Blocking::Portable => format!("portable (depth blocks of at most {PINNED_DEPTH})"),
        Blocking::Machine => format!(
            "this machine's (depth blocks of up to {}, from its L1 data cache)",
            machine_depth()
        ),
    }
}

/// The f32 microkernel's register block on AVX2/FMA: 16 rows (two vectors
/// of 8) by 6 columns, what `kernel_params` is asked with.
pub(crate) const MR: usize = 16;
pub(crate) const NR: usize = 6;

/// The length of the depth blocks a product of depth `k` gets from a
/// machine whose base block is `base`: the crate's even split,
/// ⌈k / ⌈k / base⌉⌉ (the last block may be shorter).
pub(crate) fn even_split(k: usize, base: usize) -> usize {
    if k == 0 {
        return 0;
    }
    k.div_ceil(k.div_ceil(base))
}

/// Whether the `gemm` crate blocks this product's depth by cache size,
/// mirroring its dispatch for f32 with FMA (gemm 0.19: `gemm::gemm`, then
/// `gemm_basic_generic`): the destination is made column-major first; the
/// horizontal kernels (unit inner strides, at most 16×16 outputs) use a
/// fixed depth block of 1024, depths of at most 2 and matrix-vector
/// products (m or n of 1 with unit strides) none, and products of at most
/// 64×64 a fixed 512; everything else asks `kernel_params`.
pub(crate) fn cache_blocked(m: usize, n: usize, k: usize, dv: View, av: View, bv: View) -> bool {
    let (m, n, dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs) = if dv.cs < dv.rs {
        (n, m, dv.rs, dv.cs, bv.rs, bv.cs, av.rs, av.cs)
    } else {
        (m, n, dv.cs, dv.rs, av.cs, av.rs, bv.cs, bv.rs)
    };
    if m == 0 || n == 0 || k <= 2 {
        return false;
    }
    if lhs_cs == 1 && rhs_rs == 1 && m * n <= 16 * 16 {
        return false;
    }
    if n <= 1 && ((lhs_rs == 1 && dst_rs == 1) || (lhs_cs == 1 && rhs_rs == 1)) {
        return false;
    }
    if m <= 1 && ((rhs_cs == 1 && dst_cs == 1) || (rhs_rs == 1 && lhs_cs == 1)) {
        return false;
    }
    !(m <= 64 && n <= 64)
}

/// The depth of the `gemm` calls a product is cut into: `k` (one call)
/// unless portable mode pins a product the crate would block by cache size.
pub(crate) fn call_depth(
    blocking: Blocking,
    m: usize,
    n: usize,
    k: usize,
    dv: View,
    av: View,
    bv: View,
) -> usize {
    match blocking {
        Blocking::Portable if k > PINNED_DEPTH && cache_blocked(m, n, k, dv, av, bv) => {
            even_split(k, PINNED_DEPTH)
        }
        _ => k,
    }
}

/// The depth block the crate (or portable mode) uses for the decode path's
/// packed product y = x·wᵀ, which the crate computes as yᵀ = w·xᵀ
/// (m = out, n = rows): what `kernels::packed` must repeat.
pub(crate) fn packed_depth(blocking: Blocking, out: usize, rows: usize, inp: usize) -> usize {
    if out <= 64 && rows <= 64 {
        inp.min(512)
    } else {
        match blocking {
            Blocking::Machine => gemm_common::cache::kernel_params(out, rows, inp, MR, NR, 4).kc,
            Blocking::Portable => even_split(inp, PINNED_DEPTH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_is_the_crates() {
        // k ≤ base: one block; above: ⌈k/base⌉ blocks of equal length,
        // by hand: 688 → 2 × 344, 1100 → 367 + 367 + 366, 2048 → 4 × 512.
        assert_eq!(even_split(300, 512), 300);
        assert_eq!(even_split(512, 512), 512);
        assert_eq!(even_split(688, 512), 344);
        assert_eq!(even_split(1100, 512), 367);
        assert_eq!(even_split(2048, 512), 512);
        assert_eq!(even_split(2048, 1024), 1024);
        assert_eq!(even_split(600, 672), 600);
        assert_eq!(even_split(1000, 672), 500);
        // What kernel_params gives here, where its base is this machine's.
        let base = machine_depth();
        for k in [600, 688, 1000, 1100, 2048, 5000] {
            assert_eq!(
                gemm_common::cache::kernel_params(4096, 4096, k, MR, NR, 4).kc,
                even_split(k, base),
                "k = {k}, base {base}"
            );
        }
    }

    #[test]
    fn routes_follow_the_crates_dispatch() {
        let rows = |ld| View::rows(0, ld);
        let cols = |ld| View::cols(0, ld);
        // Linear forward y[n, out] = x[n, in]·wᵀ: blocked when big.
        assert!(cache_blocked(
            256,
            688,
            1024,
            rows(688),
            rows(1024),
            cols(1024)
        ));
        // At most 64×64 outputs: the fixed route.
        assert!(!cache_blocked(
            64,
            64,
            4096,
            rows(64),
            rows(4096),
            cols(4096)
        ));
        assert!(cache_blocked(
            65,
            64,
            4096,
            rows(64),
            rows(4096),
            cols(4096)
        ));
        // One output column (a matrix-vector product): no blocking.
        assert!(!cache_blocked(
            4096,
            1,
            2048,
            rows(1),
            rows(2048),
            cols(2048)
        ));
        // One row of x: y = x·wᵀ becomes yᵀ = w·xᵀ with n = 1.
        assert!(!cache_blocked(
            1,
            4096,
            2048,
            rows(4096),
            rows(2048),
            cols(2048)
        ));
        // The horizontal kernels: unit inner strides, ≤ 256 outputs.
        // (y = x·wᵀ for 2 rows of x: transposed to 100×2 outputs.)
        assert!(!cache_blocked(
            2,
            100,
            4096,
            rows(100),
            rows(4096),
            cols(4096)
        ));
        assert!(cache_blocked(
            3,
            100,
            4096,
            rows(100),
            rows(4096),
            cols(4096)
        ));
        // Depth ≤ 2.
        assert!(!cache_blocked(500, 500, 2, rows(500), rows(2), rows(500)));
    }

    #[test]
    fn portable_mode_pins_only_cache_blocked_deep_products() {
        let (d, a, b) = (View::rows(0, 688), View::rows(0, 1024), View::cols(0, 1024));
        assert_eq!(call_depth(Blocking::Machine, 256, 688, 1024, d, a, b), 1024);
        assert_eq!(call_depth(Blocking::Portable, 256, 688, 1024, d, a, b), 512);
        assert_eq!(call_depth(Blocking::Portable, 256, 688, 512, d, a, b), 512);
        let (d, a, b) = (View::rows(0, 32), View::rows(0, 1024), View::cols(0, 1024));
        assert_eq!(call_depth(Blocking::Portable, 32, 32, 1024, d, a, b), 1024);
        assert_eq!(packed_depth(Blocking::Portable, 688, 16, 2048), 512);
        assert_eq!(packed_depth(Blocking::Portable, 688, 16, 688), 344);
        assert_eq!(packed_depth(Blocking::Portable, 32, 16, 2048), 512);
    }
}
