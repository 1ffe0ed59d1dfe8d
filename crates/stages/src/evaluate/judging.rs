//! Pairwise judging of policy A against one or more policies B on a seeded
//! sample of the prompts both answered, GPT-4 style: the judge sees the two
//! responses in a random order per pair and answers for the responses as
//! presented; `marlhf_eval::judge` maps its answer back to A's side.
//!
//! Two judges: any OpenAI-compatible chat endpoint ([`HttpJudge`]), and the
//! local reward model ([`RewardModelJudge`]), which needs no network and
//! answers in the same A/B/E terms.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use marlhf_eval::judge::{
    judge_pairs_with_progress, Choice, HttpJudge, HttpJudgeConfig, Judge, JudgeAnswer, JudgePair,
    JudgeRequest, JudgeTask, WinRate,
};
use marlhf_eval::report::PairwiseRow;
use marlhf_model::Checkpoint;

use crate::progress::Progress;
use marlhf_data::seed::mix_seed;
use marlhf_data::{read_responses_from, write_judgements, JudgementRow, ResponseRow};

/// What the `judge` column says for the reward-model judge.
pub const REWARD_MODEL_JUDGE: &str = "reward model";

/// The reward model as a judge: it scores prompt + response for A and for B
/// the way it was trained (BOS + the prompt's last `max_prompt_tokens`
/// tokens, then the response and EOS) and prefers the higher score. Scores
/// at most `tie_epsilon` apart are a tie (`E`): a difference that small is
/// arithmetic noise (padding, batching), not a preference.
pub struct RewardModelJudge {
    ck: Checkpoint,
    max_prompt_tokens: usize,
    tie_epsilon: f32,
}

impl RewardModelJudge {
    pub fn load(
        dir: &std::path::Path,
        device: &Device,
        dtype: candle_core::DType,
        max_prompt_tokens: usize,
        tie_epsilon: f32,
    ) -> Result<Self> {
        let ck =
            Checkpoint::load_with(dir, device, dtype, marlhf_model::checkpoint::Use::Inference)?;
        if ck.model.v_head.is_none() {
            bail!(
                "{}: the reward model has no value head (v_head.weight); is it a reward model checkpoint?",
                dir.display()
            );
        }
        if !(tie_epsilon >= 0.0 && tie_epsilon.is_finite()) {
            bail!("--tie-epsilon must be a finite number ≥ 0");
        }
        if max_prompt_tokens == 0 {
            bail!("--max-prompt-tokens must be positive");
        }
        Ok(Self {
            ck,
            max_prompt_tokens,
            tie_epsilon,
        })
    }

    fn sequence(&self, prompt: &str, response: &str) -> Result<Vec<u32>> {
        let tok = &self.ck.tokenizer;
        let mut seq = tok.encode_prompt(prompt, self.max_prompt_tokens)?.ids;
        seq.extend(tok.encode(response)?);
        seq.push(tok.eos);
        let max_pos = self.ck.model.config.max_position_embeddings;
        if seq.len() > max_pos {
            // Keep the end: the score is read at the last token.
            seq.drain(..seq.len() - max_pos);
        }
        Ok(seq)
    }

    /// The reward model's scores of A and B.
    pub fn scores(&self, req: &JudgeRequest) -> Result<(f32, f32)> {
        let seqs = vec![
            self.sequence(&req.prompt, &req.response_a)?,
            self.sequence(&req.prompt, &req.response_b)?,
        ];
        let s: Vec<f32> = self
            .ck
            .model
            .scores(&seqs)?
            .detach()
            .to_dtype(DType::F32)?
            .to_vec1()?;
        Ok((s[0], s[1]))
    }
}

/// The choice for two scores: `E` when they differ by at most `epsilon`.
pub fn choice_from_scores(a: f32, b: f32, epsilon: f32) -> Option<Choice> {
    if !(a.is_finite() && b.is_finite()) {
        return None;
    }
    Some(if (a - b).abs() <= epsilon {
        Choice::Equal
    } else if a > b {
        Choice::A
    } else {
        Choice::B
    })
}

fn choice_letter(choice: Option<Choice>) -> Option<String> {
    choice.map(|c| {
        match c {
            Choice::A => "A",
            Choice::B => "B",
            Choice::Equal => "E",
        }
        .to_string()
    })
}

