//! `marlhf-bench --fingerprint`: hashes of the bytes a small training step
//! and a sampling run produce, so that two machines (or two settings, e.g.
//! `MARLHF_PORTABLE=1`) can be compared in seconds: the same lines mean the
//! same numbers. DESIGN.md, "Reproducibility across machines".
//!
//! The workloads are small enough to run under an emulated CPU (qemu-user)
//! in a minute or two, and shaped so that every route whose rounding could
//! depend on the machine is taken: products deeper than 512 in the
//! forward pass (the MLP's down projection, 520 wide), the backward pass
//! (the weight gradients over 558 tokens, and the LM head's input gradient
//! over a vocabulary of 1800, which the depth blocks seen so far (512, 672
//! and 1024) cut into 4, 3 and 2 blocks), the decode path's packed
//! products, and a cached prefill whose attention sums over 530 keys.

use anyhow::Result;
use candle_core::{Device, Tensor};
use marlhf_model::adamw::{AdamW, AdamWConfig};
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::lm::Scored;
use marlhf_model::{Model, ModelConfig, Params};

const VOCAB: usize = 1800;
const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const MLP: usize = 520;
const ROWS: usize = 4;
const LEN: usize = 150;

/// 64-bit FNV-1a over the bits of each value, in order.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn word(&mut self, w: u32) {
        for b in w.to_le_bytes() {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn floats(&mut self, xs: &[f32]) {
        xs.iter().for_each(|x| self.word(x.to_bits()));
    }
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// (name, hash) for each output of the workloads, in a fixed order.
pub fn fingerprint() -> Result<Vec<(&'static str, String)>> {
    let cfg = ModelConfig::tiny_llama(VOCAB, HIDDEN, LAYERS, HEADS, MLP);
    let params = Params::init(&cfg, 17, &Device::Cpu)?;
    params.add_value_head(&cfg, 17)?;
    let model = Model::new(cfg, params)?;
    let mut out = Vec::new();
    let mut put = |name: &'static str, h: Fnv| out.push((name, format!("{:016x}", h.0)));

    // One training step: token log-probabilities and values, a loss on
    // both, its gradients, and AdamW's update of every parameter.
    let batch = Scored {
        seqs: (0..ROWS)
            .map(|r| {
                (0..LEN - 7 * r)
                    .map(|i| ((r * 131 + i * 17) % (VOCAB - 3) + 3) as u32)
                    .collect()
            })
            .collect(),
        starts: (0..ROWS).map(|r| 1 + 3 * r).collect(),
    };
    let (lp, _) = model.token_logprobs(&batch)?;
    let (values, _) = model.token_values(&batch)?;
    let mut h = Fnv::new();
    h.floats(&flat(&lp)?);
    put("train: log-probabilities", h);
    let mut h = Fnv::new();
    h.floats(&flat(&values)?);
    put("train: values", h);
    let n = lp.elem_count() as f64;
    let loss = ((lp.sum_all()?.neg()? / n)? + (values.sqr()?.sum_all()? / n)?)?;
    let grads = loss.backward()?;
    let vars = model.params.vars();
    let mut h = Fnv::new();
    for (_, v) in &vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            h.floats(&flat(g)?);
        }
    }
    put("train: gradients", h);
    let mut opt = AdamW::new(AdamWConfig::default());
    opt.step(&vars, &grads, 1e-3, 1.0)?;
    let mut h = Fnv::new();
    for (_, v) in &vars {
        h.floats(&flat(v.as_tensor())?);
    }
    put("train: parameters after AdamW", h);

    // Sampling from the updated model: three short prompts and one of 530
    // tokens (the cached prefill attends over more than 512 keys).
    let mut prompts: Vec<Vec<u32>> = (0..3)
        .map(|r| (0..5 + r).map(|i| (7 + 13 * r + 5 * i) as u32).collect())
        .collect();
    prompts.push((0..530).map(|i| (3 + (i * 29) % 1790) as u32).collect());
    let sampled = generate(
        &model.llama,
        &prompts,
        &SamplingConfig {
            max_new_tokens: 12,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 5,
            eos: vec![],
            pad: 0,
        },
    )?;
    let mut h = Fnv::new();
    sampled.tokens.iter().flatten().for_each(|&t| h.word(t));
    put("sample: tokens", h);
    let mut h = Fnv::new();
    sampled.logprobs.iter().for_each(|l| h.floats(l));
    put("sample: log-probabilities", h);
    Ok(out)
}
