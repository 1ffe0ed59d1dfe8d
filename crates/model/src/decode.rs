//! The decode loop of `generate` for f32 models on the CPU: one token per
//! row per step through preallocated buffers and an in-place KV cache,
//! straight on the weights' storage, with no tensors built, no allocation
//! and no op dispatch per token.
//!
//! It computes what the candle decode path computes, operation for
//! operation and rounding for rounding: the products are the same GEMM
//! kernel calls with the same shapes and strides (each output element's
//! sum is formed in the same order whatever the threading), the norms,
//! RoPE and SiLU share their row functions with the fused ops, the masked
//! softmax adds the same bias. So the same seed gives the same tokens and
//! the same log-probabilities bit for bit as the reference loop
//! (`generate::generate_reference`), which the tests check. The prompt
//! itself is prefilled by the candle path (one batched pass).

use std::sync::Mutex;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Layout, Storage, StorageRef, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::config::{Activation, Attention};
use crate::generate::{row_rng, sample_with, Generated, SampleScratch, SamplingConfig};
use crate::kernels::packed::Packed;
use crate::kernels::{gemm, gemm_raw, Par, SendPtr, View};
use crate::llama::{positions_from_mask, Llama, MASKED};
use crate::ops::{rms_norm_row, rotate, silu};
use crate::padding::{pad, Side};

/// Whether `generate` can take this path: f32 compute on the CPU with every
/// weight stored in f32.
pub fn supported(model: &Llama) -> bool {
    let f32_cpu = |t: &Tensor| t.dtype() == DType::F32 && t.device().is_cpu();
    model.dtype == DType::F32
        && model.device.is_cpu()
        && weight_tensors(model).into_iter().all(f32_cpu)
        && f32_cpu(&model.cos)
}

/// Every large weight the decode step reads, in a fixed order.
fn weight_tensors(model: &Llama) -> Vec<&Tensor> {
    // A tied head is the embedding itself: one guard, one slice.
    let mut out = vec![&model.embed];
    if !model.arch.tied {
        out.push(&model.lm_head);
    }
    for l in &model.layers {
        for lin in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
            out.push(&lin.w);
            out.extend(lin.b.as_ref());
            if let Some(lora) = &lin.lora {
                out.extend([&lora.a, &lora.b]);
            }
        }
    }
    out
}

fn cpu_slice<'a>(s: &'a StorageRef<'_>, l: &Layout) -> Result<&'a [f32]> {
    let Storage::Cpu(c) = &**s else {
        bail!("decode: weight is not on the CPU")
    };
    let data = c.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("decode: weight is not contiguous"),
    }
}

struct Lin<'a> {
    w: &'a [f32],
    /// w packed for batched steps (two rows or more).
    packed: Option<Packed>,
    b: Option<&'a [f32]>,
    out: usize,
    inp: usize,
    lora: Option<LoraLin<'a>>,
}

/// A projection's LoRA update: A [r, inp], B [out, r], the scale, and
/// scratch for x·Aᵀ and its product with Bᵀ (one generation's rows).
struct LoraLin<'a> {
    a: &'a [f32],
    b: &'a [f32],
    r: usize,
    scale: f32,
    scratch: Mutex<(Vec<f32>, Vec<f32>)>,
}

