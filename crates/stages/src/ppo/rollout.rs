//! The rollout stage: sample responses to one iteration's prompts with the
//! actor, then score every response token with teacher-forced passes of the
//! actor (log-probs), the reference model (log-probs) and the critic
//! (values), and every whole response with the reward model.
//!
//! Every log-probability is taken under the distribution the tokens were
//! sampled from, log-softmax(logits / T) with T the sampling temperature,
//! for the actor and the reference alike, so that −β·(logπ − logπ_ref) on
//! the sampled tokens is a KL penalty between the two sampling
//! distributions (TRL does the same). `logprob_temperature` overrides it;
//! 1 reproduces the paper's released code, which samples at 0.8 but scores
//! at 1 and so pays the policy for flattening its distribution (DESIGN.md,
//! "Where marlhf differs from the released code").
//!
//! The actor's log-probs are recomputed by a full forward pass rather than
//! taken from the sampler, so that they are exactly what the update's
//! forward pass computes before its first step: the PPO ratio starts at 1
//! up to the arithmetic of padding, not at whatever differs between the
//! cached and the uncached forward.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use marlhf_data::{read_prompts, write_rollouts, PromptRow, RolloutRow};

use super::forward::{self, Responses};
use super::models::{Models, Vocabulary};
use crate::gold_scoring::{self, GoldItem, GoldScorer};
use crate::progress::Progress;
use crate::sampling::{encode_prompts, sample, Samples, Sampling};
use marlhf_data::seed::mix_seed;

#[derive(Clone, Debug)]
pub struct RolloutConfig {
    pub prompts: PathBuf,
    pub actor: PathBuf,
    pub reference: PathBuf,
    pub critic: PathBuf,
    pub reward_model: PathBuf,
    pub out: PathBuf,
    pub iteration: u32,
    /// Prompts per iteration.
    pub rollout_batch: usize,
    /// The order the iterations take the prompts in.
    pub prompt_order: PromptOrder,
    /// Sequences per generation or forward batch.
    pub batch_size: usize,
    pub max_prompt_tokens: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    /// 0: no top-k filter.
    pub top_k: usize,
    /// 1: no nucleus filter.
    pub top_p: f64,
    /// The temperature log-probabilities are taken at; `None`: the sampling
    /// temperature (1 when sampling is greedy).
    pub logprob_temperature: Option<f64>,
    /// The gold model of a task with a known reward (`stories`): every
    /// rollout also gets its gold reward, for the curves (the update never
    /// reads it).
    pub gold_model: Option<PathBuf>,
    pub seed: u64,
    pub device: Device,
    /// The dtype the models compute and are kept in (frozen here).
    pub dtype: candle_core::DType,
}

/// What a rollout did, for the stage's summary.
#[derive(Clone, Debug, Default)]
pub struct RolloutReport {
    pub rollouts: usize,
    pub distinct_prompts: usize,
    pub prompts_in_file: usize,
    pub truncated_prompts: usize,
    pub finished: usize,
    pub mean_score: f64,
    /// Mean gold reward, when a gold model scored the rollouts.
    pub mean_gold: Option<f64>,
    pub mean_length: f64,
    pub generated_tokens: usize,
    pub generate_seconds: f64,
    pub score_seconds: f64,
}

impl RolloutReport {
    pub fn tokens_per_second(&self) -> f64 {
        self.generated_tokens as f64 / self.generate_seconds.max(1e-9)
    }
}

/// The order in which a run's iterations take the prompts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PromptOrder {
    /// Each pass over the prompt file ("epoch of prompts") in its own
    /// order, shuffled with the run's seed: seeds see different prompts,
    /// as a seeded data loader gives them (the released code's
    /// DeepSpeed-Chat shuffles with its seed too).
    #[default]
    Shuffled,
    /// The file's order for every seed (marlhf before issue 18): seeds then
    /// differ only in their sampling, which understates the spread between
    /// runs.
    File,
}

impl PromptOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptOrder::Shuffled => "shuffled",
            PromptOrder::File => "file",
        }
    }
}

