//! A loaded model — policy, reference, reward model or critic — and the
//! quantities the stages read off it: per-token log-probabilities of given
//! tokens, per-token values, and the scalar score at the last real token.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};

use crate::config::ModelConfig;
use crate::llama::{gather_rows, last_token_index, Llama};
use crate::lora::Adapter;
use crate::ops;
use crate::padding::{pad, Side};
use crate::params::{Params, V_HEAD};

pub struct Model {
    pub config: ModelConfig,
    /// The weights: all of them, or a LoRA adapter's frozen base.
    pub params: Params,
    /// A LoRA adapter on `params`, when the model carries one.
    pub adapter: Option<Adapter>,
    pub llama: Llama,
    /// The value head in use: the adapter's when it has one, else the
    /// base's.
    pub v_head: Option<Tensor>,
}

/// Prompt+response sequences and which of their tokens are scored: token j
/// of row r is scored when `targets` says so; it is predicted from the
/// hidden state at j − 1.
pub struct Scored {
    pub seqs: Vec<Vec<u32>>,
    /// For each row, the index of the first scored token (the response
    /// start); every token from there to the row's end is scored.
    pub starts: Vec<usize>,
}

impl Model {
    /// A model computing in the dtype its parameters are stored in.
    pub fn new(config: ModelConfig, params: Params) -> Result<Self> {
        let dtype = params.dtype()?;
        Model::with_dtype(config, params, dtype)
    }

    /// A model computing in `dtype` (its parameters may be kept wider).
    pub fn with_dtype(config: ModelConfig, params: Params, dtype: DType) -> Result<Self> {
        Model::with_adapter(config, params, dtype, None)
    }

    /// The base model of `params` adapted by `adapter` (frozen base,
    /// trainable adapter), or the plain model when `None`.
    pub fn with_adapter(
        config: ModelConfig,
        params: Params,
        dtype: DType,
        adapter: Option<Adapter>,
    ) -> Result<Self> {
        params.check_against(&config)?;
        let llama = Llama::build(&config, &params, dtype, adapter.as_ref())?;
        let mut m = Model {
            config,
            params,
            adapter,
            llama,
            v_head: None,
        };
        m.refresh_value_head()?;
        Ok(m)
    }

    /// Replaces the adapter (`None`: the base model alone), keeping the
    /// base weights: how one loaded base serves an actor and its
    /// reference, or a critic and the reward model it started from.
    pub fn set_adapter(&mut self, adapter: Option<Adapter>) -> Result<()> {
        self.llama = Llama::build(
            &self.config,
            &self.params,
            self.llama.dtype(),
            adapter.as_ref(),
        )?;
        self.adapter = adapter;
        self.refresh_value_head()
    }

    pub fn device(&self) -> &Device {
        self.llama.device()
    }

    /// Rebuilds the value-head handle after `Params::add_value_head` or
    /// `Adapter::set_value_head`: the adapter's head, else the base's.
    pub fn refresh_value_head(&mut self) -> Result<()> {
        self.v_head = match self.adapter.as_ref().and_then(Adapter::value_head) {
            Some(h) => Some(h),
            None if self.params.contains(V_HEAD) => {
                let h = self.params.get(V_HEAD)?;
                // A frozen base's head is not trained either.
                Some(if self.adapter.is_some() {
                    h.detach()
                } else {
                    h
                })
            }
            None => None,
        };
        Ok(())
    }

    /// Gives a reward model or critic a trainable value head if it has
    /// none: with an adapter, a copy of the base's head (or a fresh one)
    /// in the adapter; without, a fresh one among the weights.
    pub fn ensure_value_head(&mut self, seed: u64) -> Result<()> {
        match &self.adapter {
            Some(ad) if ad.value_head().is_none() => {
                if !self.params.contains(V_HEAD) {
                    self.params.add_value_head(&self.config, seed)?;
                }
                ad.set_value_head(&self.params.get(V_HEAD)?)?;
            }
            Some(_) => {}
            None if !self.params.contains(V_HEAD) => {
                self.params.add_value_head(&self.config, seed)?;
            }
            None => {}
        }
        self.refresh_value_head()
    }

