//! LoRA through the stages on a tiny model over stories260K's vocabulary:
//! SFT and the reward model train PEFT adapters on a frozen base (resuming
//! exactly, continuing an adapter, refusing to restart one), PPO iterations
//! chain adapters on the SFT model and the reward model, and rollout takes
//! the reference as the actor's base with its adapter off instead of
//! loading it again.

use std::path::Path;

use candle_core::{DType, Device};
use marlhf_data::{read_rollouts, write_pairs, write_rollouts, write_sft, PairRow, SftRow};
use marlhf_model::checkpoint::{self, Use};
use marlhf_model::lm::Scored;
use marlhf_model::lora::{self, LoraSettings, Target};
use marlhf_model::Checkpoint;
use marlhf_rl::{RlConfig, Termination};
use marlhf_stages::ppo::models::Models;
use marlhf_stages::ppo::{
    rollout, run_segment, update, PpoConfig, PromptOrder, RolloutConfig, SegmentConfig,
    UpdateConfig,
};
use marlhf_stages::progress::Silent;
use marlhf_stages::rm::{self, RmOptions};
use marlhf_stages::sft::{self, Init, SftOptions};
use marlhf_stages::TrainConfig;
use marlhf_testkit::ppo::Run;

fn settings(rank: usize) -> LoraSettings {
    LoraSettings {
        rank,
        alpha: 8.0,
        targets: Target::ALL.to_vec(),
        dropout: 0.1,
        rslora: false,
    }
}

fn train_cfg(out: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        stage: "test".into(),
        out: out.to_path_buf(),
        lr: 2e-2,
        warmup_ratio: 0.0,
        min_lr_ratio: 0.0,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
        batch_size: 4,
        grad_accum: 1,
        epochs: 1.0,
        max_steps: Some(steps),
        seed: 5,
        save_every: 0,
        eval_every: 0,
        resume: false,
        stop_after: None,
        override_settings: false,
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn base_named(adapter: &Path) -> String {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join(lora::ADAPTER_CONFIG)).unwrap())
            .unwrap();
    cfg["base_model_name_or_path"].as_str().unwrap().to_string()
}

/// The optimiser state holds the adapter's parameters (and a value head)
/// alone: the base has none.
fn only_adapter_state(dir: &Path) {
    let state = candle_core::safetensors::load(dir.join("trainer_state.safetensors"), &Device::Cpu)
        .unwrap();
    assert!(!state.is_empty());
    for name in state.keys() {
        assert!(
            name.contains(".lora_A.")
                || name.contains(".lora_B.")
                || name.ends_with("v_head.weight"),
            "{}: optimiser state for {name}",
            dir.display()
        );
    }
}

fn logprobs(ck: &Checkpoint, seqs: &[Vec<u32>]) -> Vec<f32> {
    let scored = Scored {
        seqs: seqs.to_vec(),
        starts: vec![1; seqs.len()],
    };
    ck.model
        .token_logprobs(&scored)
        .unwrap()
        .0
        .to_vec1()
        .unwrap()
}

