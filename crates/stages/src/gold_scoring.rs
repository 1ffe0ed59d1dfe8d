//! The `stories` task's gold reward on sampled responses: the text-level
//! rules of `marlhf_eval::gold` plus the fluency they need, the response
//! tokens' log-probabilities under the pretrained reference model at
//! temperature 1 (one teacher-forced pass).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use marlhf_data::Gold;
use marlhf_eval::gold::{story_gold, GoldParams, StoryGold};
use marlhf_model::checkpoint::Use;
use marlhf_model::Checkpoint;

use crate::ppo::forward::{logprobs, Responses};

/// Sequences per forward pass of the reference model.
const BATCH: usize = 16;

/// One response to score: the token ids it was sampled as (after the
/// prompt's), whether the model ended it, and the prompt's text.
pub struct GoldItem<'a> {
    pub prompt: &'a str,
    pub prompt_tokens: &'a [u32],
    pub response_tokens: &'a [u32],
    pub finished: bool,
}

pub struct GoldScorer {
    reference: Checkpoint,
    params: GoldParams,
}

impl GoldScorer {
    /// The gold model: the pretrained checkpoint whose fluency judgement the
    /// reward uses (for `stories`, the imported stories260K).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let reference = Checkpoint::load_with(dir, device, DType::F32, Use::Inference)
            .with_context(|| format!("{}: gold model", dir.display()))?;
        Ok(GoldScorer {
            reference,
            params: GoldParams::default(),
        })
    }

    /// Refuses a policy whose token ids the gold model would misread.
    pub fn check_vocabulary(&self, policy: &Checkpoint) -> Result<()> {
        let (mine, theirs) = (&self.reference.tokenizer, &policy.tokenizer);
        if mine.vocab_size() != theirs.vocab_size() || mine.eos != theirs.eos {
            bail!(
                "{}: the gold model's tokenizer ({} tokens, EOS {}) is not the policy's {} ({} tokens, EOS {})",
                self.reference.dir.display(),
                mine.vocab_size(),
                mine.eos,
                policy.dir.display(),
                theirs.vocab_size(),
                theirs.eos
            );
        }
        Ok(())
    }

    /// The gold reward of every item, with its parts.
    pub fn score(&self, items: &[GoldItem], tick: &dyn Fn(u64)) -> Result<Vec<StoryGold>> {
        let eos = self.reference.model.config.eos_ids();
        let seqs: Vec<Vec<u32>> = items
            .iter()
            .map(|it| {
                it.prompt_tokens
                    .iter()
                    .chain(it.response_tokens)
                    .copied()
                    .collect()
            })
            .collect();
        let starts: Vec<usize> = items.iter().map(|it| it.prompt_tokens.len()).collect();
        let resp = Responses {
            seqs: &seqs,
            starts: &starts,
        };
        let lps = logprobs(&self.reference.model, &resp, 1.0, BATCH, tick)
            .with_context(|| format!("{}: gold model", self.reference.dir.display()))?;
        items
            .iter()
            .zip(&lps)
            .map(|(it, lp)| {
                // The text the rules read stops before the end-of-story token.
                let body = match it.response_tokens.last() {
                    Some(t) if it.finished && eos.contains(t) => {
                        &it.response_tokens[..it.response_tokens.len() - 1]
                    }
                    _ => it.response_tokens,
                };
                let text = self.reference.tokenizer.decode(body)?;
                Ok(story_gold(it.prompt, &text, it.finished, lp, &self.params))
            })
            .collect()
    }
}

/// The columns' view of a score.
pub fn columns(g: &StoryGold) -> Gold {
    Gold {
        reward: g.gold as f32,
        ending: g.ending,
        callback: g.callback,
    }
}

/// What [`preference_pairs`] made of the samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairsReport {
    pub prompts: usize,
    pub train_pairs: usize,
    pub heldout_pairs: usize,
    /// Pairs of samples with the same gold reward: no preference.
    pub ties: usize,
    /// Training pairs whose label was flipped by the noise knob.
    pub flipped: usize,
    /// Mean |gold difference| of the pairs kept.
    pub mean_margin: f64,
}

/// Samples per prompt [`preference_pairs`] reads at most.
pub const MAX_SAMPLES: usize = 8;

