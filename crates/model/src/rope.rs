//! Rotary position embeddings: the base and frequency scaling read from
//! either config layout, and the cos/sin tables.
//!
//! transformers ≥ 5 writes `rope_parameters: {rope_theta, rope_type, …}`;
//! older configs have `rope_theta` at the top level and the scaling in
//! `rope_scaling: {type | rope_type, …}`. Both are read; a rope type or a
//! scaling parameter not implemented here is refused by name, never
//! ignored (an ignored `llama3` scaling loads and gives wrong numbers).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde_json::{Map, Value};

use crate::config::ModelConfig;

/// transformers' default base when a config gives none.
const DEFAULT_THETA: f64 = 10_000.0;

#[derive(Clone, Debug, PartialEq)]
pub enum Scaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept,
    /// a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: Scaling,
}

const SUPPORTED: &str = "default, linear, llama3";

fn number(m: &Map<String, Value>, key: &str, what: &str) -> Result<f64> {
    match m.get(key).and_then(Value::as_f64) {
        Some(v) if v.is_finite() => Ok(v),
        _ => bail!("{what}: {key} is missing or not a number"),
    }
}

impl Rope {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self> {
        let params = cfg.rope_parameters.as_ref().filter(|v| !v.is_null());
        let scaling = cfg.rope_scaling.as_ref().filter(|v| !v.is_null());
        let (what, m, theta) = match (params, scaling) {
            (Some(_), Some(_)) => {
                bail!("config has both rope_parameters and rope_scaling; expected one layout")
            }
            (Some(p), None) => {
                let Value::Object(m) = p else {
                    bail!("rope_parameters must be an object, found {p}")
                };
                if m.values().any(Value::is_object) {
                    bail!("rope_parameters per layer type are not implemented");
                }
                let inner = match m.get("rope_theta") {
                    Some(v) => Some(v.as_f64().filter(|t| t.is_finite()).ok_or_else(|| {
                        anyhow::anyhow!("rope_parameters: rope_theta {v} is not a number")
                    })?),
                    None => None,
                };
                if let (Some(a), Some(b)) = (inner, cfg.rope_theta) {
                    if a != b {
                        bail!("rope_theta {b} at the top level contradicts rope_parameters.rope_theta {a}");
                    }
                }
                let theta = inner.or(cfg.rope_theta).unwrap_or(DEFAULT_THETA);
                ("rope_parameters", m.clone(), theta)
            }
            (None, Some(s)) => {
                let Value::Object(m) = s else {
                    bail!("rope_scaling must be an object or null, found {s}")
                };
                (
                    "rope_scaling",
                    m.clone(),
                    cfg.rope_theta.unwrap_or(DEFAULT_THETA),
                )
            }
            (None, None) => {
                return Rope::checked(cfg.rope_theta.unwrap_or(DEFAULT_THETA), Scaling::None)
            }
        };
        let ty = match (m.get("rope_type"), m.get("type")) {
            (Some(a), Some(b)) if a != b => {
                bail!("{what}: rope_type {a} and type {b} disagree")
            }
            (Some(t), _) | (None, Some(t)) => t
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{what}: rope_type {t} is not a string"))?
                .to_string(),
            (None, None) => "default".to_string(),
        };
        let (scaling, keys): (Scaling, &[&str]) = match ty.as_str() {
            "default" => (Scaling::None, &[]),
            "linear" => (
                Scaling::Linear {
                    factor: number(&m, "factor", what)?,
                },
                &["factor"],
            ),
            "llama3" => (
                Scaling::Llama3 {
                    factor: number(&m, "factor", what)?,
                    low_freq_factor: number(&m, "low_freq_factor", what)?,
                    high_freq_factor: number(&m, "high_freq_factor", what)?,
                    original_max_position_embeddings: number(
                        &m,
                        "original_max_position_embeddings",
                        what,
                    )?,
                },
                &[
                    "factor",
                    "low_freq_factor",
                    "high_freq_factor",
                    "original_max_position_embeddings",
                ],
            ),
            other => {
                bail!("{what}: rope_type {other:?} is not implemented (supported: {SUPPORTED})")
            }
        };
        for key in m.keys() {
            if !["rope_type", "type", "rope_theta"].contains(&key.as_str())
                && !keys.contains(&key.as_str())
            {
                bail!("{what}: {key:?} is not implemented for rope_type {ty:?}; refusing rather than ignoring it");
            }
        }
        Rope::checked(theta, scaling)
    }

