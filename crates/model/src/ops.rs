//! Fused CPU kernels with hand-written backward passes.
//!
//! candle-nn's fast `rms_norm`, `softmax_last_dim` and `rope` are inference
//! only (`apply_op*_no_bwd`), and the composite versions built from
//! elementwise ops allocate a tensor per step, which dominates a CPU training
//! step of a small model. These ops run one rayon-parallel pass forward and
//! one backward. On other devices, or for non-f32 tensors, every function
//! falls back to the composite candle expression, which is also the
//! reference the tests check the kernels against.

use std::sync::Arc;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

use crate::kernels::blocking::{self, Blocking};
use crate::kernels::{self, attention as attn, Par, View};

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused op: input is not contiguous"),
    }
}

fn slice_u32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    let data = s.as_slice::<u32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused op: index input is not contiguous"),
    }
}

/// The dtype reductions run in for activations of dtype `d`: half
/// precision widens to f32, f32 and f64 stay.
pub fn wide_dtype(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// `t` in `wide_dtype(t.dtype())` (a no-op unless half precision).
pub fn widen(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(wide_dtype(t.dtype()))
}

pub fn fused_ok(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

// Rows smaller than this are processed in chunks so rayon's per-task
// overhead stays small relative to the work.
fn rows_per_task(row_len: usize) -> usize {
    (16384 / row_len.max(1)).max(1)
}

// ---------------------------------------------------------------- rms_norm

/// `x * rsqrt(mean(x², -1) + eps) * w`, differentiable in `x` and `w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_ok(x) {
        return rms_norm_reference(x, w, eps);
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })
}

pub fn rms_norm_reference(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    // Half precision accumulates in f32; f32 and f64 stay as they are.
    let xf = widen(x)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xf.broadcast_div(&(ms + eps)?.sqrt()?)?;
    y.to_dtype(dt)?.broadcast_mul(w)
}

#[derive(Clone, Copy)]
struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "marlhf-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1)?;
        let w = slice(s2, l2)?;
        let h = w.len();
        if h == 0 || x.len() % h != 0 {
            bail!(
                "rms_norm: weight length {h} does not divide input {}",
                x.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(h) * h;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, xs)| {
                for (orow, xrow) in o.chunks_mut(h).zip(xs.chunks(h)) {
                    rms_norm_row(xrow, w, self.eps, orow);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let gx = x.apply_op3_no_bwd(w, &g, &RmsNormBwdX { eps: self.eps })?;
        let gw = x.apply_op2_no_bwd(&g, &RmsNormBwdW { eps: self.eps })?;
        Ok((Some(gx), Some(gw)))
    }
}

/// One row of the RMSNorm forward pass (the decode path calls it too).
pub(crate) fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let r = inv_rms(x, eps);
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
        *o = x * r * w;
    }
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

struct RmsNormBwdX {
    eps: f32,
}

impl CustomOp3 for RmsNormBwdX {
    fn name(&self) -> &'static str {
        "marlhf-rms-norm-bwd-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(h) * h;
        // d/dx_i of x_i r w_i: r (g w)_i - x_i r³/h Σ_j (g w)_j x_j
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(o, (xs, gs))| {
                for ((orow, xrow), grow) in o.chunks_mut(h).zip(xs.chunks(h)).zip(gs.chunks(h)) {
                    let r = inv_rms(xrow, self.eps);
                    let dot: f32 = xrow
                        .iter()
                        .zip(grow)
                        .zip(w)
                        .map(|((x, g), w)| x * g * w)
                        .sum();
                    let c = r * r * r * dot / h as f32;
                    for i in 0..h {
                        orow[i] = r * grow[i] * w[i] - xrow[i] * c;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

struct RmsNormBwdW {
    eps: f32,
}

impl CustomOp2 for RmsNormBwdW {
    fn name(&self) -> &'static str {
        "marlhf-rms-norm-bwd-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let h = *l1.dims().last().unwrap_or(&0);
        let chunk = rows_per_task(h) * h;
        // Partial sums per fixed chunk, then an in-order fold: rayon's own
        // reduce splits adaptively, and a different summation order would
        // break bit-for-bit determinism.
        let partials: Vec<Vec<f32>> = x
            .par_chunks(chunk)
            .zip(g.par_chunks(chunk))
            .map(|(xs, gs)| {
                let mut acc = vec![0f32; h];
                for (xrow, grow) in xs.chunks(h).zip(gs.chunks(h)) {
                    let r = inv_rms(xrow, self.eps);
                    for i in 0..h {
                        acc[i] += grow[i] * xrow[i] * r;
                    }
                }
                acc
            })
            .collect();
        let mut gw = vec![0f32; h];
        for p in partials {
            for (a, b) in gw.iter_mut().zip(p) {
                *a += b;
            }
        }
        Ok((CpuStorage::F32(gw), Shape::from(h)))
    }
}

// ---------------------------------------------------------------- softmax

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "marlhf-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l)?;
        let n = *l.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; x.len()];
        let chunk = rows_per_task(n) * n;
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, xs)| {
                for (orow, xrow) in o.chunks_mut(n).zip(xs.chunks(n)) {
                    let m = xrow.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &x) in orow.iter_mut().zip(xrow) {
                        *o = (x - m).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    orow.iter_mut().for_each(|o| *o *= inv);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?))
    }
}

struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "marlhf-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1)?, slice(s2, l2)?);
        let n = *l1.dims().last().unwrap_or(&1);
        let mut out = vec![0f32; y.len()];
        let chunk = rows_per_task(n) * n;
        // dx = y ⊙ (g − Σ g⊙y)
        out.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .for_each(|(o, (ys, gs))| {
                for ((orow, yrow), grow) in o.chunks_mut(n).zip(ys.chunks(n)).zip(gs.chunks(n)) {
                    let dot: f32 = yrow.iter().zip(grow).map(|(y, g)| y * g).sum();
                    for i in 0..n {
                        orow[i] = yrow[i] * (grow[i] - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------- rope

/// Rotary position embedding in the rotate-half (Hugging Face) layout.
/// `x`: [batch, heads, time, head_dim]; `cos`, `sin`: [batch, time, head_dim/2]
/// (per-row positions, so left-padded rows rotate by their own offsets).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return rope_reference(x, cos, sin);
    }
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope {
            inverse: false,
            time_major: false,
        },
    )
}

/// [`rope`] for `x` in [batch, time, heads, head_dim], the layout the
/// projections produce, so no transposed copy is needed.
pub fn rope_time_major(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return rope_reference(&x.transpose(1, 2)?, cos, sin)?.transpose(1, 2);
    }
    x.contiguous()?.apply_op3(
        &cos.contiguous()?,
        &sin.contiguous()?,
        Rope {
            inverse: false,
            time_major: true,
        },
    )
}

pub fn rope_reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, _, _, d) = x.dims4()?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos.to_dtype(x.dtype())?)?
        + rotated.broadcast_mul(&sin.to_dtype(x.dtype())?)?
}

#[derive(Clone, Copy)]
struct Rope {
    inverse: bool,
    /// [b, t, h, d] rather than [b, h, t, d].
    time_major: bool,
}

/// Rotates one head vector by the angles whose cos/sin are `cs`/`sn`.
pub(crate) fn rotate(xr: &[f32], or: &mut [f32], cs: &[f32], sn: &[f32], sign: f32) {
    let half = cs.len();
    for i in 0..half {
        let (x1, x2) = (xr[i], xr[i + half]);
        let s = sign * sn[i];
        or[i] = x1 * cs[i] - x2 * s;
        or[i + half] = x2 * cs[i] + x1 * s;
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "marlhf-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, cos, sin) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (b, h, t, d) = match (l1.dims(), self.time_major) {
            ([b, h, t, d], false) => (*b, *h, *t, *d),
            ([b, t, h, d], true) => (*b, *h, *t, *d),
            _ => bail!("rope: expected a 4-d input"),
        };
        let half = d / 2;
        if cos.len() != b * t * half || sin.len() != cos.len() {
            bail!("rope: cos/sin must be [{b}, {t}, {half}]");
        }
        let sign = if self.inverse { -1f32 } else { 1f32 };
        let mut out = vec![0f32; x.len()];
        if self.time_major {
            // One chunk per (b, t): its h heads share one angle row.
            let rows = rows_per_task(h * d);
            out.par_chunks_mut(rows * h * d)
                .zip(x.par_chunks(rows * h * d))
                .enumerate()
                .for_each(|(c, (o, xs))| {
                    for (r, (orow, xrow)) in o.chunks_mut(h * d).zip(xs.chunks(h * d)).enumerate() {
                        let bt = c * rows + r;
                        let cs = &cos[bt * half..(bt + 1) * half];
                        let sn = &sin[bt * half..(bt + 1) * half];
                        for (or, xr) in orow.chunks_mut(d).zip(xrow.chunks(d)) {
                            rotate(xr, or, cs, sn, sign);
                        }
                    }
                });
        } else {
            out.par_chunks_mut(t * d)
                .zip(x.par_chunks(t * d))
                .enumerate()
                .for_each(|(bh, (o, xs))| {
                    let bi = bh / h;
                    for ti in 0..t {
                        let cs = &cos[(bi * t + ti) * half..(bi * t + ti + 1) * half];
                        let sn = &sin[(bi * t + ti) * half..(bi * t + ti + 1) * half];
                        rotate(
                            &xs[ti * d..(ti + 1) * d],
                            &mut o[ti * d..(ti + 1) * d],
                            cs,
                            sn,
                            sign,
                        );
                    }
                });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // A rotation's transpose is the rotation by the opposite angle.
        let gx = g.contiguous()?.apply_op3_no_bwd(
            cos,
            sin,
            &Rope {
                inverse: !self.inverse,
                time_major: self.time_major,
            },
        )?;
        Ok((Some(gx), None, None))
    }
}

