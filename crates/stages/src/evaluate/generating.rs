//! Responses of several policies to a deterministic sample of the
//! evaluation prompts, each scored by the reward model.
//!
//! Every policy answers the same prompts with the same sampling seeds
//! (common random numbers), so differences between policies are not
//! differences of luck in the draw. Policies are loaded one at a time and
//! the reward model last, so at most one model sits in memory. Without a
//! reward model (APPS, scored by its tests) every score is NaN.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use marlhf_data::{read_prompts, PromptRow};
use marlhf_eval::report::{mean_se, MeanSe};
use marlhf_model::checkpoint::load_tokenizer;
use marlhf_model::Checkpoint;

use super::{check_unique_names, sample_indices};
use crate::gold_scoring::{self, GoldItem, GoldScorer};
use crate::progress::Progress;
use crate::sampling::{encode_prompts, sample, Samples, Sampling};
use marlhf_data::seed::mix_seed;
use marlhf_data::Gold;
use marlhf_data::{write_responses, ResponseRow};

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// (name, checkpoint directory), in the order of the output.
    pub policies: Vec<(String, PathBuf)>,
    pub prompts: PathBuf,
    /// Scores every response; `None` leaves the scores NaN.
    pub reward_model: Option<PathBuf>,
    pub out: PathBuf,
    /// Prompts to answer (the paper's 2000); all of them when fewer.
    pub n: usize,
    /// Responses per prompt and policy (more than 1 for pass@k).
    pub samples_per_prompt: usize,
    /// Seed of the prompt sample and of the sampling.
    pub seed: u64,
    pub max_prompt_tokens: usize,
    pub max_new_tokens: usize,
    /// 0: greedy.
    pub temperature: f64,
    /// 0: no top-k filter.
    pub top_k: usize,
    /// 1: no nucleus filter.
    pub top_p: f64,
    /// Sequences per generation or scoring batch.
    pub batch_size: usize,
    pub device: Device,
    /// The dtype the models compute and are kept in.
    pub dtype: candle_core::DType,
    /// The gold model of a task with a known reward (`stories`): every
    /// response also gets its gold reward.
    pub gold_model: Option<PathBuf>,
}

/// What one policy produced.
#[derive(Clone, Debug)]
pub struct PolicyReport {
    pub policy: String,
    pub responses: usize,
    pub score: MeanSe,
    /// Mean gold reward ± s.e., with a gold model.
    pub gold: Option<MeanSe>,
    pub finished: usize,
    pub mean_length: f64,
    pub tokens_per_second: f64,
}

#[derive(Clone, Debug, Default)]
pub struct GenerateReport {
    pub prompts_in_file: usize,
    pub prompts_used: usize,
    /// Prompt encodings cut to --max-prompt-tokens, counted once per policy.
    pub truncated_prompts: usize,
    pub policies: Vec<PolicyReport>,
}

impl GenerateConfig {
    fn sampling(&self) -> Sampling {
        Sampling {
            max_prompt_tokens: self.max_prompt_tokens,
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            batch_size: self.batch_size,
        }
    }

    fn check(&self) -> Result<()> {
        if self.policies.is_empty() {
            bail!("no policies to evaluate: give at least one --policy NAME=DIR");
        }
        check_unique_names("policy", &self.policies)?;
        if self.n == 0 || self.samples_per_prompt == 0 || self.batch_size == 0 {
            bail!("--n, --samples-per-prompt and --batch-size must be positive");
        }
        crate::checks::check_sampling(
            self.max_prompt_tokens,
            self.max_new_tokens,
            self.temperature,
            self.top_p,
        )
    }
}

/// A checkpoint's vocabulary, read without loading its weights, so that a
/// mismatch is found before any generation.
fn vocabulary(dir: &Path, role: &str) -> Result<(usize, u32)> {
    if !dir.is_dir() {
        bail!("{}: {role} checkpoint directory not found", dir.display());
    }
    let cfg = marlhf_model::checkpoint::load_config(dir)?;
    let tok = load_tokenizer(&marlhf_model::checkpoint::tokenizer_dir(dir)?, &cfg)?;
    Ok((tok.vocab_size(), tok.eos))
}