impl Lin<'_> {
    fn packed(mut self) -> Self {
        self.packed = Some(Packed::new(self.w, self.out, self.inp));
        self
    }

    /// y [rows, out] = x [rows, inp] · wᵀ (+ b): the products `ops::linear`
    /// makes (the packed kernel where it reproduces them), then
    /// `broadcast_add` of the bias.
    fn apply(&self, rows: usize, x: &[f32], y: &mut [f32]) {
        let y = &mut y[..rows * self.out];
        let x = &x[..rows * self.inp];
        let done = self.packed.as_ref().is_some_and(|p| p.apply(rows, x, y));
        if !done {
            gemm(
                rows,
                self.out,
                self.inp,
                y,
                View::rows(0, self.out),
                false,
                x,
                View::rows(0, self.inp),
                self.w,
                View::cols(0, self.inp),
                Par::Pool,
            );
        }
        if let Some(b) = self.b {
            for row in y.chunks_mut(self.out) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        if let Some(l) = &self.lora {
            // `Linear::forward`'s update: t = x·Aᵀ, u = t·Bᵀ (the same
            // products `ops::linear` makes), then y + (u·s + 0), as candle's
            // affine and add round it.
            let mut guard = l.scratch.lock().expect("lora scratch");
            let (t, u) = &mut *guard;
            let (t, u) = (&mut t[..rows * l.r], &mut u[..rows * self.out]);
            gemm(
                rows,
                l.r,
                self.inp,
                t,
                View::rows(0, l.r),
                false,
                x,
                View::rows(0, self.inp),
                l.a,
                View::cols(0, self.inp),
                Par::Pool,
            );
            gemm(
                rows,
                self.out,
                l.r,
                u,
                View::rows(0, self.out),
                false,
                t,
                View::rows(0, l.r),
                l.b,
                View::cols(0, l.r),
                Par::Pool,
            );
            y.iter_mut()
                .zip(u.iter())
                .for_each(|(y, &u)| *y += u * l.scale + 0.0);
        }
    }
}

struct Layer<'a> {
    input_norm: Vec<f32>,
    q: Lin<'a>,
    k: Lin<'a>,
    v: Lin<'a>,
    o: Lin<'a>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    pre_mlp_norm: Vec<f32>,
    post_mlp_norm: Option<Vec<f32>>,
    gate: Lin<'a>,
    up: Lin<'a>,
    down: Lin<'a>,
    window: Option<usize>,
}

/// Scratch for one step of `b` rows, allocated once per generation.
struct Buffers {
    x: Vec<f32>,
    hn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    /// One head (RoPE) or one row (in-place norms).
    tmp: Vec<f32>,
}

/// The per-layer cache: keys and values [B, nkv, capacity, hd] after
/// RoPE, and per key its real-token flag and position.
struct Kv {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    mask: Vec<u8>,
    pos: Vec<u32>,
    /// Real keys per row so far (the next real key's position).
    real: Vec<u32>,
    len: usize,
    cap: usize,
}

struct Decoder<'a> {
    model: &'a Llama,
    embed: &'a [f32],
    lm_head: Lin<'a>,
    final_norm: Vec<f32>,
    cos: &'a [f32],
    sin: &'a [f32],
    layers: Vec<Layer<'a>>,
    b: usize,
    eps: f32,
}

