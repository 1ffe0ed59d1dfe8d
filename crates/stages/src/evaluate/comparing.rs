//! `compare/report.md`: several training configurations, each run with
//! several seeds, compared on their training curves and on the evaluation
//! of their final policies (`marlhf_eval::report::compare` computes and
//! renders; this module reads the runs' files into its input).
//!
//! A run is named `GROUP.SEED` (`ppo-n5.1234`): the name its final policy
//! has in the responses and judgements files, and the group it counts in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use marlhf_data::atomic::FileSet;
use marlhf_data::{read_metrics, read_responses, DataError};
use marlhf_eval::report::compare::{
    render, CompareInput, EarlyStopped, Group, Judged, SeedRun, Selection, GOLD_METRIC, KL_METRIC,
    PROXY_METRIC,
};

use super::early_stopping::{choose, Choice, SelectBy};
use super::judging::REWARD_MODEL_JUDGE;
use super::stage_bytes;
use marlhf_data::{read_judgements, read_responses_from, ResponseRow, Verdict};

/// The evaluation score kinds: the `score` column (the proxy reward model)
/// and the `gold` column (a task's known reward).
pub const RM_SCORE: &str = "RM score";
pub const GOLD: &str = "gold reward";

#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// responses.parquet files of the final policies (and any others).
    pub responses: Vec<PathBuf>,
    /// `GROUP.SEED` → the run's validation responses (one policy per
    /// checkpoint, `iter-KKK`), from which its early-stopped checkpoint is
    /// chosen (`early_stopping::choose`).
    pub validation: Vec<(String, PathBuf)>,
    /// Responses of the early-stopped policies, named `GROUP.SEED` like
    /// the final ones (`marlhf-eval early-stop`).
    pub early_responses: Vec<PathBuf>,
    /// What the early-stopped checkpoints were chosen by.
    pub select_by: SelectBy,
    /// Judgements of each group's policies against the baseline's of the
    /// same seed.
    pub judgements: Option<PathBuf>,
    /// `GROUP.SEED` → the run's directory (with its metrics.parquet).
    pub runs: Vec<(String, PathBuf)>,
    /// `GROUP` → what the report calls it.
    pub labels: Vec<(String, String)>,
    /// The group the others are compared with (default: the first).
    pub baseline: Option<String>,
    /// `marlhf-score rm-accuracy --out` on held-out pairs with known labels.
    pub rm_accuracy: Option<PathBuf>,
    /// Training metrics drawn as curves; the first one is read for the
    /// iterations to parity and the budget table.
    pub curves: Vec<String>,
    /// Training metrics drawn as curves when the runs' metrics have them
    /// (columns another version of the update may not write).
    pub optional_curves: Vec<String>,
    pub title: String,
    pub task: String,
    pub notes: Vec<String>,
    /// The report; its plots are written beside it.
    pub out: PathBuf,
}

/// `GROUP.SEED` → (GROUP, SEED).
pub fn split_run_name(name: &str) -> Result<(String, u64)> {
    let parsed = name
        .rsplit_once('.')
        .and_then(|(g, s)| Some((g, s.parse::<u64>().ok()?)))
        .filter(|(g, _)| !g.is_empty());
    match parsed {
        Some((g, s)) => Ok((g.to_string(), s)),
        None => bail!("run name {name:?} is not GROUP.SEED (e.g. ppo-n5.1234)"),
    }
}

/// What the report calls a training metric on a plot's axis.
pub fn axis_label(metric: &str) -> String {
    match metric {
        "score_mean" => "mean RM score of the rollouts".into(),
        "reward_mean" => "mean reward (score − KL penalty)".into(),
        "kl_k1_token_mean" => "KL per token, k1 (nats)".into(),
        "kl_k3_token_mean" => "KL per token, k3 (nats)".into(),
        "kl_k1_seq_sum" => "KL per response, k1 (nats)".into(),
        "entropy" => "entropy per token (nats)".into(),
        "gold_mean" => "mean gold reward of the rollouts".into(),
        "gold_ending_rate" => "share of rollouts with a proper ending".into(),
        "gold_callback_rate" => "share of rollouts with a callback".into(),
        "response_length" => "response length (tokens)".into(),
        "critic_explained_variance" => "critic's explained variance of the returns".into(),
        "critic_bias" => "critic's bias, mean(return − value)".into(),
        "advantage_position_corr" => "advantage's correlation with position".into(),
        other => other.to_string(),
    }
}

