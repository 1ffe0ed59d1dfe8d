//! A trainable decoder for the Llama family of architectures: Llama
//! (1–3.x), Mistral, Qwen2, Qwen3, Gemma and Gemma 2, which share one block
//! and differ in switches resolved from the config (`config::Arch`).
//!
//! Written on candle-nn primitives rather than taken from
//! candle-transformers' `llama`, `gemma2`, `qwen3` modules: those are built
//! for inference (a mutable KV cache inside the model, one causal mask for
//! the whole batch, no padding mask, fused ops without backward), while
//! training, rollouts and scoring here need batched forward passes over
//! left- or right-padded rows with per-row positions and gradients through
//! every parameter. The cached path (prefill, and the reference decode
//! loop) reuses `candle_nn::kv_cache::KvCache` and
//! `candle_transformers::utils::repeat_kv`; f32 models on the CPU decode
//! through `crate::decode`, which reproduces it bit for bit. Without a
//! cache, f32 on the CPU runs the fused kernels of `ops` (attention among
//! them), anything else candle's composite ops.
//!
//! Precision: the model computes in `dtype` whatever dtype its parameters
//! are kept in (each weight is cast where it is used, a no-op when the two
//! agree), so a model trained in bf16 keeps f32 master weights. Attention
//! scores, softmax, logits and values are computed in at least f32, as
//! transformers does.

use std::sync::Mutex;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::kv_cache::KvCache;

use crate::config::{Activation, Arch, Attention, ModelConfig};
use crate::lora::{self, Adapter, Target};
use crate::names::{self, in_layer};
use crate::ops;
use crate::params::Params;

/// Additive attention bias for disallowed positions. Finite, so a row with
/// every key masked (a padding query) gives a uniform softmax, not NaN.
pub(crate) const MASKED: f32 = -1e9;

pub(crate) struct Linear {
    pub(crate) w: Tensor,
    pub(crate) b: Option<Tensor>,
    /// A frozen base weight (detached): no gradient is computed for it.
    pub(crate) frozen: bool,
    /// The LoRA update of this projection, when an adapter adapts it.
    pub(crate) lora: Option<LoraLinear>,
}

/// y += s·(x·Aᵀ)·Bᵀ, PEFT's `lora_B(lora_A(dropout(x))) * scaling`.
pub(crate) struct LoraLinear {
    /// [r, in]
    pub(crate) a: Tensor,
    /// [out, r]
    pub(crate) b: Tensor,
    pub(crate) scale: f64,
    pub(crate) dropout: f64,
    /// Which projection of which layer, for its own dropout mask.
    salt: u64,
}

impl Linear {
    fn load(p: &Params, name: &str, bias: bool, frozen: bool) -> Result<Self> {
        let get = |n: &str| -> Result<Tensor> {
            let t = p.get(n)?;
            Ok(if frozen { t.detach() } else { t })
        };
        Ok(Linear {
            w: get(&names::weight(name))?,
            b: if bias {
                Some(get(&format!("{name}.bias"))?)
            } else {
                None
            },
            frozen,
            lora: None,
        })
    }

    /// x: [N, in] → [N, out], in x's dtype. `dropout`: the forward pass's
    /// dropout key while training an adapter with dropout.
    fn forward(&self, x: &Tensor, dropout: Option<u64>) -> Result<Tensor> {
        let w = self.w.to_dtype(x.dtype())?;
        let y = if self.frozen {
            lora::frozen::linear(x, &w)?
        } else {
            ops::linear(x, &w)?
        };
        let y = match &self.b {
            Some(b) => y.broadcast_add(&b.to_dtype(x.dtype())?)?,
            None => y,
        };
        let Some(l) = &self.lora else { return Ok(y) };
        let x = match dropout {
            Some(key) if l.dropout > 0.0 => {
                let mask = lora::dropout_mask(
                    lora::mix(key, l.salt),
                    x.shape(),
                    l.dropout,
                    x.dtype(),
                    x.device(),
                )?;
                (x * mask)?
            }
            _ => x.clone(),
        };
        let t = ops::linear(&x, &l.a.to_dtype(x.dtype())?)?;
        let u = ops::linear(&t, &l.b.to_dtype(x.dtype())?)?;
        Ok((y + (u * l.scale)?)?)
    }
}