#[test]
#[ignore = "needs ../shared"]
fn lora_sft_and_rm_train_adapters_on_a_frozen_base() {
    let run = Run::new("lora-sft", 2).unwrap();
    let data = run.root().join("sft.parquet");
    let stories = [
        "Tom saw a big dog.",
        "Lily had a red ball.",
        "The cat was sad.",
    ];
    let rows: Vec<SftRow> = (0..40)
        .map(|i| SftRow {
            id: i,
            prompt: format!("Once upon a time {}", stories[i as usize % 3]),
            completion: " They were happy.".into(),
        })
        .collect();
    write_sft(&data, &rows).unwrap();
    let opts = |out: &Path, stop_after: Option<u64>, resume: bool| SftOptions {
        data: data.clone(),
        init: Init::Checkpoint(run.sft()),
        max_prompt_tokens: 24,
        max_completion_tokens: 8,
        val_fraction: 0.2,
        limit: None,
        device: Device::Cpu,
        dtype: DType::F32,
        lora: Some(settings(4)),
        train: TrainConfig {
            stop_after,
            resume,
            ..train_cfg(out, 12)
        },
    };
    let a = run.root().join("sft-lora");
    let report = sft::run(&opts(&a, None, false), &Silent).unwrap();
    // 2 layers × 7 projections × (A 4·in + B out·4) on a 32-wide model.
    assert!(report.trainable > 0 && report.trainable < report.params / 5);
    assert!(lora::is_adapter(&a), "no adapter written");
    assert!(!a.join(checkpoint::WEIGHTS).exists());
    assert_eq!(base_named(&a), "../sft");
    only_adapter_state(&a);
    let m = marlhf_data::read_metrics(&a.join("metrics.parquet")).unwrap();
    let (first, last) = (m[0].get("loss").unwrap(), m[11].get("loss").unwrap());
    assert!(
        last < first * 0.9,
        "the adapter did not learn: {first} → {last}"
    );

    // Paused and resumed: the same adapter, byte for byte (dropout too).
    let b = run.root().join("sft-lora-resumed");
    sft::run(&opts(&b, Some(5), false), &Silent).unwrap();
    sft::run(&opts(&b, None, true), &Silent).unwrap();
    for f in [
        lora::ADAPTER_WEIGHTS,
        lora::ADAPTER_CONFIG,
        "trainer_state.safetensors",
    ] {
        assert_eq!(bytes(&a.join(f)), bytes(&b.join(f)), "{f}");
    }

    // The base is untouched: with the adapter off, the SFT model exactly.
    let seqs = vec![vec![1, 400, 35, 290, 61, 2], vec![1, 72, 9]];
    let mut adapted = Checkpoint::load_with(&a, &Device::Cpu, DType::F32, Use::Inference).unwrap();
    let base = Checkpoint::load_with(&run.sft(), &Device::Cpu, DType::F32, Use::Inference).unwrap();
    let with = logprobs(&adapted, &seqs);
    assert_ne!(with, logprobs(&base, &seqs));
    assert!(adapted.switch_to(&run.sft()).unwrap());
    assert_eq!(logprobs(&adapted, &seqs), logprobs(&base, &seqs));

    // The reward model continues the SFT adapter (same settings) with a
    // value head of its own; the merged checkpoint scores the same.
    let pairs = run.root().join("pairs.parquet");
    let pair_rows: Vec<PairRow> = (0..24)
        .map(|i| PairRow {
            id: i,
            prompt: format!("Once upon a time {}", stories[i as usize % 3]),
            chosen: " They were happy.".into(),
            rejected: " The end end end.".into(),
        })
        .collect();
    write_pairs(&pairs, &pair_rows).unwrap();
    let rm_opts = |init: &Path, out: &Path, rank: usize| RmOptions {
        data: pairs.clone(),
        init: init.to_path_buf(),
        max_prompt_tokens: 24,
        max_completion_tokens: 8,
        val_fraction: 0.2,
        limit: None,
        device: Device::Cpu,
        dtype: DType::F32,
        lora: Some(settings(rank)),
        train: train_cfg(out, 6),
    };
    let rm_dir = run.root().join("rm-lora");
    rm::run(&rm_opts(&a, &rm_dir, 4), &Silent).unwrap();
    assert!(lora::is_adapter(&rm_dir));
    assert_eq!(base_named(&rm_dir), "../sft", "the SFT adapter's base");
    assert!(rm_dir.join(lora::VALUE_HEAD).is_file());
    only_adapter_state(&rm_dir);
    let unmerged =
        Checkpoint::load_with(&rm_dir, &Device::Cpu, DType::F32, Use::Inference).unwrap();
    let merged = Checkpoint::load(&rm_dir, &Device::Cpu).unwrap();
    let s1: Vec<f32> = unmerged.model.scores(&seqs).unwrap().to_vec1().unwrap();
    let s2: Vec<f32> = merged.model.scores(&seqs).unwrap().to_vec1().unwrap();
    for (x, y) in s1.iter().zip(&s2) {
        assert!(
            (x - y).abs() < 1e-4,
            "merged scores {s2:?}, unmerged {s1:?}"
        );
    }
    // Another rank cannot continue that adapter: refused, and nothing written.
    let other = run.root().join("rm-lora-8");
    let e = rm::run(&rm_opts(&a, &other, 8), &Silent)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(
        e.contains("marlhf-import merge") && !e.contains('\n'),
        "{e}"
    );
    assert!(!other.exists());
}

