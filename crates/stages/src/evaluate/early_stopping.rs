//! Early stopping on validation prompts: each run's checkpoint with the
//! best mean validation score is the run's early-stopped policy, which then
//! answers the evaluation prompts beside the final policy.
//!
//! The validation prompts are disjoint from the PPO prompts and from the
//! evaluation prompts (`validation_prompts.parquet`), so choosing a
//! checkpoint on them leaves the evaluation an unbiased estimate of how
//! well "stop at the best validation score" does; the highest point of the
//! training curve, chosen on the same noisy figures it reports, is biased
//! upwards.
//!
//! A run's checkpoints answer the validation prompts into one responses
//! file (`marlhf-eval generate`), each checkpoint a policy named by
//! [`checkpoint_name`] (`iter-006`, the run layout's directory name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use marlhf_data::{read_responses, ResponseRow};

use super::generating::{generate_responses, GenerateConfig, GenerateReport};
use crate::progress::Progress;

/// What a checkpoint is chosen by: the headline metric of the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectBy {
    /// The gold reward (tasks with a known reward: stories).
    Gold,
    /// The reward model's score.
    Score,
}

impl SelectBy {
    /// The report's name of the score kind (the compare report's tables).
    pub fn kind(self) -> &'static str {
        match self {
            SelectBy::Gold => super::comparing::GOLD,
            SelectBy::Score => super::comparing::RM_SCORE,
        }
    }

    fn value(self, r: &ResponseRow) -> Option<f64> {
        match self {
            SelectBy::Gold => r.gold.map(|g| g.reward as f64),
            SelectBy::Score => Some(r.score as f64).filter(|s| s.is_finite()),
        }
    }
}

/// The policy name of the checkpoint after `iteration` iterations.
pub fn checkpoint_name(iteration: u32) -> String {
    format!("iter-{iteration:03}")
}

/// The iteration of a [`checkpoint_name`].
pub fn parse_checkpoint_name(name: &str) -> Result<u32> {
    name.strip_prefix("iter-")
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("policy {name:?} is not a checkpoint name like iter-006"))
}

/// A run's choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The chosen checkpoint's iteration.
    pub iteration: u32,
    /// Every checkpoint's mean validation score, by iteration.
    pub validation: Vec<(u32, f64)>,
    /// Validation prompts each checkpoint answered.
    pub prompts: usize,
}

/// The checkpoint with the highest mean validation score; a tie goes to
/// the earlier checkpoint (less training for the same score). Every
/// checkpoint must have answered the same prompts.
pub fn choose(rows: &[ResponseRow], by: SelectBy, what: &Path) -> Result<Choice> {
    let mut per: BTreeMap<u32, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in rows {
        let it = parse_checkpoint_name(&r.policy)
            .map_err(|e| anyhow::anyhow!("{}: {e}", what.display()))?;
        let Some(v) = by.value(r) else {
            bail!(
                "{}: the response of {} to prompt {} has no {}",
                what.display(),
                r.policy,
                r.prompt_id,
                by.kind()
            );
        };
        per.entry(it)
            .or_default()
            .entry(r.prompt_id)
            .or_default()
            .push(v);
    }
    let Some(first) = per.values().next() else {
        bail!("{}: no validation responses", what.display());
    };
    let prompts: Vec<u64> = first.keys().copied().collect();
    let mut validation = Vec::new();
    for (&it, by_prompt) in &per {
        if by_prompt.keys().copied().collect::<Vec<_>>() != prompts {
            bail!(
                "{}: checkpoint {} answered other prompts than {}",
                what.display(),
                checkpoint_name(it),
                checkpoint_name(*per.keys().next().expect("non-empty"))
            );
        }
        // Each prompt's mean over its samples, then the mean over prompts.
        let m = by_prompt
            .values()
            .map(|v| v.iter().sum::<f64>() / v.len() as f64)
            .sum::<f64>()
            / by_prompt.len() as f64;
        validation.push((it, m));
    }
    let best = validation
        .iter()
        .fold(None::<(u32, f64)>, |best, &(it, m)| match best {
            Some(b) if b.1 >= m => Some(b),
            _ => Some((it, m)),
        })
        .expect("non-empty");
    Ok(Choice {
        iteration: best.0,
        validation,
        prompts: prompts.len(),
    })
}

