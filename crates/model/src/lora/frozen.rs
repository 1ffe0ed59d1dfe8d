//! x·Wᵀ for a frozen weight W: the gradient flows to x and nowhere else.
//!
//! candle's autograd computes the gradient of every input of an op on the
//! path to a trained parameter, whether that input is trained or not, and
//! keeps it until the backward pass ends: a frozen base model would cost
//! one weight-sized gradient GEMM per projection and the memory of a whole
//! gradient. On the CPU in f32 the fused `ops::linear` skips the weight's
//! gradient when the weight does not track one (a detached tensor); every
//! other device and dtype goes through [`FrozenLinear`], an op of one
//! input whose backward is g·W.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor,
};

use crate::ops;

/// `x [.., in] · wᵀ → [.., out]`, differentiable in `x` only.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let w = w.detach();
    if ops::fused_ok(x) && ops::fused_ok(&w) {
        return ops::linear(x, &w);
    }
    let w = w.to_dtype(x.dtype())?.contiguous()?;
    if !x.track_op() {
        // No backward pass will run: candle's own product.
        return ops::linear(x, &w);
    }
    x.contiguous()?.apply_op1(FrozenLinear { w })
}

struct FrozenLinear {
    /// [out, in], contiguous, in the input's dtype.
    w: Tensor,
}

/// One x·Wᵀ as the backends' matmul takes it.
struct Product {
    /// x as [n, in] from its offset.
    lhs: Layout,
    /// Wᵀ: a transposed view of the stored [out, in].
    rhs: Layout,
    /// (batch, n, out, in).
    bmnk: (usize, usize, usize, usize),
    /// x's shape with the last dimension `out`.
    shape: Shape,
}

impl FrozenLinear {
    fn product(&self, x: &Layout, w: &Layout) -> Result<Product> {
        let (out, inner) = w.shape().dims2()?;
        let k = *x.dims().last().unwrap_or(&0);
        if k != inner {
            bail!("frozen linear: input width {k} does not match weight [{out}, {inner}]");
        }
        let n = x.shape().elem_count() / inner.max(1);
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out;
        Ok(Product {
            lhs: Layout::contiguous_with_offset((n, inner), x.start_offset()),
            rhs: w.transpose(0, 1)?,
            bmnk: (1, n, out, inner),
            shape: Shape::from(dims),
        })
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "marlhf-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (ws, wl) = self.w.storage_and_layout();
        let Storage::Cpu(ws) = &*ws else {
            bail!("frozen linear: the weight is not on the input's device")
        };
        let p = self.product(l, wl)?;
        Ok((s.matmul(ws, p.bmnk, &p.lhs, &p.rhs)?, p.shape))
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (ws, wl) = self.w.storage_and_layout();
        let Storage::Cuda(ws) = &*ws else {
            bail!("frozen linear: the weight is not on the input's device")
        };
        let p = self.product(l, wl)?;
        Ok((s.matmul(ws, p.bmnk, &p.lhs, &p.rhs)?, p.shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (out, inner) = self.w.dims2()?;
        let n = g.elem_count() / out.max(1);
        let gx = g.contiguous()?.reshape((n, out))?.matmul(&self.w)?;
        debug_assert_eq!(gx.dims2()?, (n, inner));
        Ok(Some(gx.reshape(x.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The frozen product equals the plain one, forward and in x's
    /// gradient, on the fused and the composite path; the weight gets no
    /// gradient on either.
    #[test]
    fn frozen_linear_passes_gradients_to_x_only() {
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let dev = Device::Cpu;
            let xs: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
            let ws: Vec<f32> = (0..20).map(|i| ((i * 5 % 9) as f32 - 4.0) / 3.0).collect();
            let x = Var::from_tensor(
                &Tensor::from_vec(xs, (2, 3, 4), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let w = Var::from_tensor(
                &Tensor::from_vec(ws, (5, 4), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let frozen = linear(x.as_tensor(), w.as_tensor()).unwrap();
            let plain = x
                .as_tensor()
                .reshape((6, 4))
                .unwrap()
                .matmul(&w.as_tensor().t().unwrap())
                .unwrap()
                .reshape((2, 3, 5))
                .unwrap();
            let f64s = |t: &Tensor| -> Vec<f64> {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            assert_eq!(f64s(&frozen), f64s(&plain), "{dtype:?}: forward");
            let weights = Tensor::arange(0f32, 30.0, &dev)
                .unwrap()
                .reshape((2, 3, 5))
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let gf = (frozen * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gp = (plain * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (a, b) = (
                gf.get(x.as_tensor()).unwrap(),
                gp.get(x.as_tensor()).unwrap(),
            );
            let (a, b) = (f64s(a), f64s(b));
            let top = b.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .fold(0f64, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                err <= 1e-2 * top,
                "{dtype:?}: x's gradient differs by {err}"
            );
            // No gradient of the weight's shape was computed at all (the
            // op detaches the weight, so look at every tensor in the store).
            let weight_shaped = |g: &candle_core::backprop::GradStore| {
                g.get_ids()
                    .filter(|id| g.get_id(**id).unwrap().dims() == [5, 4])
                    .count()
            };
            assert_eq!(
                weight_shaped(&gf),
                0,
                "{dtype:?}: a weight gradient was computed"
            );
            assert_eq!(weight_shaped(&gp), 1);
        }
    }
}