impl std::fmt::Display for PromptOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PromptOrder {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "shuffled" => Ok(PromptOrder::Shuffled),
            "file" => Ok(PromptOrder::File),
            _ => Err(format!(
                "unknown prompt order {s:?} (expected shuffled or file)"
            )),
        }
    }
}

/// The rows of the prompt file iteration `k` uses: positions `[k·m,
/// (k+1)·m)` of the run's stream of prompts, which goes through the file
/// once per epoch of prompts and then again. With [`PromptOrder::File`]
/// every epoch is the file's order; with [`PromptOrder::Shuffled`] epoch
/// `e` is a permutation of the rows drawn from `seed` and `e` alone, so
/// every seed covers the prompts without repeats within an epoch, and a
/// rerun of iteration `k` takes the same prompts.
pub fn select_prompts(
    n_prompts: usize,
    iteration: u32,
    m: usize,
    order: PromptOrder,
    seed: u64,
) -> Vec<usize> {
    if n_prompts == 0 {
        return Vec::new();
    }
    let n = n_prompts as u128;
    let first = iteration as u128 * m as u128;
    let mut epoch: Option<(u128, Vec<usize>)> = None;
    (0..m as u128)
        .map(|j| {
            let at = first + j;
            let (e, i) = (at / n, (at % n) as usize);
            match order {
                PromptOrder::File => i,
                PromptOrder::Shuffled => {
                    if epoch.as_ref().is_none_or(|(held, _)| *held != e) {
                        epoch = Some((e, epoch_order(n_prompts, seed, e as u64)));
                    }
                    epoch.as_ref().expect("just set").1[i]
                }
            }
        })
        .collect()
}

/// Epoch `e`'s permutation of `n` prompt rows under `seed`.
fn epoch_order(n: usize, seed: u64, e: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix_seed(seed, &[e, 0x9e0_5ee7]));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

impl RolloutConfig {
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

    /// The temperature every stored log-probability is computed at.
    pub fn scoring_temperature(&self) -> f64 {
        self.logprob_temperature
            .unwrap_or(if self.temperature > 0.0 {
                self.temperature
            } else {
                1.0
            })
    }

    fn check(&self) -> Result<()> {
        if self.rollout_batch == 0 || self.batch_size == 0 {
            bail!("--rollout-batch and --batch-size must be positive");
        }
        if let Some(t) = self.logprob_temperature {
            if !(t.is_finite() && t > 0.0) {
                bail!("--logprob-temperature must be a number > 0, got {t}");
            }
        }
        crate::checks::check_sampling(
            self.max_prompt_tokens,
            self.max_new_tokens,
            self.temperature,
            self.top_p,
        )
    }
}

/// Refuses a non-finite number in one of the per-token lists: it would
/// poison the update, and it means a broken checkpoint.
fn check_finite(what: &str, dir: &std::path::Path, ids: &[u64], rows: &[Vec<f32>]) -> Result<()> {
    for (id, row) in ids.iter().zip(rows) {
        if let Some(t) = row.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: {what} of rollout {id} is {} at response token {t}; is the checkpoint corrupt?",
                dir.display(),
                row[t]
            );
        }
    }
    Ok(())
}

