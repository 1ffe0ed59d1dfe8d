//! Batched sampling with a KV cache: temperature, top-k, top-p, per-row EOS,
//! a token budget and a seed. Returns each new token's log-probability
//! under the temperature-scaled distribution it was drawn from,
//! log-softmax(logits / T) (T = 1 for greedy decoding), which is what the
//! teacher-forced passes of PPO compute too (DESIGN.md, "One sampling
//! distribution"). Top-k and top-p truncate the sampling distribution but do
//! not enter the log-probability: a truncated reference distribution would
//! give −∞ wherever the policy's top-k and the reference's differ.

use anyhow::{bail, Result};
use candle_core::{Tensor, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::llama::{positions_from_mask, Llama};
use crate::padding::{pad, Side};

#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub seed: u64,
    pub eos: Vec<u32>,
    pub pad: u32,
}

impl SamplingConfig {
    pub fn greedy(max_new_tokens: usize, eos: Vec<u32>, pad: u32) -> Self {
        SamplingConfig {
            max_new_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            eos,
            pad,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Generated {
    /// New tokens per row, the EOS included when one was sampled.
    pub tokens: Vec<Vec<u32>>,
    /// log-softmax(logits / T) of each new token, T the sampling
    /// temperature (1 for greedy decoding).
    pub logprobs: Vec<Vec<f32>>,
    /// Whether the row ended with EOS (false: it hit the token budget).
    pub finished: Vec<bool>,
}

/// Samples continuations of `prompts` (each non-empty). Row r draws from its
/// own RNG seeded by (seed, r), so a row's sample does not depend on how
/// fast the other rows finish.
///
/// An f32 model on the CPU decodes through `crate::decode` (preallocated
/// buffers, the cache updated in place, no per-token tensors); any other
/// model through [`generate_reference`]. Both give the same tokens and
/// log-probabilities bit for bit.
pub fn generate(model: &Llama, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Result<Generated> {
    if let Some(done) = check(model, prompts, cfg)? {
        return Ok(done);
    }
    if crate::decode::supported(model) {
        crate::decode::generate(model, prompts, cfg)
    } else {
        generate_reference(model, prompts, cfg)
    }
}

/// The checks both paths make; `Some` when there is nothing to generate.
fn check(model: &Llama, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Result<Option<Generated>> {
    if prompts.is_empty() {
        return Ok(Some(Generated::default()));
    }
    if prompts.iter().any(|p| p.is_empty()) {
        bail!("generate: every prompt needs at least one token");
    }
    let max_pos = model.config().max_position_embeddings;
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if longest + cfg.max_new_tokens > max_pos {
        bail!(
            "generate: prompt length {longest} + {} new tokens exceeds the model's {max_pos} positions",
            cfg.max_new_tokens
        );
    }
    Ok(None)
}

/// The seed of row r's sampling RNG.
pub(crate) fn row_rng(seed: u64, r: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ r as u64
}

/// [`generate`] through candle ops and the candle KV cache, a forward pass
/// per step: the path for bf16/f16 models and GPUs, and the reference the
/// CPU decode path is tested against.
pub fn generate_reference(
    model: &Llama,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
) -> Result<Generated> {
    if let Some(done) = check(model, prompts, cfg)? {
        return Ok(done);
    }
    let b = prompts.len();
    let dev = model.device();
    let p = pad(prompts, cfg.pad, Side::Left, dev)?;
    let mut key_mask = p.mask.clone();
    let mut cache = model.new_cache(p.t + cfg.max_new_tokens);
    let pos = positions_from_mask(&p.mask, b, p.t);
    let hidden = model.forward_cached(&p.ids, &pos, &key_mask, &mut cache)?;
    let mut last = hidden.narrow(1, p.t - 1, 1)?.squeeze(1)?;
    let mut next_pos: Vec<u32> = prompts.iter().map(|s| s.len() as u32).collect();
    let mut rngs: Vec<ChaCha8Rng> = (0..b)
        .map(|r| ChaCha8Rng::seed_from_u64(row_rng(cfg.seed, r)))
        .collect();
    let mut out = Generated {
        tokens: vec![Vec::new(); b],
        logprobs: vec![Vec::new(); b],
        finished: vec![false; b],
    };
    for step in 0..cfg.max_new_tokens {
        let logits = model.logits(&last)?.to_dtype(candle_core::DType::F32)?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut next = vec![cfg.pad; b];
        for r in 0..b {
            if out.finished[r] {
                continue;
            }
            let (tok, lp) = sample(&logits[r], cfg, &mut rngs[r]);
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
        let total = cache.len() + 1;
        let mut mask = Vec::with_capacity(b * total);
        for r in 0..b {
            mask.extend_from_slice(&key_mask[r * (total - 1)..(r + 1) * (total - 1)]);
            mask.push(u8::from(!out.finished[r] || next[r] != cfg.pad));
        }
        key_mask = mask;
        let ids = Tensor::from_vec(next, (b, 1), dev)?;
        let hidden = model.forward_cached(&ids, &next_pos, &key_mask, &mut cache)?;
        next_pos.iter_mut().for_each(|p| *p += 1);
        last = hidden.squeeze(1)?;
    }
    Ok(out)
}

/// Log-softmax of one row at `tok`.
fn logprob_of(logits: &[f32], tok: usize) -> f32 {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = m + logits.iter().map(|&v| (v - m).exp()).sum::<f32>().ln();
    logits[tok] - lse
}

/// The token drawn from one row of logits and its log-probability under
/// the temperature-scaled distribution (before top-k / top-p truncation).
pub(crate) fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut ChaCha8Rng) -> (u32, f32) {
    sample_with(logits, cfg, rng, &mut SampleScratch::default())
}

/// The buffers one row's draw works in, kept across steps by the decode
/// path so that sampling allocates nothing per token.
#[derive(Default)]
pub(crate) struct SampleScratch {
    scaled: Vec<f32>,
    cand: Vec<(usize, f32)>,
    probs: Vec<f32>,
}

/// [`sample`] in `s`'s buffers.
pub(crate) fn sample_with(
    logits: &[f32],
    cfg: &SamplingConfig,
    rng: &mut ChaCha8Rng,
    s: &mut SampleScratch,
) -> (u32, f32) {
    if cfg.temperature <= 0.0 {
        let tok = argmax(logits);
        return (tok as u32, logprob_of(logits, tok));
    }
    let t = cfg.temperature as f32;
    let SampleScratch {
        scaled,
        cand,
        probs,
    } = s;
    scaled.clear();
    scaled.extend(logits.iter().map(|&v| v / t));
    let tok = {
        cand.clear();
        cand.extend(scaled.iter().copied().enumerate());
        if let Some(k) = cfg.top_k.filter(|&k| k > 0 && k < cand.len()) {
            cand.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            cand.truncate(k);
        }
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let m = cand[0].1;
        probs.clear();
        probs.extend(cand.iter().map(|&(_, v)| (v - m).exp()));
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(top_p) = cfg.top_p.filter(|&p| p < 1.0) {
            // Keep the smallest prefix whose mass reaches top_p (at least one).
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= top_p as f32 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cand.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let u: f32 = rng.random();
        let mut acc = 0.0;
        let mut chosen = cand[cand.len() - 1].0;
        for (&(id, _), &p) in cand.iter().zip(probs.iter()) {
            acc += p;
            if u < acc {
                chosen = id;
                break;
            }
        }
        chosen
    };
    (tok as u32, logprob_of(scaled, tok))
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Greedy decoding by re-running the full forward pass each step, without
/// a cache: the slow reference the cached path is tested against.
pub fn greedy_uncached(model: &Llama, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ids = Tensor::from_slice(&seq, (1, seq.len()), model.device())?;
        let mask = vec![1u8; seq.len()];
        let h = model.forward_hidden(&ids, &mask)?;
        let last = h.narrow(1, seq.len() - 1, 1)?.squeeze(1)?;
        let tok = model.logits(&last)?.argmax(D::Minus1)?.to_vec1::<u32>()?[0];
        out.push(tok);
        seq.push(tok);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f64, top_k: Option<usize>) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: 1,
            temperature,
            top_k,
            top_p: None,
            seed: 0,
            eos: vec![],
            pad: 0,
        }
    }

    #[test]
    fn sampled_logprob_is_of_the_tempered_distribution() {
        // logits [2, 1, 0] at T = 0.5 → [4, 2, 0]; log-sum-exp
        // = ln(e⁴ + e² + 1) = 4.1429316; the log-probabilities are
        // −0.1429316, −2.1429316, −4.1429316.
        let logits = [2.0f32, 1.0, 0.0];
        let want = [-0.142_931_6f32, -2.142_931_6, -4.142_931_6];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = [false; 3];
        for _ in 0..400 {
            let (tok, lp) = sample(&logits, &cfg(0.5, None), &mut rng);
            assert!((lp - want[tok as usize]).abs() < 1e-5, "{tok}: {lp}");
            seen[tok as usize] = true;
        }
        assert_eq!(seen, [true; 3], "every token is drawn now and then");
        // Top-k truncates the draw, not the log-probability.
        for _ in 0..50 {
            let (tok, lp) = sample(&logits, &cfg(0.5, Some(2)), &mut rng);
            assert!(tok < 2);
            assert!((lp - want[tok as usize]).abs() < 1e-5);
        }
        // Greedy: the argmax at temperature 1, ln(e²/(e² + e + 1)) = −0.4076059.
        let (tok, lp) = sample(&logits, &cfg(0.0, None), &mut rng);
        assert_eq!(tok, 0);
        assert!((lp + 0.407_605_9).abs() < 1e-6, "{lp}");
    }
}
