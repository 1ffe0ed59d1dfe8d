//! CPU kernels on plain f32 slices, below candle: the matrix product the
//! fused ops call directly (the `gemm` crate, the kernel candle's own
//! matmul runs on, so a product computed here has candle's numbers), fused
//! attention, and the SIMD dot products of the decode path.
//!
//! These exist because the training step of a small model spends more time
//! around its matmuls than in them when every element-wise step is a candle
//! op: each allocates its output, and each backward accumulation allocates
//! a zero tensor and an add. The ops in `crate::ops` wrap these kernels with
//! hand-written backward passes.

pub mod attention;
pub mod exp;
pub mod packed;

use candle_core::{bail, Result, Storage, Tensor};

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
    // dst = alpha·dst + beta·a·b, dst read only when accumulating.
    gemm::gemm(
        m,
        n,
        k,
        d,
        dv.cs as isize,
        dv.rs as isize,
        accumulate,
        a.as_ptr().add(av.off),
        av.cs as isize,
        av.rs as isize,
        b.as_ptr().add(bv.off),
        bv.cs as isize,
        bv.rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        parallelism,
    );
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
