//! exp for the training kernels' softmaxes, in a form the compiler
//! vectorizes: the libm `expf` the scalar code calls is one call per
//! element, which in the attention and log-prob kernels of a training step
//! is tens of millions of calls.
//!
//! The Cephes polynomial (relative error about 1e-7, one or two ulp of
//! libm); arguments below −87.3 give exactly 0 (so −∞ for a masked score
//! does), NaN stays NaN. The same arithmetic runs with or without AVX2, so
//! results do not depend on the machine's vector width. Only the training
//! and scoring kernels use it; the decode path and the kernels the cached
//! forward pass shares with it keep libm's `expf`, which their bit-for-bit
//! reproduction of the reference sampling needs.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// exp(x) for x above this is not needed (arguments are differences from
/// a row's maximum, or silu's −x) and would overflow 2^n below.
const HI: f32 = 88.0;
/// Below this exp(x) < 2^−126: returned as 0.
const LO: f32 = -87.3;

#[inline(always)]
fn exp1(x: f32) -> f32 {
    let c = x.clamp(LO, HI);
    let n = (c * LOG2E + 0.5).floor();
    let r = c - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let mut y = 1.987_569_1e-4;
    y = y * r + 1.398_199_9e-3;
    y = y * r + 8.333_452e-3;
    y = y * r + 4.166_579_6e-2;
    y = y * r + 1.666_666_5e-1;
    y = y * r + 0.5;
    y = y * z + r + 1.0;
    // 2^n from n + 127 in the low mantissa bits of (n + 127 + 2^23),
    // shifted into the exponent: no float-to-int conversion, which the
    // compiler would not keep in 256-bit registers.
    let scale = f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23);
    if x < LO {
        0.0
    } else {
        y * scale
    }
}

/// `x[i] = exp(x[i] − m)`; returns the sum, added in index order.
pub fn exp_sub_sum(x: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available.
        return unsafe { exp_sub_sum_avx2(x, m) };
    }
    exp_sub_sum_generic(x, m)
}

#[inline(always)]
fn exp_sub_sum_generic(x: &mut [f32], m: f32) -> f32 {
    x.iter_mut().for_each(|v| *v = exp1(*v - m));
    x.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_sub_sum_avx2(x: &mut [f32], m: f32) -> f32 {
    exp_sub_sum_generic(x, m)
}

/// `out[i] = exp(x[i] − m)`; returns their sum, added in index order.
pub fn exp_sub_sum_into(x: &[f32], m: f32, out: &mut [f32]) -> f32 {
    exp_sub(x, m, out);
    out.iter().sum()
}

/// `out[i] = exp(x[i] − m)`.
pub fn exp_sub(x: &[f32], m: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available.
        return unsafe { exp_sub_avx2(x, m, out) };
    }
    exp_sub_generic(x, m, out)
}

#[inline(always)]
fn exp_sub_generic(x: &[f32], m: f32, out: &mut [f32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = exp1(v - m));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_sub_avx2(x: &[f32], m: f32, out: &mut [f32]) {
    exp_sub_generic(x, m, out)
}

/// `out[i] = exp(−x[i])`.
pub fn exp_neg(x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available.
        return unsafe { exp_neg_avx2(x, out) };
    }
    exp_neg_generic(x, out)
}

#[inline(always)]
fn exp_neg_generic(x: &[f32], out: &mut [f32]) {
    out.iter_mut().zip(x).for_each(|(o, &v)| *o = exp1(-v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_neg_avx2(x: &[f32], out: &mut [f32]) {
    exp_neg_generic(x, out)
}

/// log Σ exp(x), with the maximum subtracted first.
pub fn log_sum_exp(x: &[f32], scratch: &mut Vec<f32>) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY || !m.is_finite() {
        return m;
    }
    scratch.resize(x.len(), 0.0);
    exp_sub(x, m, scratch);
    m + scratch.iter().sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_libm_everywhere_it_is_used() {
        // Relative error within 3e-7 over [−87, 88], exact 0 below, NaN kept.
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = exp1(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp1(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp1(-100.0), 0.0);
        assert_eq!(exp1(0.0), 1.0);
        assert!(exp1(f32::NAN).is_nan());
        let mut v = vec![0.0f32, -1.0, f32::NEG_INFINITY, 2.0];
        let s = exp_sub_sum(&mut v, 2.0);
        let want = [(-2f64).exp(), (-3f64).exp(), 0.0, 1.0];
        for (g, w) in v.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-7);
        }
        assert!((s as f64 - want.iter().sum::<f64>()).abs() < 1e-6);
        let mut scratch = Vec::new();
        let lse = log_sum_exp(&[1.0, 2.0, 3.0], &mut scratch);
        assert!((lse - 3.407_606).abs() < 1e-6, "{lse}");
    }
}