// ---------------------------------------------------------------- linear

/// `x · wᵀ` for x [.., in] and a weight w [out, in] (the Hugging Face
/// layout): one GEMM forward and two backward (dx = g·w, dw = gᵀ·x), with
/// no transposed copies. Forward gives candle's `x.matmul(&w.t())` bit for
/// bit (the same kernel on the same strides).
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !(fused_ok(x) && fused_ok(w)) {
        let (lead, inner) = split_last(x)?;
        let y = x.reshape((lead, inner))?.matmul(&w.t()?)?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = w.dim(0)?;
        return y.reshape(dims);
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

/// `a · b` by candle's (batched) matmul, for the products the fused
/// kernels do not make (the attention of a cached forward pass). In
/// portable mode an f32 CPU product deeper than `PINNED_DEPTH` is summed
/// over the depth blocks `kernels::gemm` pins there, one matmul per block
/// added in order, so that it too is the same on every machine.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_in(blocking::current(), a, b)
}

fn matmul_in(mode: Blocking, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let k = a.dim(D::Minus1)?;
    if mode == Blocking::Machine || !fused_ok(a) || k <= blocking::PINNED_DEPTH {
        return a.matmul(b);
    }
    let kc = blocking::even_split(k, blocking::PINNED_DEPTH);
    let mut y: Option<Tensor> = None;
    for p in (0..k).step_by(kc) {
        let kb = kc.min(k - p);
        let part = a
            .narrow(D::Minus1, p, kb)?
            .contiguous()?
            .matmul(&b.narrow(D::Minus2, p, kb)?.contiguous()?)?;
        y = Some(match y {
            None => part,
            Some(y) => (y + part)?,
        });
    }
    Ok(y.expect("k > PINNED_DEPTH, so at least one block"))
}

fn split_last(x: &Tensor) -> Result<(usize, usize)> {
    let inner = *x.dims().last().unwrap_or(&1);
    Ok((x.elem_count() / inner.max(1), inner))
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "marlhf-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1)?, slice(s2, l2)?);
        let (out, inner) = l2.shape().dims2()?;
        let k = *l1.dims().last().unwrap_or(&0);
        if k != inner {
            bail!("linear: input width {k} does not match weight [{out}, {inner}]");
        }
        let n = x.len() / inner.max(1);
        let mut y = vec![0f32; n * out];
        kernels::gemm(
            n,
            out,
            inner,
            &mut y,
            View::rows(0, out),
            false,
            x,
            View::rows(0, inner),
            w,
            View::cols(0, inner),
            Par::Pool,
        );
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (out, inner) = w.dims2()?;
        let n = x.elem_count() / inner.max(1);
        let mut gx = vec![0f32; n * inner];
        kernels::with_slice(&g, |g| {
            kernels::with_slice(w, |w| {
                kernels::gemm(
                    n,
                    inner,
                    out,
                    &mut gx,
                    View::rows(0, inner),
                    false,
                    g,
                    View::rows(0, out),
                    w,
                    View::rows(0, inner),
                    Par::Pool,
                )
            })
        })??;
        let gx = Tensor::from_vec(gx, x.shape(), x.device())?;
        // A frozen weight (LoRA's base, detached) tracks no gradient: its
        // GEMM and its weight-sized buffer are skipped.
        if !w.track_op() {
            return Ok((Some(gx), None));
        }
        let mut gw = vec![0f32; out * inner];
        kernels::with_slice(&g, |g| {
            kernels::with_slice(x, |x| {
                kernels::gemm(
                    out,
                    inner,
                    n,
                    &mut gw,
                    View::rows(0, inner),
                    false,
                    g,
                    View::cols(0, out),
                    x,
                    View::rows(0, inner),
                    Par::Pool,
                )
            })
        })??;
        Ok((Some(gx), Some(Tensor::from_vec(gw, w.shape(), w.device())?)))
    }
}

// ---------------------------------------------------------------- silu·up

/// `silu(gate) · up`, the gated MLP of the Llama family, in one pass
/// forward and one backward.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !(fused_ok(gate) && fused_ok(up)) || gate.shape() != up.shape() {
        return candle_nn::ops::silu(gate)? * up;
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
}

struct SiluMul;

