//! The evaluation stage (DESIGN.md, "eval") as library code the thin
//! `marlhf-eval` and `marlhf-serve` binaries call:
//!
//! - [`generate_responses`](generating::generate_responses): responses of several policies to a
//!   deterministic sample of `eval_prompts.parquet`, scored by the reward
//!   model → `eval/responses.parquet`;
//! - [`judge_responses`](judging::judge_responses): policy A against policy B on a sample of
//!   prompts, by the reward model offline or by any OpenAI-compatible chat
//!   endpoint → `eval/judgements.parquet`;
//! - [`execute_programs`](executing::execute_programs): APPS programs run against their tests in the
//!   sandbox → `eval/passk.parquet`, summarised as pass@k;
//! - [`assemble_report`](reporting::assemble_report): the tables and plots of all of the above
//!   and of the training metrics → `eval/report.md`;
//! - [`early_stop`](early_stopping::early_stop): a run's checkpoint with the
//!   best score on the validation prompts answers the evaluation prompts
//!   (the run's early-stopped policy);
//! - [`compare_runs`](comparing::compare_runs): several configurations × seeds, with
//!   intervals → `compare/report.md`;
//! - [`tune_report`](tuning::tune_report): the same grid for every method on
//!   the same tuning seeds, each method's setting chosen on validation
//!   prompts → `tune/report.md`;
//! - [`chat_backend`]: a checkpoint behind the chat-completions protocol.
//!
//! The model-free machinery (judging, sandbox, pass@k, plots, the HTTP
//! server) lives in `marlhf-eval`; this module connects it to models and
//! files.

pub mod chat_backend;
pub mod comparing;
pub mod early_stopping;
pub mod executing;
pub mod generating;
pub mod judging;
pub mod reporting;
pub mod tuning;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Stages `bytes` to be written at `path` when `files` commits.
pub(crate) fn stage_bytes(
    files: &mut marlhf_data::atomic::FileSet,
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<()> {
    files.stage(path, |tmp| -> Result<(), marlhf_data::DataError> {
        std::fs::write(tmp, bytes)
            .map_err(|e| marlhf_data::DataError::file(path, format!("cannot write: {e}")))
    })?;
    Ok(())
}

/// `NAME=PATH`, as `--policy sft=runs/hh-rlhf/default/sft` spells it. Names
/// become values of the `policy` column and report rows, so they are kept
/// to letters, digits and `-`, `_`, `.`.
pub fn parse_named_path(spec: &str) -> Result<(String, PathBuf)> {
    let Some((name, path)) = spec.split_once('=') else {
        bail!("{spec:?} is not NAME=PATH (e.g. sft=runs/hh-rlhf/default/sft)");
    };
    check_name(name)?;
    if path.is_empty() {
        bail!("{spec:?}: the path after '=' is empty");
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// Refuses an empty name or one with characters outside `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("a policy name must not be empty");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        bail!("policy name {name:?} contains {c:?}: use letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Refuses the same name twice in a list of named paths.
pub fn check_unique_names(what: &str, named: &[(String, PathBuf)]) -> Result<()> {
    for (i, (name, _)) in named.iter().enumerate() {
        if named[..i].iter().any(|(n, _)| n == name) {
            bail!("{what} {name:?} is given twice");
        }
    }
    Ok(())
}

/// `1,5,10` → `[1, 5, 10]`: positive, without repeats.
pub fn parse_ks(spec: &str) -> Result<Vec<usize>> {
    let mut ks = Vec::new();
    for part in spec.split(',') {
        let k: usize = part
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--k {spec:?}: {part:?} is not a whole number"))?;
        if k == 0 {
            bail!("--k {spec:?}: k must be at least 1");
        }
        if ks.contains(&k) {
            bail!("--k {spec:?}: {k} is given twice");
        }
        ks.push(k);
    }
    Ok(ks)
}

/// `n` distinct indices of `0..total` drawn with a seeded partial
/// Fisher–Yates shuffle, returned in increasing order; all of them when
/// `n >= total`. The same (total, n, seed) always gives the same subset.
pub fn sample_indices(total: usize, n: usize, seed: u64) -> Vec<usize> {
    use rand::{Rng, SeedableRng};
    if n >= total {
        return (0..total).collect();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut pool: Vec<usize> = (0..total).collect();
    for i in 0..n {
        let j = rng.random_range(i..total);
        pool.swap(i, j);
    }
    let mut picked = pool[..n].to_vec();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_paths_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_named_path("ma-ppo=runs/x/ppo-n5/iter-004/actor").unwrap(),
            (
                "ma-ppo".to_string(),
                PathBuf::from("runs/x/ppo-n5/iter-004/actor")
            )
        );
        // Only the first '=' splits: paths may contain '='.
        assert_eq!(parse_named_path("a=b=c").unwrap().1, PathBuf::from("b=c"));
        assert_eq!(
            parse_named_path("sft").unwrap_err().to_string(),
            "\"sft\" is not NAME=PATH (e.g. sft=runs/hh-rlhf/default/sft)"
        );
        assert_eq!(
            parse_named_path("a b=x").unwrap_err().to_string(),
            "policy name \"a b\" contains ' ': use letters, digits, '-', '_' and '.'"
        );
        assert!(parse_named_path("=x").is_err());
        assert!(parse_named_path("x=").is_err());
        let twice = vec![
            ("a".to_string(), PathBuf::from("1")),
            ("a".to_string(), PathBuf::from("2")),
        ];
        assert_eq!(
            check_unique_names("policy", &twice)
                .unwrap_err()
                .to_string(),
            "policy \"a\" is given twice"
        );
    }

    #[test]
    fn ks_parse() {
        assert_eq!(parse_ks("1,5, 10").unwrap(), vec![1, 5, 10]);
        assert!(parse_ks("0").is_err());
        assert!(parse_ks("1,1").is_err());
        assert!(parse_ks("1,x").is_err());
    }

    #[test]
    fn sampled_indices_are_a_seeded_sorted_subset() {
        let a = sample_indices(100, 10, 1234);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
        assert!(a.iter().all(|&i| i < 100));
        assert_eq!(a, sample_indices(100, 10, 1234));
        assert_ne!(a, sample_indices(100, 10, 1235));
        assert_eq!(sample_indices(3, 10, 1), vec![0, 1, 2]);
        assert_eq!(sample_indices(3, 3, 1), vec![0, 1, 2]);
        assert!(sample_indices(5, 0, 1).is_empty());
        // Every index is reachable: over many seeds each of 0..5 gets picked.
        let mut seen = [false; 5];
        for s in 0..200 {
            for i in sample_indices(5, 1, s) {
                seen[i] = true;
            }
        }
        assert_eq!(seen, [true; 5]);
    }
}