/// (iteration, value) of `metric` in a run's metrics table.
fn curve(path: &Path, metric: &str) -> Result<Vec<(u32, f64)>> {
    let rows = read_metrics(path)?;
    let points: Vec<(u32, f64)> = rows
        .iter()
        .filter_map(|r| r.get(metric).map(|v| (r.iteration, v)))
        .collect();
    if points.is_empty() {
        return Err(DataError::column(path, metric, "is missing or empty in every row").into());
    }
    Ok(points)
}

/// How one score kind is read off a response.
type ScoreOf = fn(&ResponseRow) -> f64;

/// Policy → its scores on the shared prompts, in their order.
type ScoresByPolicy = BTreeMap<String, Vec<f64>>;

/// Each policy's mean score per prompt over its samples, on the prompts
/// every named policy answered, in prompt-id order.
fn aligned_scores(
    rows: &[ResponseRow],
    policies: &[String],
    what: &str,
    value: ScoreOf,
) -> Result<(Vec<u64>, ScoresByPolicy)> {
    let mut per: BTreeMap<&str, BTreeMap<u64, (f64, usize)>> = BTreeMap::new();
    for r in rows {
        if policies.contains(&r.policy) {
            let e = per
                .entry(r.policy.as_str())
                .or_default()
                .entry(r.prompt_id)
                .or_default();
            e.0 += value(r);
            e.1 += 1;
        }
    }
    for p in policies {
        if !per.contains_key(p.as_str()) {
            bail!("{what}: no responses of policy {p:?}");
        }
    }
    let first = &per[policies[0].as_str()];
    let prompts: Vec<u64> = first
        .keys()
        .copied()
        .filter(|id| per.values().all(|m| m.contains_key(id)))
        .collect();
    if prompts.is_empty() {
        bail!("{what}: the policies answered no prompt in common");
    }
    let scores = per
        .iter()
        .map(|(p, m)| {
            let v = prompts.iter().map(|id| m[id].0 / m[id].1 as f64).collect();
            (p.to_string(), v)
        })
        .collect();
    Ok((prompts, scores))
}

/// (chosen, rejected, tie) counts of `marlhf-score rm-accuracy --out`.
fn read_rm_accuracy(path: &Path) -> Result<(usize, usize, usize)> {
    let table = marlhf_data::read_table(path)?;
    let c = marlhf_data::parquet_io::Columns::new(path, &table);
    let mut counts = (0, 0, 0);
    for (i, p) in c.string("preferred")?.iter().enumerate() {
        match p.as_str() {
            "chosen" => counts.0 += 1,
            "rejected" => counts.1 += 1,
            "tie" => counts.2 += 1,
            other => {
                return Err(DataError::cell(
                    path,
                    i + 1,
                    "preferred",
                    format!("{other:?} is not chosen, rejected or tie"),
                )
                .into())
            }
        }
    }
    Ok(counts)
}

#[derive(Debug)]
pub struct CompareOutcome {
    pub report: PathBuf,
    pub images: Vec<PathBuf>,
    pub groups: usize,
    pub runs: usize,
    pub prompts: usize,
}

/// A run's training curves: the asked-for ones (each must exist), the
/// optional ones it has, and those the report reads on its own when
/// present (gold and KL for the over-optimisation picture, the proxy score
/// for the seeds that fail to learn).
fn run_curves(cfg: &CompareConfig, metrics: &Path) -> Result<BTreeMap<String, Vec<(u32, f64)>>> {
    let mut curves = BTreeMap::new();
    for m in &cfg.curves {
        curves.insert(m.clone(), curve(metrics, m)?);
    }
    let implicit = [GOLD_METRIC, KL_METRIC, PROXY_METRIC];
    for m in cfg
        .optional_curves
        .iter()
        .map(String::as_str)
        .chain(implicit)
    {
        if !curves.contains_key(m) {
            if let Ok(c) = curve(metrics, m) {
                curves.insert(m.to_string(), c);
            }
        }
    }
    Ok(curves)
}

