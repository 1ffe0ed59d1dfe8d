//! A checkpoint as a [`ChatBackend`]: chat messages are rendered into the
//! task's prompt format (the format the policy was trained on), then
//! sampled with the request's temperature, top-p, token budget and seed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Result};
use candle_core::Device;
use marlhf_eval::prompt::{render_prompt, PromptFormat};
use marlhf_eval::protocol::{ChatCompletion, ChatRequest, FinishReason};
use marlhf_eval::server::ChatBackend;
use marlhf_model::generate::{generate, SamplingConfig};
use marlhf_model::Checkpoint;

use marlhf_data::seed::mix_seed;

pub struct ModelBackend {
    ck: Checkpoint,
    format: PromptFormat,
    max_prompt_tokens: usize,
    /// Tokens generated when a request gives no `max_tokens`, and the most
    /// any request may ask for.
    max_new_tokens: usize,
    /// Requests without a seed draw from (seed, request number), so a
    /// server restarted with the same seed answers the same way.
    seed: u64,
    requests: AtomicU64,
}

impl ModelBackend {
    pub fn load(
        dir: &Path,
        task: &str,
        device: &Device,
        dtype: candle_core::DType,
        max_prompt_tokens: usize,
        max_new_tokens: usize,
        seed: u64,
    ) -> Result<Self> {
        let format = PromptFormat::for_task(task)?;
        if max_new_tokens == 0 || max_prompt_tokens == 0 {
            bail!("--max-new-tokens and --max-prompt-tokens must be positive");
        }
        let ck =
            Checkpoint::load_with(dir, device, dtype, marlhf_model::checkpoint::Use::Inference)?;
        let max_pos = ck.model.config.max_position_embeddings;
        if max_pos < 2 {
            bail!("{}: the model has only {max_pos} positions", dir.display());
        }
        Ok(Self {
            ck,
            format,
            // At least one position is left for the answer.
            max_prompt_tokens: max_prompt_tokens.min(max_pos - 1),
            max_new_tokens,
            seed,
            requests: AtomicU64::new(0),
        })
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ck
    }
}

impl ChatBackend for ModelBackend {
    fn check(&self, req: &ChatRequest) -> Result<()> {
        render_prompt(self.format, &req.messages).map(drop)
    }

    fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let text = render_prompt(self.format, &req.messages)?;
        let tok = &self.ck.tokenizer;
        let max_pos = self.ck.model.config.max_position_embeddings;
        let wanted = req
            .max_tokens
            .map_or(self.max_new_tokens, |m| m as usize)
            .min(self.max_new_tokens);
        // A long conversation gives up its beginning, not the answer's room.
        let prompt_room = self
            .max_prompt_tokens
            .min(max_pos.saturating_sub(wanted))
            .max(1);
        let prompt = tok.encode_prompt(&text, prompt_room)?.ids;
        if prompt.is_empty() {
            bail!("the prompt encodes to no tokens");
        }
        let budget = wanted.min(max_pos - prompt.len());
        let mut eos = self.ck.model.config.eos_ids();
        if eos.is_empty() {
            eos.push(tok.eos);
        }
        let cfg = SamplingConfig {
            max_new_tokens: budget,
            // OpenAI's default temperature is 1.
            temperature: req.temperature.map_or(1.0, f64::from),
            top_k: None,
            top_p: req.top_p.map(f64::from).filter(|&p| p < 1.0),
            seed: req.seed.unwrap_or_else(|| mix_seed(self.seed, &[n])),
            eos,
            pad: tok.pad,
        };
        let out = generate(&self.ck.model.llama, std::slice::from_ref(&prompt), &cfg)?;
        let tokens = &out.tokens[0];
        let finished = out.finished[0];
        let body = if finished {
            &tokens[..tokens.len() - 1]
        } else {
            &tokens[..]
        };
        Ok(ChatCompletion {
            content: tok.decode(body)?,
            finish_reason: if finished {
                FinishReason::Stop
            } else {
                FinishReason::Length
            },
            prompt_tokens: prompt.len() as u32,
            completion_tokens: tokens.len() as u32,
        })
    }
}
