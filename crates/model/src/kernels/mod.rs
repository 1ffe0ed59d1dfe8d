//! CPU kernels on plain f32 slices, below candle: the matrix product the
//! fused ops call directly (the `gemm` crate, the kernel candle's own
//! matmul runs on, so a product computed here has candle's numbers), fused
//! attention, and the SIMD dot products of the decode path.
//!
//! Every product goes through [`gemm`], which follows the depth blocking
//! in force ([`blocking`]: this machine's, or portable mode's pinned one).
//!
//! These exist because the training step of a small model spends more time
//! around its matmuls than in them when every element-wise step is a candle
//! op: each allocates its output, and each backward accumulation allocates
//! a zero tensor and an add. The ops in `crate::ops` wrap these kernels with
//! hand-written backward passes.

pub mod attention;
pub mod blocking;
pub mod exp;
pub mod packed;

use candle_core::{bail, Result, Storage, Tensor};

use blocking::Blocking;

/// Where a matrix lies in its buffer: the offset of element (0, 0) and the
/// strides between rows and between columns, in elements.
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl View {
    /// A row-major matrix with rows `ld` elements apart.
    pub fn rows(off: usize, ld: usize) -> Self {
        View { off, rs: ld, cs: 1 }
    }

    /// The transpose of a row-major matrix with rows `ld` apart.
    pub fn cols(off: usize, ld: usize) -> Self {
        View { off, rs: 1, cs: ld }
    }

    /// One past the last element an `r`×`c` matrix here touches.
    fn end(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            self.off
        } else {
            self.off + (r - 1) * self.rs + (c - 1) * self.cs + 1
        }
    }
}

/// Whether a product may split itself over the rayon pool; products already
/// inside a parallel task run on one thread.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Par {
    Pool,
    Serial,
}

/// A raw pointer that parallel tasks share to write disjoint parts of one
/// output buffer.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32, pub usize);

unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    pub fn new(s: &mut [f32]) -> Self {
        SendPtr(s.as_mut_ptr(), s.len())
    }
}

/// `dst = (accumulate ? dst : 0) + a·b` for an `m`×`k` matrix `a` and a
/// `k`×`n` matrix `b`, each where its `View` says.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dv: View,
    accumulate: bool,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    par: Par,
) {
    // SAFETY: the pointer and length come from a live exclusive borrow.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            SendPtr::new(dst),
            dv,
            accumulate,
            a,
            av,
            b,
            bv,
            par,
        )
    }
}

/// [`gemm`] writing through a shared pointer, for parallel tasks that write
/// disjoint parts of one buffer.
///
/// # Safety
/// `dst` must point to `dst.1` writable elements, and no other thread may
/// access the elements this product writes while it runs.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: SendPtr,
    dv: View,
    accumulate: bool,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    par: Par,
) {
    gemm_in(
        blocking::current(),
        m,
        n,
        k,
        dst,
        dv,
        accumulate,
        a,
        av,
        b,
        bv,
        par,
    )
}