impl Judge for RewardModelJudge {
    fn judge(&self, req: &JudgeRequest) -> Result<JudgeAnswer> {
        let (a, b) = self.scores(req)?;
        let choice = choice_from_scores(a, b, self.tie_epsilon);
        let letter = choice_letter(choice).unwrap_or_else(|| "none".into());
        Ok(JudgeAnswer {
            raw: format!("score A {a:.6}, score B {b:.6}: {letter}"),
            choice,
        })
    }
}

/// Which judge to ask.
#[derive(Clone, Debug)]
pub enum JudgeKind {
    RewardModel {
        dir: PathBuf,
        max_prompt_tokens: usize,
        tie_epsilon: f32,
        device: Device,
        dtype: candle_core::DType,
    },
    Http(HttpJudgeConfig),
}

#[derive(Clone, Debug)]
pub struct JudgeConfig {
    /// responses.parquet files; each policy answers in one of them.
    pub responses: Vec<PathBuf>,
    /// (A, B) comparisons, each on the same prompts; verdicts are from A's
    /// side.
    pub pairs: Vec<(String, String)>,
    /// The pipeline task (`hh-rlhf`, `tldr`, `webgpt`): the judge's template.
    pub task: String,
    /// Pairs judged per comparison (the paper's 50); all common prompts
    /// when fewer.
    pub sample: usize,
    pub seed: u64,
    pub judge: JudgeKind,
    pub out: PathBuf,
}

#[derive(Clone, Debug)]
pub struct JudgeReport {
    /// Prompts answered by A and by every B.
    pub common_prompts: usize,
    pub rows: Vec<PairwiseRow>,
}

/// The first sample of each prompt a policy answered, by prompt id.
fn by_prompt<'r>(rows: &'r [ResponseRow], policy: &str) -> BTreeMap<u64, &'r ResponseRow> {
    let mut map: BTreeMap<u64, &ResponseRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.policy == policy) {
        let slot = map.entry(r.prompt_id).or_insert(r);
        if r.sample < slot.sample {
            *slot = r;
        }
    }
    map
}

