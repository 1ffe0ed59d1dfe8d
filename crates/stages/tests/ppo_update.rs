//! The update learns in the right direction: on real rollouts of a tiny
//! model, responses with a positive advantage become more likely and those
//! with a negative one less likely, and the critic moves towards the
//! returns.

use candle_core::Device;
use marlhf_data::{read_advantages, read_rollouts, write_rollouts, RolloutRow};
use marlhf_model::lm::Scored;
use marlhf_model::Checkpoint;
use marlhf_rl::{LossAgg, RlConfig, Termination};
use marlhf_stages::ppo::{
    rollout, run_segment, update, PpoConfig, PromptOrder, Recipe, RolloutConfig, SegmentConfig,
    UpdateConfig,
};
use marlhf_stages::progress::Silent;
use marlhf_stages::trainer::read_state;
use marlhf_testkit::ppo::Run;

fn scored(rows: &[RolloutRow]) -> Scored {
    Scored {
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
    }
}

/// Each response's total log-probability under `dir`'s model.
fn sequence_logprobs(dir: &std::path::Path, rows: &[RolloutRow]) -> Vec<f32> {
    let ck = Checkpoint::load(dir, &Device::Cpu).unwrap();
    let (lp, counts) = ck.model.token_logprobs(&scored(rows)).unwrap();
    let lp: Vec<f32> = lp.to_vec1().unwrap();
    marlhf_model::lm::split_rows(&lp, &counts)
        .iter()
        .map(|r| r.iter().sum())
        .collect()
}

fn values(dir: &std::path::Path, rows: &[RolloutRow]) -> Vec<f32> {
    let ck = Checkpoint::load(dir, &Device::Cpu).unwrap();
    ck.model
        .token_values(&scored(rows))
        .unwrap()
        .0
        .to_vec1()
        .unwrap()
}

#[test]
#[ignore = "needs ../shared"]
fn update_follows_the_advantages() {
    let run = Run::new("ppo-learn", 8).unwrap();
    let dir = run.root().join("iter-000");
    let rollouts = dir.join("rollouts.parquet");
    sample_rollouts(&run, &dir, 8, 1.0, 8, 3);
    // Scores of ±2, far beyond the untrained critic's values, so that with
    // no KL penalty and λ = 1 every token's advantage (score − value) has
    // the sign of its response's score.
    let mut rows = read_rollouts(&rollouts).unwrap();
    for (i, r) in rows.iter_mut().enumerate() {
        r.score = if i % 2 == 0 { 2.0 } else { -2.0 };
    }
    write_rollouts(&rollouts, &rows).unwrap();
    segment(&dir, Termination::Fixed { n: 3 });
    let out = run.root().join("iter-001");
    let cfg = UpdateConfig {
        rollouts: rollouts.clone(),
        segments: dir.join("segments.parquet"),
        actor: run.sft(),
        critic: run.rm(),
        out_actor: out.join("actor"),
        out_critic: out.join("critic"),
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
            actor_lr: 3e-3,
            critic_lr: 3e-3,
            ..PpoConfig::default()
        },
        seed: 1,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
        lora: None,
    };
    let report = update(&cfg, &Silent).unwrap();
    assert_eq!(report.get("optimizer_steps"), Some(6.0));

    let advantages = read_advantages(&cfg.advantages).unwrap();
    for (a, r) in advantages.iter().zip(&rows) {
        assert!(
            a.advantages.iter().all(|&x| x.signum() == r.score.signum()),
            "rollout {}: {:?}",
            r.id,
            a.advantages
        );
    }
    let before = sequence_logprobs(&run.sft(), &rows);
    let after = sequence_logprobs(&cfg.out_actor, &rows);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if rows[i].score > 0.0 {
            assert!(a > b, "rollout {i} (advantage > 0): {b} → {a}");
        } else {
            assert!(a < b, "rollout {i} (advantage < 0): {b} → {a}");
        }
    }

    let returns: Vec<f32> = advantages.iter().flat_map(|a| a.returns.clone()).collect();
    let mse = |v: &[f32]| {
        v.iter()
            .zip(&returns)
            .map(|(v, r)| (v - r).powi(2))
            .sum::<f32>()
            / v.len() as f32
    };
    let old = mse(&values(&run.rm(), &rows));
    let new = mse(&values(&cfg.out_critic, &rows));
    assert!(new < old, "critic error {old} → {new}");
}

/// Samples `n` rollouts of `run`'s SFT model into `dir/rollouts.parquet`
/// (so the PPO ratio starts at 1).
fn sample_rollouts(
    run: &Run,
    dir: &std::path::Path,
    n: usize,
    temperature: f64,
    max_new_tokens: usize,
    seed: u64,
) {
    rollout(
        &RolloutConfig {
            prompts: run.prompts(),
            actor: run.sft(),
            reference: run.sft(),
            critic: run.rm(),
            reward_model: run.rm(),
            out: dir.join("rollouts.parquet"),
            iteration: 0,
            rollout_batch: n,
            prompt_order: PromptOrder::File,
            batch_size: n,
            max_prompt_tokens: 64,
            max_new_tokens,
            temperature,
            top_k: 0,
            top_p: 1.0,
            logprob_temperature: None,
            gold_model: None,
            seed,
            device: Device::Cpu,
            dtype: candle_core::DType::F32,
        },
        &Silent,
    )
    .unwrap();
}