fn rollout_cfg(
    run: &Run,
    actor: &Path,
    critic: &Path,
    out: &Path,
    iteration: u32,
) -> RolloutConfig {
    RolloutConfig {
        prompts: run.prompts(),
        actor: actor.to_path_buf(),
        reference: run.sft(),
        critic: critic.to_path_buf(),
        reward_model: run.rm(),
        out: out.join("rollouts.parquet"),
        iteration,
        rollout_batch: 8,
        batch_size: 8,
        max_prompt_tokens: 64,
        max_new_tokens: 8,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        logprob_temperature: None,
        gold_model: None,
        prompt_order: PromptOrder::File,
        seed: 3,
        device: Device::Cpu,
        dtype: DType::F32,
    }
}

fn segment(dir: &Path) {
    run_segment(&SegmentConfig {
        rollouts: dir.join("rollouts.parquet"),
        out: dir.join("segments.parquet"),
        termination: Termination::Fixed { n: 3 },
        seed: 0,
        tokenizer: None,
    })
    .unwrap();
}

fn update_cfg(run: &Run, k: u32, actor: &Path, critic: &Path, rank: usize) -> UpdateConfig {
    let dir = run.root().join(format!("iter-{k:03}"));
    let next = run.root().join(format!("iter-{:03}", k + 1));
    UpdateConfig {
        rollouts: dir.join("rollouts.parquet"),
        segments: dir.join("segments.parquet"),
        actor: actor.to_path_buf(),
        critic: critic.to_path_buf(),
        out_actor: next.join("actor"),
        out_critic: next.join("critic"),
        advantages: dir.join("advantages.parquet"),
        metrics: run.root().join("metrics.parquet"),
        rl: RlConfig {
            kl_coef: 0.0,
            lambda: 1.0,
            ..RlConfig::default()
        },
        ppo: PpoConfig {
            ppo_epochs: 3,
            mini_batch: 4,
            actor_lr: 2e-2,
            critic_lr: 2e-2,
            ..PpoConfig::default()
        },
        seed: 1,
        device: Device::Cpu,
        dtype: DType::F32,
        lora: Some(LoraSettings {
            dropout: 0.0,
            ..settings(rank)
        }),
    }
}

/// Each response's total log-probability under `dir`'s model.
fn sequence_logprobs(dir: &Path, rows: &[marlhf_data::RolloutRow]) -> Vec<f32> {
    let ck = Checkpoint::load_with(dir, &Device::Cpu, DType::F32, Use::Inference).unwrap();
    let scored = Scored {
        seqs: rows
            .iter()
            .map(|r| {
                r.prompt_tokens
                    .iter()
                    .chain(&r.response_tokens)
                    .copied()
                    .collect()
            })
            .collect(),
        starts: rows.iter().map(|r| r.prompt_tokens.len()).collect(),
    };
    let (lp, counts) = ck.model.token_logprobs(&scored).unwrap();
    marlhf_model::lm::split_rows(&lp.to_vec1().unwrap(), &counts)
        .iter()
        .map(|r| r.iter().sum())
        .collect()
}