/// "the file" or "the files", for messages about `cfg.responses`.
fn files(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn judge_responses(cfg: &JudgeConfig, progress: &dyn Progress) -> Result<JudgeReport> {
    let task = JudgeTask::for_pipeline(&cfg.task).with_context(|| "--task".to_string())?;
    if cfg.pairs.is_empty() {
        bail!("no comparison: give --a and --b, or --pair A:B");
    }
    if cfg.sample == 0 {
        bail!("--sample must be positive");
    }
    for (i, (a, b)) in cfg.pairs.iter().enumerate() {
        if a == b {
            bail!("{a:?} against itself: compare two different policies");
        }
        if cfg.pairs[..i].contains(&(a.clone(), b.clone())) {
            bail!("{a:?} against {b:?} is asked twice");
        }
    }
    let rows = read_responses_from(&cfg.responses)?;
    let mut known: Vec<&str> = Vec::new();
    for r in &rows {
        if !known.contains(&r.policy.as_str()) {
            known.push(&r.policy);
        }
    }
    for name in cfg.pairs.iter().flat_map(|(a, b)| [a, b]) {
        if !known.contains(&name.as_str()) {
            bail!(
                "{}: no responses of policy {name:?}; the responses are of {}",
                files(&cfg.responses),
                known
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut names: Vec<&String> = cfg.pairs.iter().flat_map(|(a, b)| [a, b]).collect();
    names.sort_unstable();
    names.dedup();
    let answers: BTreeMap<&String, BTreeMap<u64, &ResponseRow>> =
        names.iter().map(|&n| (n, by_prompt(&rows, n))).collect();
    // The same prompts for every comparison, so the rows of the report are
    // comparable with each other.
    let common: Vec<u64> = answers[names[0]]
        .keys()
        .copied()
        .filter(|id| answers.values().all(|m| m.contains_key(id)))
        .collect();
    if common.is_empty() {
        bail!(
            "{}: policies {} answered no prompt in common",
            files(&cfg.responses),
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let picked: Vec<u64> = super::sample_indices(common.len(), cfg.sample, cfg.seed)
        .into_iter()
        .map(|i| common[i])
        .collect();

    let (judge, judge_name): (Box<dyn Judge>, String) = match &cfg.judge {
        JudgeKind::RewardModel {
            dir,
            max_prompt_tokens,
            tie_epsilon,
            device,
            dtype,
        } => (
            Box::new(RewardModelJudge::load(
                dir,
                device,
                *dtype,
                *max_prompt_tokens,
                *tie_epsilon,
            )?),
            REWARD_MODEL_JUDGE.to_string(),
        ),
        JudgeKind::Http(http) => (Box::new(HttpJudge::new(http.clone())?), http.model.clone()),
    };

    let mut out_rows = Vec::new();
    let mut report = JudgeReport {
        common_prompts: common.len(),
        rows: Vec::new(),
    };
    for (j, (a_name, b_name)) in cfg.pairs.iter().enumerate() {
        let (a, b) = (&answers[a_name], &answers[b_name]);
        let pairs: Vec<JudgePair> = picked
            .iter()
            .map(|id| JudgePair {
                prompt_id: *id,
                task,
                prompt: a[id].prompt.clone(),
                response_x: a[id].response.clone(),
                response_y: b[id].response.clone(),
            })
            .collect();
        let pb = progress.bar(pairs.len() as u64, &format!("{a_name} vs {b_name}"));
        let (judgements, rate) = judge_pairs_with_progress(
            judge.as_ref(),
            &pairs,
            mix_seed(cfg.seed, &[1 + j as u64]),
            |done| pb.set_position(done as u64),
        )
        .with_context(|| format!("{a_name} vs {b_name}: {judge_name} judge"))?;
        pb.finish();
        for jd in judgements {
            out_rows.push(JudgementRow {
                prompt_id: jd.prompt_id,
                policy_a: a_name.clone(),
                policy_b: b_name.clone(),
                judge: judge_name.clone(),
                a_shown_first: jd.x_shown_first,
                verdict: jd.verdict,
                choice: choice_letter(jd.choice),
                raw: jd.raw,
            });
        }
        report.rows.push(PairwiseRow {
            policy_a: a_name.clone(),
            policy_b: b_name.clone(),
            judge: judge_name.clone(),
            rate,
        });
    }
    write_judgements(&cfg.out, &out_rows)?;
    Ok(report)
}

/// Win/tie/lose counts per (A, B, judge), in order of first appearance.
pub fn win_rates(rows: &[JudgementRow]) -> Vec<PairwiseRow> {
    let mut out: Vec<PairwiseRow> = Vec::new();
    for r in rows {
        let verdict = r.verdict;
        match out
            .iter_mut()
            .find(|p| p.policy_a == r.policy_a && p.policy_b == r.policy_b && p.judge == r.judge)
        {
            Some(p) => p.rate.add(verdict),
            None => out.push(PairwiseRow {
                policy_a: r.policy_a.clone(),
                policy_b: r.policy_b.clone(),
                judge: r.judge.clone(),
                rate: WinRate::from_verdicts([verdict]),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_from_scores_by_hand() {
        assert_eq!(choice_from_scores(1.0, 0.5, 1e-3), Some(Choice::A));
        assert_eq!(choice_from_scores(-1.0, 0.5, 1e-3), Some(Choice::B));
        assert_eq!(choice_from_scores(0.5, 0.5005, 1e-3), Some(Choice::Equal));
        assert_eq!(choice_from_scores(0.5, 0.502, 1e-3), Some(Choice::B));
        assert_eq!(choice_from_scores(0.5, 0.501, 1e-3), Some(Choice::Equal));
        assert_eq!(choice_from_scores(0.5, 0.5, 0.0), Some(Choice::Equal));
        assert_eq!(choice_from_scores(0.5, 0.5001, 0.0), Some(Choice::B));
        assert_eq!(choice_from_scores(f32::NAN, 0.5, 1e-3), None);
    }

    #[test]
    fn win_rates_group_in_order_of_appearance() {
        let row = |b: &str, v: &str| JudgementRow {
            prompt_id: 0,
            policy_a: "ma-ppo".into(),
            policy_b: b.into(),
            judge: "reward model".into(),
            a_shown_first: true,
            verdict: v.parse().unwrap(),
            choice: None,
            raw: String::new(),
        };
        let rows = vec![
            row("ppo", "win"),
            row("sft", "lose"),
            row("ppo", "tie"),
            row("ppo", "unparseable"),
            row("ppo", "win"),
        ];
        let rates = win_rates(&rows);
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0].policy_b, "ppo");
        assert_eq!(
            rates[0].rate,
            WinRate {
                win: 2,
                tie: 1,
                lose: 0,
                unparseable: 1,
                n: 4
            }
        );
        assert_eq!(rates[1].rate.lose, 1);
        // A verdict outside the four cannot be built; the reader refuses it
        // (marlhf_data::tables, eval.rs tests).
    }
}
