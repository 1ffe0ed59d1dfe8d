//! `marlhf-update` as a process: vanilla PPO's token-level GAE recovered
//! with fixed:1, a macro-action golden, checkpoints with optimiser state
//! carried across iterations, idempotent metrics, and the bad states.

use std::path::{Path, PathBuf};

use candle_core::Device;
use marlhf_data::{
    read_advantages, read_metrics, write_rollouts, write_segments, AdvantageRow, RolloutRow,
    SegmentRow,
};
use marlhf_rl::Termination;
use marlhf_stages::ppo::{rollout, run_segment, PromptOrder, RolloutConfig, SegmentConfig};
use marlhf_stages::progress::Silent;
use marlhf_stages::trainer::{read_state, STATE_TENSORS};
use marlhf_testkit::ppo::{poison, run_stage, synthetic_rollout, Exit, Run};

const EXE: &str = env!("CARGO_BIN_EXE_marlhf-update");

/// Paths of one update: inputs from `iter`, outputs into `out`.
struct Paths {
    rollouts: PathBuf,
    segments: PathBuf,
    actor: PathBuf,
    critic: PathBuf,
    out: PathBuf,
    metrics: PathBuf,
}

impl Paths {
    fn new(run: &Run, iter: &str, actor: PathBuf, critic: PathBuf, out: &str) -> Self {
        let dir = run.root().join(iter);
        Paths {
            rollouts: dir.join("rollouts.parquet"),
            segments: dir.join("segments.parquet"),
            actor,
            critic,
            out: run.root().join(out),
            metrics: run.root().join("metrics.parquet"),
        }
    }

    fn advantages(&self) -> PathBuf {
        self.out.join("advantages.parquet")
    }

    fn out_actor(&self) -> PathBuf {
        self.out.join("actor")
    }

    fn out_critic(&self) -> PathBuf {
        self.out.join("critic")
    }
}