/// candle's SiLU, `x / (1 + e^(−x))`, rounded the same way.
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "marlhf-silu-mul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (slice(s1, l1)?, slice(s2, l2)?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(ELEMENTS_PER_TASK)
            .zip(
                g.par_chunks(ELEMENTS_PER_TASK)
                    .zip(u.par_chunks(ELEMENTS_PER_TASK)),
            )
            .for_each(|(o, (g, u))| {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = silu(g) * u;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let n = gate.elem_count();
        let mut dg = vec![0f32; n];
        let mut du = vec![0f32; n];
        kernels::with_slice(gate, |g| {
            kernels::with_slice(up, |u| {
                kernels::with_slice(&grad, |d| {
                    dg.par_chunks_mut(ELEMENTS_PER_TASK)
                        .zip(du.par_chunks_mut(ELEMENTS_PER_TASK))
                        .zip(g.par_chunks(ELEMENTS_PER_TASK))
                        .zip(
                            u.par_chunks(ELEMENTS_PER_TASK)
                                .zip(d.par_chunks(ELEMENTS_PER_TASK)),
                        )
                        .for_each(|(((dg, du), g), (u, d))| {
                            // e^(−x) for the chunk at once (dg as scratch).
                            kernels::exp::exp_neg(g, dg);
                            for i in 0..g.len() {
                                // silu′(x) = σ(x)·(1 + x·(1 − σ(x)))
                                let sig = 1.0 / (1.0 + dg[i]);
                                du[i] = d[i] * g[i] * sig;
                                dg[i] = d[i] * u[i] * sig * (1.0 + g[i] * (1.0 - sig));
                            }
                        })
                })
            })
        })???;
        Ok((
            Some(Tensor::from_vec(dg, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(du, up.shape(), up.device())?),
        ))
    }
}

/// Element-wise kernels hand rayon this many elements per task.
const ELEMENTS_PER_TASK: usize = 16384;

// ---------------------------------------------------------------- attention

/// Which keys each query of a padded batch sees, for [`attention`]: B·T
/// real-token flags and positions (`positions_from_mask`), and the sliding
/// window if the layer has one.
#[derive(Clone)]
pub struct AttentionMask {
    pub key_mask: Arc<[u8]>,
    pub pos: Arc<[u32]>,
    pub window: Option<usize>,
}

/// Causal self-attention of a padded batch without a cache: q [B, T, nh,
/// hd], k and v [B, T, nkv, hd] (after RoPE) → [B, T, nh, hd]. Scores are
/// `q·k · scale`, then soft-capped (`cap · tanh(x / cap)`) when `softcap`
/// is given. A query that sees no key (padding) outputs zeros.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: f64,
    softcap: Option<f64>,
) -> Result<Tensor> {
    let (b, t, nh, hd) = q.dims4()?;
    let (_, _, nkv, _) = k.dims4()?;
    if nkv == 0 || nh % nkv != 0 || k.dims() != v.dims() || k.dims() != [b, t, nkv, hd] {
        bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit together",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if mask.key_mask.len() != b * t || mask.pos.len() != b * t {
        bail!("attention: the mask does not match a {b}x{t} batch");
    }
    let scoring = attn::Scoring { scale, softcap };
    if !(fused_ok(q) && fused_ok(k) && fused_ok(v)) {
        return attention_reference(q, k, v, mask, scoring);
    }
    let op = Attention {
        dims: attn::Dims { b, t, nh, nkv, hd },
        mask: mask.clone(),
        scoring,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

/// The composite candle expression [`attention`] computes, as the decoder
/// computed it before the fused op: an additive −1e9 bias for masked keys,
/// softmax in at least f32, with padding queries zeroed.
pub fn attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scoring: attn::Scoring,
) -> Result<Tensor> {
    let (b, t, nh, hd) = q.dims4()?;
    let nkv = k.dim(2)?;
    let dt = q.dtype();
    let wide = wide_dtype(dt);
    let m = attn::Mask {
        key_mask: &mask.key_mask,
        pos: &mask.pos,
        window: mask.window,
    };
    let dims = attn::Dims { b, t, nh, nkv, hd };
    let mut bias = vec![0f32; b * t * t];
    let mut seen = vec![0f32; b * t];
    for r in 0..b {
        for qi in 0..t {
            for j in 0..t {
                if m.allows(&dims, r, qi, j) {
                    seen[r * t + qi] = 1.0;
                } else {
                    bias[(r * t + qi) * t + j] = -1e9;
                }
            }
        }
    }
    let dev = q.device();
    let bias = Tensor::from_vec(bias, (b, 1, t, t), dev)?.to_dtype(wide)?;
    let seen = Tensor::from_vec(seen, (b, t, 1, 1), dev)?.to_dtype(dt)?;
    let heads = |x: &Tensor| -> Result<Tensor> {
        candle_transformers::utils::repeat_kv(x.transpose(1, 2)?.contiguous()?, nh / nkv)
    };
    let (qh, kh, vh) = (q.transpose(1, 2)?.contiguous()?, heads(k)?, heads(v)?);
    let mut scores = (qh.matmul(&kh.t()?)?.to_dtype(wide)? * scoring.scale)?;
    if let Some(cap) = scoring.softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    let probs = softmax_last_dim(&scores.broadcast_add(&bias)?)?.to_dtype(dt)?;
    probs
        .matmul(&vh.contiguous()?)?
        .transpose(1, 2)?
        .broadcast_mul(&seen)
}

struct Attention {
    dims: attn::Dims,
    mask: AttentionMask,
    scoring: attn::Scoring,
}

impl Attention {
    fn mask(&self) -> attn::Mask<'_> {
        attn::Mask {
            key_mask: &self.mask.key_mask,
            pos: &self.mask.pos,
            window: self.mask.window,
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "marlhf-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let mut out = vec![0f32; q.len()];
        attn::forward(&self.dims, &self.mask(), self.scoring, q, k, v, &mut out);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let mut dq = vec![0f32; q.elem_count()];
        let mut dk = vec![0f32; k.elem_count()];
        let mut dv = vec![0f32; v.elem_count()];
        kernels::with_slice(q, |qs| {
            kernels::with_slice(k, |ks| {
                kernels::with_slice(v, |vs| {
                    kernels::with_slice(&g, |gs| {
                        attn::backward(
                            &self.dims,
                            &self.mask(),
                            self.scoring,
                            qs,
                            ks,
                            vs,
                            gs,
                            &mut dq,
                            &mut dk,
                            &mut dv,
                        )
                    })
                })
            })
        })????;
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), q.device())?),
            Some(Tensor::from_vec(dk, k.shape(), k.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

// ---------------------------------------------------------------- log-probs

/// `log_softmax(logits)[n, targets[n]]` for logits [N, V] and targets [N]
/// (u32): the log-probability of each chosen token, differentiable in the
/// logits. Never materialises the [N, V] log-softmax.
/// Logits divided by a sampling temperature, so that softmax gives the
/// distribution tokens are drawn from. `temperature == 1` returns the
/// logits themselves (no rounding through a multiplication), so scoring at
/// temperature 1 is bit for bit what it was before temperatures existed.
pub fn temper(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        bail!("a scoring temperature must be a positive number, got {temperature}");
    }
    if temperature == 1.0 {
        Ok(logits.clone())
    } else {
        logits / temperature
    }
}

pub fn gather_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !fused_ok(logits) {
        return gather_logprobs_reference(logits, targets);
    }
    logits
        .contiguous()?
        .apply_op2(&targets.to_dtype(DType::U32)?.contiguous()?, GatherLogprobs)
}