/// `generate` on this path: the same padding, prefill, sampling and stopping
/// as the reference loop, with the decode steps here.
pub(crate) fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
) -> Result<Generated> {
    let b = prompts.len();
    let dev = Device::Cpu;
    let p = pad(prompts, cfg.pad, Side::Left, &dev)?;
    let cap = p.t + cfg.max_new_tokens;
    let mut cache = model.new_cache(cap);
    let pos = positions_from_mask(&p.mask, b, p.t);
    let hidden = model.forward_cached(&p.ids, &pos, &p.mask, &mut cache)?;
    let last = hidden.narrow(1, p.t - 1, 1)?.squeeze(1)?;
    let first_logits: Vec<f32> = model
        .logits(&last)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;

    // Weights are read in place; the guards keep them from changing.
    let tensors = weight_tensors(model);
    let cos_sin = [&model.cos, &model.sin];
    let guards: Vec<_> = tensors
        .iter()
        .chain(cos_sin.iter())
        .map(|t| t.storage_and_layout())
        .collect();
    let slices: Vec<&[f32]> = guards
        .iter()
        .map(|(s, l)| cpu_slice(s, l))
        .collect::<Result<_>>()?;
    let dec = Decoder::new(model, &slices, b)?;
    let mut kv = dec.kv_from_prefill(&cache, &p.mask, p.t, cap)?;
    let mut buf = dec.buffers(cap);
    let vocab = model.cfg.vocab_size;

    let mut next_pos: Vec<u32> = prompts.iter().map(|s| s.len() as u32).collect();
    let mut rngs: Vec<ChaCha8Rng> = (0..b)
        .map(|r| ChaCha8Rng::seed_from_u64(row_rng(cfg.seed, r)))
        .collect();
    let mut out = Generated {
        tokens: vec![Vec::new(); b],
        logprobs: vec![Vec::new(); b],
        finished: vec![false; b],
    };
    buf.logits.copy_from_slice(&first_logits);
    let mut next = vec![cfg.pad; b];
    let mut scratch: Vec<SampleScratch> = (0..b).map(|_| SampleScratch::default()).collect();
    let mut picks: Vec<Option<(u32, f32)>> = vec![None; b];
    let mut flags = vec![0u8; b];
    for step in 0..cfg.max_new_tokens {
        next.fill(cfg.pad);
        // Rows draw from their own RNGs, so drawing them in parallel
        // changes nothing.
        let finished = &out.finished;
        picks
            .par_iter_mut()
            .zip(rngs.par_iter_mut().zip(scratch.par_iter_mut()))
            .zip(buf.logits.par_chunks(vocab))
            .enumerate()
            .for_each(|(r, ((pick, (rng, s)), row))| {
                *pick = (!finished[r]).then(|| sample_with(row, cfg, rng, s));
            });
        for (r, pick) in picks.iter().enumerate() {
            let Some((tok, lp)) = *pick else { continue };
            out.tokens[r].push(tok);
            out.logprobs[r].push(lp);
            next[r] = tok;
            if cfg.eos.contains(&tok) {
                out.finished[r] = true;
            }
        }
        if out.finished.iter().all(|&f| f) || step + 1 == cfg.max_new_tokens {
            break;
        }
        // Finished rows keep stepping with a masked pad token so the batch
        // stays rectangular; their outputs are ignored.
        for (r, f) in flags.iter_mut().enumerate() {
            *f = u8::from(!out.finished[r] || next[r] != cfg.pad);
        }
        kv.push_keys(&flags);
        dec.step(&next, &next_pos, &mut kv, &mut buf)?;
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(out)
}

impl<'a> Decoder<'a> {
    fn new(model: &'a Llama, slices: &[&'a [f32]], b: usize) -> Result<Self> {
        let cfg = &model.cfg;
        let arch = &model.arch;
        let (h, nh, nkv, hd, inter) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.kv_heads(),
            cfg.head_dim(),
            cfg.intermediate_size,
        );
        let mut it = slices.iter().copied();
        let mut next = || it.next().expect("one slice per weight tensor");
        let embed = next();
        let lm_head = Lin {
            w: if arch.tied { embed } else { next() },
            packed: None,
            b: None,
            out: cfg.vocab_size,
            inp: h,
            lora: None,
        };
        let lm_head = if b > 1 { lm_head.packed() } else { lm_head };
        // Norm weights as `Llama::norm` prepares them: Gemma stores w − 1
        // and scales by w + 1 (candle's affine: w·1 + 1).
        let norm = |t: &Tensor| -> Result<Vec<f32>> {
            let w: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Ok(if arch.norm_one_plus {
                w.iter().map(|w| w * 1.0 + 1.0).collect()
            } else {
                w
            })
        };
        let opt_norm = |t: &Option<Tensor>| t.as_ref().map(norm).transpose();
        let mut layers = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            let mut lin = |src: &crate::llama::Linear, out: usize, inp: usize| {
                let w = next();
                let bias = if src.b.is_some() { Some(next()) } else { None };
                let lora = src.lora.as_ref().map(|lora| {
                    let r = lora.a.dim(0).unwrap_or(0);
                    LoraLin {
                        a: next(),
                        b: next(),
                        r,
                        // candle's affine rounds its factor to f32 too.
                        scale: lora.scale as f32,
                        scratch: Mutex::new((vec![0.0; b * r], vec![0.0; b * out])),
                    }
                });
                let l = Lin {
                    w,
                    packed: None,
                    b: bias,
                    out,
                    inp,
                    lora,
                };
                if b > 1 {
                    l.packed()
                } else {
                    l
                }
            };
            let q = lin(&l.q, nh * hd, h);
            let k = lin(&l.k, nkv * hd, h);
            let v = lin(&l.v, nkv * hd, h);
            let o = lin(&l.o, h, nh * hd);
            let gate = lin(&l.gate, inter, h);
            let up = lin(&l.up, inter, h);
            let down = lin(&l.down, h, inter);
            layers.push(Layer {
                input_norm: norm(&l.input_norm)?,
                q,
                k,
                v,
                o,
                q_norm: opt_norm(&l.q_norm)?,
                k_norm: opt_norm(&l.k_norm)?,
                post_attn_norm: opt_norm(&l.post_attn_norm)?,
                pre_mlp_norm: norm(&l.pre_mlp_norm)?,
                post_mlp_norm: opt_norm(&l.post_mlp_norm)?,
                gate,
                up,
                down,
                window: match l.attention {
                    Attention::Sliding(w) => Some(w),
                    Attention::Full => None,
                },
            });
        }
        let (cos, sin) = (next(), next());
        for lin in layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
        {
            if lin.w.len() != lin.out * lin.inp || lin.b.is_some_and(|b| b.len() != lin.out) {
                bail!("decode: a weight does not match the config's sizes");
            }
            if let Some(l) = &lin.lora {
                if l.a.len() != l.r * lin.inp || l.b.len() != lin.out * l.r {
                    bail!("decode: a LoRA factor does not match the config's sizes");
                }
            }
        }
        Ok(Decoder {
            model,
            embed,
            lm_head,
            final_norm: norm(&model.norm)?,
            cos,
            sin,
            layers,
            b,
            eps: cfg.eps() as f32,
        })
    }

    fn dims(&self) -> (usize, usize, usize, usize) {
        let c = &self.model.cfg;
        (
            c.hidden_size,
            c.num_attention_heads,
            c.kv_heads(),
            c.head_dim(),
        )
    }

    fn buffers(&self, cap: usize) -> Buffers {
        let (h, nh, nkv, hd) = self.dims();
        let b = self.b;
        let inter = self.model.cfg.intermediate_size;
        Buffers {
            x: vec![0.0; b * h],
            hn: vec![0.0; b * h],
            q: vec![0.0; b * nh * hd],
            k: vec![0.0; b * nkv * hd],
            v: vec![0.0; b * nkv * hd],
            att: vec![0.0; b * nh * hd],
            o: vec![0.0; b * h],
            gate: vec![0.0; b * inter],
            up: vec![0.0; b * inter],
            scores: vec![0.0; b * nh * cap],
            logits: vec![0.0; b * self.model.cfg.vocab_size],
            tmp: vec![0.0; h.max(hd)],
        }
    }

    /// The caches of the prefill, copied into this path's layout.
    fn kv_from_prefill(
        &self,
        cache: &crate::llama::Cache,
        mask: &[u8],
        t: usize,
        cap: usize,
    ) -> Result<Kv> {
        let (_, _, nkv, hd) = self.dims();
        let b = self.b;
        let copy = |x: Option<Tensor>| -> Result<Vec<f32>> {
            let Some(x) = x else {
                bail!("decode: the prefill left no cache")
            };
            let x: Vec<f32> = x.flatten_all()?.to_vec1()?; // [B, nkv, t, hd]
            let mut out = vec![0f32; b * nkv * cap * hd];
            for (bg, chunk) in x.chunks(t * hd).enumerate() {
                out[bg * cap * hd..bg * cap * hd + t * hd].copy_from_slice(chunk);
            }
            Ok(out)
        };
        let mut k = Vec::with_capacity(cache.layers.len());
        let mut v = Vec::with_capacity(cache.layers.len());
        for c in &cache.layers {
            k.push(copy(c.k()?)?);
            v.push(copy(c.v()?)?);
        }
        let pos = positions_from_mask(mask, b, t);
        let mut kv = Kv {
            k,
            v,
            mask: vec![0; b * cap],
            pos: vec![0; b * cap],
            real: vec![0; b],
            len: t,
            cap,
        };
        for r in 0..b {
            kv.mask[r * cap..r * cap + t].copy_from_slice(&mask[r * t..(r + 1) * t]);
            kv.pos[r * cap..r * cap + t].copy_from_slice(&pos[r * t..(r + 1) * t]);
            kv.real[r] = mask[r * t..(r + 1) * t].iter().map(|&m| m as u32).sum();
        }
        Ok(kv)
    }

    /// One step: `tokens` (one per row) at positions `pos`, their keys
    /// already flagged by `push_keys`; leaves the logits [B, V] in `buf`.
    fn step(&self, tokens: &[u32], pos: &[u32], kv: &mut Kv, buf: &mut Buffers) -> Result<()> {
        let (h, nh, nkv, hd) = self.dims();
        let arch = &self.model.arch;
        let b = self.b;
        let half = hd / 2;
        let max_pos = self.model.cfg.max_position_embeddings;
        if let Some(&p) = pos.iter().max() {
            if p as usize >= max_pos {
                bail!("position {p} is beyond the model's {max_pos} positions");
            }
        }
        let vocab = self.model.cfg.vocab_size;
        for (r, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= vocab {
                bail!("token id {tok} out of vocabulary {vocab}");
            }
            buf.x[r * h..(r + 1) * h].copy_from_slice(&self.embed[tok * h..(tok + 1) * h]);
        }
        if arch.embed_scale {
            let s = (h as f64).sqrt() as f32;
            buf.x.iter_mut().for_each(|x| *x *= s);
        }
        let at = kv.len - 1; // the new keys' slot (flagged already)
        let total = kv.len;
        for (li, layer) in self.layers.iter().enumerate() {
            self.norm_rows(&buf.x, &layer.input_norm, &mut buf.hn);
            layer.q.apply(b, &buf.hn, &mut buf.q);
            layer.k.apply(b, &buf.hn, &mut buf.k);
            layer.v.apply(b, &buf.hn, &mut buf.v);
            // Qwen3's per-head norms of q and k.
            if let Some(w) = &layer.q_norm {
                self.norm_in_place(&mut buf.q, w, &mut buf.tmp);
            }
            if let Some(w) = &layer.k_norm {
                self.norm_in_place(&mut buf.k, w, &mut buf.tmp);
            }
            // RoPE at each row's position, then the keys and values into
            // the cache.
            for (r, &p) in pos.iter().enumerate() {
                let p = p as usize;
                let (cs, sn) = (
                    &self.cos[p * half..(p + 1) * half],
                    &self.sin[p * half..(p + 1) * half],
                );
                for x in [
                    &mut buf.q[r * nh * hd..(r + 1) * nh * hd],
                    &mut buf.k[r * nkv * hd..(r + 1) * nkv * hd],
                ] {
                    for head in x.chunks_mut(hd) {
                        let tmp = &mut buf.tmp[..hd];
                        rotate(head, tmp, cs, sn, 1.0);
                        head.copy_from_slice(tmp);
                    }
                }
                for g in 0..nkv {
                    let dst = ((r * nkv + g) * kv.cap + at) * hd;
                    kv.k[li][dst..dst + hd]
                        .copy_from_slice(&buf.k[(r * nkv + g) * hd..(r * nkv + g + 1) * hd]);
                    kv.v[li][dst..dst + hd]
                        .copy_from_slice(&buf.v[(r * nkv + g) * hd..(r * nkv + g + 1) * hd]);
                }
            }
            self.attend(layer, li, pos, total, kv, buf);
            layer.o.apply(b, &buf.att, &mut buf.o);
            if let Some(w) = &layer.post_attn_norm {
                self.norm_in_place(&mut buf.o, w, &mut buf.tmp);
            }
            buf.x.iter_mut().zip(&buf.o).for_each(|(x, o)| *x += o);
            self.norm_rows(&buf.x, &layer.pre_mlp_norm, &mut buf.hn);
            layer.gate.apply(b, &buf.hn, &mut buf.gate);
            layer.up.apply(b, &buf.hn, &mut buf.up);
            let act: fn(f32) -> f32 = match arch.activation {
                Activation::Silu => silu,
                Activation::GeluTanh => gelu_tanh,
                Activation::Gelu => gelu_erf,
            };
            buf.gate
                .iter_mut()
                .zip(&buf.up)
                .for_each(|(g, u)| *g = act(*g) * u);
            layer.down.apply(b, &buf.gate, &mut buf.o);
            if let Some(w) = &layer.post_mlp_norm {
                self.norm_in_place(&mut buf.o, w, &mut buf.tmp);
            }
            buf.x.iter_mut().zip(&buf.o).for_each(|(x, o)| *x += o);
        }
        self.norm_rows(&buf.x, &self.final_norm, &mut buf.hn);
        self.lm_head.apply(b, &buf.hn, &mut buf.logits);
        if let Some(cap) = arch.final_softcap {
            let (inv, c) = ((1.0 / cap) as f32, cap as f32);
            buf.logits
                .iter_mut()
                .for_each(|l| *l = (*l * inv).tanh() * c);
        }
        Ok(())
    }

    /// Attention of each row's new query over its cached keys 0..total:
    /// per (row, head), scores by the GEMM call candle's batched matmul
    /// makes, × scale, soft cap, the additive mask, softmax, then · v.
    fn attend(
        &self,
        layer: &Layer,
        li: usize,
        pos: &[u32],
        total: usize,
        kv: &Kv,
        buf: &mut Buffers,
    ) {
        let (_, nh, nkv, hd) = self.dims();
        let arch = &self.model.arch;
        let scale = (1.0 / arch.query_scale.sqrt()) as f32;
        let cap = arch.attn_softcap.map(|c| ((1.0 / c) as f32, c as f32));
        let rep = nh / nkv;
        let (q, kc, vc) = (&buf.q, &kv.k[li], &kv.v[li]);
        let att = SendPtr::new(&mut buf.att);
        buf.scores
            .par_chunks_mut(kv.cap)
            .take(self.b * nh)
            .enumerate()
            .for_each(|(bh, s)| {
                let (r, hh) = (bh / nh, bh % nh);
                let g = hh / rep;
                let s = &mut s[..total];
                let base = (r * nkv + g) * kv.cap * hd;
                gemm(
                    1,
                    total,
                    hd,
                    s,
                    View::rows(0, total),
                    false,
                    q,
                    View::rows(bh * hd, hd),
                    kc,
                    View::cols(base, hd),
                    Par::Serial,
                );
                let qp = pos[r] as i64;
                for (j, x) in s.iter_mut().enumerate() {
                    let mut v = *x * scale;
                    if let Some((inv, c)) = cap {
                        v = (v * inv).tanh() * c;
                    }
                    let key = r * kv.cap + j;
                    let masked = kv.mask[key] == 0
                        || layer
                            .window
                            .is_some_and(|w| qp - kv.pos[key] as i64 >= w as i64);
                    *x = v + if masked { MASKED } else { 0.0 };
                }
                let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for x in s.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                s.iter_mut().for_each(|x| *x *= inv);
                // SAFETY: task (row, head) writes only that head's slot.
                unsafe {
                    gemm_raw(
                        1,
                        hd,
                        total,
                        att,
                        View::rows(bh * hd, hd),
                        false,
                        s,
                        View::rows(0, total),
                        vc,
                        View::rows(base, hd),
                        Par::Serial,
                    )
                };
            });
    }

    fn norm_rows(&self, x: &[f32], w: &[f32], out: &mut [f32]) {
        let n = w.len();
        for (xr, or) in x.chunks(n).zip(out.chunks_mut(n)) {
            rms_norm_row(xr, w, self.eps, or);
        }
    }

    /// RMSNorm of each `w.len()` run of `x` (rows, or heads), in place.
    fn norm_in_place(&self, x: &mut [f32], w: &[f32], tmp: &mut [f32]) {
        let n = w.len();
        let tmp = &mut tmp[..n];
        for xr in x.chunks_mut(n) {
            rms_norm_row(xr, w, self.eps, tmp);
            xr.copy_from_slice(tmp);
        }
    }
}

/// candle's `gelu` (tanh approximation) on f32, the same expression.
fn gelu_tanh(v: f32) -> f32 {
    const SQRT_TWO_OVER_PI_F32: f32 = 0.797_884_6;
    0.5 * v * (1.0 + f32::tanh(SQRT_TWO_OVER_PI_F32 * v * (1.0 + 0.044715 * v * v)))
}

/// candle's `gelu_erf` on f32, the same expression and erf.
fn gelu_erf(v: f32) -> f32 {
    (candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * v
}

impl Kv {
    /// Opens the next cache slot, flagging each row's new key as real or
    /// padding (a finished row's pad token).
    fn push_keys(&mut self, flags: &[u8]) {
        let at = self.len;
        for (r, &f) in flags.iter().enumerate() {
            self.mask[r * self.cap + at] = f;
            self.pos[r * self.cap + at] = if f != 0 { self.real[r] } else { 0 };
            self.real[r] += f as u32;
        }
        self.len += 1;
    }
}