/// The score kinds of a task, each with how it is read off a response:
/// the gold reward first (when every response has one), then the reward
/// model's score (when every one is finite).
fn score_kinds(rows: &[ResponseRow]) -> Vec<(&'static str, ScoreOf)> {
    let kinds: [(&str, ScoreOf); 2] = [
        (GOLD, |r| r.gold.map_or(f64::NAN, |g| g.reward as f64)),
        (RM_SCORE, |r| r.score as f64),
    ];
    kinds
        .into_iter()
        .filter(|(_, value)| rows.iter().all(|r| value(r).is_finite()))
        .collect()
}

/// Each group's judgements against the baseline's run of the same seed.
fn judged(path: &Path, baseline: &str, names: &[String]) -> Result<BTreeMap<String, Judged>> {
    let mut out: BTreeMap<String, Judged> = BTreeMap::new();
    for j in read_judgements(path)? {
        let (Ok((ga, sa)), Ok((gb, sb))) =
            (split_run_name(&j.policy_a), split_run_name(&j.policy_b))
        else {
            continue;
        };
        if gb != baseline || sa != sb || !names.contains(&j.policy_a) {
            continue;
        }
        // A failed request is no judgement: the judge stage counts them and
        // asks again when rerun.
        if j.verdict == Verdict::Error {
            continue;
        }
        let g = out.entry(ga).or_default();
        g.judge_is_score_model = j.judge == REWARD_MODEL_JUDGE;
        g.judge = j.judge.clone();
        g.verdicts
            .entry(sa)
            .or_default()
            .insert(j.prompt_id, j.verdict);
    }
    if out.is_empty() {
        bail!(
            "{}: no judgement of a group's run against {baseline}'s run of the same seed",
            path.display()
        );
    }
    Ok(out)
}