pub fn gather_logprobs_reference(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    lsm.gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)
}

struct GatherLogprobs;

impl CustomOp2 for GatherLogprobs {
    fn name(&self) -> &'static str {
        "marlhf-gather-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let logits = slice(s1, l1)?;
        let targets = slice_u32(s2, l2)?;
        let (n, v) = match l1.dims() {
            [n, v] => (*n, *v),
            _ => bail!("gather_logprobs: expected [N, V] logits"),
        };
        if targets.len() != n {
            bail!("gather_logprobs: {} targets for {n} rows", targets.len());
        }
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
            bail!("gather_logprobs: token id {bad} out of vocabulary {v}");
        }
        let out: Vec<f32> = logits
            .par_chunks(v)
            .zip(targets.par_iter())
            .map_init(Vec::new, |scratch, (row, &t)| {
                row[t as usize] - kernels::exp::log_sum_exp(row, scratch)
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let v = logits.dim(1)?;
        let mut out = vec![0f32; logits.elem_count()];
        kernels::with_slice(logits, |z| {
            kernels::with_u32(targets, |t| {
                kernels::with_slice(res, |lp| {
                    kernels::with_slice(&g, |g| {
                        // d/dz_j [z_t − lse(z)] = 1[j = t] − softmax(z)_j,
                        // with lse = z_t − (the forward's output).
                        out.par_chunks_mut(v)
                            .zip(z.par_chunks(v))
                            .enumerate()
                            .for_each(|(n, (o, row))| {
                                let gn = g[n];
                                if gn == 0.0 {
                                    return;
                                }
                                let t = t[n] as usize;
                                let lse = row[t] - lp[n];
                                kernels::exp::exp_sub(row, lse, o);
                                o.iter_mut().for_each(|x| *x *= -gn);
                                o[t] += gn;
                            })
                    })
                })
            })
        })????;
        Ok((
            Some(Tensor::from_vec(out, logits.shape(), logits.device())?),
            None,
        ))
    }
}

// ---------------------------------------------------------------- LM head

/// `log_softmax(hidden · headᵀ / temperature)[n, targets[n]]` in one op:
/// the LM head's GEMM, the tempering and the log-prob gather forward, and
/// backward the softmax gradient written over the logits the forward kept,
/// then the two GEMMs of the head. What `linear`, `temper` and
/// `gather_logprobs` compute in turn, without the [M, V] gradient tensors
/// candle's autograd would allocate, zero and add between them.
pub fn lm_head_logprobs(
    hidden: &Tensor,
    head: &Tensor,
    targets: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        bail!("a scoring temperature must be a positive number, got {temperature}");
    }
    if !(fused_ok(hidden) && fused_ok(head)) {
        let logits = widen(&linear(hidden, head)?)?;
        return gather_logprobs(&temper(&logits, temperature)?, targets);
    }
    let op = LmHeadLogprobs {
        temperature,
        // Kept for the backward pass only when there will be one.
        keep: hidden.track_op() || head.track_op(),
        probs: std::sync::Mutex::new(None),
    };
    hidden.contiguous()?.apply_op3(
        &head.contiguous()?,
        &targets.to_dtype(DType::U32)?.contiguous()?,
        op,
    )
}

