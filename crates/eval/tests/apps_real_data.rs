//! The sandbox on real APPS problems: published solutions must pass their
//! own tests, and a solution to another problem must not. Reads the raw
//! data from `$RAW` or `../shared/data` beside the repository (ignored by a
//! plain `cargo test`; `make test` runs it, and fails where neither is there).

use std::path::PathBuf;

use marlhf_eval::passk::{count_per_problem, mean_pass_at_k};
use marlhf_eval::sandbox::{Sandbox, SandboxConfig, TestCases};

fn raw_dir() -> PathBuf {
    match std::env::var_os("RAW") {
        Some(dir) => PathBuf::from(dir),
        None => {
            marlhf_testkit::shared("data/apps/train_subset.jsonl");
            marlhf_testkit::shared("data")
        }
    }
}

struct Problem {
    id: u64,
    tests: TestCases,
    solutions: Vec<String>,
}

fn problems(dir: &std::path::Path) -> Vec<Problem> {
    let text = std::fs::read_to_string(dir.join("apps/train_subset.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let solutions: Vec<String> =
                serde_json::from_str(row["solutions"].as_str().unwrap()).unwrap();
            Problem {
                id: row["problem_id"].as_u64().unwrap(),
                tests: TestCases::from_json(row["input_output"].as_str().unwrap()).unwrap(),
                solutions,
            }
        })
        .collect()
}

#[test]
#[ignore = "needs ../shared"]
fn published_solutions_pass_and_swapped_ones_fail() {
    let dir = raw_dir();
    let problems = problems(&dir);
    assert!(problems.len() >= 2);
    let sandbox = Sandbox::new(SandboxConfig {
        stop_at_first_failure: true,
        // Without root the only way to run them; as root they run as nobody.
        allow_same_user: true,
        // Only where bubblewrap cannot make namespaces.
        allow_without_namespaces: true,
        ..SandboxConfig::default()
    })
    .unwrap();
    let mut samples = Vec::new();
    for (i, p) in problems.iter().enumerate() {
        let own = sandbox.run_program(&p.solutions[0], &p.tests).unwrap();
        assert!(own.passed(), "problem {}: {:?}", p.id, own.tests);
        samples.push((p.id, true));
        let other = &problems[(i + 1) % problems.len()].solutions[0];
        let swapped = sandbox.run_program(other, &p.tests).unwrap();
        assert!(
            !swapped.passed(),
            "problem {} passed with another problem's code",
            p.id
        );
        samples.push((p.id, false));
    }
    // Each problem: 2 samples, 1 correct.
    let counts = count_per_problem(samples);
    assert!((mean_pass_at_k(&counts, 1).unwrap() - 0.5).abs() < 1e-12);
    assert!((mean_pass_at_k(&counts, 2).unwrap() - 1.0).abs() < 1e-12);
}
