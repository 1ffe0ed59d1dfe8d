//! pass@k on APPS: every generated program runs against its problem's
//! tests in `marlhf_eval`'s sandbox (python3 in namespaces of its own, with
//! time, memory and process budgets and no network), and pass@k is the
//! unbiased estimator of Chen et al. averaged over problems.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use marlhf_data::read_prompts;
use marlhf_eval::passk::{count_per_problem, mean_pass_at_k};
use marlhf_eval::report::PassAtKRow;
use marlhf_eval::sandbox::{Isolation, Sandbox, SandboxConfig, TestCases};

use crate::progress::Progress;
use marlhf_data::{read_responses, write_passk, PasskRow};

#[derive(Clone, Debug)]
pub struct PasskConfig {
    pub responses: PathBuf,
    /// The prompts the responses answer, with their `tests`.
    pub prompts: PathBuf,
    pub ks: Vec<usize>,
    pub out: PathBuf,
    pub python: PathBuf,
    /// Run programs as the caller when the sandbox cannot switch to
    /// `nobody` (not root); see `SandboxConfig::allow_same_user`.
    pub allow_same_user: bool,
    /// Run programs without namespaces where bubblewrap cannot make them;
    /// see `SandboxConfig::allow_without_namespaces`.
    pub allow_without_namespaces: bool,
    /// Wall-clock limit per test.
    pub timeout: Duration,
    /// Memory of each program's processes together.
    pub memory_bytes: u64,
    /// Size of each program's private /tmp, /var/tmp and /dev/shm.
    pub tmp_bytes: u64,
    /// Programs run at once (1 without namespaces, where programs could
    /// kill each other's processes).
    pub jobs: usize,
}

#[derive(Clone, Debug)]
pub struct PasskReport {
    pub programs: usize,
    pub passed: usize,
    pub pass_at_k: Vec<PassAtKRow>,
    pub drops_privileges: bool,
    pub network: String,
    pub isolation: Isolation,
    /// What the sandbox could not enforce here, one line each.
    pub weaknesses: Vec<String>,
    /// Programs run at once.
    pub jobs: usize,
    /// The interpreter the programs ran with.
    pub python: PathBuf,
    /// Why that is not the one asked for, when it is not.
    pub python_note: Option<String>,
}

/// The program in a response: the body of the first fenced code block when
/// there is one (models often answer in markdown), else the whole text.
pub fn extract_code(response: &str) -> &str {
    let Some(start) = response.find("```") else {
        return response;
    };
    let after = &response[start + 3..];
    // Skip the info string (`python`, `py3`…) up to the end of its line.
    let body = match after.find('\n') {
        Some(nl) => &after[nl + 1..],
        None => return response,
    };
    match body.find("```") {
        Some(end) => &body[..end],
        None => body,
    }
}

/// pass@k per policy (in order of first appearance) for each k. Every
/// problem of a policy needs at least k samples.
pub fn pass_at_k_rows(rows: &[PasskRow], ks: &[usize]) -> Result<Vec<PassAtKRow>> {
    let mut policies: Vec<&str> = Vec::new();
    for r in rows {
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
    }
    let mut out = Vec::new();
    for policy in policies {
        let counts = count_per_problem(
            rows.iter()
                .filter(|r| r.policy == policy)
                .map(|r| (r.prompt_id, r.passed)),
        );
        for &k in ks {
            let pass_at_k = mean_pass_at_k(&counts, k).map_err(|e| {
                anyhow::anyhow!(
                    "policy {policy:?}: {e} (generate more samples with --samples-per-prompt)"
                )
            })?;
            out.push(PassAtKRow {
                policy: policy.to_string(),
                k,
                problems: counts.len(),
                pass_at_k,
            });
        }
    }
    Ok(out)
}