fn update(p: &Paths, overrides: &[(&str, &str)]) -> Exit {
    let s = |x: &Path| x.display().to_string();
    let mut args: Vec<(String, String)> = [
        ("--rollouts", s(&p.rollouts)),
        ("--segments", s(&p.segments)),
        ("--actor", s(&p.actor)),
        ("--critic", s(&p.critic)),
        ("--out-actor", s(&p.out_actor())),
        ("--out-critic", s(&p.out_critic())),
        ("--advantages", s(&p.advantages())),
        ("--metrics", s(&p.metrics)),
        ("--mini-batch", "2".into()),
        ("--actor-lr", "1e-3".into()),
        ("--critic-lr", "1e-3".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        match args.iter_mut().find(|(a, _)| a == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => args.push((k.to_string(), v.to_string())),
        }
    }
    let flat: Vec<String> = args.into_iter().flat_map(|(k, v)| [k, v]).collect();
    run_stage(EXE, &flat)
}

fn write_inputs(p: &Paths, rows: &[RolloutRow], starts: impl Fn(&RolloutRow) -> Vec<u32>) {
    write_rollouts(&p.rollouts, rows).unwrap();
    let segs: Vec<SegmentRow> = rows
        .iter()
        .map(|r| SegmentRow {
            id: r.id,
            termination: "test".into(),
            starts: starts(r),
        })
        .collect();
    write_segments(&p.segments, &segs).unwrap();
}

/// Vanilla PPO written out independently of marlhf-rl: DeepSpeed-Chat's
/// `compute_rewards` then `get_advantages_and_returns` over the tokens.
fn token_level(r: &RolloutRow, kl: f32, clip: f32, gamma: f32, lambda: f32) -> AdvantageRow {
    let n = r.response_tokens.len();
    let mut rewards: Vec<f32> = (0..n)
        .map(|t| -kl * (r.logprobs[t] - r.ref_logprobs[t]))
        .collect();
    if n > 0 {
        rewards[n - 1] += r.score.clamp(-clip, clip);
    }
    let mut adv = vec![0f32; n];
    let mut last = 0f32;
    for t in (0..n).rev() {
        let next = if t + 1 < n { r.values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next - r.values[t];
        last = delta + gamma * lambda * last;
        adv[t] = last;
    }
    let returns: Vec<f32> = adv.iter().zip(&r.values).map(|(a, v)| a + v).collect();
    AdvantageRow {
        id: r.id,
        macro_advantages: adv.clone(),
        macro_returns: returns.clone(),
        advantages: adv,
        returns,
        rewards,
    }
}

#[test]
#[ignore = "needs ../shared"]
fn fixed_one_is_token_level_ppo_bit_for_bit() {
    let run = Run::new("update-fixed1", 1).unwrap();
    let p = Paths::new(&run, "iter-000", run.sft(), run.rm(), "iter-001");
    // Different lengths in one batch, an empty response, unfinished ones
    // (odd ids), scores beyond the ±2.5 clip.
    let rows: Vec<RolloutRow> = [5, 9, 0, 1, 12, 3]
        .iter()
        .enumerate()
        .map(|(i, &n)| synthetic_rollout(i as u64, 0, 4, n, 21))
        .collect();
    assert!(rows.iter().any(|r| r.score.abs() > 2.5));
    write_inputs(&p, &rows, |r| (0..r.response_tokens.len() as u32).collect());
    let exit = update(
        &p,
        &[
            ("--kl-coef", "0.1"),
            ("--gamma", "0.99"),
            ("--lambda", "0.9"),
        ],
    );
    assert!(exit.success, "{}", exit.stderr);
    let got = read_advantages(&p.advantages()).unwrap();
    let want: Vec<AdvantageRow> = rows
        .iter()
        .map(|r| token_level(r, 0.1, 2.5, 0.99, 0.9))
        .collect();
    assert_eq!(got, want);
    // The unfinished responses still got the score on their last token (in
    // `want` above) and are counted.
    let m = read_metrics(&p.metrics).unwrap();
    assert_eq!(m.len(), 1);
    // Odd ids and the empty response (id 2) have no EOS.
    assert_eq!(m[0].get("unfinished"), Some(4.0));
    assert_eq!(m[0].get("empty_responses"), Some(1.0));
    assert_eq!(m[0].get("rollouts"), Some(6.0));
}

#[test]
#[ignore = "needs ../shared"]
fn macro_actions_share_one_advantage_golden() {
    // Macro actions [0 1] [2], equal value function: rewards [0, 1], values
    // [(0.5 + 0.25)/2, 0.5] = [0.375, 0.5]. GAE, γ = 1, λ = 0.95:
    //   k=1: δ = 1 − 0.5 = 0.5;               A = 0.5
    //   k=0: δ = 0 + 0.5 − 0.375 = 0.125;     A = 0.125 + λ'·0.5
    // with λ' = 0.95 once per macro action (the released code, `reference`
    // recipe): A = 0.6; per token (the `default` recipe), λ' = 0.95² for
    // the first macro action's two tokens: A = 0.57625.
    // Returns A + V; tokens take their macro action's.
    for (flags, a0) in [
        (&[][..], 0.57625f32),
        (&[("--macro-lambda", "per-token")][..], 0.57625),
        (&[("--macro-lambda", "per-macro")][..], 0.6),
        (
            &[("--recipe", "reference"), ("--total-iterations", "1")][..],
            0.6,
        ),
    ] {
        let run = Run::new("update-macro", 1).unwrap();
        let p = Paths::new(&run, "iter-000", run.sft(), run.rm(), "iter-001");
        let mut row = synthetic_rollout(7, 0, 3, 3, 1);
        row.ref_logprobs = row.logprobs.clone(); // no KL penalty
        row.values = vec![0.5, 0.25, 0.5];
        row.score = 1.0;
        write_inputs(&p, &[row], |_| vec![0, 2]);
        let exit = update(&p, flags);
        assert!(exit.success, "{flags:?}: {}", exit.stderr);
        let a = &read_advantages(&p.advantages()).unwrap()[0];
        let close = |got: &[f32], want: &[f32]| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{flags:?}: {got:?} vs {want:?}");
            }
        };
        close(&a.macro_advantages, &[a0, 0.5]);
        close(&a.macro_returns, &[a0 + 0.375, 1.0]);
        close(&a.advantages, &[a0, a0, 0.5]);
        close(&a.returns, &[a0 + 0.375, a0 + 0.375, 1.0]);
        close(&a.rewards, &[0.0, 0.0, 1.0]);
    }
}

