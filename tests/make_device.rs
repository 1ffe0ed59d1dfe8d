//! `DEVICE` and `CUDA=1` reach every command of every make fragment that
//! runs a model: `make -n` of the whole pipeline, the comparison, the chat
//! server and the benchmarks, for every task, with `DEVICE=cuda:7`, and
//! every such command line carries `--device cuda:7`. With `CUDA=1` the
//! commands run the CUDA build's binaries and `make build` builds them
//! with every binary's `cuda` feature. Needs no GPU and no binaries.

mod common;

/// The commands that load a model, as they start in a recipe line.
const MODEL_COMMANDS: [&str; 9] = [
    "marlhf-sft ",
    "marlhf-rm ",
    "marlhf-rollout ",
    "marlhf-update ",
    "marlhf-eval generate ",
    "marlhf-eval judge ",
    "marlhf-score ",
    "marlhf-serve ",
    "marlhf-bench ",
];

/// `make -n` of `goals`, recipe lines joined across backslash newlines.
fn plan(task: &str, goals: &[&str], extra: &[&str]) -> Vec<String> {
    let run =
        std::env::temp_dir().join(format!("marlhf-make-device-{}-{task}", std::process::id()));
    let mut args = vec![
        "-n".to_string(),
        format!("TASK={task}"),
        format!("RUN={}", run.display()),
        "CARGO=true".to_string(),
        "DEVICE=cuda:7".to_string(),
        // Fewer generated PPO rules to parse; every command kind is there.
        "ITERS=2".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(goals.iter().map(|s| s.to_string()));
    let text = common::make(&args);
    text.replace("\\\n", " ")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn device_reaches_every_model_command_of_every_task() {
    for task in ["hh-rlhf", "tldr", "webgpt", "apps", "stories"] {
        let lines = plan(task, &["pipeline", "compare", "bench"], &[]);
        let mut seen = 0;
        for line in &lines {
            if MODEL_COMMANDS.iter().any(|c| line.contains(c)) {
                seen += 1;
                assert!(
                    line.contains("--device cuda:7"),
                    "{task}: a model command without the device:\n{line}"
                );
            }
        }
        // At least SFT or import, RM, rollout, update, generate and judge.
        assert!(
            seen >= 5,
            "{task}: only {seen} model commands in\n{}",
            lines.join("\n")
        );
    }
    let serve = plan("hh-rlhf", &["serve"], &["SERVE_CHECKPOINT=x"]);
    assert!(
        serve
            .iter()
            .any(|l| l.contains("marlhf-serve ") && l.contains("--device cuda:7")),
        "{serve:?}"
    );
}

#[test]
fn cuda_builds_and_runs_the_cuda_binaries() {
    let lines = plan("hh-rlhf", &["build", "sft"], &["CUDA=1"]);
    let text = lines.join("\n");
    assert!(
        text.contains("scripts/cuda/cargo.sh build --release --workspace --bins --features cuda"),
        "{text}"
    );
    assert!(text.contains("target/cuda/release/marlhf-sft "), "{text}");
    assert!(!text.contains("target/release/marlhf-sft "), "{text}");
    // Without CUDA=1 nothing of the CUDA build is touched.
    let cpu = plan("hh-rlhf", &["build", "sft"], &[]).join("\n");
    assert!(
        cpu.contains("target/release/marlhf-sft ") && !cpu.contains("cuda/cargo.sh"),
        "{cpu}"
    );
}