/// One policy's sampled responses, in the order of `items`.
struct Sampled {
    prompt_ids: Vec<Vec<u32>>,
    tokens: Vec<Vec<u32>>,
    finished: Vec<bool>,
    texts: Vec<String>,
    seconds: f64,
}

fn sample_policy(
    cfg: &GenerateConfig,
    name: &str,
    dir: &Path,
    prompts: &[&PromptRow],
    report: &mut GenerateReport,
    progress: &dyn Progress,
) -> Result<Sampled> {
    let ck = Checkpoint::load_with(
        dir,
        &cfg.device,
        cfg.dtype,
        marlhf_model::checkpoint::Use::Inference,
    )?;
    let tok = &ck.tokenizer;
    let encoded = encode_prompts(
        tok,
        prompts.iter().map(|p| p.prompt.as_str()),
        cfg.max_prompt_tokens,
        |i| format!("{}: prompt {}", cfg.prompts.display(), prompts[i].id),
    )?;
    report.truncated_prompts += encoded.truncated;
    // Item j is sample j % s of prompt j / s.
    let s = cfg.samples_per_prompt;
    let items = prompts.len() * s;
    let prompt_ids: Vec<Vec<u32>> = (0..items).map(|j| encoded.ids[j / s].clone()).collect();
    let started = Instant::now();
    let samples = sample(
        &ck,
        dir,
        &prompt_ids,
        &cfg.sampling(),
        |k| mix_seed(cfg.seed, &[k]),
        progress,
        name,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let texts = samples.texts(tok)?;
    let Samples { tokens, finished } = samples;
    Ok(Sampled {
        prompt_ids,
        tokens,
        finished,
        texts,
        seconds,
    })
}

/// The reward model's score of every prompt + response, in chunks of
/// similar length.
fn score_all(
    rm: &Checkpoint,
    seqs: &[Vec<u32>],
    batch: usize,
    what: &str,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&r| seqs[r].len());
    let mut out = vec![0f32; seqs.len()];
    let pb = progress.bar(seqs.len() as u64, what);
    for rows in order.chunks(batch) {
        let chunk: Vec<Vec<u32>> = rows.iter().map(|&r| seqs[r].clone()).collect();
        let scores: Vec<f32> = rm
            .model
            .scores(&chunk)?
            .detach()
            .to_dtype(DType::F32)?
            .to_vec1()?;
        for (&r, s) in rows.iter().zip(scores) {
            out[r] = s;
        }
        pb.inc(rows.len() as u64);
    }
    pb.finish();
    Ok(out)
}