fn rollouts_for(run: &Run, p: &Paths, iteration: u32) {
    rollout(
        &RolloutConfig {
            prompts: run.prompts(),
            actor: p.actor.clone(),
            reference: run.sft(),
            critic: p.critic.clone(),
            reward_model: run.rm(),
            out: p.rollouts.clone(),
            iteration,
            rollout_batch: 4,
            prompt_order: PromptOrder::File,
            batch_size: 4,
            max_prompt_tokens: 64,
            max_new_tokens: 10,
            temperature: 0.8,
            top_k: 50,
            top_p: 1.0,
            logprob_temperature: None,
            gold_model: None,
            seed: 5,
            device: Device::Cpu,
            dtype: candle_core::DType::F32,
        },
        &Silent,
    )
    .unwrap();
    run_segment(&SegmentConfig {
        rollouts: p.rollouts.clone(),
        out: p.segments.clone(),
        termination: Termination::Fixed { n: 5 },
        seed: 5,
        tokenizer: None,
    })
    .unwrap();
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
#[ignore = "needs ../shared"]
fn iterations_write_checkpoints_continue_adamw_and_replace_metrics() {
    let run = Run::new("update-iters", 8).unwrap();
    let p0 = Paths::new(&run, "iter-000", run.sft(), run.rm(), "iter-001");
    rollouts_for(&run, &p0, 0);

    // One mini-batch holding every rollout: the first step's ratio is
    // exactly what the rollout's recomputed log-probs say, so nothing is
    // clipped and the KL estimate is ~0.
    let exit = update(&p0, &[("--mini-batch", "4")]);
    assert!(exit.success, "{}", exit.stderr);
    assert!(
        exit.stderr.contains("actor fresh, critic fresh"),
        "{}",
        exit.stderr
    );
    let m = read_metrics(&p0.metrics).unwrap();
    assert_eq!(m[0].get("actor_clip_fraction"), Some(0.0));
    assert!(m[0].get("approx_kl").unwrap().abs() < 1e-5, "{:?}", m[0]);
    for (k, v) in &m[0].values {
        assert!(v.is_finite(), "{k} = {v}");
    }
    for k in [
        "score_mean",
        "reward_mean",
        "kl_k1_token_mean",
        "kl_k1_seq_sum",
        "kl_k3_token_mean",
        "kl_k3_seq_sum",
        "response_length",
        "actor_loss",
        "critic_loss",
        "critic_clip_fraction",
        "entropy",
        "actor_seconds",
        "critic_seconds",
    ] {
        assert!(m[0].get(k).is_some(), "missing {k}");
    }
    // A real entropy over 512 tokens: positive, at most ln 512.
    let h = m[0].get("entropy").unwrap();
    assert!(h > 0.0 && h <= (512f64).ln() + 1e-6, "{h}");

    for (dir, stage) in [
        (p0.out_actor(), "ppo-actor"),
        (p0.out_critic(), "ppo-critic"),
    ] {
        let st = read_state(&dir).unwrap().unwrap();
        assert_eq!((st.stage.as_str(), st.step), (stage, 1));
        assert!(dir.join(STATE_TENSORS).is_file());
        assert!(dir.join("tokenizer.json").is_file());
    }
    assert_ne!(weights(&p0.out_actor()), weights(&run.sft()));
    assert_ne!(weights(&p0.out_critic()), weights(&run.rm()));
    let critic = marlhf_model::Checkpoint::load(&p0.out_critic(), &Device::Cpu).unwrap();
    assert!(critic.model.v_head.is_some());

    // Rerunning the iteration (2 mini-batches now, 2 epochs) replaces its
    // outputs and its metrics row; the same inputs give the same bytes.
    let again = |p: &Paths| {
        let exit = update(p, &[("--ppo-epochs", "2")]);
        assert!(exit.success, "{}", exit.stderr);
        (
            std::fs::read(p.advantages()).unwrap(),
            weights(&p.out_actor()),
            weights(&p.out_critic()),
        )
    };
    let first = again(&p0);
    let second = again(&p0);
    assert_eq!(first, second);
    let m = read_metrics(&p0.metrics).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].get("optimizer_steps"), Some(4.0));
    assert_eq!(read_state(&p0.out_actor()).unwrap().unwrap().step, 4);

    // Iteration 1 continues each model's AdamW from iteration 0.
    let p1 = Paths::new(
        &run,
        "iter-001",
        p0.out_actor(),
        p0.out_critic(),
        "iter-002",
    );
    rollouts_for(&run, &p1, 1);
    let exit = update(&p1, &[]);
    assert!(exit.success, "{}", exit.stderr);
    assert!(
        exit.stderr.contains("actor continued, critic continued"),
        "{}",
        exit.stderr
    );
    assert_eq!(read_state(&p1.out_actor()).unwrap().unwrap().step, 6);
    assert_eq!(read_state(&p1.out_critic()).unwrap().unwrap().step, 6);
    let m = read_metrics(&p1.metrics).unwrap();
    assert_eq!(
        m.iter().map(|r| (r.iteration, r.step)).collect::<Vec<_>>(),
        [(0, 4), (1, 6)]
    );
}