struct LmHeadLogprobs {
    temperature: f64,
    keep: bool,
    /// softmax of the tempered logits [M, V], from the forward pass.
    probs: std::sync::Mutex<Option<Vec<f32>>>,
}

/// Each row of the tempered logits `z` [M, V] replaced by its softmax;
/// returns log softmax(z)[n, targets[n]] (`z_t − max − ln Σ e^(z − max)`,
/// as `gather_logprobs` computes it).
fn softmax_rows(z: &mut [f32], targets: &[u32], v: usize) -> Vec<f32> {
    z.par_chunks_mut(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let zt = row[t as usize];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum = kernels::exp::exp_sub_sum(row, m);
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|p| *p *= inv);
            zt - (m + sum.ln())
        })
        .collect()
}

impl LmHeadLogprobs {
    /// hidden · headᵀ, tempered as `temper` tempers (× (1/T) in f32).
    fn logits(&self, h: &[f32], w: &[f32], m: usize, v: usize, hd: usize) -> Vec<f32> {
        let mut z = vec![0f32; m * v];
        kernels::gemm(
            m,
            v,
            hd,
            &mut z,
            View::rows(0, v),
            false,
            h,
            View::rows(0, hd),
            w,
            View::cols(0, hd),
            Par::Pool,
        );
        if self.temperature != 1.0 {
            let inv = (1.0 / self.temperature) as f32;
            z.par_chunks_mut(ELEMENTS_PER_TASK)
                .for_each(|c| c.iter_mut().for_each(|x| *x *= inv));
        }
        z
    }
}