pub fn generate_responses(cfg: &GenerateConfig, progress: &dyn Progress) -> Result<GenerateReport> {
    cfg.check()?;
    // Everything that can be wrong with the inputs is found before the
    // first (slow) generation.
    let rm_vocab = match &cfg.reward_model {
        Some(dir) => Some(vocabulary(dir, "reward model")?),
        None => None,
    };
    for (name, dir) in &cfg.policies {
        let (vocab, eos) = vocabulary(dir, &format!("policy {name:?}"))?;
        if let (Some((rm_vocab, rm_eos)), Some(rm_dir)) = (rm_vocab, &cfg.reward_model) {
            if (vocab, eos) != (rm_vocab, rm_eos) {
                bail!(
                    "{}: policy {name:?} has a tokenizer of {vocab} tokens with EOS {eos}, but the reward model {} has {rm_vocab} tokens with EOS {rm_eos}; the reward model scores the policies' token ids, so they must share one tokenizer",
                    dir.display(),
                    rm_dir.display()
                );
            }
        }
    }
    if let Some(dir) = &cfg.gold_model {
        let (vocab, eos) = vocabulary(dir, "gold model")?;
        for (name, pdir) in &cfg.policies {
            if vocabulary(pdir, name)? != (vocab, eos) {
                bail!(
                    "{}: the gold model's tokenizer ({vocab} tokens, EOS {eos}) is not policy {name:?}'s",
                    dir.display()
                );
            }
        }
    }
    let all = read_prompts(&cfg.prompts)?;
    if all.is_empty() {
        bail!("{}: no prompts", cfg.prompts.display());
    }
    let picked: Vec<&PromptRow> = sample_indices(all.len(), cfg.n, cfg.seed)
        .into_iter()
        .map(|i| &all[i])
        .collect();
    let mut report = GenerateReport {
        prompts_in_file: all.len(),
        prompts_used: picked.len(),
        ..Default::default()
    };

    let mut sampled = Vec::with_capacity(cfg.policies.len());
    for (name, dir) in &cfg.policies {
        sampled.push(sample_policy(
            cfg,
            name,
            dir,
            &picked,
            &mut report,
            progress,
        )?);
    }

    let rm = match &cfg.reward_model {
        Some(dir) => {
            let rm = Checkpoint::load_with(
                dir,
                &cfg.device,
                cfg.dtype,
                marlhf_model::checkpoint::Use::Inference,
            )?;
            if rm.model.v_head.is_none() {
                bail!(
                    "{}: the reward model has no value head (v_head.weight); is it a reward model checkpoint?",
                    dir.display()
                );
            }
            Some((dir, rm))
        }
        None => None,
    };
    let scorer = match &cfg.gold_model {
        Some(dir) => Some(GoldScorer::load(dir, &cfg.device)?),
        None => None,
    };
    let s = cfg.samples_per_prompt;
    let mut rows = Vec::new();
    for ((name, _), out) in cfg.policies.iter().zip(&sampled) {
        let gold: Vec<Option<Gold>> = match &scorer {
            Some(scorer) => {
                let items: Vec<GoldItem> = (0..out.tokens.len())
                    .map(|j| GoldItem {
                        prompt: &picked[j / s].prompt,
                        prompt_tokens: &out.prompt_ids[j],
                        response_tokens: &out.tokens[j],
                        finished: out.finished[j],
                    })
                    .collect();
                let pb = progress.bar(items.len() as u64, "gold");
                let g = scorer.score(&items, &|k| pb.inc(k))?;
                pb.finish();
                g.iter().map(|g| Some(gold_scoring::columns(g))).collect()
            }
            None => vec![None; out.tokens.len()],
        };
        let seqs: Vec<Vec<u32>> = out
            .prompt_ids
            .iter()
            .zip(&out.tokens)
            .map(|(p, r)| p.iter().chain(r).copied().collect())
            .collect();
        let scores = match &rm {
            Some((dir, rm)) => {
                let scores = score_all(rm, &seqs, cfg.batch_size, "score", progress)
                    .with_context(|| format!("{}: scoring", dir.display()))?;
                if let Some(j) = scores.iter().position(|v| !v.is_finite()) {
                    bail!(
                        "{}: the score of policy {name:?}'s response to prompt {} is {}; is the checkpoint corrupt?",
                        dir.display(),
                        picked[j / s].id,
                        scores[j]
                    );
                }
                scores
            }
            None => vec![f32::NAN; seqs.len()],
        };
        for (j, score) in scores.iter().enumerate() {
            let prompt = picked[j / s];
            rows.push(ResponseRow {
                id: rows.len() as u64,
                prompt_id: prompt.id,
                policy: name.clone(),
                sample: (j % s) as u32,
                prompt: prompt.prompt.clone(),
                response: out.texts[j].clone(),
                response_tokens: out.tokens[j].clone(),
                score: *score,
                finished: out.finished[j],
                gold: gold[j],
            });
        }
        let tokens: usize = out.tokens.iter().map(Vec::len).sum();
        let as_f64: Vec<f64> = scores.iter().map(|&v| v as f64).collect();
        report.policies.push(PolicyReport {
            policy: name.clone(),
            responses: scores.len(),
            score: mean_se(&as_f64),
            gold: scorer.as_ref().map(|_| {
                mean_se(
                    &gold
                        .iter()
                        .map(|g| g.map_or(f64::NAN, |g| g.reward as f64))
                        .collect::<Vec<_>>(),
                )
            }),
            finished: out.finished.iter().filter(|&&f| f).count(),
            mean_length: tokens as f64 / out.tokens.len().max(1) as f64,
            tokens_per_second: tokens as f64 / out.seconds.max(1e-9),
        });
    }
    write_responses(&cfg.out, &rows)?;
    Ok(report)
}