fn assert_nothing_written(p: &Paths) {
    assert!(!p.out.exists(), "{} was created", p.out.display());
    assert!(!p.metrics.exists());
    let root = p.metrics.parent().unwrap();
    let hidden: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporaries left: {hidden:?}");
}

#[test]
#[ignore = "needs ../shared"]
fn nan_weights_stop_the_update_and_write_nothing() {
    let run = Run::new("update-nan", 1).unwrap();
    let rows: Vec<RolloutRow> = (0..3).map(|i| synthetic_rollout(i, 0, 3, 4, 2)).collect();

    let bad_actor = run.root().join("bad-actor");
    copy_dir(&run.sft(), &bad_actor);
    poison(&bad_actor, "model.layers.0.mlp.up_proj.weight").unwrap();
    let p = Paths::new(&run, "iter-000", bad_actor, run.rm(), "iter-001");
    write_inputs(&p, &rows, |r| (0..r.response_tokens.len() as u32).collect());
    let before = weights(&p.actor);
    let line = update(&p, &[]).error_line().to_string();
    // Refused when loaded, naming the file and the tensor.
    assert!(
        line.contains("bad-actor/model.safetensors")
            && line.contains("model.layers.0.mlp.up_proj.weight")
            && line.contains("not finite"),
        "{line}"
    );
    assert_nothing_written(&p);
    assert_eq!(
        weights(&p.actor),
        before,
        "the input checkpoint is untouched"
    );

    let bad_critic = run.root().join("bad-critic");
    copy_dir(&run.rm(), &bad_critic);
    poison(&bad_critic, "v_head.weight").unwrap();
    let p = Paths::new(&run, "iter-000", run.sft(), bad_critic, "iter-001");
    let line = update(&p, &[]).error_line().to_string();
    assert!(
        line.contains("bad-critic/model.safetensors") && line.contains("v_head.weight"),
        "{line}"
    );
    assert_nothing_written(&p);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
#[ignore = "needs ../shared"]
fn bad_batches_are_refused_with_the_file_and_row() {
    let run = Run::new("update-bad", 1).unwrap();
    let p = Paths::new(&run, "iter-000", run.sft(), run.rm(), "iter-001");

    // Nothing to train on.
    let empty: Vec<RolloutRow> = (0..3).map(|i| synthetic_rollout(i, 0, 3, 0, 2)).collect();
    write_inputs(&p, &empty, |_| vec![]);
    let line = update(&p, &[]).error_line().to_string();
    assert!(
        line.contains("rollouts.parquet: all 3 responses are empty"),
        "{line}"
    );
    assert_nothing_written(&p);

    let rows: Vec<RolloutRow> = (0..3).map(|i| synthetic_rollout(i, 0, 3, 5, 2)).collect();
    // Segments for other rollouts.
    write_inputs(&p, &rows, |_| vec![0, 4]);
    let mut other = rows.clone();
    other[1].id = 99;
    write_rollouts(&p.rollouts, &other).unwrap();
    let line = update(&p, &[]).error_line().to_string();
    assert!(
        line.contains("segments.parquet: no segments for rollout 99 (row 2 of"),
        "{line}"
    );

    // Starts that do not give the last token its own macro action.
    write_inputs(
        &p,
        &rows,
        |r| if r.id == 2 { vec![0, 3] } else { vec![0, 4] },
    );
    let line = update(&p, &[]).error_line().to_string();
    assert!(
        line.contains("segments.parquet: rollout 2 (row 3 of"),
        "{line}"
    );
    assert!(
        line.contains("last token (4) is not a macro action of its own"),
        "{line}"
    );

    // Two iterations mixed in one file.
    let mut mixed = rows.clone();
    mixed[2].iteration = 1;
    write_inputs(&p, &mixed, |_| vec![0, 4]);
    let line = update(&p, &[]).error_line().to_string();
    assert!(line.contains("row 3, column \"iteration\""), "{line}");
    assert_nothing_written(&p);
}

/// Issue 13, item 8: a token id the models do not have, or a sequence longer
/// than their positions, is refused naming the file, the row and the column.
#[test]
#[ignore = "needs ../shared"]
fn token_ids_and_lengths_are_checked_against_the_models() {
    let run = Run::new("update-tokens", 1).unwrap();
    let mut rows: Vec<RolloutRow> = (0..3).map(|i| synthetic_rollout(i, 0, 3, 4, 2)).collect();
    rows[1].response_tokens[2] = 99_999;
    let p = Paths::new(&run, "iter-000", run.sft(), run.rm(), "iter-001");
    write_inputs(&p, &rows, |r| (0..r.response_tokens.len() as u32).collect());
    let line = update(&p, &[]).error_line().to_string();
    assert!(
        line.starts_with(&format!(
            "error: {}: row 2, column \"response_tokens\"",
            p.rollouts.display()
        )) && line.contains("99999")
            && line.contains("512"),
        "{line}"
    );
    assert_nothing_written(&p);

    let mut rows: Vec<RolloutRow> = (0..3).map(|i| synthetic_rollout(i, 0, 3, 4, 2)).collect();
    rows[2] = synthetic_rollout(2, 0, 1020, 8, 2);
    write_inputs(&p, &rows, |r| (0..r.response_tokens.len() as u32).collect());
    let line = update(&p, &[]).error_line().to_string();
    assert!(
        line.starts_with(&format!("error: {}: row 3", p.rollouts.display()))
            && line.contains("1028 tokens")
            && line.contains("1024 positions"),
        "{line}"
    );
    assert_nothing_written(&p);
}

/// Issue 21, item 8: `--out-actor` equal to `--out-critic` (or to another
/// output) is refused before anything is read, not after the whole update.
#[test]
fn the_same_output_for_actor_and_critic_is_refused_first() {
    let run = marlhf_testkit::TempDir::new("update-same-out");
    let out = run.path().join("iter-001/model");
    let s = |p: &Path| p.display().to_string();
    // The inputs do not exist: the refusal must come before reading them.
    let missing = run.path().join("missing");
    let e = run_stage(
        EXE,
        &[
            "--rollouts",
            &s(&missing.join("rollouts.parquet")),
            "--segments",
            &s(&missing.join("segments.parquet")),
            "--actor",
            &s(&missing.join("actor")),
            "--critic",
            &s(&missing.join("critic")),
            "--out-actor",
            &s(&out),
            "--out-critic",
            &s(&run.path().join("iter-001/./model")),
            "--advantages",
            &s(&run.path().join("advantages.parquet")),
            "--metrics",
            &s(&run.path().join("metrics.parquet")),
        ],
    );
    let line = e.error_line();
    assert!(
        line.contains("--out-actor and --out-critic are the same path"),
        "{line}"
    );
    assert!(!run.path().join("iter-001").exists());
}