/// Segments `dir/rollouts.parquet` into `dir/segments.parquet`.
fn segment(dir: &std::path::Path, termination: Termination) {
    run_segment(&SegmentConfig {
        rollouts: dir.join("rollouts.parquet"),
        out: dir.join("segments.parquet"),
        termination,
        seed: 0,
        tokenizer: None,
    })
    .unwrap();
}

/// Rollouts with responses of different lengths, segmented token by token.
fn sampled_rollouts(run: &Run, dir: &std::path::Path, n: usize) -> Vec<RolloutRow> {
    sample_rollouts(run, dir, n, 0.7, 10, 11);
    segment(dir, Termination::TOKEN);
    read_rollouts(&dir.join("rollouts.parquet")).unwrap()
}

fn update_config(run: &Run, dir: &std::path::Path, out: &str, ppo: PpoConfig) -> UpdateConfig {
    let out = run.root().join(out);
    UpdateConfig {
        rollouts: dir.join("rollouts.parquet"),
        segments: dir.join("segments.parquet"),
        actor: run.sft(),
        critic: run.rm(),
        out_actor: out.join("actor"),
        out_critic: out.join("critic"),
        advantages: out.join("advantages.parquet"),
        metrics: out.join("metrics.parquet"),
        rl: RlConfig::default(),
        ppo,
        seed: 1,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
        lora: None,
    }
}

fn weights(dir: &std::path::Path) -> Vec<Vec<f32>> {
    let ck = Checkpoint::load(dir, &Device::Cpu).unwrap();
    ck.model
        .params
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
#[ignore = "needs ../shared"]
fn reference_recipe_takes_one_step_with_every_sequence_weighted_equally() {
    let run = Run::new("ppo-reference", 5).unwrap();
    let dir = run.root().join("iter-000");
    let rows = sampled_rollouts(&run, &dir, 5);
    let lens: Vec<usize> = rows.iter().map(|r| r.response_tokens.len()).collect();
    assert!(
        lens.iter().any(|&l| l != lens[0]) && lens.iter().all(|&l| l >= 2),
        "the test needs responses of different lengths, none dropped: {lens:?}"
    );
    let reference = PpoConfig {
        micro_batch: 2,
        actor_lr: 1e-3,
        critic_lr: 1e-3,
        total_iterations: Some(1),
        ..PpoConfig::recipe(Recipe::Reference)
    };
    assert_eq!(
        (
            reference.mini_batch,
            reference.loss_agg,
            reference.weight_decay
        ),
        (0, LossAgg::SeqMeanTokenMean, 0.1)
    );
    let cfg = update_config(&run, &dir, "reference", reference.clone());
    let report = update(&cfg, &Silent).unwrap();

    // One optimiser step for the 5 rollouts (in micro-batches of 2, 2, 1).
    assert_eq!(report.get("optimizer_steps"), Some(1.0));
    for m in ["actor", "critic"] {
        let st = read_state(&cfg.out_actor.with_file_name(m))
            .unwrap()
            .unwrap();
        assert_eq!(st.step, 1, "{m}");
    }

    // By hand: the actor's and critic's first step see the rollouts'
    // own log-probabilities and values, so the ratio is 1 and nothing is
    // clipped, and the step's losses are the mean over responses of each
    // response's token mean: −mean_t A and ½·mean_t (V − R)².
    let adv = read_advantages(&cfg.advantages).unwrap();
    let seq_mean = |per_seq: Vec<f64>| per_seq.iter().sum::<f64>() / per_seq.len() as f64;
    let actor_by_hand = seq_mean(
        adv.iter()
            .map(|a| {
                -a.advantages.iter().map(|&x| x as f64).sum::<f64>() / a.advantages.len() as f64
            })
            .collect(),
    );
    let critic_by_hand = seq_mean(
        adv.iter()
            .zip(&rows)
            .map(|(a, r)| {
                let n = r.values.len() as f64;
                a.returns
                    .iter()
                    .zip(&r.values)
                    .map(|(&ret, &v)| 0.5 * ((v - ret) as f64).powi(2))
                    .sum::<f64>()
                    / n
            })
            .collect(),
    );
    let actor_loss = report.get("actor_loss").unwrap();
    let critic_loss = report.get("critic_loss").unwrap();
    assert!(
        (actor_loss - actor_by_hand).abs() < 1e-5,
        "{actor_loss} vs {actor_by_hand}"
    );
    assert!(
        (critic_loss - critic_by_hand).abs() < 1e-5,
        "{critic_loss} vs {critic_by_hand}"
    );
    // The token mean over the batch, which weighs long responses more, is
    // another number on these rollouts: the weighting is what was checked.
    let all: Vec<f64> = adv
        .iter()
        .flat_map(|a| a.advantages.iter().map(|&x| -(x as f64)))
        .collect();
    let token_mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!(
        (token_mean - actor_by_hand).abs() > 1e-3,
        "{token_mean} vs {actor_by_hand}"
    );
    let token = update(
        &update_config(
            &run,
            &dir,
            "token-mean",
            PpoConfig {
                loss_agg: LossAgg::TokenMean,
                ..reference.clone()
            },
        ),
        &Silent,
    )
    .unwrap();
    assert!((token.get("actor_loss").unwrap() - token_mean).abs() < 1e-5);

    // Gradient accumulation changes memory, not the step: micro-batches of
    // 1 or none give the same weights.
    for (name, micro) in [("micro-1", 1), ("micro-all", 0)] {
        let other = update_config(
            &run,
            &dir,
            name,
            PpoConfig {
                micro_batch: micro,
                ..reference.clone()
            },
        );
        update(&other, &Silent).unwrap();
        for (a, b) in weights(&other.out_actor)
            .iter()
            .zip(weights(&cfg.out_actor))
        {
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "{name}: {x} vs {y}");
            }
        }
    }
}

