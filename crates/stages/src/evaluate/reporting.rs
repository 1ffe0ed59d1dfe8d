//! `eval/report.md`: the reward model's held-out accuracy, mean RM score ±
//! standard error per policy, win/tie/lose per comparison, pass@k, and PNG
//! plots of the score distributions and of the PPO runs' reward curves.
//!
//! The tables and plots come from `marlhf_eval::report`; this module reads
//! the stage files into its `ReportInput`, adds the reward-model section,
//! and writes the images and the report as one all-or-nothing set with the
//! report renamed into place last.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use marlhf_data::atomic::FileSet;
use marlhf_data::{read_metrics, DataError};
use marlhf_eval::report::{
    render_markdown, reward_curves_png, score_histograms_png, PolicyScores, ReportInput,
    RewardCurve, REWARD_CURVES_FILE, SCORES_FILE,
};

use super::executing::pass_at_k_rows;
use super::judging::win_rates;
use super::stage_bytes;
use marlhf_data::{read_judgements, read_passk, read_responses};

#[derive(Clone, Debug)]
pub struct ReportConfig {
    pub responses: Option<PathBuf>,
    pub judgements: Option<PathBuf>,
    pub passk: Option<PathBuf>,
    /// The k of pass@k, with `passk`.
    pub ks: Vec<usize>,
    /// The reward model's metrics.parquet (held-out accuracy).
    pub rm_metrics: Option<PathBuf>,
    /// (run name, its PPO metrics.parquet), one reward curve each.
    pub ppo_metrics: Vec<(String, PathBuf)>,
    /// The metrics column plotted over iterations.
    pub curve_metric: String,
    pub task: String,
    pub title: String,
    /// The report's path; the plots go beside it.
    pub out: PathBuf,
    /// Free lines under the title.
    pub notes: Vec<String>,
}

/// The reward model's held-out figures: the last metrics row that has
/// `val_accuracy`.
#[derive(Clone, Debug, PartialEq)]
pub struct RmHeldOut {
    pub step: u64,
    pub accuracy: f64,
    pub loss: Option<f64>,
}

pub fn rm_held_out(path: &Path) -> Result<RmHeldOut> {
    let rows = read_metrics(path)?;
    let Some(row) = rows.iter().rev().find(|r| r.get("val_accuracy").is_some()) else {
        return Err(DataError::column(
            path,
            "val_accuracy",
            if rows.is_empty() {
                "is missing: the file has no rows"
            } else {
                "is missing or null in every row: was the reward model evaluated on held-out pairs?"
            },
        )
        .into());
    };
    Ok(RmHeldOut {
        step: row.step,
        accuracy: row.get("val_accuracy").unwrap_or(f64::NAN),
        loss: row.get("val_loss"),
    })
}

