//! Writes a report with made-up numbers into the directory given as the
//! first argument, to look at the tables and plots:
//! `cargo run --release -p marlhf-eval --example demo_report -- /tmp/report`.

use marlhf_eval::judge::WinRate;
use marlhf_eval::report::{write_report, PairwiseRow, PolicyScores, ReportInput, RewardCurve};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: demo_report DIR"))?;
    // A fixed, smooth pseudo-random sequence: no RNG needed for a demo.
    let noise = |i: usize| ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 1.6;
    let scores = |shift: f64| {
        (0..400)
            .map(|i| shift + noise(i) + noise(i * 3) * 0.5)
            .collect()
    };
    let curve = |gain: f64| {
        (0..20)
            .map(|i| {
                (
                    i as f64,
                    -0.8 + gain * (1.0 - (-(i as f64) / 6.0).exp()) + noise(i) * 0.05,
                )
            })
            .collect()
    };
    let input = ReportInput {
        title: "marlhf evaluation (demo data)".into(),
        task: "tldr".into(),
        policies: vec![
            PolicyScores {
                policy: "SFT".into(),
                scores: scores(-0.4),
            },
            PolicyScores {
                policy: "PPO".into(),
                scores: scores(0.3),
            },
            PolicyScores {
                policy: "MA-PPO (fixed 5)".into(),
                scores: scores(0.8),
            },
        ],
        pairwise: vec![PairwiseRow {
            policy_a: "MA-PPO (fixed 5)".into(),
            policy_b: "PPO".into(),
            judge: "gpt-4o".into(),
            rate: WinRate {
                win: 58,
                tie: 9,
                lose: 31,
                unparseable: 2,
                n: 100,
                error: 0,
            },
        }],
        curves: vec![
            RewardCurve {
                run: "PPO".into(),
                points: curve(1.1),
            },
            RewardCurve {
                run: "MA-PPO (fixed 5)".into(),
                points: curve(1.6),
            },
        ],
        pass_at_k: vec![],
        notes: vec!["demo numbers, not a real run".into()],
    };
    let path = write_report(dir.as_ref(), &input)?;
    println!("{}", path.display());
    Ok(())
}
