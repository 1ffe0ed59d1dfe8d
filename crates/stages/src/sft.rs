//! Supervised fine-tuning: next-token cross-entropy on completion tokens
//! only (the prompt is context, not a target), averaged over tokens.

use anyhow::Result;
use candle_core::Tensor;
use marlhf_model::lm::Scored;
use marlhf_model::Model;

use crate::encode::Example;
use crate::progress::Progress;
use crate::trainer::Objective;

pub struct Sft {
    /// Micro-batch size for held-out evaluation.
    pub eval_batch: usize,
}

fn scored(batch: &[&Example]) -> Scored {
    Scored {
        seqs: batch.iter().map(|e| e.sequence()).collect(),
        starts: batch.iter().map(|e| e.prompt.len()).collect(),
    }
}

impl Objective for Sft {
    type Item = Example;

    fn units(&self, e: &Example) -> usize {
        e.completion.len()
    }

    fn length(&self, e: &Example) -> usize {
        e.prompt.len() + e.completion.len()
    }

    fn loss_sum(&self, model: &Model, batch: &[&Example]) -> Result<(Tensor, Vec<(String, f64)>)> {
        let (lp, _) = model.token_logprobs(&scored(batch))?;
        Ok((lp.sum_all()?.neg()?, Vec::new()))
    }

    fn evaluate(&self, model: &Model, items: &[Example]) -> Result<Vec<(String, f64)>> {
        let mut nll = 0f64;
        let mut n = 0usize;
        for chunk in items.chunks(self.eval_batch.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let (lp, _) = model.token_logprobs(&scored(&refs))?;
            nll -= lp
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
            n += chunk.iter().map(|e| e.completion.len()).sum::<usize>();
        }
        let loss = nll / n.max(1) as f64;
        Ok(vec![
            ("val_loss".into(), loss),
            ("val_perplexity".into(), loss.exp()),
        ])
    }
}

/// Where the model to fine-tune comes from.
pub enum Init {
    /// A Hugging Face checkpoint directory (its own tokenizer.json).
    Checkpoint(std::path::PathBuf),
    /// A fresh Llama with a trained tokenizer (`marlhf-tokenizer`).
    Scratch {
        tokenizer: std::path::PathBuf,
        hidden: usize,
        layers: usize,
        heads: usize,
        mlp: usize,
        max_positions: usize,
    },
}

pub struct SftOptions {
    pub data: std::path::PathBuf,
    pub init: Init,
    pub max_prompt_tokens: usize,
    pub max_completion_tokens: usize,
    pub val_fraction: f64,
    pub limit: Option<usize>,
    pub device: candle_core::Device,
    /// The dtype the model computes in (its weights stay f32).
    pub dtype: candle_core::DType,
    /// Train a LoRA adapter on the frozen `--init` model instead of every
    /// weight.
    pub lora: Option<marlhf_model::lora::LoraSettings>,
    pub train: crate::TrainConfig,
}

pub struct SftReport {
    pub lengths: crate::encode::LengthReport,
    pub train_examples: usize,
    pub val_examples: usize,
    pub params: usize,
    /// The parameters trained (all of them without LoRA).
    pub trainable: usize,
    pub outcome: crate::TrainOutcome,
}

/// Deterministic held-out split by id hash, so it does not depend on row
/// order or on `--limit`.
pub fn is_validation(id: u64, fraction: f64, seed: u64) -> bool {
    use marlhf_data::seed::{finalise, GOLDEN_GAMMA};
    let x = finalise(id ^ seed.rotate_left(17) ^ GOLDEN_GAMMA);
    (x as f64 / u64::MAX as f64) < fraction
}