impl CustomOp3 for LmHeadLogprobs {
    fn name(&self) -> &'static str {
        "marlhf-lm-head-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (h, w, targets) = (slice(s1, l1)?, slice(s2, l2)?, slice_u32(s3, l3)?);
        let (m, hd) = l1.shape().dims2()?;
        let (v, hd2) = l2.shape().dims2()?;
        if hd != hd2 || targets.len() != m {
            bail!(
                "lm_head_logprobs: hidden [{m}, {hd}], head [{v}, {hd2}], {} targets",
                targets.len()
            );
        }
        if let Some(&bad) = targets.iter().find(|&&t| t as usize >= v) {
            bail!("gather_logprobs: token id {bad} out of vocabulary {v}");
        }
        let mut z = self.logits(h, w, m, v, hd);
        let out = softmax_rows(&mut z, targets, v);
        if self.keep {
            *self.probs.lock().expect("probs lock") = Some(z);
        }
        Ok((CpuStorage::F32(out), Shape::from(m)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        head: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (m, hd) = hidden.dims2()?;
        let v = head.dim(0)?;
        let kept = self.probs.lock().expect("probs lock").take();
        let mut z = match kept {
            Some(p) => p,
            None => {
                let mut z = kernels::with_slice(hidden, |h| {
                    kernels::with_slice(head, |w| self.logits(h, w, m, v, hd))
                })??;
                kernels::with_u32(targets, |t| softmax_rows(&mut z, t, v))?;
                z
            }
        };
        let inv_t = if self.temperature != 1.0 {
            (1.0 / self.temperature) as f32
        } else {
            1.0
        };
        // dz = g·(onehot − softmax(z)) in place, then through the tempering.
        kernels::with_u32(targets, |t| {
            kernels::with_slice(&g, |g| {
                z.par_chunks_mut(v).enumerate().for_each(|(n, row)| {
                    let gn = g[n];
                    let c = -gn * inv_t;
                    row.iter_mut().for_each(|p| *p *= c);
                    row[t[n] as usize] += gn * inv_t;
                })
            })
        })??;
        let mut dh = vec![0f32; m * hd];
        // A frozen head (LoRA's base) gets no gradient: no [V, H] GEMM.
        let head_grad = head.track_op();
        let mut dw = vec![0f32; if head_grad { v * hd } else { 0 }];
        kernels::with_slice(hidden, |h| {
            kernels::with_slice(head, |w| {
                kernels::gemm(
                    m,
                    hd,
                    v,
                    &mut dh,
                    View::rows(0, hd),
                    false,
                    &z,
                    View::rows(0, v),
                    w,
                    View::rows(0, hd),
                    Par::Pool,
                );
                if !head_grad {
                    return;
                }
                kernels::gemm(
                    v,
                    hd,
                    m,
                    &mut dw,
                    View::rows(0, hd),
                    false,
                    &z,
                    View::cols(0, v),
                    h,
                    View::rows(0, hd),
                    Par::Pool,
                );
            })
        })??;
        let dw = if head_grad {
            Some(Tensor::from_vec(dw, head.shape(), head.device())?)
        } else {
            None
        };
        Ok((
            Some(Tensor::from_vec(dh, hidden.shape(), hidden.device())?),
            dw,
            None,
        ))
    }
}

/// Entropy of softmax(logits) per row, [N, V] → [N]; no gradient (a metric).
pub fn entropy(logits: &Tensor) -> Result<Tensor> {
    let lsm = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    (lsm.exp()? * &lsm)?.sum(D::Minus1)?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.5f32..1.5)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    // Checks the fused op's value and gradients against the composite
    // reference through candle's autograd, under a random projection so every
    // output element contributes.
    fn check<F, R>(inputs: &[Tensor], fused: F, reference: R)
    where
        F: Fn(&[Tensor]) -> Result<Tensor>,
        R: Fn(&[Tensor]) -> Result<Tensor>,
    {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let a = fused(&ts).unwrap();
        let b = reference(&ts).unwrap();
        assert!(
            max_diff(&a, &b) < 1e-5,
            "forward differs: {}",
            max_diff(&a, &b)
        );
        let proj = rand(a.dims(), 99);
        let ga = (a * &proj).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &proj).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            match (ga.get(v), gb.get(v)) {
                (Some(x), Some(y)) => {
                    let d = max_diff(x, y);
                    assert!(d < 1e-4, "gradient of input {i} differs by {d}");
                }
                (None, None) => {}
                (x, y) => {
                    // Inputs the fused op treats as constants (cos/sin, ids).
                    assert!(
                        x.is_none() && i > 0,
                        "gradient presence differs for input {i}: {} vs {}",
                        x.is_some(),
                        y.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn rms_norm_matches_reference() {
        check(
            &[rand(&[3, 5, 16], 1), rand(&[16], 2)],
            |t| rms_norm(&t[0], &t[1], 1e-5),
            |t| rms_norm_reference(&t[0], &t[1], 1e-5),
        );
    }

    #[test]
    fn softmax_matches_reference() {
        check(
            &[rand(&[2, 3, 7, 9], 3)],
            |t| softmax_last_dim(&t[0]),
            |t| candle_nn::ops::softmax(&t[0], D::Minus1),
        );
    }

    #[test]
    fn rope_matches_reference() {
        check(
            &[
                rand(&[2, 3, 5, 8], 4),
                rand(&[2, 5, 4], 5),
                rand(&[2, 5, 4], 6),
            ],
            |t| rope(&t[0], &t[1], &t[2]),
            |t| rope_reference(&t[0], &t[1], &t[2]),
        );
    }

    #[test]
    fn rope_time_major_matches_reference() {
        check(
            &[
                rand(&[2, 5, 3, 8], 4),
                rand(&[2, 5, 4], 5),
                rand(&[2, 5, 4], 6),
            ],
            |t| rope_time_major(&t[0], &t[1], &t[2]),
            |t| rope_reference(&t[0].transpose(1, 2)?, &t[1], &t[2])?.transpose(1, 2),
        );
    }

    #[test]
    fn linear_matches_matmul() {
        check(
            &[rand(&[2, 3, 5], 10), rand(&[7, 5], 11)],
            |t| linear(&t[0], &t[1]),
            |t| t[0].broadcast_matmul(&t[1].t()?),
        );
        // The forward pass is candle's matmul bit for bit.
        let (x, w) = (rand(&[9, 16], 12), rand(&[5, 16], 13));
        let a = linear(&x, &w).unwrap().to_vec2::<f32>().unwrap();
        let b = x.matmul(&w.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
    }

    /// Portable mode's batched matmul is, batch by batch, the pinned
    /// product `kernels::gemm` makes in portable mode, bit for bit; shallow
    /// products and the default mode are candle's matmul itself.
    #[test]
    fn portable_matmul_is_the_pinned_gemm() {
        let (bt, m, k, n) = (2, 70, 1100, 80);
        let (a, b) = (rand(&[bt, m, k], 40), rand(&[bt, k, n], 41));
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        let y = matmul_in(Blocking::Portable, &a, &b).unwrap();
        let (av, bv) = (a.flatten_all().unwrap(), b.flatten_all().unwrap());
        let (av, bv) = (av.to_vec1::<f32>().unwrap(), bv.to_vec1::<f32>().unwrap());
        let mut want = vec![0f32; bt * m * n];
        for i in 0..bt {
            // SAFETY: `want` is a live exclusive buffer.
            unsafe {
                kernels::gemm_in(
                    Blocking::Portable,
                    m,
                    n,
                    k,
                    kernels::SendPtr::new(&mut want),
                    View::rows(i * m * n, n),
                    false,
                    &av,
                    View::rows(i * m * k, k),
                    &bv,
                    View::rows(i * k * n, n),
                    Par::Pool,
                )
            };
        }
        let want_bits: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits(&y), want_bits);
        let machine = matmul_in(Blocking::Machine, &a, &b).unwrap();
        assert_eq!(bits(&machine), bits(&a.matmul(&b).unwrap()));
        let (a, b) = (rand(&[bt, m, 300], 42), rand(&[bt, 300, n], 43));
        let shallow = matmul_in(Blocking::Portable, &a, &b).unwrap();
        assert_eq!(bits(&shallow), bits(&a.matmul(&b).unwrap()));
    }

    #[test]
    fn silu_mul_matches_reference() {
        check(
            &[rand(&[4, 9], 14), rand(&[4, 9], 15)],
            |t| silu_mul(&t[0], &t[1]),
            |t| candle_nn::ops::silu(&t[0])? * &t[1],
        );
    }

    /// Two rows of 70 tokens (two query blocks), one left-padded by 3 and
    /// one right-padded by 5, 4 query heads over 2 kv heads.
    fn attention_case(window: Option<usize>, softcap: Option<f64>) {
        let (b, t, nh, nkv, hd) = (2, 70, 4, 2, 8);
        let mut key_mask = vec![1u8; b * t];
        key_mask[..3].fill(0);
        key_mask[2 * t - 5..].fill(0);
        let pos = crate::llama::positions_from_mask(&key_mask, b, t);
        let mask = AttentionMask {
            key_mask: key_mask.into(),
            pos: pos.into(),
            window,
        };
        let scoring = attn::Scoring {
            scale: 0.4,
            softcap,
        };
        check(
            &[
                rand(&[b, t, nh, hd], 16),
                rand(&[b, t, nkv, hd], 17),
                rand(&[b, t, nkv, hd], 18),
            ],
            |x| attention(&x[0], &x[1], &x[2], &mask, scoring.scale, scoring.softcap),
            |x| attention_reference(&x[0], &x[1], &x[2], &mask, scoring),
        );
    }

    #[test]
    fn attention_matches_reference() {
        attention_case(None, None);
    }

    #[test]
    fn attention_with_window_and_softcap_matches_reference() {
        attention_case(Some(20), Some(1.5));
    }

    #[test]
    fn attention_padding_queries_output_zeros() {
        // Row 0's first three queries are padding: they see no key.
        let (b, t) = (1, 5);
        let key_mask = vec![0u8, 0, 0, 1, 1];
        let pos = crate::llama::positions_from_mask(&key_mask, b, t);
        let mask = AttentionMask {
            key_mask: key_mask.into(),
            pos: pos.into(),
            window: None,
        };
        let v = rand(&[1, 5, 1, 4], 20);
        let out = attention(
            &rand(&[1, 5, 2, 4], 19),
            &rand(&[1, 5, 1, 4], 21),
            &v,
            &mask,
            1.0,
            None,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert!(out[..3 * 8].iter().all(|&x| x == 0.0));
        // Query 3 sees only key 3: its output is v[3] for both heads.
        let v3 = v.flatten_all().unwrap().to_vec1::<f32>().unwrap()[12..16].to_vec();
        assert_eq!(&out[24..28], &v3[..]);
        assert_eq!(&out[28..32], &v3[..]);
    }

    #[test]
    fn gather_logprobs_matches_reference() {
        let logits = rand(&[6, 11], 7);
        let targets = Tensor::new(&[0u32, 10, 3, 3, 7, 1], &Device::Cpu).unwrap();
        let v = Var::from_tensor(&logits).unwrap();
        let a = gather_logprobs(v.as_tensor(), &targets).unwrap();
        let b = gather_logprobs_reference(v.as_tensor(), &targets).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let w = rand(&[6], 8);
        let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(ga.get(&v).unwrap(), gb.get(&v).unwrap()) < 1e-5);
    }

    #[test]
    fn lm_head_logprobs_matches_the_composite() {
        let targets = Tensor::new(&[0u32, 10, 3, 3, 7, 1, 12], &Device::Cpu).unwrap();
        for t in [1.0, 0.7] {
            check(
                &[rand(&[7, 5], 30), rand(&[13, 5], 31)],
                |x| lm_head_logprobs(&x[0], &x[1], &targets, t),
                |x| {
                    let logits = x[0].matmul(&x[1].t()?)?;
                    gather_logprobs_reference(&(logits / t)?, &targets)
                },
            );
        }
        let err = lm_head_logprobs(
            &rand(&[1, 5], 1),
            &rand(&[4, 5], 2),
            &Tensor::new(&[4u32], &Device::Cpu).unwrap(),
            1.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("token id 4 out of vocabulary 4"), "{err}");
    }

    #[test]
    fn gather_logprobs_rejects_out_of_vocab_ids() {
        let logits = rand(&[2, 4], 9);
        let targets = Tensor::new(&[0u32, 4], &Device::Cpu).unwrap();
        let err = gather_logprobs(&logits, &targets).unwrap_err().to_string();
        assert!(err.contains("token id 4 out of vocabulary 4"), "{err}");
    }
}