#[derive(Clone, Debug)]
pub struct EarlyStopConfig {
    /// The run's validation responses (one policy per checkpoint).
    pub validation: PathBuf,
    /// Checkpoint name → its directory (the candidates of the validation
    /// file).
    pub candidates: Vec<(String, PathBuf)>,
    pub select_by: SelectBy,
    /// The name the chosen policy answers under (`GROUP.SEED`).
    pub name: String,
    /// How it answers the evaluation prompts: everything but `policies`.
    pub generate: GenerateConfig,
}

pub struct EarlyStopOutcome {
    pub choice: Choice,
    pub checkpoint: PathBuf,
    pub generated: GenerateReport,
}

/// Chooses the run's checkpoint on its validation responses and has it
/// answer the evaluation prompts.
pub fn early_stop(cfg: &EarlyStopConfig, progress: &dyn Progress) -> Result<EarlyStopOutcome> {
    super::check_name(&cfg.name)?;
    super::check_unique_names("candidate", &cfg.candidates)?;
    let rows = read_responses(&cfg.validation)?;
    let choice = choose(&rows, cfg.select_by, &cfg.validation)?;
    for (it, _) in &choice.validation {
        let name = checkpoint_name(*it);
        if !cfg.candidates.iter().any(|(n, _)| *n == name) {
            bail!(
                "{}: checkpoint {name} has validation responses but no --candidate {name}=DIR",
                cfg.validation.display()
            );
        }
    }
    let chosen = checkpoint_name(choice.iteration);
    let checkpoint = cfg
        .candidates
        .iter()
        .find(|(n, _)| *n == chosen)
        .map(|(_, d)| d.clone())
        .expect("checked above");
    let mut gen = cfg.generate.clone();
    gen.policies = vec![(cfg.name.clone(), checkpoint.clone())];
    let generated = generate_responses(&gen, progress)?;
    Ok(EarlyStopOutcome {
        choice,
        checkpoint,
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlhf_data::Gold;

    fn row(policy: &str, prompt: u64, score: f32, gold: f32) -> ResponseRow {
        ResponseRow {
            id: 0,
            prompt_id: prompt,
            policy: policy.into(),
            sample: 0,
            prompt: String::new(),
            response: String::new(),
            response_tokens: vec![],
            score,
            finished: true,
            gold: Some(Gold {
                reward: gold,
                ending: false,
                callback: false,
            }),
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(checkpoint_name(6), "iter-006");
        assert_eq!(parse_checkpoint_name("iter-012").unwrap(), 12);
        assert!(parse_checkpoint_name("ppo-n5.1234").is_err());
    }

    #[test]
    fn the_best_mean_wins_and_a_tie_goes_to_the_earlier() {
        let p = Path::new("v.parquet");
        // Gold means: iter-003 0.2, iter-006 0.5, iter-009 0.5; RM score
        // means 1, 2, 3.
        let rows = vec![
            row("iter-003", 1, 1.0, 0.1),
            row("iter-003", 2, 1.0, 0.3),
            row("iter-006", 1, 2.0, 0.4),
            row("iter-006", 2, 2.0, 0.6),
            row("iter-009", 1, 3.0, 0.5),
            row("iter-009", 2, 3.0, 0.5),
        ];
        let c = choose(&rows, SelectBy::Gold, p).unwrap();
        assert_eq!(c.iteration, 6);
        assert_eq!(c.prompts, 2);
        assert_eq!(c.validation.len(), 3);
        assert!((c.validation[0].1 - 0.2).abs() < 1e-6);
        assert_eq!(choose(&rows, SelectBy::Score, p).unwrap().iteration, 9);
        // Checkpoints that answered different prompts are refused.
        let mut bad = rows.clone();
        bad[5].prompt_id = 3;
        let e = choose(&bad, SelectBy::Gold, p).unwrap_err().to_string();
        assert!(
            e.contains("v.parquet: checkpoint iter-009 answered other prompts"),
            "{e}"
        );
        // A policy that is not a checkpoint is refused by name.
        let mut bad = rows;
        bad[0].policy = "sft".into();
        let e = choose(&bad, SelectBy::Gold, p).unwrap_err().to_string();
        assert!(e.contains("\"sft\" is not a checkpoint name"), "{e}");
    }
}
