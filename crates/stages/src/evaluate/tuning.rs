//! `tune/report.md`: the same grid of settings for every method on the
//! same tuning seeds, each method's setting chosen on its runs' validation
//! responses (`marlhf_eval::report::tuning` ranks and renders; this module
//! reads the files).

use std::path::PathBuf;

use anyhow::{bail, Result};
use marlhf_data::read_responses;
use marlhf_eval::report::tuning::{render, TuningInput, TuningRun};

use super::comparing::split_run_name;
use super::early_stopping::{choose, SelectBy};
use super::stage_bytes;

#[derive(Clone, Debug)]
pub struct TuneConfig {
    /// `POINT/GROUP.SEED` → the run's validation responses (one policy per
    /// checkpoint, `iter-KKK`, as `make compare-validation` writes them).
    pub validation: Vec<(String, PathBuf)>,
    /// `POINT` → its settings (make variables), shown in the report.
    pub settings: Vec<(String, String)>,
    /// `GROUP` → what the report calls it.
    pub labels: Vec<(String, String)>,
    pub select_by: SelectBy,
    pub title: String,
    pub out: PathBuf,
}

/// `POINT/GROUP.SEED` → (POINT, GROUP, SEED).
pub fn split_tuning_name(name: &str) -> Result<(String, String, u64)> {
    let Some((point, run)) = name.split_once('/') else {
        bail!("{name:?} is not POINT/GROUP.SEED (e.g. lr1e-4/ppo-n5.98)");
    };
    if point.is_empty() {
        bail!("{name:?}: the point before '/' is empty");
    }
    let (group, seed) = split_run_name(run)?;
    Ok((point.to_string(), group, seed))
}

pub struct TuneOutcome {
    pub report: PathBuf,
    /// Each group's chosen point.
    pub chosen: Vec<(String, String)>,
    pub runs: usize,
}

pub fn tune_report(cfg: &TuneConfig) -> Result<TuneOutcome> {
    let mut runs = Vec::new();
    let mut prompts = usize::MAX;
    for (name, path) in &cfg.validation {
        let (point, group, seed) = split_tuning_name(name)?;
        if runs
            .iter()
            .any(|r: &TuningRun| r.point == point && r.group == group && r.seed == seed)
        {
            bail!("--validation {name} is given twice");
        }
        let c = choose(&read_responses(path)?, cfg.select_by, path)?;
        prompts = prompts.min(c.prompts);
        runs.push(TuningRun {
            point,
            group,
            seed,
            validation: c.validation,
        });
    }
    let input = TuningInput {
        title: cfg.title.clone(),
        kind: cfg.select_by.kind().to_string(),
        prompts: if runs.is_empty() { 0 } else { prompts },
        runs,
        labels: cfg.labels.clone(),
        settings: cfg.settings.clone(),
    };
    let (md, chosen) = render(&input)?;
    let mut files = marlhf_data::atomic::FileSet::new();
    stage_bytes(&mut files, &cfg.out, md.as_bytes())?;
    files.commit()?;
    Ok(TuneOutcome {
        report: cfg.out.clone(),
        chosen,
        runs: input.runs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_names_split() {
        assert_eq!(
            split_tuning_name("lr1e-4-kl0.1/ppo-n5.98").unwrap(),
            ("lr1e-4-kl0.1".into(), "ppo-n5".into(), 98)
        );
        for bad in ["ppo-n5.98", "/ppo-n5.98", "a/ppo-n5"] {
            assert!(split_tuning_name(bad).is_err(), "{bad}");
        }
    }
}