pub fn compare_runs(cfg: &CompareConfig) -> Result<CompareOutcome> {
    if cfg.runs.is_empty() {
        bail!("no runs to compare: give --run GROUP.SEED=RUN_DIR");
    }
    super::check_unique_names("run", &cfg.runs)?;
    super::check_unique_names("validation", &cfg.validation)?;
    let names: Vec<String> = cfg.runs.iter().map(|(n, _)| n.clone()).collect();
    for (name, path) in &cfg.validation {
        if !names.contains(name) {
            bail!(
                "--validation {name}={}: no --run of that name",
                path.display()
            );
        }
    }
    // Groups in the order their first run is given.
    let mut groups: Vec<Group> = Vec::new();
    for (name, dir) in &cfg.runs {
        let (group, seed) = split_run_name(name)?;
        let run = SeedRun {
            seed,
            curves: run_curves(cfg, &dir.join("metrics.parquet"))?,
            ..Default::default()
        };
        match groups.iter_mut().find(|g| g.name == group) {
            Some(g) => g.runs.push(run),
            None => groups.push(Group {
                label: cfg
                    .labels
                    .iter()
                    .find(|(g, _)| *g == group)
                    .map_or(group.clone(), |(_, l)| l.clone()),
                name: group,
                runs: vec![run],
            }),
        }
    }
    for (g, _) in &cfg.labels {
        if !groups.iter().any(|x| &x.name == g) {
            bail!("--label {g:?}: no run of that group");
        }
    }
    let baseline = cfg
        .baseline
        .clone()
        .unwrap_or_else(|| groups[0].name.clone());
    if !groups.iter().any(|g| g.name == baseline) {
        bail!(
            "--baseline {baseline:?}: no run of that group (groups: {})",
            groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let listed = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = read_responses_from(&cfg.responses)?;
    let kinds = score_kinds(&rows);
    let mut score_kinds_used = Vec::new();
    let mut prompts = Vec::new();
    for &(kind, value) in &kinds {
        let (p, scores) = aligned_scores(&rows, &names, &listed(&cfg.responses), value)?;
        prompts = p;
        score_kinds_used.push(kind.to_string());
        for g in &mut groups {
            for r in &mut g.runs {
                let name = format!("{}.{}", g.name, r.seed);
                r.scores.insert(kind.to_string(), scores[&name].clone());
            }
        }
    }

    // Early stopping: each run's chosen checkpoint (from its validation
    // responses) and that policy's evaluation.
    let mut selection = None;
    if !cfg.validation.is_empty() || !cfg.early_responses.is_empty() {
        if cfg.validation.len() != names.len() {
            bail!(
                "early stopping needs every run's validation responses: {} --validation for {} runs",
                cfg.validation.len(),
                names.len()
            );
        }
        let early_rows = read_responses_from(&cfg.early_responses)?;
        let what = listed(&cfg.early_responses);
        let mut choices: BTreeMap<String, Choice> = BTreeMap::new();
        for (name, path) in &cfg.validation {
            choices.insert(
                name.clone(),
                choose(&read_responses(path)?, cfg.select_by, path)?,
            );
        }
        let mut early_scores: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
        for &(kind, value) in &kinds {
            let (p, scores) = aligned_scores(&early_rows, &names, &what, value)?;
            if p != prompts {
                bail!(
                    "{what}: the early-stopped policies answered other prompts than the final ones"
                );
            }
            early_scores.insert(kind, scores);
        }
        for g in &mut groups {
            for r in &mut g.runs {
                let name = format!("{}.{}", g.name, r.seed);
                let c = &choices[&name];
                r.early = Some(EarlyStopped {
                    iteration: c.iteration,
                    validation: c.validation.clone(),
                    scores: early_scores
                        .iter()
                        .map(|(k, s)| (k.to_string(), s[&name].clone()))
                        .collect(),
                });
            }
        }
        selection = Some(Selection {
            kind: cfg.select_by.kind().to_string(),
            prompts: choices.values().map(|c| c.prompts).min().unwrap_or(0),
        });
    }
    let rm_accuracy = cfg
        .rm_accuracy
        .as_deref()
        .map(read_rm_accuracy)
        .transpose()?;
    let judged = match &cfg.judgements {
        Some(path) => judged(path, &baseline, &names)?,
        None => BTreeMap::new(),
    };

    let mut notes = cfg.notes.clone();
    notes.push(format!(
        "{} configurations × seeds {}; final policies evaluated on the same {} prompts",
        groups.len(),
        groups
            .iter()
            .map(|g| format!(
                "{}: {}",
                g.label,
                g.runs
                    .iter()
                    .map(|r| r.seed.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .collect::<Vec<_>>()
            .join("; "),
        prompts.len()
    ));
    let curves: Vec<(String, String)> = cfg
        .curves
        .iter()
        .chain(cfg.optional_curves.iter().filter(|m| {
            !cfg.curves.contains(m)
                && groups
                    .iter()
                    .flat_map(|g| &g.runs)
                    .all(|r| r.curves.contains_key(m.as_str()))
        }))
        .map(|m| (m.clone(), axis_label(m)))
        .collect();
    let input = CompareInput {
        title: cfg.title.clone(),
        task: cfg.task.clone(),
        notes,
        baseline,
        curves,
        score_kinds: score_kinds_used,
        judged,
        rm_accuracy,
        selection,
        groups,
    };
    let (md, plots) = render(&input)?;
    let dir = match cfg.out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut files = FileSet::new();
    let mut images = Vec::new();
    for (name, png) in &plots {
        let path = dir.join(name);
        stage_bytes(&mut files, &path, png)?;
        images.push(path);
    }
    // Last, so the report appears after its images.
    stage_bytes(&mut files, &cfg.out, md.as_bytes())?;
    files.commit()?;
    Ok(CompareOutcome {
        report: cfg.out.clone(),
        images,
        groups: input.groups.len(),
        runs: cfg.runs.len(),
        prompts: prompts.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_split_at_the_last_dot() {
        assert_eq!(
            split_run_name("ppo-n5.1234").unwrap(),
            ("ppo-n5".into(), 1234)
        );
        assert_eq!(
            split_run_name("ppo-n5.v2.7").unwrap(),
            ("ppo-n5.v2".into(), 7)
        );
        for bad in ["ppo-n5", ".7", "ppo-n5.x", "ppo-n5."] {
            assert!(split_run_name(bad).is_err(), "{bad}");
        }
    }
}
