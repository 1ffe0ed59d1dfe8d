//! A trainable Llama-family decoder (Llama, Mistral-style, Qwen2).
//!
//! Written on candle-nn primitives rather than taken from
//! `candle_transformers::models::llama`: that model is built for inference
//! (a mutable KV cache inside the model, one causal mask for the whole
//! batch, no padding mask, fused ops without backward), while training,
//! rollouts and scoring here need batched forward passes over left- or
//! right-padded rows with per-row positions and gradients through every
//! parameter. The generation path reuses `candle_nn::kv_cache::KvCache` and
//! `candle_transformers::utils::repeat_kv`.

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use candle_nn::kv_cache::KvCache;

use crate::config::ModelConfig;
use crate::ops;
use crate::params::Params;

/// Additive attention bias for disallowed positions. Finite, so a row with
/// every key masked (a padding query) gives a uniform softmax, not NaN.
const MASKED: f32 = -1e9;

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn load(p: &Params, name: &str, bias: bool) -> Result<Self> {
        Ok(Linear {
            w: p.get(&format!("{name}.weight"))?,
            b: if bias {
                Some(p.get(&format!("{name}.bias"))?)
            } else {
                None
            },
        })
    }

    /// x: [N, in] → [N, out]
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w.t()?)?;
        Ok(match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

struct Block {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Per-layer key/value caches for incremental decoding.
pub struct Cache {
    layers: Vec<KvCache>,
}

impl Cache {
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .map(|c| c.current_seq_len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Llama {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// Positions of each token within its own row: padding does not advance
/// the position, so a left-padded row starts at 0 like an unpadded one.
pub fn positions_from_mask(mask: &[u8], b: usize, t: usize) -> Vec<u32> {
    let mut pos = vec![0u32; b * t];
    for r in 0..b {
        let mut n = 0u32;
        for c in 0..t {
            if mask[r * t + c] != 0 {
                pos[r * t + c] = n;
                n += 1;
            }
        }
    }
    pos
}

impl Llama {
    pub fn new(cfg: &ModelConfig, p: &Params) -> Result<Self> {
        cfg.validate()?;
        let bias = cfg.qkv_bias();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let pre = format!("model.layers.{i}");
            layers.push(Block {
                input_norm: p.get(&format!("{pre}.input_layernorm.weight"))?,
                q: Linear::load(p, &format!("{pre}.self_attn.q_proj"), bias)?,
                k: Linear::load(p, &format!("{pre}.self_attn.k_proj"), bias)?,
                v: Linear::load(p, &format!("{pre}.self_attn.v_proj"), bias)?,
                o: Linear::load(p, &format!("{pre}.self_attn.o_proj"), false)?,
                post_norm: p.get(&format!("{pre}.post_attention_layernorm.weight"))?,
                gate: Linear::load(p, &format!("{pre}.mlp.gate_proj"), false)?,
                up: Linear::load(p, &format!("{pre}.mlp.up_proj"), false)?,
                down: Linear::load(p, &format!("{pre}.mlp.down_proj"), false)?,
            });
        }
        let embed = p.get("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            p.get("lm_head.weight")?
        };
        let device = embed.device().clone();
        let (cos, sin) = rope_tables(cfg, &device)?;
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: p.get("model.norm.weight")?,
            lm_head,
            cos,
            sin,
            device,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn new_cache(&self, max_len: usize) -> Cache {
        Cache {
            layers: (0..self.cfg.num_hidden_layers)
                .map(|_| KvCache::new(2, max_len))
                .collect(),
        }
    }

    /// Final hidden states [B, T, H] for a padded batch. `ids`: [B, T] u32;
    /// `mask`: B·T flags, 1 for real tokens (left or right padding, or both).
    pub fn forward_hidden(&self, ids: &Tensor, mask: &[u8]) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if mask.len() != b * t {
            bail!(
                "attention mask has {} entries for a {b}x{t} batch",
                mask.len()
            );
        }
        let pos = positions_from_mask(mask, b, t);
        let mut bias = vec![0f32; b * t * t];
        for r in 0..b {
            for q in 0..t {
                for k in 0..t {
                    if k > q || mask[r * t + k] == 0 {
                        bias[(r * t + q) * t + k] = MASKED;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, t), &self.device)?;
        self.run(ids, &pos, &bias, None)
    }

    /// One incremental step (prefill or decode) against `cache`. `ids`:
    /// [B, t] new tokens at positions `pos` (B·t); `key_mask`: B·(cached + t)
    /// flags for every key so far. Returns hidden states [B, t, H].
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        pos: &[u32],
        key_mask: &[u8],
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let past = cache.len();
        let total = past + t;
        if key_mask.len() != b * total || pos.len() != b * t {
            bail!("cached forward: mask/positions do not match the batch");
        }
        let mut bias = vec![0f32; b * t * total];
        for r in 0..b {
            for q in 0..t {
                for k in 0..total {
                    if k > past + q || key_mask[r * total + k] == 0 {
                        bias[(r * t + q) * total + k] = MASKED;
                    }
                }
            }
        }
        let bias = Tensor::from_vec(bias, (b, 1, t, total), &self.device)?;
        self.run(ids, pos, &bias, Some(cache))
    }

    fn run(
        &self,
        ids: &Tensor,
        pos: &[u32],
        bias: &Tensor,
        mut cache: Option<&mut Cache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (nh, nkv, hd, h) = (
            cfg.num_attention_heads,
            cfg.kv_heads(),
            cfg.head_dim(),
            cfg.hidden_size,
        );
        let pos_t = Tensor::from_slice(pos, b * t, &self.device)?;
        let cos = self
            .cos
            .index_select(&pos_t, 0)?
            .reshape((b, t, hd / 2))?
            .to_dtype(self.embed.dtype())?;
        let sin = self
            .sin
            .index_select(&pos_t, 0)?
            .reshape((b, t, hd / 2))?
            .to_dtype(self.embed.dtype())?;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?; // [N, H]
        let scale = 1.0 / (hd as f64).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let hn = ops::rms_norm(&x, &layer.input_norm, cfg.rms_norm_eps)?;
            let heads = |lin: &Linear, n: usize| -> Result<Tensor> {
                Ok(lin
                    .forward(&hn)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = ops::rope(&heads(&layer.q, nh)?, &cos, &sin)?;
            let k = ops::rope(&heads(&layer.k, nkv)?, &cos, &sin)?;
            let v = heads(&layer.v, nkv)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.layers[li].append(&k, &v)?,
                None => (k, v),
            };
            let k = candle_transformers::utils::repeat_kv(k, nh / nkv)?;
            let v = candle_transformers::utils::repeat_kv(v, nh / nkv)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias.to_dtype(q.dtype())?)?;
            let probs = ops::softmax_last_dim(&scores)?;
            let att = probs
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((b * t, nh * hd))?;
            x = (x + layer.o.forward(&att)?)?;
            let hn = ops::rms_norm(&x, &layer.post_norm, cfg.rms_norm_eps)?;
            let mlp =
                (candle_nn::ops::silu(&layer.gate.forward(&hn)?)? * layer.up.forward(&hn)?)?;
            x = (x + layer.down.forward(&mlp)?)?;
        }
        let x = ops::rms_norm(&x, &self.norm, cfg.rms_norm_eps)?;
        Ok(x.reshape((b, t, h))?)
    }

    /// Logits [N, V] for hidden states [N, H].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden.matmul(&self.lm_head.t()?)?)
    }
}

fn rope_tables(cfg: &ModelConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim();
    let n = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(n * hd / 2);
    let mut sin = Vec::with_capacity(n * hd / 2);
    for p in 0..n {
        for i in 0..hd / 2 {
            let freq = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / hd as f64);
            let a = p as f64 * freq;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, hd / 2), device)?,
        Tensor::from_vec(sin, (n, hd / 2), device)?,
    ))
}

/// Index of the last real token of each row (the reward model's read-out
/// position), for any padding side. Rows with no real token give 0.
pub fn last_token_index(mask: &[u8], b: usize, t: usize) -> Vec<u32> {
    (0..b)
        .map(|r| (0..t).rev().find(|&c| mask[r * t + c] != 0).unwrap_or(0) as u32)
        .collect()
}

/// Gathers `x[b, idx[b], :]` for [B, T, H] → [B, H].
pub fn gather_rows(x: &Tensor, idx: &[u32]) -> Result<Tensor> {
    let (b, t, h) = x.dims3()?;
    let flat: Vec<u32> = idx
        .iter()
        .enumerate()
        .map(|(r, &i)| (r * t) as u32 + i)
        .collect();
    let flat = Tensor::from_vec(flat, b, x.device())?;
    Ok(x.reshape((b * t, h))?.index_select(&flat, 0)?)
}