/// Mean of `metric` per iteration, in iteration order.
pub fn reward_curve(run: &str, path: &Path, metric: &str) -> Result<RewardCurve> {
    let rows = read_metrics(path)?;
    let mut per_iteration: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
    for r in &rows {
        if let Some(v) = r.get(metric) {
            let e = per_iteration.entry(r.iteration).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    if per_iteration.is_empty() {
        let mut names: Vec<&str> = rows
            .iter()
            .flat_map(|r| r.values.iter().map(|(k, _)| k.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        return Err(DataError::column(
            path,
            metric,
            format!(
                "is missing or empty (columns: {}); choose another with --curve-metric",
                names.join(", ")
            ),
        )
        .into());
    }
    Ok(RewardCurve {
        run: run.to_string(),
        points: per_iteration
            .into_iter()
            .map(|(it, (sum, n))| (it as f64, sum / n as f64))
            .collect(),
    })
}

fn rm_section(rm: &RmHeldOut, path: &Path) -> String {
    let mut md = String::from("## Reward model\n\n");
    md.push_str("| metrics | step | held-out pairwise accuracy | held-out loss |\n");
    md.push_str("| --- | ---: | ---: | ---: |\n");
    let _ = writeln!(
        md,
        "| `{}` | {} | {:.2}% | {} |",
        path.display(),
        rm.step,
        100.0 * rm.accuracy,
        rm.loss.map_or("–".to_string(), |l| format!("{l:.4}"))
    );
    md.push('\n');
    md
}

/// The figures that say whether a PPO run optimised what it should: the
/// reward next to the KL from the reference and the policy's entropy, at
/// the first and the last iteration of each run.
fn training_table(runs: &[(String, PathBuf)]) -> Result<Option<String>> {
    const COLUMNS: [(&str, &str); 5] = [
        ("score_mean", "RM score"),
        ("gold_mean", "gold"),
        ("kl_k1_token_mean", "KL k1 per token"),
        ("kl_k1_seq_sum", "KL k1 per response"),
        ("entropy", "entropy per token"),
    ];
    let mut rows = Vec::new();
    for (run, path) in runs {
        let m = read_metrics(path)?;
        let (Some(first), Some(last)) = (m.first(), m.last()) else {
            continue;
        };
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(k, _)| match (first.get(k), last.get(k)) {
                (Some(a), Some(b)) => format!("{a:.4} → {b:.4}"),
                _ => "–".to_string(),
            })
            .collect();
        rows.push(format!(
            "| {run} | {} → {} | {} |",
            first.iteration,
            last.iteration,
            cells.join(" | ")
        ));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let mut md = String::from(
        "\nFirst and last iteration of each run (means over the iteration's rollouts; KL and entropy of the sampling distribution, DESIGN.md \"One sampling distribution\"):\n\n",
    );
    md.push_str("| run | iterations |");
    for (_, label) in COLUMNS {
        md.push_str(&format!(" {label} |"));
    }
    md.push_str("\n| --- | --- |");
    md.push_str(&" ---: |".repeat(COLUMNS.len()));
    md.push('\n');
    for r in rows {
        md.push_str(&r);
        md.push('\n');
    }
    Ok(Some(md))
}

/// The gold reward per policy, when every response has one: mean ±
/// standard error and how often each of its parts was earned.
fn gold_table(rows: &[marlhf_data::ResponseRow]) -> Option<String> {
    if rows.is_empty() || rows.iter().any(|r| r.gold.is_none()) {
        return None;
    }
    let mut md = String::from("## Gold reward\n\n");
    md.push_str("The task's known reward (DESIGN.md, \"The stories task\"); the policies were trained on the proxy reward model only.\n\n");
    md.push_str("| policy | n | mean gold ± s.e. | proper ending | callback |\n| --- | ---: | ---: | ---: | ---: |\n");
    let mut policies: Vec<&str> = Vec::new();
    for r in rows {
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
    }
    for p in policies {
        let golds: Vec<marlhf_data::Gold> = rows
            .iter()
            .filter(|r| r.policy == p)
            .filter_map(|r| r.gold)
            .collect();
        let m = marlhf_eval::report::mean_se(
            &golds.iter().map(|g| g.reward as f64).collect::<Vec<_>>(),
        );
        let share = |f: fn(&marlhf_data::Gold) -> bool| {
            100.0 * golds.iter().filter(|g| f(g)).count() as f64 / golds.len() as f64
        };
        let _ = writeln!(
            md,
            "| {p} | {} | {:.3} ± {:.3} | {:.1}% | {:.1}% |",
            m.n,
            m.mean,
            m.se,
            share(|g| g.ending),
            share(|g| g.callback)
        );
    }
    md.push('\n');
    Some(md)
}

/// Puts `section` before the first `## ` heading (after title and notes).
fn insert_section(md: &str, section: &str) -> String {
    match md.find("\n## ") {
        Some(at) => format!("{}{}{}", &md[..at + 1], section, &md[at + 1..]),
        None => format!("{md}{section}"),
    }
}

#[derive(Clone, Debug)]
pub struct ReportOutcome {
    pub report: PathBuf,
    pub images: Vec<PathBuf>,
    pub input: ReportInput,
    pub rm: Option<RmHeldOut>,
}

pub fn assemble_report(cfg: &ReportConfig) -> Result<ReportOutcome> {
    if cfg.responses.is_none()
        && cfg.judgements.is_none()
        && cfg.passk.is_none()
        && cfg.rm_metrics.is_none()
        && cfg.ppo_metrics.is_empty()
    {
        bail!("nothing to report: give --responses, --judgements, --passk, --rm-metrics or --ppo-metrics");
    }
    super::check_unique_names("PPO run", &cfg.ppo_metrics)?;
    let mut input = ReportInput {
        title: cfg.title.clone(),
        task: cfg.task.clone(),
        notes: cfg.notes.clone(),
        ..Default::default()
    };
    if let Some(path) = &cfg.responses {
        let rows = read_responses(path)?;
        if rows.is_empty() {
            bail!("{}: no responses", path.display());
        }
        for r in &rows {
            match input.policies.iter_mut().find(|p| p.policy == r.policy) {
                Some(p) => p.scores.push(r.score as f64),
                None => input.policies.push(PolicyScores {
                    policy: r.policy.clone(),
                    scores: vec![r.score as f64],
                }),
            }
        }
        // Responses generated without a reward model have no scores to show.
        input
            .policies
            .retain(|p| p.scores.iter().any(|s| s.is_finite()));
        let mut prompts: Vec<u64> = rows.iter().map(|r| r.prompt_id).collect();
        prompts.sort_unstable();
        prompts.dedup();
        let finished = rows.iter().filter(|r| r.finished).count();
        input.notes.push(format!(
            "{} responses to {} prompts; {} ended with EOS ({:.1}%), the rest hit the token limit",
            rows.len(),
            prompts.len(),
            finished,
            100.0 * finished as f64 / rows.len() as f64
        ));
    }
    let mut gold_section = None;
    if let Some(path) = &cfg.responses {
        gold_section = gold_table(&read_responses(path)?);
    }
    if let Some(path) = &cfg.judgements {
        let rows = read_judgements(path)?;
        if rows.is_empty() {
            bail!("{}: no judgements", path.display());
        }
        input.pairwise = win_rates(&rows);
    }
    if let Some(path) = &cfg.passk {
        let rows = read_passk(path)?;
        if rows.is_empty() {
            bail!("{}: no programs", path.display());
        }
        input.pass_at_k = pass_at_k_rows(&rows, &cfg.ks)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    for (run, path) in &cfg.ppo_metrics {
        input
            .curves
            .push(reward_curve(run, path, &cfg.curve_metric)?);
    }
    if !input.curves.is_empty() {
        input.notes.push(format!(
            "reward curves: `{}` per PPO iteration from each run's metrics.parquet",
            cfg.curve_metric
        ));
    }
    let rm = cfg.rm_metrics.as_deref().map(rm_held_out).transpose()?;
    let training = training_table(&cfg.ppo_metrics)?;

    let dir = match cfg.out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let has_scores = input
        .policies
        .iter()
        .any(|p| p.scores.iter().any(|s| s.is_finite()));
    let has_curves = input
        .curves
        .iter()
        .any(|c| c.points.iter().any(|(x, y)| x.is_finite() && y.is_finite()));
    let suffix = if cfg.task.is_empty() {
        String::new()
    } else {
        format!(" ({})", cfg.task)
    };
    let mut files = FileSet::new();
    let mut images = Vec::new();
    if has_scores {
        let png = score_histograms_png(&input.policies, &format!("Reward-model scores{suffix}"))?;
        let path = dir.join(SCORES_FILE);
        stage_bytes(&mut files, &path, &png)?;
        images.push(path);
    }
    if has_curves {
        let what = match cfg.curve_metric.as_str() {
            "score_mean" => "reward-model score".to_string(),
            "reward_mean" => "reward (score - KL penalty)".to_string(),
            other => other.to_string(),
        };
        let png = reward_curves_png(
            &input.curves,
            &format!("Mean {what} over PPO iterations{suffix}"),
        )?;
        let path = dir.join(REWARD_CURVES_FILE);
        stage_bytes(&mut files, &path, &png)?;
        images.push(path);
    }
    let mut md = render_markdown(
        &input,
        has_curves.then_some(REWARD_CURVES_FILE),
        has_scores.then_some(SCORES_FILE),
    );
    if let Some(table) = &training {
        md.push_str(table);
    }
    if let Some(section) = &gold_section {
        md = insert_section(&md, section);
    }
    if let (Some(rm), Some(path)) = (&rm, &cfg.rm_metrics) {
        md = insert_section(&md, &rm_section(rm, path));
    }
    // Staged last, so it is renamed into place after its images.
    stage_bytes(&mut files, &cfg.out, md.as_bytes())?;
    files.commit()?;
    Ok(ReportOutcome {
        report: cfg.out.clone(),
        images,
        input,
        rm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_goes_before_the_first_heading() {
        let md = "# T\n\n- note\n\n## Scores\n\nx\n";
        assert_eq!(
            insert_section(md, "## RM\n\ny\n\n"),
            "# T\n\n- note\n\n## RM\n\ny\n\n## Scores\n\nx\n"
        );
        assert_eq!(insert_section("# T\n\n", "## RM\n"), "# T\n\n## RM\n");
    }
}