    /// The parameters training updates: every weight, or with an adapter
    /// its factors and value head alone (the base gets neither gradients
    /// nor optimiser state).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        match &self.adapter {
            Some(ad) => ad.vars(),
            None => self.params.vars(),
        }
    }

    /// How many parameters training updates.
    pub fn num_trainable(&self) -> usize {
        self.trainable().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Turns LoRA dropout on (a key per training step) or off; a no-op
    /// without an adapter.
    pub fn set_dropout(&self, key: Option<u64>) {
        self.llama.set_dropout(key);
    }

    fn value_head(&self) -> Result<&Tensor> {
        match &self.v_head {
            Some(v) => Ok(v),
            None => bail!(
                "this checkpoint has no value head ({V_HEAD}); is it a reward model or critic?"
            ),
        }
    }

    /// Log-probabilities of the scored tokens under the model's own
    /// distribution (temperature 1), flattened row by row, as a
    /// differentiable tensor [M], plus each row's count.
    pub fn token_logprobs(&self, batch: &Scored) -> Result<(Tensor, Vec<usize>)> {
        self.token_logprobs_at(batch, 1.0)
    }

    /// Log-probabilities of the scored tokens under the distribution
    /// sampled at `temperature`: log-softmax(logits / T).
    pub fn token_logprobs_at(
        &self,
        batch: &Scored,
        temperature: f64,
    ) -> Result<(Tensor, Vec<usize>)> {
        // A frozen head off the fused path goes through the frozen
        // product, which computes no gradient for the head.
        let frozen_composite = self.llama.is_frozen() && !ops::fused_ok(self.llama.lm_head());
        if self.llama.arch().final_softcap.is_some() || frozen_composite {
            let s = self.token_logits(batch)?;
            let logits = ops::temper(&s.logits, temperature)?;
            return Ok((ops::gather_logprobs(&logits, &s.targets)?, s.counts));
        }
        // The head, the tempering and the gather as one op.
        let (hs, targets, counts) = self.scored_hidden(batch)?;
        let head = self.llama.lm_head().to_dtype(hs.dtype())?;
        let lp = ops::lm_head_logprobs(&hs, &head, &targets, temperature)?;
        Ok((lp, counts))
    }

    /// The hidden states [M, H] that predict the scored tokens, the tokens
    /// [M] and each row's count.
    fn scored_hidden(&self, batch: &Scored) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let p = pad(&batch.seqs, 0, Side::Right, self.device())?;
        let hidden = self.llama.forward_hidden(&p.ids, &p.mask)?;
        let (rows, targets, counts) = scored_positions(batch, p.t)?;
        let n = rows.len();
        let h = self.config.hidden_size;
        let rows = Tensor::from_vec(rows, n, self.device())?;
        let targets = Tensor::from_vec(targets, n, self.device())?;
        let hs = hidden.reshape((p.b * p.t, h))?.index_select(&rows, 0)?;
        Ok((hs, targets, counts))
    }

    /// The LM-head logits [M, V] that predict the scored tokens, with the
    /// tokens themselves. Only the scored positions go through the LM head,
    /// which is most of the FLOPs saved for short completions after long
    /// prompts.
    pub fn token_logits(&self, batch: &Scored) -> Result<ScoredLogits> {
        let (hs, targets, counts) = self.scored_hidden(batch)?;
        Ok(ScoredLogits {
            logits: self.llama.logits(&hs)?,
            targets,
            counts,
        })
    }

    /// Values of the scored tokens: the critic's estimate at the state
    /// *before* each token is emitted (the hidden state at j − 1), as in
    /// DeepSpeed-Chat, flattened like `token_logprobs`.
    pub fn token_values(&self, batch: &Scored) -> Result<(Tensor, Vec<usize>)> {
        let v_head = self.value_head()?;
        let p = pad(&batch.seqs, 0, Side::Right, self.device())?;
        let hidden = self.llama.forward_hidden(&p.ids, &p.mask)?;
        let (rows, _, counts) = scored_positions(batch, p.t)?;
        let n = rows.len();
        let h = self.config.hidden_size;
        let rows = Tensor::from_vec(rows, n, self.device())?;
        let hs = hidden.reshape((p.b * p.t, h))?.index_select(&rows, 0)?;
        Ok((self.llama.head(&hs, v_head)?, counts))
    }

    /// The reward model's scalar score of each whole sequence, read at its
    /// last real token. [B], differentiable.
    pub fn scores(&self, seqs: &[Vec<u32>]) -> Result<Tensor> {
        let v_head = self.value_head()?;
        if seqs.iter().any(|s| s.is_empty()) {
            bail!("cannot score an empty sequence");
        }
        let p = pad(seqs, 0, Side::Right, self.device())?;
        let hidden = self.llama.forward_hidden(&p.ids, &p.mask)?;
        let last = last_token_index(&p.mask, p.b, p.t);
        let hs = gather_rows(&hidden, &last)?;
        self.llama.head(&hs, v_head)
    }
}

/// What [`Model::token_logits`] returns.
pub struct ScoredLogits {
    /// [M, V], differentiable.
    pub logits: Tensor,
    /// [M] u32: the scored tokens, row by row.
    pub targets: Tensor,
    /// Scored tokens per row.
    pub counts: Vec<usize>,
}

/// Flat hidden-state rows (r·T + j − 1) and target ids for every scored
/// token, and the per-row counts.
fn scored_positions(batch: &Scored, t: usize) -> Result<(Vec<u32>, Vec<u32>, Vec<usize>)> {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut counts = Vec::with_capacity(batch.seqs.len());
    for (r, (seq, &start)) in batch.seqs.iter().zip(&batch.starts).enumerate() {
        if start == 0 || start > seq.len() {
            bail!("row {r}: scored tokens must start after at least one context token (start {start}, length {})", seq.len());
        }
        for (j, &tok) in seq.iter().enumerate().skip(start) {
            rows.push((r * t + j - 1) as u32);
            targets.push(tok);
        }
        counts.push(seq.len() - start);
    }
    Ok((rows, targets, counts))
}

/// Splits a flat per-token vector back into rows.
pub fn split_rows(flat: &[f32], counts: &[usize]) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(counts.len());
    let mut at = 0;
    for &c in counts {
        out.push(flat[at..at + c].to_vec());
        at += c;
    }
    out
}