pub(crate) struct Block {
    pub(crate) input_norm: Tensor,
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    /// Qwen3: per-head norms of q and k.
    pub(crate) q_norm: Option<Tensor>,
    pub(crate) k_norm: Option<Tensor>,
    /// Gemma 2: the norm of the attention output before the residual add.
    pub(crate) post_attn_norm: Option<Tensor>,
    /// The norm before the MLP: `post_attention_layernorm` in the Llama
    /// layout, `pre_feedforward_layernorm` in Gemma 2's.
    pub(crate) pre_mlp_norm: Tensor,
    /// Gemma 2: the norm of the MLP output before the residual add.
    pub(crate) post_mlp_norm: Option<Tensor>,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
    pub(crate) attention: Attention,
}

/// Per-layer key/value caches for incremental decoding.
pub struct Cache {
    pub(crate) layers: Vec<KvCache>,
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
    pub(crate) cfg: ModelConfig,
    pub(crate) arch: Arch,
    /// The dtype activations are computed in.
    pub(crate) dtype: DType,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Block>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: Tensor,
    /// f32 tables [max positions, head_dim/2].
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    pub(crate) device: Device,
    /// With an adapter: the base weights are frozen (detached).
    pub(crate) frozen: bool,
    /// While training an adapter with dropout: the key of the next forward
    /// pass and how many passes have drawn from it.
    dropout: Mutex<Option<(u64, u64)>>,
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

/// Which keys each query of a batch may attend to.
struct Visibility<'a> {
    b: usize,
    /// Queries per row, and the cached keys before them.
    tq: usize,
    past: usize,
    q_pos: &'a [u32],
    key_mask: &'a [u8],
    k_pos: Vec<u32>,
}

impl Visibility<'_> {
    /// Additive bias [B, 1, Tq, Tk] in `dtype`: causal, padding keys masked,
    /// and keys `window` or more positions back masked when sliding.
    fn bias(&self, attention: Attention, dtype: DType, dev: &Device) -> Result<Tensor> {
        let (b, tq) = (self.b, self.tq);
        let tk = self.past + tq;
        let window = match attention {
            Attention::Full => i64::MAX,
            Attention::Sliding(w) => w as i64,
        };
        let mut bias = vec![0f32; b * tq * tk];
        for r in 0..b {
            for q in 0..tq {
                let qp = self.q_pos[r * tq + q] as i64;
                let row = &mut bias[(r * tq + q) * tk..(r * tq + q + 1) * tk];
                for (k, slot) in row.iter_mut().enumerate() {
                    if k > self.past + q
                        || self.key_mask[r * tk + k] == 0
                        || qp - self.k_pos[r * tk + k] as i64 >= window
                    {
                        *slot = MASKED;
                    }
                }
            }
        }
        Ok(Tensor::from_vec(bias, (b, 1, tq, tk), dev)?.to_dtype(dtype)?)
    }

    /// Whether a sliding window of `w` masks anything a full mask does not.
    fn window_matters(&self, w: usize) -> bool {
        self.past + self.tq > w
    }
}

impl Llama {
    /// A model computing in the dtype its embeddings are stored in.
    pub fn new(cfg: &ModelConfig, p: &Params) -> Result<Self> {
        Llama::with_dtype(cfg, p, p.dtype()?)
    }

    pub fn with_dtype(cfg: &ModelConfig, p: &Params, dtype: DType) -> Result<Self> {
        Llama::build(cfg, p, dtype, None)
    }

