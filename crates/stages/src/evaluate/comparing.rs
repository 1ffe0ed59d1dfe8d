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
use marlhf_data::{read_metrics, DataError};
use marlhf_eval::judge::Verdict;
use marlhf_eval::report::compare::{
    render, CompareInput, Group, SeedRun, Verdicts, GOLD_METRIC, KL_METRIC,
};

use super::stage_bytes;
use marlhf_data::{read_judgements, read_responses_from, ResponseRow};

/// The evaluation score kinds: the `score` column (the proxy reward model)
/// and the `gold` column (a task's known reward).
pub const RM_SCORE: &str = "RM score";
pub const GOLD: &str = "gold reward";

#[derive(Clone, Debug)]
pub struct CompareConfig {
    /// responses.parquet files of the final policies (and any others).
    pub responses: Vec<PathBuf>,
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
    /// iterations to parity.
    pub curves: Vec<String>,
    pub title: String,
    pub task: String,
    pub notes: Vec<String>,
    pub seed: u64,
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

pub struct CompareOutcome {
    pub report: PathBuf,
    pub images: Vec<PathBuf>,
    pub groups: usize,
    pub runs: usize,
    pub prompts: usize,
}

pub fn compare_runs(cfg: &CompareConfig) -> Result<CompareOutcome> {
    if cfg.runs.is_empty() {
        bail!("no runs to compare: give --run GROUP.SEED=RUN_DIR");
    }
    super::check_unique_names("run", &cfg.runs)?;
    // Groups in the order their first run is given.
    let mut groups: Vec<Group> = Vec::new();
    for (name, dir) in &cfg.runs {
        let (group, seed) = split_run_name(name)?;
        let metrics = dir.join("metrics.parquet");
        let mut curves = BTreeMap::new();
        for m in &cfg.curves {
            curves.insert(m.clone(), curve(&metrics, m)?);
        }
        // The over-optimisation picture, when the task has a gold reward.
        for m in [GOLD_METRIC, KL_METRIC] {
            if !curves.contains_key(m) {
                if let Ok(c) = curve(&metrics, m) {
                    curves.insert(m.to_string(), c);
                }
            }
        }
        let run = SeedRun {
            seed,
            curves,
            scores: BTreeMap::new(),
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

    let names: Vec<String> = cfg.runs.iter().map(|(n, _)| n.clone()).collect();
    let what = cfg
        .responses
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let rows = read_responses_from(&cfg.responses)?;
    let has_gold = rows.iter().all(|r| r.gold.is_some());
    let mut score_kinds = Vec::new();
    let mut prompts = Vec::new();
    // The gold reward, when there is one, is what the comparison is about.
    let kinds: [(&str, ScoreOf); 2] = [
        (GOLD, |r| r.gold.map_or(f64::NAN, |g| g.reward as f64)),
        (RM_SCORE, |r| r.score as f64),
    ];
    for (kind, value) in kinds {
        if kind == GOLD && !has_gold {
            continue;
        }
        let (p, scores) = aligned_scores(&rows, &names, &what, value)?;
        if !scores.values().flatten().all(|s| s.is_finite()) {
            continue;
        }
        prompts = p;
        score_kinds.push(kind.to_string());
        for g in &mut groups {
            for r in &mut g.runs {
                let name = format!("{}.{}", g.name, r.seed);
                r.scores.insert(kind.to_string(), scores[&name].clone());
            }
        }
    }
    let rm_accuracy = cfg
        .rm_accuracy
        .as_deref()
        .map(read_rm_accuracy)
        .transpose()?;

    let mut verdicts: BTreeMap<String, Verdicts> = BTreeMap::new();
    if let Some(path) = &cfg.judgements {
        let judged = read_judgements(path)?;
        for j in &judged {
            let (Ok((ga, sa)), Ok((gb, sb))) =
                (split_run_name(&j.policy_a), split_run_name(&j.policy_b))
            else {
                continue;
            };
            if gb != baseline || sa != sb || !names.contains(&j.policy_a) {
                continue;
            }
            let v = verdicts.entry(ga).or_default();
            v.judge = j.judge.clone();
            match j.verdict {
                Verdict::Win => v.win += 1,
                Verdict::Tie => v.tie += 1,
                Verdict::Lose => v.lose += 1,
                Verdict::Unparseable => v.unparseable += 1,
                // A failed request is no judgement (the judge stage says
                // how many, and asks again when rerun).
                Verdict::Error => {}
            }
        }
        if verdicts.is_empty() {
            bail!(
                "{}: no judgement of a group's run against {baseline}'s run of the same seed",
                path.display()
            );
        }
    }

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
    let input = CompareInput {
        title: cfg.title.clone(),
        task: cfg.task.clone(),
        notes,
        baseline,
        curves: cfg
            .curves
            .iter()
            .map(|m| (m.clone(), axis_label(m)))
            .collect(),
        score_kinds,
        verdicts,
        rm_accuracy,
        seed: cfg.seed,
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