pub fn rollout(cfg: &RolloutConfig, progress: &dyn Progress) -> Result<RolloutReport> {
    cfg.check()?;
    let prompts: Vec<PromptRow> = read_prompts(&cfg.prompts)?;
    if prompts.is_empty() {
        bail!("{}: no prompts", cfg.prompts.display());
    }
    let picked = select_prompts(
        prompts.len(),
        cfg.iteration,
        cfg.rollout_batch,
        cfg.prompt_order,
        cfg.seed,
    );
    let mut report = RolloutReport {
        rollouts: picked.len(),
        prompts_in_file: prompts.len(),
        ..Default::default()
    };
    let mut distinct = picked.clone();
    distinct.sort_unstable();
    distinct.dedup();
    report.distinct_prompts = distinct.len();

    let mut models = Models::new(cfg.device.clone(), cfg.dtype);
    let actor = models.get(&cfg.actor)?;
    let vocab = Vocabulary::of(actor);
    let tok = &actor.tokenizer;
    // Loaded up front, so a gold model that cannot read the actor's tokens
    // stops the stage before the slow part.
    let scorer = match &cfg.gold_model {
        Some(dir) => {
            let scorer = GoldScorer::load(dir, &cfg.device)?;
            scorer.check_vocabulary(actor)?;
            Some(scorer)
        }
        None => None,
    };

    let encoded = encode_prompts(
        tok,
        picked.iter().map(|&i| prompts[i].prompt.as_str()),
        cfg.max_prompt_tokens,
        |j| {
            format!(
                "{}: row {}, column \"prompt\"",
                cfg.prompts.display(),
                picked[j] + 1
            )
        },
    )?;
    report.truncated_prompts += encoded.truncated;
    let prompt_ids = encoded.ids;
    let started = Instant::now();
    let samples = sample(
        actor,
        &cfg.actor,
        &prompt_ids,
        &cfg.sampling(),
        |k| mix_seed(cfg.seed, &[cfg.iteration as u64, k]),
        progress,
        "generate",
    )?;
    report.generated_tokens += samples.generated_tokens();
    report.generate_seconds = started.elapsed().as_secs_f64();
    let texts = samples.texts(tok)?;
    let Samples {
        tokens: responses,
        finished,
    } = samples;

    let started = Instant::now();
    let ids: Vec<u64> = (0..picked.len())
        .map(|j| cfg.iteration as u64 * cfg.rollout_batch as u64 + j as u64)
        .collect();
    let seqs: Vec<Vec<u32>> = prompt_ids
        .iter()
        .zip(&responses)
        .map(|(p, r)| p.iter().chain(r).copied().collect())
        .collect();
    let starts: Vec<usize> = prompt_ids.iter().map(Vec::len).collect();
    let resp = Responses {
        seqs: &seqs,
        starts: &starts,
    };
    let n = picked.len() as u64;
    let phase = |name: &str| progress.bar(n, name);

    let scoring_t = cfg.scoring_temperature();
    let pb = phase("actor");
    let logprobs = forward::logprobs(&actor.model, &resp, scoring_t, cfg.batch_size, &|k| {
        pb.inc(k)
    })?;
    pb.finish();
    check_finite("an actor log-prob", &cfg.actor, &ids, &logprobs)?;

    let reference = models.get(&cfg.reference)?;
    vocab.check("reference", reference)?;
    let pb = phase("reference");
    let ref_logprobs =
        forward::logprobs(&reference.model, &resp, scoring_t, cfg.batch_size, &|k| {
            pb.inc(k)
        })?;
    pb.finish();
    check_finite("a reference log-prob", &cfg.reference, &ids, &ref_logprobs)?;

    let critic = models.get(&cfg.critic)?;
    vocab.check("critic", critic)?;
    let pb = phase("critic");
    let values = forward::values(&critic.model, &resp, cfg.batch_size, &|k| pb.inc(k))
        .with_context(|| format!("{}: critic", cfg.critic.display()))?;
    pb.finish();
    check_finite("a value", &cfg.critic, &ids, &values)?;

    let rm = models.get(&cfg.reward_model)?;
    vocab.check("reward model", rm)?;
    let pb = phase("reward");
    let scores = forward::scores(&rm.model, &resp, cfg.batch_size, &|k| pb.inc(k))
        .with_context(|| format!("{}: reward model", cfg.reward_model.display()))?;
    pb.finish();
    check_finite(
        "the score",
        &cfg.reward_model,
        &ids,
        &scores.iter().map(|&s| vec![s]).collect::<Vec<_>>(),
    )?;
    let gold = match &scorer {
        Some(scorer) => {
            let items: Vec<GoldItem> = (0..picked.len())
                .map(|j| GoldItem {
                    prompt: &prompts[picked[j]].prompt,
                    prompt_tokens: &prompt_ids[j],
                    response_tokens: &responses[j],
                    finished: finished[j],
                })
                .collect();
            let pb = phase("gold");
            let g = scorer.score(&items, &|k| pb.inc(k))?;
            pb.finish();
            g.iter().map(|g| Some(gold_scoring::columns(g))).collect()
        }
        None => vec![None; picked.len()],
    };
    report.score_seconds = started.elapsed().as_secs_f64();

    let mut rows = Vec::with_capacity(picked.len());
    let mut it = prompt_ids
        .into_iter()
        .zip(responses)
        .zip(texts)
        .zip(logprobs.into_iter().zip(ref_logprobs).zip(values));
    for j in 0..picked.len() {
        let (((prompt_tokens, response_tokens), response), ((lp, rlp), v)) =
            it.next().expect("one per rollout");
        rows.push(RolloutRow {
            id: ids[j],
            prompt_id: prompts[picked[j]].id,
            iteration: cfg.iteration,
            prompt_tokens,
            response_tokens,
            response,
            logprobs: lp,
            ref_logprobs: rlp,
            values: v,
            score: scores[j],
            finished: finished[j],
            temperature: cfg.temperature,
            logprob_temperature: scoring_t,
            gold: gold[j],
        });
    }
    report.finished = rows.iter().filter(|r| r.finished).count();
    report.mean_score = rows.iter().map(|r| r.score as f64).sum::<f64>() / rows.len() as f64;
    report.mean_gold = rows
        .iter()
        .map(|r| r.gold.map(|g| g.reward as f64))
        .sum::<Option<f64>>()
        .map(|s| s / rows.len() as f64);
    report.mean_length = rows
        .iter()
        .map(|r| r.response_tokens.len() as f64)
        .sum::<f64>()
        / rows.len() as f64;
    write_rollouts(&cfg.out, &rows)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_walk_the_file_and_wrap() {
        let file = |n, k, m| select_prompts(n, k, m, PromptOrder::File, 1234);
        assert_eq!(file(10, 0, 4), vec![0, 1, 2, 3]);
        assert_eq!(file(10, 1, 4), vec![4, 5, 6, 7]);
        // iteration 2 starts at 8 and wraps: 8, 9, 0, 1.
        assert_eq!(file(10, 2, 4), vec![8, 9, 0, 1]);
        // 3·4 = 12 ≡ 2 (mod 10).
        assert_eq!(file(10, 3, 4), vec![2, 3, 4, 5]);
        // More prompts per iteration than in the file: each used again.
        assert_eq!(file(3, 1, 5), vec![2, 0, 1, 2, 0]);
        assert_eq!(file(0, 1, 5), Vec::<usize>::new());
    }

    #[test]
    fn seeds_shuffle_each_epoch_of_prompts() {
        let shuffled = |n, k, m, seed| select_prompts(n, k, m, PromptOrder::Shuffled, seed);
        // 10 prompts, 4 per iteration: iterations 0, 1 and half of 2 are
        // epoch 0, the rest of 2, 3, 4 epoch 1. Each epoch is a permutation.
        for seed in [1234, 1235, 7] {
            let stream: Vec<usize> = (0..5).flat_map(|k| shuffled(10, k, 4, seed)).collect();
            for epoch in stream.chunks(10) {
                let mut seen = epoch.to_vec();
                seen.sort_unstable();
                assert_eq!(seen, (0..10).collect::<Vec<_>>(), "seed {seed}");
            }
            // A rerun of an iteration takes the same prompts.
            assert_eq!(shuffled(10, 2, 4, seed), stream[8..12]);
        }
        // Seeds give different orders, and epochs differ from each other.
        let a: Vec<usize> = (0..3).flat_map(|k| shuffled(1000, k, 64, 1234)).collect();
        let b: Vec<usize> = (0..3).flat_map(|k| shuffled(1000, k, 64, 1235)).collect();
        assert_ne!(a, b);
        assert_ne!(shuffled(10, 0, 10, 1234), shuffled(10, 1, 10, 1234));
        // More prompts per iteration than in the file: whole epochs.
        let big = shuffled(3, 0, 7, 1);
        for epoch in big.chunks(3).take(2) {
            let mut seen = epoch.to_vec();
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2]);
        }
        assert_eq!(shuffled(0, 1, 5, 1), Vec::<usize>::new());
        // The stories task's run: 4,000 prompts, 64 per iteration, 12
        // iterations: 768 distinct prompts, none twice.
        let mut run: Vec<usize> = (0..12).flat_map(|k| shuffled(4000, k, 64, 1236)).collect();
        run.sort_unstable();
        run.dedup();
        assert_eq!(run.len(), 768);
    }
}