    /// The model of base weights `p`, adapted by `adapter` when given: the
    /// base is then frozen (its tensors detached, so no gradient is ever
    /// computed for them) and every adapted projection adds the adapter's
    /// low-rank update.
    pub fn build(
        cfg: &ModelConfig,
        p: &Params,
        dtype: DType,
        adapter: Option<&Adapter>,
    ) -> Result<Self> {
        cfg.validate()?;
        let arch = cfg.arch()?;
        let (qkv, o, mlp) = (arch.qkv_bias, arch.o_bias, arch.mlp_bias);
        let frozen = adapter.is_some();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, &attention) in arch.layers.iter().enumerate() {
            let pre = names::layer(i);
            let get = |name: &str| -> Result<Tensor> {
                let t = p.get(&in_layer(&pre, name))?;
                Ok(if frozen { t.detach() } else { t })
            };
            let opt = |on: bool, name: &str| -> Result<Option<Tensor>> {
                Ok(if on { Some(get(name)?) } else { None })
            };
            let lin = |target: Target, bias: bool| -> Result<Linear> {
                let mut l = Linear::load(p, &in_layer(&pre, target.module()), bias, frozen)?;
                if let Some((a, b)) = adapter
                    .map(|ad| ad.factors(i, target))
                    .transpose()?
                    .flatten()
                {
                    let ad = adapter.expect("factors came from it");
                    l.lora = Some(LoraLinear {
                        a,
                        b,
                        scale: ad.scaling(),
                        dropout: ad.config.dropout,
                        salt: (i * Target::ALL.len() + target as usize) as u64,
                    });
                }
                Ok(l)
            };
            layers.push(Block {
                input_norm: get(names::INPUT_NORM)?,
                q: lin(Target::Q, qkv)?,
                k: lin(Target::K, qkv)?,
                v: lin(Target::V, qkv)?,
                o: lin(Target::O, o)?,
                q_norm: opt(arch.qk_norm, names::Q_NORM)?,
                k_norm: opt(arch.qk_norm, names::K_NORM)?,
                post_attn_norm: opt(arch.sandwich_norms, names::POST_ATTENTION_NORM)?,
                pre_mlp_norm: if arch.sandwich_norms {
                    get(names::PRE_FEEDFORWARD_NORM)?
                } else {
                    get(names::POST_ATTENTION_NORM)?
                },
                post_mlp_norm: opt(arch.sandwich_norms, names::POST_FEEDFORWARD_NORM)?,
                gate: lin(Target::Gate, mlp)?,
                up: lin(Target::Up, mlp)?,
                down: lin(Target::Down, mlp)?,
                attention,
            });
        }
        let frozen_get = |name: &str| -> Result<Tensor> {
            let t = p.get(name)?;
            Ok(if frozen { t.detach() } else { t })
        };
        let embed = frozen_get(names::EMBED)?;
        let lm_head = if arch.tied {
            embed.clone()
        } else {
            frozen_get(names::LM_HEAD)?
        };
        let device = embed.device().clone();
        let (cos, sin) = arch
            .rope
            .tables(cfg.head_dim(), cfg.max_position_embeddings, &device)?;
        Ok(Llama {
            cfg: cfg.clone(),
            arch,
            dtype,
            embed,
            layers,
            norm: frozen_get(names::FINAL_NORM)?,
            lm_head,
            cos,
            sin,
            device,
            frozen,
            dropout: Mutex::new(None),
        })
    }

    /// Turns LoRA dropout on for the forward passes that follow, drawn
    /// from `key` (one mask per pass, layer and projection, so a training
    /// step's masks depend on its key alone), or off with `None` (the
    /// default: evaluation, scoring, sampling).
    pub fn set_dropout(&self, key: Option<u64>) {
        *self.dropout.lock().expect("dropout lock") = key.map(|k| (k, 0));
    }

    /// The dropout key of one forward pass, when dropout is on.
    fn next_dropout(&self) -> Option<u64> {
        let mut d = self.dropout.lock().expect("dropout lock");
        let (key, n) = d.as_mut()?;
        *n += 1;
        Some(lora::mix(*key, *n))
    }

    /// Whether the base weights are frozen (the model carries an adapter).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Rebuilds the RoPE tables from explicit inverse frequencies (head_dim/2
    /// of them), e.g. to reproduce a transformers model whose frequency
    /// buffer `Module.to(torch.bfloat16)` has rounded (transformers'
    /// `from_pretrained` keeps it in f32, as `Rope` computes it).
    pub fn set_rope_frequencies(&mut self, inv_freq: &[f32]) -> Result<()> {
        let hd = self.cfg.head_dim();
        if inv_freq.len() != hd / 2 {
            bail!("{} RoPE frequencies for head_dim {hd}", inv_freq.len());
        }
        let (cos, sin) =
            crate::rope::tables_from(inv_freq, self.cfg.max_position_embeddings, &self.device)?;
        self.cos = cos;
        self.sin = sin;
        Ok(())
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype activations are computed in.
    pub fn dtype(&self) -> DType {
        self.dtype
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
        let vis = Visibility {
            b,
            tq: t,
            past: 0,
            q_pos: &pos,
            key_mask: mask,
            k_pos: pos.clone(),
        };
        self.run(ids, &pos, &vis, None)
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
        let vis = Visibility {
            b,
            tq: t,
            past,
            q_pos: pos,
            key_mask,
            k_pos: positions_from_mask(key_mask, b, total),
        };
        self.run(ids, pos, &vis, Some(cache))
    }

    /// RMSNorm with a stored weight: Gemma stores w − 1 and scales by 1 + w
    /// (added in at least f32, as transformers does).
    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let w = if self.arch.norm_one_plus {
            (ops::widen(w)? + 1.0)?
        } else {
            w.clone()
        };
        Ok(ops::rms_norm(x, &w.to_dtype(x.dtype())?, self.cfg.eps())?)
    }

    fn activation(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.arch.activation {
            Activation::Silu => candle_nn::ops::silu(x)?,
            Activation::GeluTanh => x.gelu()?,
            Activation::Gelu => x.gelu_erf()?,
        })
    }

    fn run(
        &self,
        ids: &Tensor,
        pos: &[u32],
        vis: &Visibility,
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
        let dt = self.dtype;
        let wide = ops::wide_dtype(dt);
        if let Some(&p) = pos.iter().max() {
            if p as usize >= cfg.max_position_embeddings {
                bail!(
                    "position {p} is beyond the model's {} positions",
                    cfg.max_position_embeddings
                );
            }
        }
        let pos_t = Tensor::from_slice(pos, b * t, &self.device)?;
        let table = |tab: &Tensor| -> Result<Tensor> {
            Ok(tab
                .index_select(&pos_t, 0)?
                .reshape((b, t, hd / 2))?
                .to_dtype(dt)?)
        };
        let (cos, sin) = (table(&self.cos)?, table(&self.sin)?);
        // Without a cache, f32 on the CPU runs the fused attention kernel
        // (masks built inside it); otherwise one additive bias per distinct
        // attention pattern of the layers.
        let fused = cache.is_none() && dt == DType::F32 && self.device.is_cpu();
        let fused_mask = ops::AttentionMask {
            key_mask: vis.key_mask.into(),
            pos: vis.q_pos.into(),
            window: None,
        };
        let mut biases: Vec<(Attention, Tensor)> = Vec::new();
        if !fused {
            biases.push((
                Attention::Full,
                vis.bias(Attention::Full, wide, &self.device)?,
            ));
            for layer in &self.layers {
                if let Attention::Sliding(w) = layer.attention {
                    if vis.window_matters(w) && !biases.iter().any(|(a, _)| *a == layer.attention) {
                        biases.push((
                            layer.attention,
                            vis.bias(layer.attention, wide, &self.device)?,
                        ));
                    }
                }
            }
        }
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(dt)?; // [N, H]
        if self.arch.embed_scale {
            // transformers multiplies by √hidden rounded to the compute
            // dtype; candle's affine rounds its factor the same way.
            x = (x * (h as f64).sqrt())?;
        }
        let scale = 1.0 / self.arch.query_scale.sqrt();
        let drop = self.next_dropout();
        for (li, layer) in self.layers.iter().enumerate() {
            let hn = self.norm(&x, &layer.input_norm)?;
            // [B, T, n, hd], time-major as the projection leaves it.
            let heads = |lin: &Linear, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
                let y = lin.forward(&hn, drop)?.reshape((b, t, n, hd))?;
                Ok(match norm {
                    Some(w) => self.norm(&y, w)?,
                    None => y,
                })
            };
            let q = heads(&layer.q, nh, &layer.q_norm)?;
            let k = heads(&layer.k, nkv, &layer.k_norm)?;
            let v = heads(&layer.v, nkv, &None)?;
            let att = if fused {
                let mask = ops::AttentionMask {
                    window: match layer.attention {
                        Attention::Sliding(w) => Some(w),
                        Attention::Full => None,
                    },
                    ..fused_mask.clone()
                };
                let q = ops::rope_time_major(&q, &cos, &sin)?;
                let k = ops::rope_time_major(&k, &cos, &sin)?;
                ops::attention(&q, &k, &v, &mask, scale, self.arch.attn_softcap)?
                    .reshape((b * t, nh * hd))?
            } else {
                let q = ops::rope(&q.transpose(1, 2)?.contiguous()?, &cos, &sin)?;
                let k = ops::rope(&k.transpose(1, 2)?.contiguous()?, &cos, &sin)?;
                let v = v.transpose(1, 2)?.contiguous()?;
                let (k, v) = match cache.as_deref_mut() {
                    Some(c) => c.layers[li].append(&k, &v)?,
                    None => (k, v),
                };
                let k = candle_transformers::utils::repeat_kv(k, nh / nkv)?;
                let v = candle_transformers::utils::repeat_kv(v, nh / nkv)?;
                let mut scores = (ops::matmul(&q, &k.t()?)?.to_dtype(wide)? * scale)?;
                if let Some(cap) = self.arch.attn_softcap {
                    scores = ((scores / cap)?.tanh()? * cap)?;
                }
                let bias = biases
                    .iter()
                    .find(|(a, _)| *a == layer.attention)
                    .unwrap_or(&biases[0]);
                let probs = ops::softmax_last_dim(&scores.broadcast_add(&bias.1)?)?.to_dtype(dt)?;
                ops::matmul(&probs, &v.contiguous()?)?
                    .transpose(1, 2)?
                    .reshape((b * t, nh * hd))?
            };
            let mut att = layer.o.forward(&att, drop)?;
            if let Some(w) = &layer.post_attn_norm {
                att = self.norm(&att, w)?;
            }
            x = (x + att)?;
            let hn = self.norm(&x, &layer.pre_mlp_norm)?;
            let (gate, up) = (layer.gate.forward(&hn, drop)?, layer.up.forward(&hn, drop)?);
            let mlp = match self.arch.activation {
                Activation::Silu => ops::silu_mul(&gate, &up)?,
                _ => (self.activation(&gate)? * up)?,
            };
            let mut mlp = layer.down.forward(&mlp, drop)?;
            if let Some(w) = &layer.post_mlp_norm {
                mlp = self.norm(&mlp, w)?;
            }
            x = (x + mlp)?;
        }
        let x = self.norm(&x, &self.norm)?;
        Ok(x.reshape((b, t, h))?)
    }

    /// The LM head's weight [V, H] (the embedding when tied).
    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// Logits [N, V] for hidden states [N, H], in at least f32, with Gemma
    /// 2's final soft-capping.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.lm_head.to_dtype(hidden.dtype())?;
        let logits = if self.frozen {
            lora::frozen::linear(hidden, &head)?
        } else {
            ops::linear(hidden, &head)?
        };
        let logits = ops::widen(&logits)?;
        Ok(match self.arch.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// A scalar head (value head, reward score) over hidden states [N, H]:
    /// [N], in at least f32.
    pub fn head(&self, hidden: &Tensor, w: &Tensor) -> Result<Tensor> {
        let hs = ops::widen(hidden)?;
        Ok(hs.matmul(&w.to_dtype(hs.dtype())?.t()?)?.squeeze(1)?)
    }
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