/// Preference pairs labelled by the gold reward: every two samples of a
/// prompt (of `responses`, which must carry gold) whose gold rewards
/// differ make a pair, the higher one chosen. A seeded `heldout_fraction`
/// of the prompts goes to a held-out set with clean labels (the proxy
/// reward model's accuracy against gold is measured there); in the
/// training pairs each label is flipped with probability `noise`. Pair ids
/// are `prompt id · 64 + k`. Returns (training pairs, held-out pairs,
/// report).
pub fn preference_pairs(
    path: &Path,
    responses: &[marlhf_data::ResponseRow],
    noise: f64,
    heldout_fraction: f64,
    seed: u64,
) -> Result<(
    Vec<marlhf_data::PairRow>,
    Vec<marlhf_data::PairRow>,
    PairsReport,
)> {
    use marlhf_data::ResponseRow;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    if !(0.0..=0.5).contains(&noise) {
        bail!("--label-noise must be in [0, 0.5], got {noise}");
    }
    if !(0.0..1.0).contains(&heldout_fraction) {
        bail!("--heldout-fraction must be in [0, 1), got {heldout_fraction}");
    }
    let mut by_prompt: BTreeMap<u64, Vec<&ResponseRow>> = BTreeMap::new();
    for (i, r) in responses.iter().enumerate() {
        if r.gold.is_none() {
            bail!(
                "{}: row {}, column \"gold\": null; sample with --gold-model",
                path.display(),
                i + 1
            );
        }
        if (r.sample as usize) < MAX_SAMPLES {
            by_prompt.entry(r.prompt_id).or_default().push(r);
        }
    }
    let mut report = PairsReport {
        prompts: by_prompt.len(),
        ..Default::default()
    };
    let (mut train, mut heldout) = (Vec::new(), Vec::new());
    let mut margins = 0.0;
    for (id, mut samples) in by_prompt {
        if samples.len() < 2 {
            bail!(
                "{}: prompt {id} has one sample; sample with --samples-per-prompt 2 or more",
                path.display()
            );
        }
        samples.sort_by_key(|r| r.sample);
        // One stream per prompt: a prompt's fate does not depend on the others.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(marlhf_data::seed::mix_seed(
            seed,
            &[id, 0x9a17],
        ));
        let held = rng.random::<f64>() < heldout_fraction;
        let mut k = 0u64;
        for i in 0..samples.len() {
            for j in i + 1..samples.len() {
                let (a, b) = (samples[i], samples[j]);
                let (ga, gb) = (
                    a.gold.expect("checked").reward,
                    b.gold.expect("checked").reward,
                );
                if ga == gb {
                    report.ties += 1;
                    continue;
                }
                margins += (ga - gb).abs() as f64;
                let (chosen, rejected) = if ga > gb { (a, b) } else { (b, a) };
                let flip = !held && rng.random::<f64>() < noise;
                let (chosen, rejected) = if flip {
                    (rejected, chosen)
                } else {
                    (chosen, rejected)
                };
                report.flipped += usize::from(flip);
                let row = marlhf_data::PairRow {
                    id: id * 64 + k,
                    prompt: chosen.prompt.clone(),
                    chosen: chosen.response.clone(),
                    rejected: rejected.response.clone(),
                };
                k += 1;
                if held {
                    heldout.push(row);
                } else {
                    train.push(row);
                }
            }
        }
    }
    report.train_pairs = train.len();
    report.heldout_pairs = heldout.len();
    report.mean_margin = margins / (train.len() + heldout.len()).max(1) as f64;
    if train.is_empty() {
        bail!(
            "{}: no training pairs: every two samples of the {} prompts tie on gold",
            path.display(),
            report.prompts
        );
    }
    Ok((train, heldout, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlhf_data::ResponseRow;

    fn sample(prompt_id: u64, sample: u32, reward: f32) -> ResponseRow {
        ResponseRow {
            id: prompt_id * 10 + sample as u64,
            prompt_id,
            policy: "sft".into(),
            sample,
            prompt: format!("prompt {prompt_id}"),
            response: format!("story {prompt_id}.{sample}"),
            response_tokens: vec![],
            score: 0.0,
            finished: true,
            gold: Some(Gold {
                reward,
                ending: reward > 0.0,
                callback: false,
            }),
        }
    }

    #[test]
    fn pairs_follow_gold_and_skip_ties() {
        // Prompt 1: golds 0, 0.5, 0.5 → pairs (0,1) and (0,2) labelled by
        // gold, (1,2) a tie. Prompt 2: all 0, no pair.
        let rows = vec![
            sample(1, 0, 0.0),
            sample(1, 1, 0.5),
            sample(1, 2, 0.5),
            sample(2, 0, 0.0),
            sample(2, 1, 0.0),
        ];
        let (train, held, r) = preference_pairs(Path::new("x"), &rows, 0.0, 0.0, 1).unwrap();
        assert!(held.is_empty());
        assert_eq!((r.prompts, r.ties, r.train_pairs, r.flipped), (2, 2, 2, 0));
        assert_eq!(r.mean_margin, 0.5);
        let got: Vec<(u64, &str, &str)> = train
            .iter()
            .map(|p| (p.id, p.chosen.as_str(), p.rejected.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (64, "story 1.1", "story 1.0"),
                (65, "story 1.2", "story 1.0")
            ]
        );
    }

    #[test]
    fn noise_flips_training_labels_and_held_out_ones_stay_clean() {
        // 400 prompts, one pair each, sample 1 always better.
        let rows: Vec<ResponseRow> = (0..400)
            .flat_map(|p| [sample(p, 0, 0.0), sample(p, 1, 1.0)])
            .collect();
        let (train, held, r) = preference_pairs(Path::new("x"), &rows, 0.25, 0.3, 7).unwrap();
        assert_eq!(train.len() + held.len(), 400);
        // About 30% held out and 25% of the rest flipped (binomial: well
        // within ±5 points at these sizes).
        let held_share = held.len() as f64 / 400.0;
        assert!((0.25..0.35).contains(&held_share), "{held_share}");
        let flipped = train.iter().filter(|p| p.chosen.ends_with(".0")).count();
        assert_eq!(flipped, r.flipped);
        let flip_share = flipped as f64 / train.len() as f64;
        assert!((0.2..0.3).contains(&flip_share), "{flip_share}");
        assert!(
            held.iter().all(|p| p.chosen.ends_with(".1")),
            "held-out labels are clean"
        );
        // Seeded: the same split and flips again.
        let again = preference_pairs(Path::new("x"), &rows, 0.25, 0.3, 7).unwrap();
        assert_eq!(again.0, train);
        assert!(preference_pairs(Path::new("x"), &rows, 0.6, 0.3, 7).is_err());
    }
}