#[test]
#[ignore = "needs ../shared"]
fn lora_ppo_chains_adapters_and_the_reference_is_free() {
    let run = Run::new("lora-ppo", 8).unwrap();
    let it0 = run.root().join("iter-000");
    std::fs::create_dir_all(&it0).unwrap();
    rollout(&rollout_cfg(&run, &run.sft(), &run.rm(), &it0, 0), &Silent).unwrap();
    // Scores of ±2: every advantage has its response's sign (no KL, λ = 1).
    let path = it0.join("rollouts.parquet");
    let mut rows = read_rollouts(&path).unwrap();
    for (i, r) in rows.iter_mut().enumerate() {
        r.score = if i % 2 == 0 { 2.0 } else { -2.0 };
    }
    write_rollouts(&path, &rows).unwrap();
    segment(&it0);
    let cfg = update_cfg(&run, 0, &run.sft(), &run.rm(), 4);
    let r0 = update(&cfg, &Silent).unwrap();
    assert!(!r0.actor_optimizer_continued);
    for (dir, base) in [(&cfg.out_actor, "../../sft"), (&cfg.out_critic, "../../rm")] {
        assert!(lora::is_adapter(dir), "{}: not an adapter", dir.display());
        assert_eq!(base_named(dir), base);
        only_adapter_state(dir);
    }
    assert!(cfg.out_critic.join(lora::VALUE_HEAD).is_file());
    assert!(!cfg.out_actor.join(lora::VALUE_HEAD).exists());
    // The adapter moved the policy as the advantages say.
    let before = sequence_logprobs(&run.sft(), &rows);
    let after = sequence_logprobs(&cfg.out_actor, &rows);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if rows[i].score > 0.0 {
            assert!(a > b, "rollout {i} (advantage > 0): {b} → {a}");
        } else {
            assert!(a < b, "rollout {i} (advantage < 0): {b} → {a}");
        }
    }

    // Iteration 1: the reference is the actor's base with the adapter off,
    // the reward model the critic's: two loads for four models.
    let mut models = Models::new(Device::Cpu, DType::F32);
    for dir in [&cfg.out_actor, &run.sft(), &cfg.out_critic, &run.rm()] {
        models.get(dir).unwrap();
    }
    assert_eq!(models.loads, 2);
    let it1 = run.root().join("iter-001");
    rollout(
        &rollout_cfg(&run, &cfg.out_actor, &cfg.out_critic, &it1, 1),
        &Silent,
    )
    .unwrap();
    // Its reference log-probs are the SFT model's own, bit for bit.
    let rows1 = read_rollouts(&it1.join("rollouts.parquet")).unwrap();
    let sft = Checkpoint::load_with(&run.sft(), &Device::Cpu, DType::F32, Use::Inference).unwrap();
    let resp = marlhf_stages::ppo::forward::Responses {
        seqs: &rows1
            .iter()
            .map(|r| {
                r.prompt_tokens
                    .iter()
                    .chain(&r.response_tokens)
                    .copied()
                    .collect()
            })
            .collect::<Vec<Vec<u32>>>(),
        starts: &rows1
            .iter()
            .map(|r| r.prompt_tokens.len())
            .collect::<Vec<_>>(),
    };
    let reference =
        marlhf_stages::ppo::forward::logprobs(&sft.model, &resp, 1.0, 8, &|_| {}).unwrap();
    for (r, want) in rows1.iter().zip(&reference) {
        assert_eq!(&r.ref_logprobs, want, "rollout {}", r.id);
    }
    segment(&it1);
    // The adapters are trained on, their optimiser state continued.
    let cfg1 = update_cfg(&run, 1, &cfg.out_actor, &cfg.out_critic, 4);
    let r1 = update(&cfg1, &Silent).unwrap();
    assert!(r1.actor_optimizer_continued && r1.critic_optimizer_continued);
    assert_eq!(base_named(&cfg1.out_actor), "../../sft");
    // An adapter of another rank cannot continue this one.
    let e = update(
        &update_cfg(&run, 1, &cfg.out_actor, &cfg.out_critic, 8),
        &Silent,
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap();
    assert!(
        e.contains("marlhf-import merge") && !e.contains('\n'),
        "{e}"
    );
}
