//! The eval stage's report: mean reward-model score ± standard error per
//! policy, pairwise win rates, pass@k, and PNG plots, written as
//! `report.md` beside its images.

pub mod compare;
mod plot;
mod png;
pub mod tuning;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::judge::WinRate;

pub use plot::{
    band_curves_png, reward_curves_png, score_histograms_png, BandSeries, HEIGHT, WIDTH,
};
pub use png::{crc32, encode_rgb};

/// File names `write_report` uses inside its directory.
pub const REPORT_FILE: &str = "report.md";
pub const REWARD_CURVES_FILE: &str = "reward_curves.png";
pub const SCORES_FILE: &str = "scores.png";

/// Arithmetic mean; NaN for no values.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Standard error of the mean: the sample standard deviation (n − 1 in the
/// denominator) over √n. NaN for fewer than two values, where it is
/// undefined.
pub fn stderr_of_mean(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 2 {
        return f64::NAN;
    }
    let m = mean(xs);
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
    (var / n as f64).sqrt()
}

/// Mean and standard error of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSe {
    pub n: usize,
    pub mean: f64,
    pub se: f64,
}

pub fn mean_se(xs: &[f64]) -> MeanSe {
    MeanSe {
        n: xs.len(),
        mean: mean(xs),
        se: stderr_of_mean(xs),
    }
}

/// Reward-model scores of one policy's responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyScores {
    pub policy: String,
    pub scores: Vec<f64>,
}

/// A pairwise comparison from `policy_a`'s side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairwiseRow {
    pub policy_a: String,
    pub policy_b: String,
    /// Who judged: a model name, or "reward model".
    pub judge: String,
    pub rate: WinRate,
}

/// Mean reward per PPO iteration for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardCurve {
    pub run: String,
    /// (iteration, mean reward).
    pub points: Vec<(f64, f64)>,
}

/// pass@k of one policy on a code task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassAtKRow {
    pub policy: String,
    pub k: usize,
    pub problems: usize,
    pub pass_at_k: f64,
}

/// Everything a report shows; empty sections are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportInput {
    pub title: String,
    pub task: String,
    pub policies: Vec<PolicyScores>,
    pub pairwise: Vec<PairwiseRow>,
    pub curves: Vec<RewardCurve>,
    pub pass_at_k: Vec<PassAtKRow>,
    /// Free lines under the title (settings, seeds, judge model).
    pub notes: Vec<String>,
}

fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "–".to_string()
    }
}

/// Pipes would end a markdown table cell early.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `| policy | n | mean RM score ± s.e. |`
pub fn scores_table(policies: &[PolicyScores]) -> String {
    let mut out = String::from("| policy | n | mean RM score ± s.e. |\n| --- | ---: | ---: |\n");
    for p in policies {
        let m = mean_se(&p.scores);
        let _ = writeln!(
            out,
            "| {} | {} | {} ± {} |",
            cell(&p.policy),
            m.n,
            num(m.mean, 3),
            num(m.se, 3)
        );
    }
    out
}

/// `| A vs B | judge | n | win | tie | lose | unparseable | win rate |`
pub fn pairwise_table(rows: &[PairwiseRow]) -> String {
    let mut out = String::from(
        "| A vs B | judge | n | win | tie | lose | unparseable | win rate |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let w = &r.rate;
        let _ = writeln!(
            out,
            "| {} vs {} | {} | {} | {} | {} | {} | {} | {}% |",
            cell(&r.policy_a),
            cell(&r.policy_b),
            cell(&r.judge),
            w.n,
            w.win,
            w.tie,
            w.lose,
            w.unparseable,
            num(100.0 * w.win_rate(), 1)
        );
    }
    out
}

/// `| policy | k | problems | pass@k |`
pub fn pass_at_k_table(rows: &[PassAtKRow]) -> String {
    let mut out =
        String::from("| policy | k | problems | pass@k |\n| --- | ---: | ---: | ---: |\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}% |",
            cell(&r.policy),
            r.k,
            r.problems,
            num(100.0 * r.pass_at_k, 2)
        );
    }
    out
}

/// The markdown text of the report; `curves_png` / `scores_png` name the
/// images to embed, if any.
pub fn render_markdown(
    input: &ReportInput,
    curves_png: Option<&str>,
    scores_png: Option<&str>,
) -> String {
    let mut md = format!("# {}\n\n", input.title);
    if !input.task.is_empty() {
        let _ = writeln!(md, "Task: `{}`\n", input.task);
    }
    for note in &input.notes {
        let _ = writeln!(md, "- {note}");
    }
    if !input.notes.is_empty() {
        md.push('\n');
    }
    if !input.policies.is_empty() {
        md.push_str("## Reward-model scores\n\n");
        md.push_str(&scores_table(&input.policies));
        md.push('\n');
        if let Some(png) = scores_png {
            let _ = writeln!(
                md,
                "![Distribution of reward-model scores per policy]({png})\n"
            );
        }
    }
    if !input.pairwise.is_empty() {
        md.push_str("## Pairwise comparisons\n\n");
        md.push_str(
            "Verdicts are from A's side; the order shown to the judge was randomised per pair, and unparseable answers count in n.\n\n",
        );
        md.push_str(&pairwise_table(&input.pairwise));
        md.push('\n');
        let failed: usize = input.pairwise.iter().map(|r| r.rate.error).sum();
        if failed > 0 {
            let _ = writeln!(
                md,
                "{failed} judge request(s) failed (verdict `error` in the judgements file) and are left out of n; running the judge again asks only for them.\n"
            );
        }
    }
    if !input.pass_at_k.is_empty() {
        md.push_str("## pass@k\n\n");
        md.push_str(&pass_at_k_table(&input.pass_at_k));
        md.push('\n');
    }
    if !input.curves.is_empty() {
        md.push_str("## Training\n\n");
        if let Some(png) = curves_png {
            let _ = writeln!(md, "![Mean reward over PPO iterations]({png})\n");
        }
    }
    md
}

/// Writes `report.md` and its plots into `dir` (created if needed) and
/// returns the report's path. Each file is written under a temporary name
/// and renamed when complete; the report itself comes last, so its presence
/// means its images are in place.
pub fn write_report(dir: &Path, input: &ReportInput) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let has_scores = input
        .policies
        .iter()
        .any(|p| p.scores.iter().any(|s| s.is_finite()));
    let has_curves = input
        .curves
        .iter()
        .any(|c| c.points.iter().any(|(x, y)| x.is_finite() && y.is_finite()));
    if has_scores {
        let title = if input.task.is_empty() {
            "Reward-model scores".to_string()
        } else {
            format!("Reward-model scores ({})", input.task)
        };
        let png = score_histograms_png(&input.policies, &title)?;
        write_atomic(&dir.join(SCORES_FILE), &png)?;
    }
    if has_curves {
        let title = if input.task.is_empty() {
            "Mean reward over PPO iterations".to_string()
        } else {
            format!("Mean reward over PPO iterations ({})", input.task)
        };
        let png = reward_curves_png(&input.curves, &title)?;
        write_atomic(&dir.join(REWARD_CURVES_FILE), &png)?;
    }
    let md = render_markdown(
        input,
        has_curves.then_some(REWARD_CURVES_FILE),
        has_scores.then_some(SCORES_FILE),
    );
    let path = dir.join(REPORT_FILE);
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests;