pub fn execute_programs(cfg: &PasskConfig, progress: &dyn Progress) -> Result<PasskReport> {
    if cfg.ks.is_empty() {
        bail!("--k needs at least one value");
    }
    let responses = read_responses(&cfg.responses)?;
    if responses.is_empty() {
        bail!("{}: no responses", cfg.responses.display());
    }
    let prompts = read_prompts(&cfg.prompts)?;
    let mut tests: HashMap<u64, TestCases> = HashMap::new();
    for (row, p) in prompts.iter().enumerate() {
        if let Some(json) = &p.tests {
            let cases = TestCases::from_json(json).map_err(|e| {
                anyhow::anyhow!(
                    "{}: row {}, column \"tests\": {e:#}",
                    cfg.prompts.display(),
                    row + 1
                )
            })?;
            tests.insert(p.id, cases);
        }
    }
    for r in &responses {
        match tests.get(&r.prompt_id) {
            None => bail!(
                "{}: response {} answers prompt {}, which has no tests in {}",
                cfg.responses.display(),
                r.id,
                r.prompt_id,
                cfg.prompts.display()
            ),
            Some(t) if t.is_empty() => bail!(
                "{}: prompt {} has an empty test list; pass@k cannot be measured on it",
                cfg.prompts.display(),
                r.prompt_id
            ),
            Some(_) => {}
        }
    }
    let sandbox = Sandbox::new(SandboxConfig {
        python: cfg.python.clone(),
        allow_same_user: cfg.allow_same_user,
        allow_without_namespaces: cfg.allow_without_namespaces,
        timeout: cfg.timeout,
        memory_bytes: cfg.memory_bytes,
        tmp_bytes: cfg.tmp_bytes,
        stop_at_first_failure: false,
        ..SandboxConfig::default()
    })?;
    for line in sandbox.weaknesses() {
        progress.note(&format!("pass@k sandbox: {line}"));
    }
    // Without a PID namespace per test, a program's kill(-1) would reach
    // the programs running beside it, and pass@k would depend on --jobs.
    let jobs = if sandbox.isolation().namespaces {
        cfg.jobs.max(1)
    } else {
        1
    };

    // Programs are independent: a pool of workers takes the next index;
    // results land in their own slot, so the output order is fixed.
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<PasskRow>>>> =
        responses.iter().map(|_| Mutex::new(None)).collect();
    let pb = progress.bar(responses.len() as u64, "sandbox");
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = responses.get(i) else { break };
                let cases = &tests[&r.prompt_id];
                let result = sandbox
                    .run_program(extract_code(&r.response), cases)
                    .map(|p| PasskRow {
                        id: r.id,
                        prompt_id: r.prompt_id,
                        policy: r.policy.clone(),
                        sample: r.sample,
                        passed: p.passed(),
                        pass_fraction: p.pass_fraction(),
                        outcome: p.first_failure().as_str().to_string(),
                        tests: p.total as u32,
                    });
                *results[i].lock().expect("no panics while holding") = Some(result);
                pb.inc(1);
            });
        }
    });
    pb.finish();
    let rows: Vec<PasskRow> = results
        .into_iter()
        .map(|m| m.into_inner().expect("no panics").expect("every index ran"))
        .collect::<Result<_>>()?;
    let pass_at_k = pass_at_k_rows(&rows, &cfg.ks)?;
    write_passk(&cfg.out, &rows)?;
    Ok(PasskReport {
        programs: rows.len(),
        passed: rows.iter().filter(|r| r.passed).count(),
        pass_at_k,
        drops_privileges: sandbox.drops_privileges(),
        network: format!("{:?}", sandbox.network_isolation()),
        isolation: sandbox.isolation(),
        weaknesses: sandbox.weaknesses().to_vec(),
        jobs,
        python: sandbox.python().to_path_buf(),
        python_note: sandbox.note().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_comes_out_of_fences() {
        assert_eq!(extract_code("print(1)\n"), "print(1)\n");
        assert_eq!(
            extract_code("Here you go:\n```python\nprint(2)\n```\nDone."),
            "print(2)\n"
        );
        assert_eq!(extract_code("```\nx = 1\n"), "x = 1\n");
        assert_eq!(extract_code("``` no newline"), "``` no newline");
    }

    fn row(policy: &str, prompt_id: u64, passed: bool) -> PasskRow {
        PasskRow {
            id: 0,
            prompt_id,
            policy: policy.into(),
            sample: 0,
            passed,
            pass_fraction: f64::from(u8::from(passed)),
            outcome: if passed { "pass" } else { "fail" }.into(),
            tests: 1,
        }
    }

    #[test]
    fn pass_at_k_per_policy_by_hand() {
        // sft: problem 1 has 1 of 2 right, problem 2 has 0 of 2.
        // pass@1 = (1/2 + 0) / 2 = 0.25; pass@2 = (1 + 0) / 2 = 0.5.
        let rows = vec![
            row("sft", 1, true),
            row("sft", 1, false),
            row("sft", 2, false),
            row("sft", 2, false),
            row("ppo", 1, true),
            row("ppo", 1, true),
            row("ppo", 2, true),
            row("ppo", 2, false),
        ];
        let out = pass_at_k_rows(&rows, &[1, 2]).unwrap();
        let got: Vec<(&str, usize, f64)> = out
            .iter()
            .map(|r| (r.policy.as_str(), r.k, r.pass_at_k))
            .collect();
        assert_eq!(
            got,
            vec![
                ("sft", 1, 0.25),
                ("sft", 2, 0.5),
                ("ppo", 1, 0.75),
                ("ppo", 2, 1.0)
            ]
        );
        assert!(out.iter().all(|r| r.problems == 2));
        let err = pass_at_k_rows(&rows, &[3]).unwrap_err().to_string();
        assert!(err.contains("needs at least 3 samples"), "{err}");
    }
}
