//! `marlhf-eval` as a process on real tiny checkpoints: stories260K as a
//! policy (twice, under two names), a random policy over the same
//! vocabulary, and stories260K with a value head as the reward model.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use marlhf_data::{read_judgements, read_passk, read_responses, write_responses, ResponseRow};
use marlhf_data::{write_prompts, PromptRow};
use marlhf_model::Checkpoint;
use marlhf_testkit::eval::EvalRun;
use marlhf_testkit::ppo::{run_stage, Exit};
use marlhf_testkit::TempDir;

const EXE: &str = env!("CARGO_BIN_EXE_marlhf-eval");
const MAX_NEW: usize = 8;

fn eval<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Exit {
    run_stage(EXE, args)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn generate(run: &EvalRun, out: &Path, policies: &[(&str, PathBuf)]) -> Exit {
    let mut args: Vec<String> = vec!["generate".into()];
    for (name, dir) in policies {
        args.push("--policy".into());
        args.push(format!("{name}={}", dir.display()));
    }
    args.extend(
        [
            "--prompts",
            &p(&run.prompts()),
            "--reward-model",
            &p(&run.rm()),
            "--out",
            &p(out),
            "--n",
            "4",
            "--max-new-tokens",
            &MAX_NEW.to_string(),
            "--batch-size",
            "3",
            "--seed",
            "1234",
        ]
        .map(String::from),
    );
    eval(&args)
}

fn policies(run: &EvalRun) -> Vec<(&'static str, PathBuf)> {
    // ma-ppo is the SFT checkpoint under another name: with common random
    // numbers it must answer exactly like sft.
    vec![
        ("sft", run.sft()),
        ("ppo", run.ppo()),
        ("ma-ppo", run.sft()),
    ]
}

fn is_png(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(&bytes[bytes.len() - 8..bytes.len() - 4], b"IEND");
    (w, h)
}

#[test]
#[ignore = "needs ../shared"]
fn generate_judge_report_end_to_end() {
    let run = EvalRun::new("eval-e2e", 5).unwrap();
    let eval_dir = run.root().join("eval");
    let responses = eval_dir.join("responses.parquet");
    generate(&run, &responses, &policies(&run)).ok();

    let rows = read_responses(&responses).unwrap();
    assert_eq!(rows.len(), 3 * 4, "3 policies × 4 of 5 prompts");
    let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..12).collect::<Vec<u64>>());
    let prompts_of = |policy: &str| -> Vec<u64> {
        rows.iter()
            .filter(|r| r.policy == policy)
            .map(|r| r.prompt_id)
            .collect()
    };
    let sft_prompts = prompts_of("sft");
    assert_eq!(sft_prompts.len(), 4);
    assert_eq!(sft_prompts.iter().collect::<BTreeSet<_>>().len(), 4);
    assert!(sft_prompts.iter().all(|id| (500..505).contains(id)));
    assert_eq!(prompts_of("ppo"), sft_prompts);
    assert_eq!(prompts_of("ma-ppo"), sft_prompts);
    for r in &rows {
        assert!(r.score.is_finite(), "{r:?}");
        assert!(!r.response_tokens.is_empty() && r.response_tokens.len() <= MAX_NEW);
        assert_eq!(r.finished, r.response_tokens.last() == Some(&2), "{r:?}");
        assert_eq!(r.sample, 0);
        assert!(r.prompt.starts_with(|c: char| c.is_ascii_uppercase()));
    }
    // Same checkpoint, same prompts, same seeds: same responses and scores.
    let sft: Vec<&ResponseRow> = rows.iter().filter(|r| r.policy == "sft").collect();
    let twin: Vec<&ResponseRow> = rows.iter().filter(|r| r.policy == "ma-ppo").collect();
    for (a, b) in sft.iter().zip(&twin) {
        assert_eq!(
            (&a.response, &a.response_tokens, a.score),
            (&b.response, &b.response_tokens, b.score)
        );
    }
    // The random policy does not write stories260K's English.
    let ppo: Vec<&ResponseRow> = rows.iter().filter(|r| r.policy == "ppo").collect();
    assert_ne!(
        sft.iter().map(|r| &r.response_tokens).collect::<Vec<_>>(),
        ppo.iter().map(|r| &r.response_tokens).collect::<Vec<_>>()
    );
    // Each score is the reward model's score of prompt + response alone.
    let rm = Checkpoint::load(&run.rm(), &Device::Cpu).unwrap();
    for r in [sft[0], ppo[1]] {
        let mut seq = rm.tokenizer.encode_prompt(&r.prompt, 512).unwrap().ids;
        seq.extend(&r.response_tokens);
        let alone: Vec<f32> = rm.model.scores(&[seq]).unwrap().to_vec1().unwrap();
        assert!(
            (alone[0] - r.score).abs() < 1e-4,
            "{} vs {}",
            alone[0],
            r.score
        );
    }
    // Same seed, same inputs: the same bytes.
    let again = eval_dir.join("again.parquet");
    generate(&run, &again, &policies(&run)).ok();
    assert_eq!(
        std::fs::read(&responses).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // The reward model as judge: ma-ppo against its twin and the random one.
    let judgements = eval_dir.join("judgements.parquet");
    let judge = |out: &Path| {
        eval(&[
            "judge",
            "--responses",
            &p(&responses),
            "--a",
            "ma-ppo",
            "--b",
            "sft",
            "--b",
            "ppo",
            "--judge",
            "rm",
            "--reward-model",
            &p(&run.rm()),
            "--sample",
            "3",
            "--out",
            &p(out),
        ])
    };
    let done = judge(&judgements);
    done.ok();
    assert!(done.stderr.contains("ma-ppo vs sft"), "{}", done.stderr);
    let js = read_judgements(&judgements).unwrap();
    assert_eq!(js.len(), 6, "3 sampled prompts × 2 comparisons");
    let sampled: Vec<u64> = js[..3].iter().map(|j| j.prompt_id).collect();
    assert_eq!(
        js[3..].iter().map(|j| j.prompt_id).collect::<Vec<_>>(),
        sampled,
        "both comparisons judge the same prompts"
    );
    for j in &js {
        assert_eq!(j.policy_a, "ma-ppo");
        assert_eq!(j.judge, "reward model");
        assert!(sft_prompts.contains(&j.prompt_id));
        assert!(j.raw.starts_with("score A "), "{}", j.raw);
    }
    // Identical responses score identically: every pair with the twin ties.
    for j in js.iter().filter(|j| j.policy_b == "sft") {
        assert_eq!(j.verdict.as_str(), "tie", "{j:?}");
        assert_eq!(j.choice.as_deref(), Some("E"));
    }
    // Against the random policy the verdict follows the presented choice.
    for j in js.iter().filter(|j| j.policy_b == "ppo") {
        let want = match (j.choice.as_deref(), j.a_shown_first) {
            (Some("E"), _) => "tie",
            (Some("A"), true) | (Some("B"), false) => "win",
            (Some("A"), false) | (Some("B"), true) => "lose",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(j.verdict.as_str(), want, "{j:?}");
    }
    let again = eval_dir.join("judgements-again.parquet");
    judge(&again).ok();
    assert_eq!(
        std::fs::read(&judgements).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // The report.
    let report = eval_dir.join("report.md");
    let done = eval(&[
        "report",
        "--responses",
        &p(&responses),
        "--judgements",
        &p(&judgements),
        "--rm-metrics",
        &p(&run.rm_metrics()),
        "--ppo-metrics",
        &format!("ppo={}", p(&run.ppo_metrics("ppo-n1"))),
        "--ppo-metrics",
        &format!("ma-ppo={}", p(&run.ppo_metrics("ppo-n5"))),
        "--out",
        &p(&report),
    ]);
    done.ok();
    assert!(done.stderr.contains(&p(&report)), "{}", done.stderr);
    let md = std::fs::read_to_string(&report).unwrap();
    for needle in [
        "# MA-RLHF evaluation",
        "## Reward model",
        "| 20 | 62.50% | 0.6500 |",
        "## Reward-model scores",
        "| policy | n | mean RM score ± s.e. |",
        "| sft | 4 |",
        "| ppo | 4 |",
        "| ma-ppo | 4 |",
        "## Pairwise comparisons",
        "| ma-ppo vs sft | reward model | 3 | 0 | 3 | 0 | 0 | 0.0% |",
        "| ma-ppo vs ppo | reward model | 3 |",
        "![Distribution of reward-model scores per policy](scores.png)",
        "![Mean reward over PPO iterations](reward_curves.png)",
        "12 responses to 4 prompts",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    // The reward-model section comes before the score table.
    assert!(md.find("## Reward model\n").unwrap() < md.find("## Reward-model scores").unwrap());
    assert_eq!(is_png(&eval_dir.join("scores.png")), (900, 540));
    assert_eq!(is_png(&eval_dir.join("reward_curves.png")), (900, 540));
    let leftovers: Vec<String> = std::fs::read_dir(&eval_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
#[ignore = "needs ../shared"]
fn bad_inputs_fail_with_one_line_and_no_output() {
    let run = EvalRun::new("eval-bad", 3).unwrap();
    let out = run.root().join("eval/responses.parquet");
    let missing = run.root().join("nowhere");
    let e = generate(&run, &out, &[("sft", run.sft()), ("ppo", missing.clone())]);
    assert_eq!(
        e.error_line(),
        format!(
            "error: {}: policy \"ppo\" checkpoint directory not found",
            missing.display()
        )
    );
    assert!(!out.exists());
    assert!(
        !out.parent().unwrap().exists()
            || std::fs::read_dir(out.parent().unwrap())
                .unwrap()
                .next()
                .is_none()
    );

    let e = eval(&["generate", "--policy", "sft"]);
    assert_eq!(e.code, Some(2), "clap rejects it: {}", e.stderr);
    assert!(e.stderr.contains("is not NAME=PATH"), "{}", e.stderr);

    // A good responses file, then a judge that names an unknown policy.
    generate(&run, &out, &[("sft", run.sft()), ("ppo", run.ppo())]).ok();
    let judgements = run.root().join("eval/judgements.parquet");
    let e = eval(&[
        "judge",
        "--responses",
        &p(&out),
        "--a",
        "ma-ppo",
        "--b",
        "sft",
        "--reward-model",
        &p(&run.rm()),
        "--out",
        &p(&judgements),
    ]);
    assert_eq!(
        e.error_line(),
        format!(
            "error: {}: no responses of policy \"ma-ppo\"; the responses are of \"sft\", \"ppo\"",
            out.display()
        )
    );
    assert!(!judgements.exists());
    let e = eval(&[
        "judge",
        "--responses",
        &p(&out),
        "--a",
        "sft",
        "--b",
        "ppo",
        "--task",
        "apps",
        "--out",
        &p(&judgements),
    ]);
    assert!(e
        .error_line()
        .contains("task apps is evaluated with pass@k"));
    assert!(!judgements.exists());

    // A PPO metrics file without the plotted column.
    let report = run.root().join("eval/report.md");
    let e = eval(&[
        "report",
        "--responses",
        &p(&out),
        "--ppo-metrics",
        &format!("ppo={}", p(&run.ppo_metrics("ppo-n1"))),
        "--curve-metric",
        "reward_mean",
        "--out",
        &p(&report),
    ]);
    assert_eq!(
        e.error_line(),
        format!(
            "error: {}: column \"reward_mean\" is missing or empty (columns: kl_k1_seq_sum, score_mean); choose another with --curve-metric",
            run.ppo_metrics("ppo-n1").display()
        )
    );
    assert!(!report.exists());
    assert!(!run.root().join("eval/scores.png").exists());
    // Responses that are not a responses table.
    let e = eval(&[
        "report",
        "--responses",
        &p(&run.prompts()),
        "--out",
        &p(&report),
    ]);
    assert_eq!(
        e.error_line(),
        format!(
            "error: {}: column \"prompt_id\" is missing",
            run.prompts().display()
        )
    );
    assert!(!report.exists());
}

fn python_available() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn passk_runs_programs_and_reports_pass_at_k() {
    assert!(python_available(), "pass@k needs python3 on PATH");
    let tmp = TempDir::new("eval-passk");
    let prompts = tmp.path().join("eval_prompts.parquet");
    let sum = r#"{"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}"#;
    let double = r#"{"inputs": ["4\n"], "outputs": ["8\n"]}"#;
    write_prompts(
        &prompts,
        &[
            PromptRow {
                id: 1,
                prompt: "\nQUESTION:\nAdd two numbers.\nUse Standard Input format\nANSWER:\n"
                    .into(),
                reference: None,
                subreddit: None,
                tests: Some(sum.into()),
            },
            PromptRow {
                id: 2,
                prompt: "\nQUESTION:\nDouble a number.\nUse Standard Input format\nANSWER:\n"
                    .into(),
                reference: None,
                subreddit: None,
                tests: Some(double.into()),
            },
        ],
    )
    .unwrap();
    let programs = [
        // sft: problem 1 right once of two (once in a fence), problem 2 never.
        (
            "sft",
            1,
            "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
        ),
        ("sft", 1, "print(3)"),
        ("sft", 2, "print(int(input()) * 3)"),
        ("sft", 2, "this is not python"),
        // ppo: both right on problem 1, one of two on problem 2.
        ("ppo", 1, "print(sum(map(int, input().split())))"),
        ("ppo", 1, "a, b = input().split()\nprint(int(a) + int(b))"),
        ("ppo", 2, "print(2 * int(input()))"),
        ("ppo", 2, "while True: pass"),
    ];
    let rows: Vec<ResponseRow> = programs
        .iter()
        .enumerate()
        .map(|(i, (policy, prompt_id, code))| ResponseRow {
            id: i as u64,
            prompt_id: *prompt_id,
            policy: policy.to_string(),
            sample: (i % 2) as u32,
            prompt: String::new(),
            response: code.to_string(),
            response_tokens: vec![1],
            score: 0.0,
            finished: true,
            gold: None,
        })
        .collect();
    let responses = tmp.path().join("responses.parquet");
    write_responses(&responses, &rows).unwrap();
    let out = tmp.path().join("passk.parquet");
    let done = eval(&[
        "passk",
        "--responses",
        &p(&responses),
        "--prompts",
        &p(&prompts),
        "--k",
        "1,2",
        "--timeout",
        "2",
        "--jobs",
        "4",
        // Needed without root only; as root programs always run as nobody.
        "--sandbox-same-user",
        // Needed only where bubblewrap cannot make namespaces.
        "--sandbox-without-namespaces",
        "--out",
        &p(&out),
    ]);
    done.ok();
    assert!(done.stderr.contains("sft pass@1"), "{}", done.stderr);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(done.stderr.contains(" as nobody"), "{}", done.stderr);
    }
    let results = read_passk(&out).unwrap();
    let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
    assert_eq!(
        passed,
        vec![true, false, false, false, true, true, true, false]
    );
    let outcomes: Vec<&str> = results.iter().map(|r| r.outcome.as_str()).collect();
    assert!(
        matches!(outcomes[3], "compile-error" | "runtime-error"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[7], "timeout");
    assert_eq!(
        results[1].pass_fraction, 0.5,
        "print(3) passes the first test"
    );
    assert!(results
        .iter()
        .all(|r| r.tests == if r.prompt_id == 1 { 2 } else { 1 }));

    // pass@1: sft (1/2 + 0)/2 = 25%, ppo (1 + 1/2)/2 = 75%;
    // pass@2: sft (1 + 0)/2 = 50%, ppo (1 + 1)/2 = 100%.
    let report = tmp.path().join("report.md");
    eval(&[
        "report",
        "--passk",
        &p(&out),
        "--k",
        "1,2",
        "--task",
        "apps",
        "--out",
        &p(&report),
    ])
    .ok();
    let md = std::fs::read_to_string(&report).unwrap();
    for needle in [
        "| sft | 1 | 2 | 25.00% |",
        "| sft | 2 | 2 | 50.00% |",
        "| ppo | 1 | 2 | 75.00% |",
        "| ppo | 2 | 2 | 100.00% |",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    // pass@3 needs three samples per problem.
    let e = eval(&[
        "report",
        "--passk",
        &p(&out),
        "--k",
        "3",
        "--out",
        &p(&tmp.path().join("r3.md")),
    ]);
    assert!(
        e.error_line().contains("needs at least 3 samples"),
        "{}",
        e.stderr
    );
}

/// A judge endpoint for the stage: answers every question with choice "A"
/// in the dialogue template's JSON, quoting the request's Authorization
/// header and leaving out `created`; counts the requests; at request
/// `kill_at` (1-based; 0: never) kills process `victim` instead of
/// answering; answers a question whose text holds `broken` with a page
/// that is no completion; under `/deny/` refuses the key with 401, quoting
/// it.
struct FakeJudge {
    base: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    kill_at: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    victim: std::sync::Arc<std::sync::atomic::AtomicI32>,
    broken: std::sync::Arc<std::sync::Mutex<String>>,
    server: std::sync::Arc<tiny_http::Server>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl FakeJudge {
    fn start() -> Self {
        use std::sync::atomic::Ordering;
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let mut judge = FakeJudge {
            base,
            requests: Default::default(),
            kill_at: Default::default(),
            victim: Default::default(),
            broken: Default::default(),
            server: server.clone(),
            worker: None,
        };
        let (requests, kill_at, victim, broken) = (
            judge.requests.clone(),
            judge.kill_at.clone(),
            judge.victim.clone(),
            judge.broken.clone(),
        );
        judge.worker = Some(std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                if kill_at.load(Ordering::SeqCst) == n {
                    // SAFETY: plain system call on the test's own child.
                    unsafe {
                        libc::kill(victim.load(Ordering::SeqCst), libc::SIGKILL);
                    }
                    continue;
                }
                let auth = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.as_str().to_string())
                    .unwrap_or_default();
                let broken = broken.lock().unwrap().clone();
                let (status, text) = if request.url().starts_with("/deny/") {
                    let message = format!("Incorrect API key provided: {auth}");
                    (
                        401,
                        serde_json::json!({"error": {"message": message}}).to_string(),
                    )
                } else if !broken.is_empty() && body.contains(&broken) {
                    (200, format!("<html>busy, {auth}</html>"))
                } else {
                    let content = format!(
                        "{{\"comparison\": \"A is better (asked with {auth})\", \"choice\": \"A\"}}"
                    );
                    let answer = serde_json::json!({
                        "id": "x",
                        "object": "chat.completion",
                        "model": "judge",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]
                    });
                    (200, answer.to_string())
                };
                let _ = request
                    .respond(tiny_http::Response::from_string(text).with_status_code(status));
            }
        }));
        judge
    }

    fn asked(&self) -> usize {
        self.requests.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeJudge {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Issue 21, items 5 and 6: an HTTP judge killed halfway keeps the answers
/// it was given, and the rerun asks only for the rest; one reply that is no
/// completion becomes that pair's `error` row (asked again by the next run)
/// instead of ending the run; completions without `created` are read; the
/// API key, which the server quotes everywhere, appears in no message, no
/// file and no report.
#[test]
fn http_judge_resumes_and_never_shows_the_key() {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let tmp = TempDir::new("eval-http-judge");
    let key = "sk-marlhf-test-key-0123456789abcdefghijklmnopqrstuvwxyz";
    let rows: Vec<ResponseRow> = (0..6u64)
        .flat_map(|i| {
            ["a", "b"]
                .into_iter()
                .enumerate()
                .map(move |(k, policy)| ResponseRow {
                    id: 2 * i + k as u64,
                    prompt_id: i,
                    policy: policy.into(),
                    sample: 0,
                    prompt: format!("\n\nHuman: question {i}?\n\nAssistant:"),
                    response: format!(" answer {policy} {i}"),
                    response_tokens: vec![1],
                    score: 0.0,
                    finished: true,
                    gold: None,
                })
        })
        .collect();
    let responses = tmp.path().join("responses.parquet");
    write_responses(&responses, &rows).unwrap();
    let fake = FakeJudge::start();
    let out = tmp.path().join("eval/judgements.parquet");
    let journal = tmp.path().join("eval/judgements.journal.jsonl");
    let command = |route: &str, out: &Path| {
        let mut c = Command::new(EXE);
        c.args([
            "judge",
            "--responses",
            &p(&responses),
            "--a",
            "a",
            "--b",
            "b",
            "--judge",
            "http",
            "--base-url",
            &format!("{}/{route}/v1", fake.base),
            "--model",
            "judge",
            "--api-key-env",
            "MARLHF_TEST_JUDGE_KEY",
            "--task",
            "hh-rlhf",
            "--sample",
            "6",
            "--retries",
            "0",
            "--timeout",
            "20",
            "--out",
            &p(out),
        ])
        .env("MARLHF_TEST_JUDGE_KEY", key)
        .stderr(std::process::Stdio::piped());
        c
    };
    let mut stderrs = String::new();
    let mut finish = |mut child: std::process::Child| {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        stderrs.push_str(&err);
        (status, err)
    };

    // Killed at the third request: two answers were given and kept.
    fake.kill_at.store(3, Ordering::SeqCst);
    let child = command("ok", &out).spawn().unwrap();
    fake.victim.store(child.id() as i32, Ordering::SeqCst);
    let (status, _) = finish(child);
    assert!(!status.success());
    assert_eq!(fake.asked(), 3);
    assert!(!out.exists());
    let kept = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(kept.lines().count(), 2, "{kept}");

    // The rerun asks only for the other four; one of them gets a page.
    fake.kill_at.store(0, Ordering::SeqCst);
    *fake.broken.lock().unwrap() = "question 4?".into();
    let (status, err) = finish(command("ok", &out).spawn().unwrap());
    assert!(status.success(), "{err}");
    assert_eq!(fake.asked(), 4);
    let js = read_judgements(&out).unwrap();
    assert_eq!(js.len(), 6);
    let errors: Vec<u64> = js
        .iter()
        .filter(|j| j.verdict.as_str() == "error")
        .map(|j| j.prompt_id)
        .collect();
    assert_eq!(errors, vec![4]);
    for j in js.iter().filter(|j| j.prompt_id != 4) {
        // "A" is the response shown first.
        let want = if j.a_shown_first { "win" } else { "lose" };
        assert_eq!(j.verdict.as_str(), want, "{j:?}");
        assert_eq!(j.choice.as_deref(), Some("A"));
    }
    assert!(err.contains("1 of 6 requests failed"), "{err}");
    assert!(err.contains("2 from earlier runs"), "{err}");

    // The next run asks for that one alone.
    fake.broken.lock().unwrap().clear();
    let (status, err) = finish(command("ok", &out).spawn().unwrap());
    assert!(status.success(), "{err}");
    assert_eq!(fake.asked(), 1);
    let js = read_judgements(&out).unwrap();
    assert!(js.iter().all(|j| j.verdict.as_str() != "error"), "{js:?}");
    let report = tmp.path().join("eval/report.md");
    eval(&["report", "--judgements", &p(&out), "--out", &p(&report)]).ok();

    // A refused key stops the run at once: one line, no output.
    let denied = tmp.path().join("denied/judgements.parquet");
    let (status, err) = finish(command("deny", &denied).spawn().unwrap());
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(fake.asked(), 1);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!denied.exists());

    // The key, nowhere: not in a message, the journal, a row or the report.
    let piece = &key[..12];
    let raws: String = js.iter().map(|j| j.raw.as_str()).collect();
    assert!(raws.contains("Bearer [redacted]"), "{raws}");
    for (what, text) in [
        ("stderr", stderrs.clone()),
        ("journal", std::fs::read_to_string(&journal).unwrap()),
        ("raw column", raws),
        ("report", std::fs::read_to_string(&report).unwrap()),
    ] {
        assert!(!text.contains(piece), "the key is in the {what}: {text}");
    }
}

/// Issue 21, item 2: a program that calls kill(-1, SIGKILL) in a loop
/// beside three correct ones. Each test has its own PID namespace, so it
/// kills nothing of theirs: pass@1 is 3/4 at --jobs 1 and at --jobs 4.
#[test]
fn a_saboteur_cannot_change_pass_at_k_with_more_jobs() {
    let tmp = TempDir::new("eval-saboteur");
    let prompts = tmp.path().join("eval_prompts.parquet");
    write_prompts(
        &prompts,
        &[PromptRow {
            id: 1,
            prompt: "Add two numbers.".into(),
            reference: None,
            subreddit: None,
            tests: Some(r#"{"inputs": ["1 2\n"], "outputs": ["3\n"]}"#.into()),
        }],
    )
    .unwrap();
    let saboteur = "import os, time\nend = time.time() + 2.5\nwhile time.time() < end:\n    try:\n        os.kill(-1, 9)\n    except OSError:\n        pass\n    time.sleep(0.002)\nprint(0)\n";
    let correct = "import time\ntime.sleep(1)\nprint(sum(map(int, input().split())))\n";
    let rows: Vec<ResponseRow> = [saboteur, correct, correct, correct]
        .iter()
        .enumerate()
        .map(|(i, code)| ResponseRow {
            id: i as u64,
            prompt_id: 1,
            policy: "sft".into(),
            sample: i as u32,
            prompt: String::new(),
            response: code.to_string(),
            response_tokens: vec![1],
            score: 0.0,
            finished: true,
            gold: None,
        })
        .collect();
    let responses = tmp.path().join("responses.parquet");
    write_responses(&responses, &rows).unwrap();
    let passk = |jobs: &str, out: &Path| {
        eval(&[
            "passk",
            "--responses",
            &p(&responses),
            "--prompts",
            &p(&prompts),
            "--k",
            "1",
            "--timeout",
            "6",
            "--jobs",
            jobs,
            "--sandbox-same-user",
            "--out",
            &p(out),
        ])
    };
    let four = tmp.path().join("passk-4.parquet");
    let e = passk("4", &four);
    if !e.success {
        // No namespaces here: refused (a same-user kill(-1) without them
        // would reach this test itself, so it is not run).
        let line = e.error_line();
        assert!(line.contains("bubblewrap"), "{line}");
        assert!(!four.exists());
        return;
    }
    assert!(e.stderr.contains("namespaces per test"), "{}", e.stderr);
    assert!(e.stderr.contains("4 at once"), "{}", e.stderr);
    let one = tmp.path().join("passk-1.parquet");
    passk("1", &one).ok();
    for out in [&one, &four] {
        let passed: Vec<bool> = read_passk(out).unwrap().iter().map(|r| r.passed).collect();
        assert_eq!(passed, vec![false, true, true, true], "{}", out.display());
    }
}

#[test]
#[ignore = "needs ../shared"]
fn early_stop_chooses_the_best_validation_checkpoint() {
    let run = EvalRun::new("eval-early", 4).unwrap();
    let dir = run.root().join("compare");
    // Two checkpoints answer the validation prompts (here the same prompt
    // file: the choice only reads the validation responses).
    let validation = dir.join("validation/ppo-n5.7.parquet");
    let candidates = [("iter-001", run.sft()), ("iter-002", run.ppo())];
    generate(&run, &validation, &candidates).ok();
    let rows = read_responses(&validation).unwrap();
    let mean = |p: &str| {
        let s: Vec<f64> = rows
            .iter()
            .filter(|r| r.policy == p)
            .map(|r| r.score as f64)
            .collect();
        s.iter().sum::<f64>() / s.len() as f64
    };
    let best = if mean("iter-002") > mean("iter-001") {
        1
    } else {
        0
    };
    let early = dir.join("early/ppo-n5.7.parquet");
    let mut args: Vec<String> = ["early-stop", "--validation", &p(&validation)]
        .map(String::from)
        .to_vec();
    for (name, d) in &candidates {
        args.push("--candidate".into());
        args.push(format!("{name}={}", d.display()));
    }
    args.extend(
        [
            "--select-by",
            "score",
            "--name",
            "ppo-n5.7",
            "--prompts",
            &p(&run.prompts()),
            "--reward-model",
            &p(&run.rm()),
            "--out",
            &p(&early),
            "--n",
            "4",
            "--max-new-tokens",
            &MAX_NEW.to_string(),
            "--batch-size",
            "3",
            "--seed",
            "1234",
        ]
        .map(String::from),
    );
    let e = eval(&args);
    e.ok();
    let chosen = format!("{} ({})", candidates[best].0, candidates[best].1.display());
    assert!(e.stderr.contains(&chosen), "{chosen} not in\n{}", e.stderr);
    // The chosen checkpoint answers exactly as `generate` has it answer.
    let direct = dir.join("direct.parquet");
    generate(&run, &direct, &[("ppo-n5.7", candidates[best].1.clone())]).ok();
    let texts = |path: &Path| -> Vec<(String, String)> {
        read_responses(path)
            .unwrap()
            .into_iter()
            .map(|r| (r.policy, r.response))
            .collect()
    };
    assert_eq!(texts(&early), texts(&direct));

    // A checkpoint with validation responses but no --candidate: one line,
    // no output.
    std::fs::remove_file(&early).unwrap();
    let mut short = args.clone();
    let at = short.iter().position(|a| a == "--candidate").unwrap();
    short.drain(at..at + 2);
    let e = eval(&short);
    assert_eq!(
        e.error_line(),
        format!(
            "error: {}: checkpoint iter-001 has validation responses but no --candidate iter-001=DIR",
            validation.display()
        )
    );
    assert!(!early.exists());
}