/// [`gemm_raw`] under the given depth blocking: one `gemm` call, or in
/// portable mode consecutive calls over depth blocks of at most 512, each
/// adding into the output (the crate's own `1·dst + acc` of its blocks).
///
/// # Safety
/// As [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_in(
    blocking: Blocking,
    m: usize,
    n: usize,
    k: usize,
    dst: SendPtr,
    dv: View,
    accumulate: bool,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    par: Par,
) {
    assert!(dv.end(m, n) <= dst.1, "gemm: destination out of bounds");
    assert!(av.end(m, k) <= a.len(), "gemm: left operand out of bounds");
    assert!(bv.end(k, n) <= b.len(), "gemm: right operand out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = match par {
        Par::Pool if rayon::current_num_threads() > 1 => {
            gemm::Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => gemm::Parallelism::None,
    };
    let d = dst.0.add(dv.off);
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *d.add(i * dv.rs + j * dv.cs) = 0.0;
                }
            }
        }
        return;
    }
    let step = blocking::call_depth(blocking, m, n, k, dv, av, bv);
    let mut p = 0;
    while p < k {
        let kb = step.min(k - p);
        // Blocks after the first add into what the ones before wrote.
        let acc = accumulate || p > 0;
        // dst = alpha·dst + beta·a·b, dst read only when accumulating.
        gemm::gemm(
            m,
            n,
            kb,
            d,
            dv.cs as isize,
            dv.rs as isize,
            acc,
            a.as_ptr().add(av.off + p * av.cs),
            av.cs as isize,
            av.rs as isize,
            b.as_ptr().add(bv.off + p * bv.rs),
            bv.cs as isize,
            bv.rs as isize,
            if acc { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        p += kb;
    }
}

/// Runs `f` on the contiguous u32 data of a CPU tensor.
pub fn with_u32<R>(t: &Tensor, f: impl FnOnce(&[u32]) -> R) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        bail!("kernel: tensor is not on the CPU")
    };
    let data = c.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(f(&data[a..b])),
        None => bail!("kernel: tensor is not contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(c) = &*s else {
        bail!("kernel: tensor is not on the CPU")
    };
    let data = c.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(f(&data[a..b])),
        None => bail!("kernel: tensor is not contiguous"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn strided_products_match_the_definition() {
        // 3×4 · 4×2 = the hand-checked sum of products; then the same with
        // b given as the transpose of a row-major 2×4 and accumulation.
        let a: Vec<f32> = (0..12).map(|x| x as f32 - 5.0).collect();
        let b: Vec<f32> = (0..8).map(|x| (x as f32) * 0.5).collect();
        let want = naive(3, 2, 4, &a, &b);
        let mut c = vec![0f32; 6];
        gemm(
            3,
            2,
            4,
            &mut c,
            View::rows(0, 2),
            false,
            &a,
            View::rows(0, 4),
            &b,
            View::rows(0, 2),
            Par::Serial,
        );
        assert_eq!(c, want);
        // By hand: row 0 of a is [−5, −4, −3, −2], column 0 of b is
        // [0, 1, 2, 3]: 0 − 4 − 6 − 6 = −16.
        assert_eq!(c[0], -16.0);
        let mut bt = vec![0f32; 8];
        for p in 0..4 {
            for j in 0..2 {
                bt[j * 4 + p] = b[p * 2 + j];
            }
        }
        gemm(
            3,
            2,
            4,
            &mut c,
            View::rows(0, 2),
            true,
            &a,
            View::rows(0, 4),
            &bt,
            View::cols(0, 4),
            Par::Pool,
        );
        let twice: Vec<f32> = want.iter().map(|x| 2.0 * x).collect();
        assert_eq!(c, twice);
    }

    /// The crate's arithmetic on its cache-blocked route, written out: each
    /// output a chain of fused multiply-adds from zero over each depth
    /// block of ⌈k/⌈k/base⌉⌉, the blocks added into it in order. It depends
    /// on nothing but `base`.
    #[allow(clippy::too_many_arguments)]
    fn blocked_chain(
        m: usize,
        n: usize,
        k: usize,
        base: usize,
        a: &[f32],
        av: View,
        b: &[f32],
        bv: View,
    ) -> Vec<f32> {
        let kc = blocking::even_split(k, base);
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut y = 0f32;
                for (bi, p0) in (0..k).step_by(kc).enumerate() {
                    let mut acc = 0f32;
                    for p in p0..(p0 + kc).min(k) {
                        let x = a[av.off + i * av.rs + p * av.cs];
                        let w = b[bv.off + p * bv.rs + j * bv.cs];
                        acc = x.mul_add(w, acc);
                    }
                    y = if bi == 0 { acc } else { y + acc };
                }
                c[i * n + j] = y;
            }
        }
        c
    }

    /// Portable mode's products are the blocked chain with base 512 bit for
    /// bit, a definition no machine parameter enters; the default mode's
    /// are the same chain with this machine's base (so the chain is the
    /// crate's arithmetic), and the two differ where the bases do.
    #[test]
    fn portable_products_are_the_pinned_chain() {
        assert!(
            std::arch::is_x86_feature_detected!("fma"),
            "the crate's FMA kernels need an x86-64 CPU with FMA"
        );
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let base = blocking::machine_depth();
        let mut differs = 0;
        // (m, n, k, how a and b lie): the linear layer's forward
        // (x · wᵀ), its dx = g·w and its dw = gᵀ·x, at depths the crate
        // keeps whole or splits.
        for (m, n, k, layout) in [
            (96, 80, 600, 0),
            (70, 130, 688, 0),
            (100, 72, 1100, 1),
            (80, 96, 2048, 2),
            (65, 66, 1500, 2),
            (200, 40, 1030, 0),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1f32..1.0)).collect();
            let (av, bv) = match layout {
                0 => (View::rows(0, k), View::cols(0, k)),
                1 => (View::rows(0, k), View::rows(0, n)),
                _ => (View::cols(0, m), View::rows(0, n)),
            };
            let dv = View::rows(0, n);
            assert!(blocking::cache_blocked(m, n, k, dv, av, bv));
            let run = |blocking| {
                let mut c = vec![f32::NAN; m * n];
                // SAFETY: `c` is a live exclusive buffer.
                unsafe {
                    gemm_in(
                        blocking,
                        m,
                        n,
                        k,
                        SendPtr::new(&mut c),
                        dv,
                        false,
                        &a,
                        av,
                        &b,
                        bv,
                        Par::Pool,
                    )
                };
                c
            };
            let bits = |c: &[f32]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let portable = run(Blocking::Portable);
            let pinned = blocked_chain(m, n, k, blocking::PINNED_DEPTH, &a, av, &b, bv);
            assert_eq!(bits(&portable), bits(&pinned), "portable {m}x{n}x{k}");
            let machine = run(Blocking::Machine);
            let own = blocked_chain(m, n, k, base, &a, av, &b, bv);
            assert_eq!(bits(&machine), bits(&own), "machine {m}x{n}x{k}");
            if bits(&machine) != bits(&portable) {
                differs += 1;
            }
        }
        // Every depth here above 512 splits differently unless this
        // machine's base is 512 (600 and 688 stay whole with a base of
        // 1024 and are split in two under portable mode).
        if base == blocking::PINNED_DEPTH {
            assert_eq!(differs, 0);
        } else {
            assert!(differs > 0, "base {base}: no product changed");
        }
    }

    /// Products the crate does not block by cache size are left whole.
    #[test]
    fn other_routes_are_the_same_in_both_modes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // A matrix-vector product, a ≤ 64×64 product and a horizontal one.
        for (m, n, k) in [(300, 1, 2000), (40, 50, 1500), (2, 100, 3000)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1f32..1.0)).collect();
            let (dv, av, bv) = (View::rows(0, n), View::rows(0, k), View::cols(0, k));
            assert!(!blocking::cache_blocked(m, n, k, dv, av, bv));
            let run = |blocking| {
                let mut c = vec![0f32; m * n];
                // SAFETY: `c` is a live exclusive buffer.
                unsafe {
                    gemm_in(
                        blocking,
                        m,
                        n,
                        k,
                        SendPtr::new(&mut c),
                        dv,
                        false,
                        &a,
                        av,
                        &b,
                        bv,
                        Par::Pool,
                    )
                };
                c.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(Blocking::Machine), run(Blocking::Portable));
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_views_are_refused() {
        let a = vec![0f32; 4];
        let mut c = vec![0f32; 4];
        gemm(
            2,
            2,
            3,
            &mut c,
            View::rows(0, 2),
            false,
            &a,
            View::rows(0, 3),
            &a,
            View::rows(0, 2),
            Par::Serial,
        );
    }
}