#[test]
#[ignore = "needs ../shared"]
fn metrics_carry_the_critic_diagnostics_of_the_written_advantages() {
    let run = Run::new("ppo-diagnostics", 6).unwrap();
    let dir = run.root().join("iter-000");
    sample_rollouts(&run, &dir, 6, 0.7, 10, 11);
    segment(&dir, Termination::Fixed { n: 3 });
    let rows = read_rollouts(&dir.join("rollouts.parquet")).unwrap();
    let cfg = update_config(&run, &dir, "diagnostics", PpoConfig::default());
    let report = update(&cfg, &Silent).unwrap();
    // The same figures from the files the update wrote: values from the
    // rollouts, returns and (unwhitened) advantages from advantages.parquet.
    let adv = read_advantages(&cfg.advantages).unwrap();
    let (mut err, mut ret, mut a, mut pos, mut last) = (vec![], vec![], vec![], vec![], vec![]);
    for (r, x) in rows.iter().zip(&adv) {
        for t in 0..r.values.len() {
            err.push(x.returns[t] as f64 - r.values[t] as f64);
            ret.push(x.returns[t] as f64);
            a.push(x.advantages[t] as f64);
            pos.push(t as f64);
        }
        if !r.values.is_empty() {
            last.push(*err.last().unwrap());
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64
    };
    let cov = |x: &[f64], y: &[f64]| {
        let (mx, my) = (mean(x), mean(y));
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - mx) * (b - my))
            .sum::<f64>()
            / x.len() as f64
    };
    let want = [
        ("critic_explained_variance", 1.0 - var(&err) / var(&ret)),
        ("critic_bias", mean(&err)),
        ("critic_bias_final_token", mean(&last)),
        (
            "advantage_position_corr",
            cov(&a, &pos) / (var(&a) * var(&pos)).sqrt(),
        ),
    ];
    for (name, w) in want {
        let got = report.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert!((got - w).abs() < 1e-9, "{name}: {got} vs {w}");
    }
    // And in the metrics table.
    let table = marlhf_data::read_metrics(&cfg.metrics).unwrap();
    assert_eq!(
        table[0].get("critic_bias"),
        report.get("critic_bias"),
        "the row the update wrote"
    );
    assert_eq!(report.get("actor_updated"), Some(1.0));
    let clip = RlConfig::default().clip_reward;
    let clipped = rows.iter().filter(|r| r.score.abs() > clip).count() as f64;
    assert_eq!(
        report.get("score_clipped_fraction"),
        Some(clipped / rows.len() as f64)
    );
}

#[test]
#[ignore = "needs ../shared"]
fn critic_warmup_trains_the_critic_alone() {
    let run = Run::new("ppo-critic-warmup", 4).unwrap();
    let dir = run.root().join("iter-000");
    sampled_rollouts(&run, &dir, 4);
    let ppo = PpoConfig {
        critic_warmup: 1,
        total_iterations: Some(2),
        actor_lr: 1e-3,
        critic_lr: 1e-3,
        ..PpoConfig::default()
    };
    let cfg = update_config(&run, &dir, "warmup", ppo.clone());
    let report = update(&cfg, &Silent).unwrap();
    // Iteration 0 < 1: the actor is written back as it was, the critic moved.
    assert_eq!(weights(&cfg.out_actor), weights(&run.sft()));
    assert_ne!(weights(&cfg.out_critic), weights(&run.rm()));
    assert_eq!(report.get("actor_updated"), Some(0.0));
    for missing in ["actor_loss", "entropy", "actor_lr", "approx_kl"] {
        assert_eq!(report.get(missing), None, "{missing}");
    }
    assert!(report.get("critic_loss").is_some());
    // Without the warm-up the same update moves the actor.
    let cfg = update_config(
        &run,
        &dir,
        "no-warmup",
        PpoConfig {
            critic_warmup: 0,
            ..ppo
        },
    );
    update(&cfg, &Silent).unwrap();
    assert_ne!(weights(&cfg.out_actor), weights(&run.sft()));
}