/// Loads the model to train and the tokenizer file that goes with it:
/// every weight trainable, or with `lora` a LoRA adapter on the frozen
/// checkpoint (`marlhf_model::Checkpoint::load_lora`).
pub fn init_model(
    init: &Init,
    lora: Option<&marlhf_model::lora::LoraSettings>,
    seed: u64,
    dev: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<(Model, marlhf_model::Tokenizer, std::path::PathBuf)> {
    use marlhf_model::checkpoint::Use;
    use marlhf_model::{checkpoint, ModelConfig, Params, Tokenizer};
    match init {
        Init::Checkpoint(dir) => {
            let ck = match lora {
                Some(l) => marlhf_model::Checkpoint::load_lora(dir, dev, dtype, l, seed)?,
                None => marlhf_model::Checkpoint::load_with(dir, dev, dtype, Use::Training)?,
            };
            let tok = checkpoint::tokenizer_dir(dir)?.join(checkpoint::TOKENIZER);
            Ok((ck.model, ck.tokenizer, tok))
        }
        Init::Scratch { .. } if lora.is_some() => anyhow::bail!(
            "--lora-rank adapts a pretrained model: give it with --init (a fresh model has nothing to adapt)"
        ),
        Init::Scratch {
            tokenizer,
            hidden,
            layers,
            heads,
            mlp,
            max_positions,
        } => {
            let tok = Tokenizer::load(tokenizer, None, None, None)?;
            let mut cfg = ModelConfig::tiny_llama(tok.vocab_size(), *hidden, *layers, *heads, *mlp);
            cfg.max_position_embeddings = *max_positions;
            cfg.bos_token_id = tok.bos;
            cfg.eos_token_id = Some(marlhf_model::config::TokenIds::One(tok.eos));
            cfg.pad_token_id = Some(tok.pad);
            cfg.validate()?;
            let params = Params::init(&cfg, seed, dev)?;
            Ok((
                Model::with_dtype(cfg, params, dtype)?,
                tok,
                tokenizer.clone(),
            ))
        }
    }
}

pub fn run(opts: &SftOptions, progress: &dyn Progress) -> Result<SftReport> {
    use anyhow::bail;
    let rows = marlhf_data::read_sft(&opts.data)?;
    let rows = match opts.limit {
        Some(n) => &rows[..n.min(rows.len())],
        None => &rows[..],
    };
    if rows.is_empty() {
        bail!("{}: no rows to train on", opts.data.display());
    }
    let (model, tok, tok_path) = init_model(
        &opts.init,
        opts.lora.as_ref(),
        opts.train.seed,
        &opts.device,
        opts.dtype,
    )?;
    let max_pos = model.config.max_position_embeddings;
    if opts.max_prompt_tokens + opts.max_completion_tokens > max_pos {
        bail!(
            "--max-prompt-tokens {} + --max-completion-tokens {} exceeds the model's {max_pos} positions",
            opts.max_prompt_tokens,
            opts.max_completion_tokens
        );
    }
    let mut lengths = crate::encode::LengthReport::default();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for r in rows {
        lengths.rows += 1;
        if let Some(e) = crate::encode::encode_pair(
            &tok,
            r.id,
            &r.prompt,
            &r.completion,
            opts.max_prompt_tokens,
            opts.max_completion_tokens,
            &mut lengths,
        )? {
            if is_validation(r.id, opts.val_fraction, opts.train.seed) {
                val.push(e);
            } else {
                train.push(e);
            }
        }
    }
    crate::encode::check_enough(
        &opts.data,
        "training examples",
        train.len(),
        opts.train.batch_size,
        &lengths,
    )?;
    let obj = Sft {
        eval_batch: opts.train.batch_size,
    };
    let params = model.params.num_params();
    let trainable = model.num_trainable();
    let mut settings = crate::trainer::run_settings(
        train
            .iter()
            .chain(&val)
            .flat_map(|e| [&e.prompt[..], &e.completion[..]]),
        val.len(),
        &model,
        opts.max_prompt_tokens,
        opts.max_completion_tokens,
        opts.val_fraction,
        opts.limit,
    );
    if let Some(l) = &opts.lora {
        // Recorded only for LoRA runs, so full runs' settings stay as they were.
        settings.insert("lora".into(), l.describe());
    }
    let outcome = crate::trainer::fit(
        &model,
        &tok_path,
        &train,
        &val,
        &obj,
        &opts.train,
        settings,
        progress,
    )?;
    Ok(SftReport {
        lengths,
        train_examples: train.len(),
        val_examples: val.len(),
        params,
        trainable,
        outcome,
    })
}
