//! The one generation path of the stages that sample (rollout, eval):
//! encode the prompts within the prompt budget, check that prompt and
//! response fit the model, choose the stop tokens, and sample in batches of
//! prompts of similar length, each batch with its own seed.

use std::path::Path;

use anyhow::{bail, Context, Result};
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::{Checkpoint, Tokenizer};

use crate::progress::Progress;

/// How a stage samples: the generation flags rollout and eval share.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    pub max_prompt_tokens: usize,
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    /// 0: no top-k filter.
    pub top_k: usize,
    /// 1: no nucleus filter.
    pub top_p: f64,
    /// Prompts per generation batch.
    pub batch_size: usize,
}

/// Prompts encoded for sampling.
pub struct Encoded {
    pub ids: Vec<Vec<u32>>,
    /// How many were cut to `max_prompt_tokens` (their end is kept).
    pub truncated: usize,
}

/// Encodes `prompts` within `max_prompt_tokens`. A prompt that encodes to
/// no tokens is an error naming it: `name(i)` says which (file and row).
pub fn encode_prompts<'a>(
    tok: &Tokenizer,
    prompts: impl IntoIterator<Item = &'a str>,
    max_prompt_tokens: usize,
    name: impl Fn(usize) -> String,
) -> Result<Encoded> {
    let mut out = Encoded {
        ids: Vec::new(),
        truncated: 0,
    };
    for (i, prompt) in prompts.into_iter().enumerate() {
        let enc = tok.encode_prompt(prompt, max_prompt_tokens)?;
        if enc.ids.is_empty() {
            bail!("{}: encodes to no tokens", name(i));
        }
        out.truncated += usize::from(enc.truncated);
        out.ids.push(enc.ids);
    }
    Ok(out)
}

/// Sampled responses, in the order of the prompts.
pub struct Samples {
    /// The generated ids, the stop token included when a response finished.
    pub tokens: Vec<Vec<u32>>,
    /// Ended with a stop token (false: cut at `max_new_tokens`).
    pub finished: Vec<bool>,
}

impl Samples {
    /// Every response as text: the stop token ends the text, it is not
    /// part of it.
    pub fn texts(&self, tok: &Tokenizer) -> Result<Vec<String>> {
        self.tokens
            .iter()
            .zip(&self.finished)
            .map(|(t, &f)| tok.decode(if f { &t[..t.len() - 1] } else { &t[..] }))
            .collect()
    }

    pub fn generated_tokens(&self) -> usize {
        self.tokens.iter().map(Vec::len).sum()
    }
}

/// Samples a response to every prompt with the model in `dir`. Prompts of
/// similar length share a batch, so left padding stays small; the batches
/// depend on the prompts' lengths alone, and batch k samples with seed
/// `seed_of_batch(k)`, so every model with the same tokenizer gets the same
/// batches and seeds. The progress bar is labelled `what`.
pub fn sample(
    ck: &Checkpoint,
    dir: &Path,
    prompt_ids: &[Vec<u32>],
    s: &Sampling,
    seed_of_batch: impl Fn(u64) -> u64,
    progress: &dyn Progress,
    what: &str,
) -> Result<Samples> {
    let max_pos = ck.model.config.max_position_embeddings;
    let longest = prompt_ids.iter().map(Vec::len).max().unwrap_or(0);
    if longest + s.max_new_tokens > max_pos {
        bail!(
            "{}: a prompt of {longest} tokens plus --max-new-tokens {} exceeds the model's {max_pos} positions; lower --max-prompt-tokens or --max-new-tokens",
            dir.display(),
            s.max_new_tokens
        );
    }
    // The checkpoint's own stop tokens (Hugging Face `eos_token_id`, one or
    // several), else the tokenizer's EOS.
    let mut eos = ck.model.config.eos_ids();
    if eos.is_empty() {
        eos.push(ck.tokenizer.eos);
    }
    let mut order: Vec<usize> = (0..prompt_ids.len()).collect();
    order.sort_by_key(|&r| prompt_ids[r].len());
    let mut out = Samples {
        tokens: vec![Vec::new(); prompt_ids.len()],
        finished: vec![false; prompt_ids.len()],
    };
    let bar = progress.bar(prompt_ids.len() as u64, what);
    for (k, rows) in order.chunks(s.batch_size).enumerate() {
        let batch: Vec<Vec<u32>> = rows.iter().map(|&r| prompt_ids[r].clone()).collect();
        let sampling = SamplingConfig {
            max_new_tokens: s.max_new_tokens,
            temperature: s.temperature,
            top_k: (s.top_k > 0).then_some(s.top_k),
            top_p: (s.top_p < 1.0).then_some(s.top_p),
            seed: seed_of_batch(k as u64),
            eos: eos.clone(),
            pad: ck.tokenizer.pad,
        };
        let generated = generate(&ck.model.llama, &batch, &sampling)
            .with_context(|| format!("{}: generation", dir.display()))?;
        for (j, &r) in rows.iter().enumerate() {
            out.tokens[r] = generated.tokens[j].clone();
            out.finished[r] = generated.finished[j];
        }
        bar.inc(rows.len() as u64);
    }
    bar.finish();
    Ok(out)
}
