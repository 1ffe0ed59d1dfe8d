//! `mk/ppo.mk` end to end on a tiny model: two MA-PPO iterations, the
//! vanilla run in its own directory, nothing redone when complete, and only
//! the missing steps redone after an interruption.

use std::path::{Path, PathBuf};
use std::process::Command;

use marlhf_data::{read_metrics, read_segments};
use marlhf_testkit::ppo::Run;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory holding this test's `marlhf-update` and the other stage
/// binaries, which `make test` builds (same profile) before the tests run.
fn bin_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_marlhf-update"));
    let dir = exe.parent().unwrap().to_path_buf();
    for b in ["marlhf-rollout", "marlhf-segment", "marlhf-update"] {
        assert!(
            dir.join(b).exists(),
            "{b} not built: run `cargo build --release --workspace --bins` first (make test does)"
        );
    }
    dir
}

fn make(run: &Run, args: &[&str]) -> String {
    let out = Command::new("make")
        .arg("-f")
        .arg(run.root().join("Makefile"))
        .args(args)
        .current_dir(run.root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "make {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Which stages a make run started.
fn ran(stdout: &str) -> Vec<&'static str> {
    ["marlhf-rollout", "marlhf-segment", "marlhf-update"]
        .into_iter()
        .filter(|s| stdout.lines().any(|l| l.contains(&format!("{s} "))))
        .collect()
}

#[test]
#[ignore = "needs ../shared"]
fn make_ppo_iterates_caches_and_resumes() {
    assert!(
        Command::new("make").arg("--version").output().is_ok(),
        "the Makefile test needs GNU make on PATH"
    );
    let bin = bin_dir();
    let run = Run::new("make-ppo", 8).unwrap();
    let root = run.root();
    // What the root Makefile provides, with tiny hyper-parameters.
    std::fs::write(
        root.join("Makefile"),
        format!(
            "RUN := {root}\nBIN := {bin}\nDEVICE := cpu\n\
             PPO_ROLLOUT_BATCH := 4\nPPO_BATCH := 4\nPPO_MAX_PROMPT := 64\n\
             PPO_MAX_NEW := 8\nPPO_MINI_BATCH := 2\nPPO_ACTOR_LR := 1e-3\n\
             include {mk}\n",
            root = root.display(),
            bin = bin.display(),
            mk = repo().join("mk/ppo.mk").display()
        ),
    )
    .unwrap();

    let out = make(&run, &["ppo", "ITERS=2", "NGRAM=5"]);
    assert_eq!(
        ran(&out),
        ["marlhf-rollout", "marlhf-segment", "marlhf-update"]
    );
    let dir = root.join("ppo-n5/seed-1234");
    for k in ["iter-000", "iter-001"] {
        for f in ["rollouts.parquet", "segments.parquet", "advantages.parquet"] {
            assert!(dir.join(k).join(f).is_file(), "{k}/{f}");
        }
    }
    for m in ["actor", "critic"] {
        assert!(dir
            .join("iter-001")
            .join(m)
            .join("model.safetensors")
            .is_file());
        assert!(dir
            .join("iter-002")
            .join(m)
            .join("trainer_state.json")
            .is_file());
    }
    assert!(!dir.join("iter-002/rollouts.parquet").exists());
    let segs = read_segments(&dir.join("iter-001/segments.parquet")).unwrap();
    assert!(segs.iter().all(|s| s.termination == "fixed:5"));
    let metrics = read_metrics(&dir.join("metrics.parquet")).unwrap();
    assert_eq!(
        metrics.iter().map(|r| r.iteration).collect::<Vec<_>>(),
        [0, 1]
    );

    // Complete: nothing to redo.
    assert!(ran(&make(&run, &["ppo", "ITERS=2", "NGRAM=5"])).is_empty());

    // Interrupted during iteration 1's update: only that update reruns, and
    // it writes the same bytes again.
    let advantages = std::fs::read(dir.join("iter-001/advantages.parquet")).unwrap();
    let actor = std::fs::read(dir.join("iter-002/actor/model.safetensors")).unwrap();
    std::fs::remove_file(dir.join("iter-001/advantages.parquet")).unwrap();
    std::fs::remove_dir_all(dir.join("iter-002")).unwrap();
    let out = make(&run, &["ppo", "ITERS=2", "NGRAM=5"]);
    assert_eq!(ran(&out), ["marlhf-update"]);
    assert_eq!(
        std::fs::read(dir.join("iter-001/advantages.parquet")).unwrap(),
        advantages
    );
    assert_eq!(
        std::fs::read(dir.join("iter-002/actor/model.safetensors")).unwrap(),
        actor
    );
    assert_eq!(read_metrics(&dir.join("metrics.parquet")).unwrap().len(), 2);

    // Interrupted during iteration 1's segmentation: segment and update.
    std::fs::remove_file(dir.join("iter-001/segments.parquet")).unwrap();
    let out = make(&run, &["ppo", "ITERS=2", "NGRAM=5"]);
    assert_eq!(ran(&out), ["marlhf-segment", "marlhf-update"]);

    // A third iteration continues from iteration 2's models.
    let out = make(&run, &["ppo", "ITERS=3", "NGRAM=5"]);
    assert_eq!(
        ran(&out),
        ["marlhf-rollout", "marlhf-segment", "marlhf-update"]
    );
    assert!(
        out.contains("--actor ") && out.contains("iter-002/actor"),
        "{out}"
    );

    // Vanilla PPO runs into its own directory.
    make(&run, &["ppo", "ITERS=1", "NGRAM=1"]);
    let segs = read_segments(&root.join("ppo-n1/seed-1234/iter-000/segments.parquet")).unwrap();
    assert!(segs.iter().all(|s| s.termination == "fixed:1"));
    assert!(root
        .join("ppo-n1/seed-1234/iter-001/actor/model.safetensors")
        .is_file());
    // Other conditions are named after themselves.
    make(&run, &["ppo", "ITERS=1", "TERMINATION=ppl"]);
    assert!(root
        .join("ppo-ppl/seed-1234/iter-000/advantages.parquet")
        .is_file());

    // Another seed is another run beside the first; so is another recipe,
    // whose update takes one optimiser step per rollout batch.
    make(&run, &["ppo", "ITERS=1", "NGRAM=1", "PPO_SEED=7"]);
    let seed7 = read_segments(&root.join("ppo-n1/seed-7/iter-000/segments.parquet")).unwrap();
    assert_ne!(
        std::fs::read(root.join("ppo-n1/seed-7/iter-000/rollouts.parquet")).unwrap(),
        std::fs::read(root.join("ppo-n1/seed-1234/iter-000/rollouts.parquet")).unwrap(),
        "another seed samples other responses"
    );
    assert!(seed7.iter().all(|s| s.termination == "fixed:1"));
    make(
        &run,
        &[
            "ppo",
            "ITERS=1",
            "NGRAM=1",
            "PPO_RECIPE=reference",
            "PPO_MINI_BATCH=",
        ],
    );
    let m = read_metrics(&root.join("ppo-n1-reference/seed-1234/metrics.parquet")).unwrap();
    assert_eq!(m[0].get("optimizer_steps"), Some(1.0));

    // LoRA: a run of its own whose iterations chain adapters on the SFT
    // model and the reward model, complete when their adapter files are.
    let lora = [
        "ppo",
        "ITERS=2",
        "NGRAM=1",
        "PPO_LORA_RANK=4",
        "PPO_LORA_ALPHA=8",
    ];
    let out = make(&run, &lora);
    assert!(
        out.contains("--lora-rank 4") && out.contains("--lora-alpha 8"),
        "{out}"
    );
    let dir = root.join("ppo-n1-lora4a8/seed-1234");
    for m in ["actor", "critic"] {
        for k in ["iter-001", "iter-002"] {
            let d = dir.join(k).join(m);
            assert!(d.join("adapter_model.safetensors").is_file(), "{k}/{m}");
            assert!(!d.join("model.safetensors").exists(), "{k}/{m}");
        }
    }
    assert!(ran(&make(&run, &lora)).is_empty());
}
