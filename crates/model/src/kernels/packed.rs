//! `y = x · wᵀ` for a few rows x (the rows of a batched decode step) and a
//! weight w [out, in] packed once per generation into panels of 16 output
//! rows, each panel [in][16] contiguous.
//!
//! The `gemm` crate computes this product as `yᵀ = w · xᵀ` and copies all
//! of w into the same kind of panels on every call, which at decode time is
//! most of the work. Packed once, the panels stream from memory in order.
//! The arithmetic is the crate's own on this route (its AVX2/FMA f32
//! microkernel): each output is a chain of fused multiply-adds along `in`
//! from zero, over the same depth blocks (`gemm_common`'s `kernel_params`,
//! or portable mode's pinned ones: `blocking::packed_depth`), the blocks
//! summed into y in order. So the results are its results bit
//! for bit, which the tests check against `kernels::gemm`; where that
//! route would not be taken (no FMA, one row, or at most 16×16 outputs,
//! which the crate treats otherwise), `apply` declines and the caller uses
//! `kernels::gemm`.

use rayon::prelude::*;

use super::blocking::{self, Blocking, MR, NR};
use super::SendPtr;

pub struct Packed {
    out: usize,
    inp: usize,
    /// ⌈out/16⌉ panels of [inp][16], zero-padded past `out`.
    panels: Vec<f32>,
}

impl Packed {
    pub fn new(w: &[f32], out: usize, inp: usize) -> Self {
        assert_eq!(w.len(), out * inp, "packed weight: shape");
        let n = out.div_ceil(MR);
        let mut panels = vec![0f32; n * inp * MR];
        panels
            .par_chunks_mut(inp * MR)
            .enumerate()
            .for_each(|(pi, panel)| {
                for (i, o) in (pi * MR..(pi * MR + MR).min(out)).enumerate() {
                    for p in 0..inp {
                        panel[p * MR + i] = w[o * inp + p];
                    }
                }
            });
        Packed { out, inp, panels }
    }

    /// Whether `gemm` would take the FMA microkernel route for `rows` rows,
    /// the one this reproduces.
    pub fn applies(&self, rows: usize) -> bool {
        fma_available() && rows >= 2 && self.out >= 2 && self.inp > 2 && rows * self.out > 16 * 16
    }

    /// y [rows, out] = x [rows, inp] · wᵀ, or false (nothing written) where
    /// [`Packed::applies`] does not hold; the depth blocks are those
    /// `kernels::gemm` uses under the blocking in force.
    pub fn apply(&self, rows: usize, x: &[f32], y: &mut [f32]) -> bool {
        self.apply_in(blocking::current(), rows, x, y)
    }

    fn apply_in(&self, blocking: Blocking, rows: usize, x: &[f32], y: &mut [f32]) -> bool {
        if !self.applies(rows) {
            return false;
        }
        assert!(x.len() >= rows * self.inp && y.len() >= rows * self.out);
        let kc = blocking::packed_depth(blocking, self.out, rows, self.inp).max(1);
        let n_panels = self.out.div_ceil(MR);
        let dst = SendPtr::new(&mut y[..rows * self.out]);
        let per_task = n_panels.div_ceil(4 * rayon::current_num_threads()).max(1);
        (0..n_panels)
            .into_par_iter()
            .with_min_len(per_task)
            .for_each(|pi| {
                let panel = &self.panels[pi * self.inp * MR..(pi + 1) * self.inp * MR];
                let cols = MR.min(self.out - pi * MR);
                for r0 in (0..rows).step_by(NR) {
                    let nb = NR.min(rows - r0);
                    // SAFETY: `applies` checked AVX2 and FMA; task pi writes
                    // only columns pi·16.. of y.
                    unsafe {
                        #[cfg(target_arch = "x86_64")]
                        x86::panel(panel, x, self.inp, r0, nb, kc, dst, self.out, pi * MR, cols);
                    }
                }
            });
        true
    }
}

fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};
    use crate::kernels::SendPtr;

    /// One panel (16 outputs) for rows r0..r0+nb of x, written to y.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; y (`dst`, rows `ldy` apart) must
    /// have columns c0..c0+cols for those rows, written by no one else.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn panel(
        panel: &[f32],
        x: &[f32],
        inp: usize,
        r0: usize,
        nb: usize,
        kc: usize,
        dst: SendPtr,
        ldy: usize,
        c0: usize,
        cols: usize,
    ) {
        match nb {
            6 => block::<6>(panel, x, inp, r0, kc, dst, ldy, c0, cols),
            5 => block::<5>(panel, x, inp, r0, kc, dst, ldy, c0, cols),
            4 => block::<4>(panel, x, inp, r0, kc, dst, ldy, c0, cols),
            3 => block::<3>(panel, x, inp, r0, kc, dst, ldy, c0, cols),
            2 => block::<2>(panel, x, inp, r0, kc, dst, ldy, c0, cols),
            1 => block::<1>(panel, x, inp, r0, kc, dst, ldy, c0, cols),
            _ => unreachable!("row blocks hold 1 to {NR} rows"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const NB: usize>(
        panel: &[f32],
        x: &[f32],
        inp: usize,
        r0: usize,
        kc: usize,
        dst: SendPtr,
        ldy: usize,
        c0: usize,
        cols: usize,
    ) {
        let w = panel.as_ptr();
        let xs = x.as_ptr().add(r0 * inp);
        let mut k0 = 0;
        while k0 < inp {
            let k1 = (k0 + kc).min(inp);
            let mut acc = [[_mm256_setzero_ps(); 2]; NB];
            for p in k0..k1 {
                let w0 = _mm256_loadu_ps(w.add(p * MR));
                let w1 = _mm256_loadu_ps(w.add(p * MR + 8));
                for (b, a) in acc.iter_mut().enumerate() {
                    let xb = _mm256_set1_ps(*xs.add(b * inp + p));
                    a[0] = _mm256_fmadd_ps(w0, xb, a[0]);
                    a[1] = _mm256_fmadd_ps(w1, xb, a[1]);
                }
            }
            // The first block sets y, later ones add to it (one rounding
            // each, as the kernel's fused 1·acc + y).
            for (b, a) in acc.iter().enumerate() {
                let mut lanes = [0f32; MR];
                _mm256_storeu_ps(lanes.as_mut_ptr(), a[0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), a[1]);
                let y = dst.0.add((r0 + b) * ldy + c0);
                for (c, &v) in lanes.iter().take(cols).enumerate() {
                    let y = y.add(c);
                    *y = if k0 == 0 { v } else { *y + v };
                }
            }
            k0 = k1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{gemm_in, Par, View};
    use rand::{Rng, SeedableRng};

    /// Bit for bit the product `kernels::gemm` computes (the call
    /// `ops::linear` makes), over shapes with panel and row remainders and
    /// depths that `gemm` splits into blocks, under this machine's blocking
    /// and portable mode's.
    #[test]
    fn packed_products_are_gemms_bit_for_bit() {
        for blocking in [Blocking::Machine, Blocking::Portable] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
            let mut checked = 0;
            for (rows, out, inp) in [
                (16, 256, 256),
                (16, 688, 256),
                (16, 256, 688),
                (7, 8192, 256),
                (2, 200, 1400),
                (13, 33, 100),
                (3, 90, 3),
                (5, 300, 2100),
                (16, 16, 64),
                (1, 300, 64),
            ] {
                let x: Vec<f32> = (0..rows * inp)
                    .map(|_| rng.random_range(-1f32..1.0))
                    .collect();
                let w: Vec<f32> = (0..out * inp)
                    .map(|_| rng.random_range(-1f32..1.0))
                    .collect();
                let mut want = vec![0f32; rows * out];
                // SAFETY: `want` is a live exclusive buffer.
                unsafe {
                    gemm_in(
                        blocking,
                        rows,
                        out,
                        inp,
                        SendPtr::new(&mut want),
                        View::rows(0, out),
                        false,
                        &x,
                        View::rows(0, inp),
                        &w,
                        View::cols(0, inp),
                        Par::Pool,
                    )
                };
                let packed = Packed::new(&w, out, inp);
                let mut got = vec![f32::NAN; rows * out];
                if packed.apply_in(blocking, rows, &x, &mut got) {
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{blocking:?} {rows}x{out}x{inp}: differs from gemm");
                    checked += 1;
                } else {
                    assert!(!packed.applies(rows));
                    assert!(got.iter().all(|v| v.is_nan()), "declined but wrote");
                }
            }
            if fma_available() {
                assert_eq!(
                    checked, 8,
                    "the route applies to all but the last two shapes"
                );
            }
        }
    }
}
