//! AdamW with state that is saved beside a checkpoint, so training resumes
//! exactly (candle-nn's `AdamW` keeps its moments private and cannot be
//! saved), plus global-norm gradient clipping and the cosine schedule.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{backprop::GradStore, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kernels::with_slice;

/// Elements per parallel task of the fused update.
const CHUNK: usize = 1 << 14;

/// One step's scalars, rounded to f32 once as candle's affine ops round
/// them.
struct Coefficients {
    clip: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bc1: f32,
    inv_bc2: f32,
    eps: f32,
    lr: f32,
}

/// Σ x² of a gradient in f64: per fixed chunk, then summed in order, so the
/// result does not depend on how rayon splits the work.
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if !(crate::ops::fused_ok(g) && g.is_contiguous()) {
        return Ok(g
            .to_dtype(candle_core::DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?);
    }
    let partials: Vec<f64> = with_slice(g, |s| {
        s.par_chunks(CHUNK)
            .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .collect()
    })?;
    Ok(partials.iter().sum())
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Number of updates applied so far.
    pub step: u64,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
}

/// What one optimiser step saw.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub grad_norm: f64,
    pub lr: f64,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Self {
        AdamW {
            cfg,
            step: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        }
    }

    /// Clips gradients to `max_norm` (global L2; 0 = no clipping), then
    /// applies one AdamW update at learning rate `lr`. Weight decay skips
    /// 1-d parameters (norms, biases). A non-finite gradient norm is an
    /// error and no parameter is touched.
    pub fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &GradStore,
        lr: f64,
        max_norm: f64,
    ) -> Result<StepStats> {
        let mut sq = 0f64;
        for (_, v) in vars {
            if let Some(g) = grads.get(v) {
                sq += sum_of_squares(g)?;
            }
        }
        let grad_norm = sq.sqrt();
        if !grad_norm.is_finite() {
            bail!("gradient norm is not finite ({grad_norm}); update skipped");
        }
        let clip = if max_norm > 0.0 && grad_norm > max_norm {
            max_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let c = self.cfg.clone();
        let k = Coefficients {
            clip: clip as f32,
            beta1: c.beta1 as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            inv_bc1: (1.0 / (1.0 - c.beta1.powi(self.step as i32))) as f32,
            inv_bc2: (1.0 / (1.0 - c.beta2.powi(self.step as i32))) as f32,
            eps: c.eps as f32,
            lr: lr as f32,
        };
        for (name, var) in vars {
            let Some(g) = grads.get(var) else { continue };
            let p = var.as_tensor();
            let decay = if p.rank() >= 2 { c.weight_decay } else { 0.0 };
            let keep = (1.0 - lr * decay) as f32;
            let (m, v) = (self.m.get(name), self.v.get(name));
            let fused = [Some(p), Some(g), m, v]
                .iter()
                .flatten()
                .all(|t| crate::ops::fused_ok(t) && t.is_contiguous());
            let (m, v) = if fused {
                self.fused_update(var, g, m, v, &k, keep)?
            } else {
                self.composite_update(var, g, m, v, &c, clip, lr, decay)?
            };
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(StepStats { grad_norm, lr })
    }

    /// One parameter's update in a single parallel pass over p, g, m and v,
    /// each element rounded as the composite candle expression rounds it.
    fn fused_update(
        &self,
        var: &Var,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
        k: &Coefficients,
        keep: f32,
    ) -> Result<(Tensor, Tensor)> {
        let n = g.elem_count();
        let (mut pn, mut mn, mut vn) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let old = |t: Option<&Tensor>| -> Result<Tensor> {
            Ok(match t {
                Some(t) => t.clone(),
                None => Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu)?,
            })
        };
        let (mo, vo) = (old(m)?, old(v)?);
        let (m_first, v_first) = (m.is_none(), v.is_none());
        with_slice(var.as_tensor(), |p| {
            with_slice(g, |g| {
                with_slice(&mo, |mo| {
                    with_slice(&vo, |vo| {
                        pn.par_chunks_mut(CHUNK)
                            .zip(mn.par_chunks_mut(CHUNK))
                            .zip(vn.par_chunks_mut(CHUNK))
                            .enumerate()
                            .for_each(|(c, ((pn, mn), vn))| {
                                let at = c * CHUNK;
                                for i in 0..pn.len() {
                                    let j = at + i;
                                    let g = g[j] * k.clip;
                                    let gm = g * k.one_minus_beta1;
                                    let gv = (g * g) * k.one_minus_beta2;
                                    // A first step has no moments: m = (1−β₁)g.
                                    let m = if m_first { gm } else { mo[j] * k.beta1 + gm };
                                    let v = if v_first { gv } else { vo[j] * k.beta2 + gv };
                                    let update = (m * k.inv_bc1) / ((v * k.inv_bc2).sqrt() + k.eps);
                                    pn[i] = p[j] * keep - update * k.lr;
                                    mn[i] = m;
                                    vn[i] = v;
                                }
                            })
                    })
                })
            })
        })????;
        let shape = var.as_tensor().shape().clone();
        var.set(&Tensor::from_vec(pn, shape.clone(), &Device::Cpu)?)?;
        Ok((
            Tensor::from_vec(mn, shape.clone(), &Device::Cpu)?,
            Tensor::from_vec(vn, shape, &Device::Cpu)?,
        ))
    }

    /// The update as candle ops, for parameters off the CPU or not in f32.
    #[allow(clippy::too_many_arguments)]
    fn composite_update(
        &self,
        var: &Var,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
        c: &AdamWConfig,
        clip: f64,
        lr: f64,
        decay: f64,
    ) -> Result<(Tensor, Tensor)> {
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        let g = (g * clip)?;
        let m = match m {
            Some(m) => ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?,
            None => (&g * (1.0 - c.beta1))?,
        };
        let v = match v {
            Some(v) => ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
            None => (g.sqr()? * (1.0 - c.beta2))?,
        };
        let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
        let p = var.as_tensor();
        let next = ((p * (1.0 - lr * decay))? - (update * lr)?)?;
        var.set(&next)?;
        Ok((m, v))
    }

    /// Moments as tensors named `m.<param>` / `v.<param>`.
    /// Refuses NaN or infinite moments, like `Params::save`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (k, t) in &self.m {
            map.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            map.insert(format!("v.{k}"), t.clone());
        }
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        for name in names {
            crate::params::check_finite(name, &map[name])
                .with_context(|| format!("{}: optimiser state not saved", path.display()))?;
        }
        if map.is_empty() {
            // safetensors cannot hold zero tensors meaningfully; a marker keeps
            // the file valid for an optimiser that has not stepped yet.
            map.insert(
                "empty".into(),
                Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?,
            );
        }
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("{}: cannot write optimiser state", path.display()))
    }

    pub fn load(cfg: AdamWConfig, step: u64, path: &Path, dev: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, dev)
            .with_context(|| format!("{}: cannot read optimiser state", path.display()))?;
        let mut opt = AdamW::new(cfg);
        opt.step = step;
        for (k, t) in tensors {
            if let Some(n) = k.strip_prefix("m.") {
                opt.m.insert(n.to_string(), t);
            } else if let Some(n) = k.strip_prefix("v.") {
                opt.v.insert(n.to_string(), t);
            }
        }
        Ok(opt)
    }
}

