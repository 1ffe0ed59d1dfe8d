//! The tuning report (`scripts/tune-stories.sh`, `marlhf-eval tune`): every
//! method gets the same grid of settings on the same tuning seeds, and each
//! method's setting is the one with the best mean validation score of its
//! final policies, averaged over the tuning seeds. Validation prompts are
//! disjoint from the training and evaluation prompts, and the tuning seeds
//! are seeds no comparison uses, so the comparison's evaluation never
//! informs the choice.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::{cell, num};
use crate::stats::mean;

/// One tuning run: a method (group) at a grid point with a tuning seed,
/// and its checkpoints' mean validation scores.
#[derive(Clone, Debug, PartialEq)]
pub struct TuningRun {
    pub point: String,
    pub group: String,
    pub seed: u64,
    /// (iteration, mean validation score), in iteration order.
    pub validation: Vec<(u32, f64)>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TuningInput {
    pub title: String,
    /// The score kind the validation scores are (e.g. "gold reward").
    pub kind: String,
    /// Validation prompts each checkpoint answered.
    pub prompts: usize,
    pub runs: Vec<TuningRun>,
    /// Group → what the report calls it (e.g. ppo-n5 → fixed:5).
    pub labels: Vec<(String, String)>,
    /// Point → its settings as make variables, shown and repeated in the
    /// line that applies the choice.
    pub settings: Vec<(String, String)>,
}

/// One method's figures at one point.
#[derive(Clone, Debug, PartialEq)]
pub struct PointFigures {
    pub point: String,
    /// Per seed, the final checkpoint's mean validation score.
    pub finals: Vec<(u64, f64)>,
    /// Per seed, the best checkpoint's (iteration, score).
    pub best: Vec<(u64, u32, f64)>,
}

impl PointFigures {
    pub fn final_mean(&self) -> f64 {
        mean(&self.finals.iter().map(|f| f.1).collect::<Vec<_>>())
    }
    pub fn best_mean(&self) -> f64 {
        mean(&self.best.iter().map(|b| b.2).collect::<Vec<_>>())
    }
}

/// Per group (in the order first seen), its points (in the order first
/// seen); refuses a grid where the methods did not get the same points and
/// seeds (an unequal tuning budget).
pub fn figures(input: &TuningInput) -> Result<Vec<(String, Vec<PointFigures>)>> {
    let mut groups: Vec<String> = Vec::new();
    let mut points: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), Vec<&TuningRun>> = BTreeMap::new();
    for r in &input.runs {
        if !groups.contains(&r.group) {
            groups.push(r.group.clone());
        }
        if !points.contains(&r.point) {
            points.push(r.point.clone());
        }
        if r.validation.is_empty() {
            bail!("{} {}.{}: no validation scores", r.point, r.group, r.seed);
        }
        cells
            .entry((r.group.clone(), r.point.clone()))
            .or_default()
            .push(r);
    }
    if groups.is_empty() {
        bail!("no tuning runs");
    }
    let seeds_of = |g: &str, p: &str| -> BTreeSet<u64> {
        cells
            .get(&(g.to_string(), p.to_string()))
            .map_or(BTreeSet::new(), |rs| rs.iter().map(|r| r.seed).collect())
    };
    let budget = seeds_of(&groups[0], &points[0]);
    for g in &groups {
        for p in &points {
            let seeds = seeds_of(g, p);
            if seeds != budget || cells[&(g.clone(), p.clone())].len() != seeds.len() {
                bail!(
                    "unequal tuning budget: {g} at {p} ran seeds {seeds:?}, {} at {} ran {budget:?}; every method needs every point with the same seeds, once each",
                    groups[0],
                    points[0]
                );
            }
        }
    }
    Ok(groups
        .iter()
        .map(|g| {
            let figs = points
                .iter()
                .map(|p| {
                    let runs = &cells[&(g.clone(), p.clone())];
                    PointFigures {
                        point: p.clone(),
                        finals: runs
                            .iter()
                            .map(|r| (r.seed, r.validation.last().expect("non-empty").1))
                            .collect(),
                        best: runs
                            .iter()
                            .map(|r| {
                                let b = r.validation.iter().fold(r.validation[0], |b, &v| {
                                    if v.1 > b.1 {
                                        v
                                    } else {
                                        b
                                    }
                                });
                                (r.seed, b.0, b.1)
                            })
                            .collect(),
                    }
                })
                .collect();
            (g.clone(), figs)
        })
        .collect())
}

/// Each group's chosen point: the highest mean final validation score (a
/// tie goes to the point listed first).
pub fn choose(figs: &[(String, Vec<PointFigures>)]) -> Vec<(String, String)> {
    figs.iter()
        .map(|(g, points)| {
            let best = points
                .iter()
                .fold(None::<&PointFigures>, |best, p| match best {
                    Some(b) if b.final_mean() >= p.final_mean() => Some(b),
                    _ => Some(p),
                })
                .expect("every group has points");
            (g.clone(), best.point.clone())
        })
        .collect()
}