    fn checked(theta: f64, scaling: Scaling) -> Result<Self> {
        if theta <= 1.0 {
            bail!("rope_theta {theta} must be greater than 1");
        }
        match &scaling {
            Scaling::Linear { factor } if *factor <= 0.0 => {
                bail!("rope scaling factor {factor} must be positive")
            }
            Scaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } if *factor <= 0.0
                || *low_freq_factor <= 0.0
                || high_freq_factor <= low_freq_factor
                || *original_max_position_embeddings <= 0.0 =>
            {
                bail!("llama3 rope scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0")
            }
            _ => {}
        }
        Ok(Rope { theta, scaling })
    }

    /// The head_dim/2 inverse frequencies, computed in f32 in the order
    /// transformers computes them, so the tables match its to the last bit
    /// or two rather than to an f64 ideal.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let d = head_dim as f32;
        let plain = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d));
        match self.scaling {
            Scaling::None => plain.collect(),
            Scaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            Scaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let (factor, low, high, old) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    old as f32,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// cos and sin tables [positions, head_dim/2] in f32.
    pub fn tables(
        &self,
        head_dim: usize,
        positions: usize,
        dev: &Device,
    ) -> Result<(Tensor, Tensor)> {
        tables_from(&self.inv_freq(head_dim), positions, dev)
    }
}

/// cos and sin of position × frequency, [positions, frequencies] in f32
/// (the product rounded to f32 first, as transformers' f32 matmul does).
pub fn tables_from(inv: &[f32], positions: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let half = inv.len();
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for &f in inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (positions, half), dev)?,
        Tensor::from_vec(sin, (positions, half), dev)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ModelConfig {
        ModelConfig::from_json(&format!(
            r#"{{"model_type":"llama","vocab_size":16,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"max_position_embeddings":32{extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn both_layouts_give_the_same_rope() {
        let new = Rope::from_config(&cfg(
            r#","rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}"#,
        ))
        .unwrap();
        let old = Rope::from_config(&cfg(
            r#","rope_theta":500000.0,"rope_scaling":{"type":"llama3","factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":64}"#,
        ))
        .unwrap();
        assert_eq!(new, old);
        assert_eq!(new.theta, 500000.0);
        let plain = Rope::from_config(&cfg(r#","rope_theta":500000.0"#)).unwrap();
        assert_eq!(plain.scaling, Scaling::None);
        assert_eq!(Rope::from_config(&cfg("")).unwrap().theta, DEFAULT_THETA);
    }

    #[test]
    fn llama3_scaling_golden() {
        // head_dim 8, θ = 10000, original context 64, factor 8, low 1, high 4:
        // low wavelength 64, high wavelength 16. Frequencies 10000^(−i/4):
        // i=0: 1 (λ = 6.28 < 16, kept); i=1: 0.1 (λ = 62.8, medium:
        // s = (64/62.83 − 1)/3 = 0.006197, f = (1 − s)·0.1/8 + s·0.1);
        // i=2: 0.01 (λ = 628 > 64, divided by 8); i=3: 0.001 (divided).
        let r = Rope {
            theta: 10_000.0,
            scaling: Scaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64.0,
            },
        };
        let f = r.inv_freq(8);
        let s = (64.0 / (2.0 * std::f64::consts::PI / 0.1) - 1.0) / 3.0;
        let want = [
            1.0,
            (1.0 - s) * 0.1 / 8.0 + s * 0.1,
            0.01 / 8.0,
            0.001 / 8.0,
        ];
        for (g, w) in f.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6 * w, "{f:?} vs {want:?}");
        }
    }

    #[test]
    fn unimplemented_rope_settings_are_refused() {
        for (extra, needle) in [
            (
                r#","rope_scaling":{"rope_type":"yarn","factor":4.0}"#,
                "\"yarn\" is not implemented",
            ),
            (
                r#","rope_parameters":{"rope_type":"dynamic","rope_theta":1e4}"#,
                "\"dynamic\"",
            ),
            (
                r#","rope_parameters":{"rope_type":"linear","rope_theta":1e4}"#,
                "factor is missing",
            ),
            (
                r#","rope_parameters":{"rope_type":"default","rope_theta":1e4,"factor":2.0}"#,
                "\"factor\" is not implemented for rope_type \"default\"",
            ),
            (
                r#","rope_theta":1e4,"rope_parameters":{"rope_type":"default","rope_theta":5e5}"#,
                "contradicts",
            ),
        ] {
            let e = Rope::from_config(&cfg(extra)).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}: {e}");
        }
    }
}