/// Gradients of several backward passes summed parameter by parameter:
/// gradient accumulation over the micro-batches of one optimiser step.
/// Only the parameters' gradients are kept, not those of the intermediate
/// tensors each backward pass also returns.
#[derive(Default)]
pub struct GradAccumulator {
    grads: Option<Vec<Option<Tensor>>>,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one backward pass's gradients of `vars`.
    pub fn add(&mut self, vars: &[(String, Var)], g: GradStore) -> Result<()> {
        let next: Vec<Option<Tensor>> = vars.iter().map(|(_, v)| g.get(v).cloned()).collect();
        match &mut self.grads {
            None => self.grads = Some(next),
            Some(acc) => {
                for (x, y) in acc.iter_mut().zip(next) {
                    *x = match (x.take(), y) {
                        (Some(x), Some(y)) => Some((x + y)?),
                        (x, y) => x.or(y),
                    };
                }
            }
        }
        Ok(())
    }

    /// The sums as a store [`AdamW::step`] reads.
    pub fn into_store(self, vars: &[(String, Var)]) -> Result<GradStore> {
        // An empty store: the backward pass of a constant has no gradients.
        let mut store = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?.backward()?;
        if let Some(grads) = self.grads {
            for ((_, var), g) in vars.iter().zip(grads) {
                if let Some(g) = g {
                    store.insert(var.as_tensor(), g);
                }
            }
        }
        Ok(store)
    }
}