/// The report, and each group's chosen point.
pub fn render(input: &TuningInput) -> Result<(String, Vec<(String, String)>)> {
    let figs = figures(input)?;
    let chosen = choose(&figs);
    let label = |g: &str| {
        input
            .labels
            .iter()
            .find(|(n, _)| n == g)
            .map_or(g.to_string(), |(_, l)| l.clone())
    };
    let setting = |p: &str| {
        input
            .settings
            .iter()
            .find(|(n, _)| n == p)
            .map_or(String::new(), |(_, s)| s.clone())
    };
    let seeds: Vec<String> = figs[0].1[0]
        .finals
        .iter()
        .map(|f| f.0.to_string())
        .collect();
    let mut md = format!("# {}\n\n", input.title);
    let _ = writeln!(
        md,
        "Budget, the same for every method: {} settings × {} tuning seeds ({}), {} runs per method. Criterion: the mean {} of the final policy on {} validation prompts (disjoint from the training and evaluation prompts), averaged over the tuning seeds; the highest wins (a tie: the setting listed first). The best checkpoint's score is shown too: it is what early stopping would get, and it is biased upwards as the maximum over checkpoints.\n",
        figs[0].1.len(),
        seeds.len(),
        seeds.join(", "),
        figs[0].1.len() * seeds.len(),
        input.kind,
        input.prompts
    );
    for (g, points) in &figs {
        let pick = &chosen.iter().find(|(n, _)| n == g).expect("chosen").1;
        let _ = writeln!(md, "## {}\n", label(g));
        md.push_str("| setting | make variables | final policy, per seed | mean | best checkpoint, per seed (iteration) | mean |\n| --- | --- | --- | ---: | --- | ---: |\n");
        for p in points {
            let mark = |s: String| {
                if &p.point == pick {
                    format!("**{s}**")
                } else {
                    s
                }
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                mark(cell(&p.point)),
                cell(&setting(&p.point)),
                p.finals
                    .iter()
                    .map(|f| num(f.1, 3))
                    .collect::<Vec<_>>()
                    .join(", "),
                mark(num(p.final_mean(), 3)),
                p.best
                    .iter()
                    .map(|b| format!("{} ({})", num(b.2, 3), b.1))
                    .collect::<Vec<_>>()
                    .join(", "),
                num(p.best_mean(), 3)
            );
        }
        md.push('\n');
    }
    md.push_str("## Chosen\n\n");
    for (g, p) in &chosen {
        let _ = writeln!(
            md,
            "- {}: `{p}`; to run the comparison with it, `PPO_SETTINGS_{} = {}`",
            label(g),
            label(g).replace(':', "-"),
            setting(p)
        );
    }
    md.push('\n');
    Ok((md, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(point: &str, group: &str, seed: u64, v: &[f64]) -> TuningRun {
        TuningRun {
            point: point.into(),
            group: group.into(),
            seed,
            validation: v
                .iter()
                .enumerate()
                .map(|(i, &x)| (3 * (i as u32 + 1), x))
                .collect(),
        }
    }

    fn input() -> TuningInput {
        TuningInput {
            title: "tuning".into(),
            kind: "gold reward".into(),
            prompts: 100,
            runs: vec![
                // PPO: point a ends higher (0.3 against 0.2), b peaks higher.
                run("a", "ppo-n1", 98, &[0.1, 0.4, 0.3]),
                run("a", "ppo-n1", 99, &[0.1, 0.3, 0.3]),
                run("b", "ppo-n1", 98, &[0.5, 0.2, 0.2]),
                run("b", "ppo-n1", 99, &[0.5, 0.2, 0.2]),
                // MA-PPO: b ends higher.
                run("a", "ppo-n5", 98, &[0.0, 0.1, 0.1]),
                run("a", "ppo-n5", 99, &[0.0, 0.1, 0.1]),
                run("b", "ppo-n5", 98, &[0.0, 0.1, 0.4]),
                run("b", "ppo-n5", 99, &[0.0, 0.1, 0.2]),
            ],
            labels: vec![
                ("ppo-n1".into(), "fixed:1".into()),
                ("ppo-n5".into(), "fixed:5".into()),
            ],
            settings: vec![
                ("a".into(), "PPO_KL=0.1".into()),
                ("b".into(), "PPO_KL=0.05".into()),
            ],
        }
    }

    #[test]
    fn each_method_gets_its_best_final_setting() {
        let (md, chosen) = render(&input()).unwrap();
        assert_eq!(
            chosen,
            vec![
                ("ppo-n1".to_string(), "a".to_string()),
                ("ppo-n5".to_string(), "b".to_string())
            ]
        );
        assert!(md.contains("Budget, the same for every method: 2 settings × 2 tuning seeds (98, 99), 4 runs per method."), "{md}");
        // fixed:1 at a: finals 0.3, 0.3; best 0.4 (6) and 0.3 (6).
        assert!(
            md.contains(
                "| **a** | PPO_KL=0.1 | 0.300, 0.300 | **0.300** | 0.400 (6), 0.300 (6) | 0.350 |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| b | PPO_KL=0.05 | 0.200, 0.200 | 0.200 | 0.500 (3), 0.500 (3) | 0.500 |"
            ),
            "{md}"
        );
        assert!(md.contains("- fixed:5: `b`; to run the comparison with it, `PPO_SETTINGS_fixed-5 = PPO_KL=0.05`"), "{md}");
    }

    #[test]
    fn an_unequal_budget_is_refused() {
        let mut i = input();
        i.runs.pop();
        let e = render(&i).unwrap_err().to_string();
        assert!(
            e.contains("unequal tuning budget: ppo-n5 at b ran seeds {98}"),
            "{e}"
        );
        let mut i = input();
        i.runs.push(run("b", "ppo-n5", 99, &[0.0]));
        assert!(render(&i).unwrap_err().to_string().contains("once each"));
    }
}