/// A learning-rate schedule over a run's optimiser steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Linear warm-up, then linear decay to 0 at the last step.
    Linear,
    /// Linear warm-up, then cosine decay to 0.
    Cosine,
}

impl LrSchedule {
    pub fn as_str(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Linear => "linear",
            LrSchedule::Cosine => "cosine",
        }
    }

    /// The learning rate of 0-based `step` of `total`, after `warmup`
    /// warm-up steps. Warm-up rises as (step + 1)/warmup, so the first step
    /// already learns (Hugging Face's schedules start at 0); decay runs over
    /// the steps after warm-up. Steps past `total` keep the last rate.
    pub fn lr(self, base: f64, step: u64, warmup: u64, total: u64) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine => cosine_lr(base, step, warmup, total, 0.0),
            LrSchedule::Linear => {
                if warmup > 0 && step < warmup {
                    return base * (step + 1) as f64 / warmup as f64;
                }
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = (step.saturating_sub(warmup) as f64 / span).min(1.0);
                base * (1.0 - progress)
            }
        }
    }
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [LrSchedule::Constant, LrSchedule::Linear, LrSchedule::Cosine]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown schedule {s:?} (expected constant, linear or cosine)"))
    }
}

/// Linear warm-up then cosine decay to `min_ratio`·lr over `total` steps.
pub fn cosine_lr(base: f64, step: u64, warmup: u64, total: u64, min_ratio: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step.saturating_sub(warmup)) as f64 / span).min(1.0);
    let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    base * (min_ratio + (1.0 - min_ratio) * cos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_golden_values() {
        // warmup 2 of 10 steps: 0.5, 1.0, then cos from 1 to 0 over 8 steps.
        assert!((cosine_lr(1.0, 0, 2, 10, 0.0) - 0.5).abs() < 1e-12);
        assert!((cosine_lr(1.0, 1, 2, 10, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 2, 2, 10, 0.0) - 1.0).abs() < 1e-12);
        // step 6: progress 4/8 → 0.5·(1+cos(π/2)) = 0.5
        assert!((cosine_lr(1.0, 6, 2, 10, 0.0) - 0.5).abs() < 1e-12);
        assert!((cosine_lr(1.0, 10, 2, 10, 0.1) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn linear_schedule_golden_values() {
        let l = |step| LrSchedule::Linear.lr(2.0, step, 1, 5);
        // warm-up of 1 step at the full rate, then 2·(1 − k/4) for k = 1..4.
        assert_eq!(
            [l(0), l(1), l(2), l(3), l(4), l(9)],
            [2.0, 2.0, 1.5, 1.0, 0.5, 0.0]
        );
        assert_eq!(LrSchedule::Linear.lr(1.0, 0, 4, 10), 0.25);
        assert_eq!(LrSchedule::Constant.lr(3.0, 7, 2, 10), 3.0);
        assert_eq!(
            LrSchedule::Cosine.lr(1.0, 6, 2, 10),
            cosine_lr(1.0, 6, 2, 10, 0.0)
        );
        for s in ["constant", "linear", "cosine"] {
            assert_eq!(s.parse::<LrSchedule>().unwrap().as_str(), s);
        }
        assert!("step".parse::<LrSchedule>().is_err());
    }

    #[test]
    fn accumulated_gradients_are_the_sum() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let mut acc = GradAccumulator::new();
        // d/dw of 3·Σw is 3, of Σw² is 2w: [3 + 2, 3 − 4].
        let a = (var.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        acc.add(&vars, a.backward().unwrap()).unwrap();
        let b = var.as_tensor().sqr().unwrap().sum_all().unwrap();
        acc.add(&vars, b.backward().unwrap()).unwrap();
        let store = acc.into_store(&vars).unwrap();
        let g: Vec<f32> = store.get(var.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![5.0, -1.0]);
    }

    #[test]
    fn first_adamw_step_moves_by_lr_times_sign() {
        // After one step m̂ = g, v̂ = g², so the update is lr·g/|g| = lr·sign(g).
        let var = Var::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        let loss = (var.as_tensor() * &Tensor::new(&[2.0f32, -0.5, 0.0], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            eps: 0.0,
            ..Default::default()
        });
        let vars = vec![("w".to_string(), var.clone())];
        let stats = opt.step(&vars, &grads, 0.1, 0.0).unwrap();
        assert!((stats.grad_norm - (4.25f64).sqrt()).abs() < 1e-6);
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        assert!((got[0] - 0.9).abs() < 1e-6 && (got[1] + 1.9).abs() < 1e-6);
        // zero gradient: 0/0 guarded by eps = 0 gives NaN in torch too; we
        // only check the two live coordinates.
    }

    #[test]
    fn fused_update_is_the_composite_update_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut rand =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-2f32..2.0)).collect() };
        let p0 = Tensor::from_vec(rand(35), (5, 7), &Device::Cpu).unwrap();
        let grads: Vec<Tensor> = (0..3)
            .map(|_| Tensor::from_vec(rand(35), (5, 7), &Device::Cpu).unwrap())
            .collect();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let (a, b) = (
            Var::from_tensor(&p0).unwrap(),
            Var::from_tensor(&p0).unwrap(),
        );
        let mut opt = AdamW::new(cfg.clone());
        let (mut ma, mut va, mut mb, mut vb) = (None, None, None, None);
        for (s, g) in grads.iter().enumerate() {
            opt.step = s as u64 + 1;
            let k = Coefficients {
                clip: 0.5,
                beta1: cfg.beta1 as f32,
                one_minus_beta1: (1.0 - cfg.beta1) as f32,
                beta2: cfg.beta2 as f32,
                one_minus_beta2: (1.0 - cfg.beta2) as f32,
                inv_bc1: (1.0 / (1.0 - cfg.beta1.powi(opt.step as i32))) as f32,
                inv_bc2: (1.0 / (1.0 - cfg.beta2.powi(opt.step as i32))) as f32,
                eps: cfg.eps as f32,
                lr: 0.01,
            };
            let keep = (1.0 - 0.01 * 0.1f64) as f32;
            let (m, v) = opt
                .fused_update(&a, g, ma.as_ref(), va.as_ref(), &k, keep)
                .unwrap();
            (ma, va) = (Some(m), Some(v));
            let (m, v) = opt
                .composite_update(&b, g, mb.as_ref(), vb.as_ref(), &cfg, 0.5, 0.01, 0.1)
                .unwrap();
            (mb, vb) = (Some(m), Some(v));
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                flat(a.as_tensor()),
                flat(b.as_tensor()),
                "step {s}: parameters"
            );
            assert_eq!(flat(ma.as_ref().unwrap()), flat(mb.as_ref().unwrap()));
            assert_eq!(flat(va.as_ref().unwrap()), flat(vb.as_ref().unwrap()));
        }
    }

    #[test]
    fn state_round_trips_and_resumes_identically() {
        let dir = std::env::temp_dir().join(format!("marlhf-adamw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |resume: bool| -> Vec<f32> {
            let var = Var::new(&[0.5f32, -1.5], &Device::Cpu).unwrap();
            let vars = vec![("w".to_string(), var.clone())];
            let mut opt = AdamW::new(AdamWConfig::default());
            for s in 0..4 {
                if resume && s == 2 {
                    opt.save(&dir.join("opt.safetensors")).unwrap();
                    opt = AdamW::load(
                        opt.cfg.clone(),
                        opt.step,
                        &dir.join("opt.safetensors"),
                        &Device::Cpu,
                    )
                    .unwrap();
                }
                let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                opt.step(&vars, &g, 0.01, 1.0).unwrap();
            }
            var.as_tensor().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(false), run(true));
        std::fs::remove_dir_all(&dir).ok();
    }
}
