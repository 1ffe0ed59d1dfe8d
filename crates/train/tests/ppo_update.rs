//! The update learns in the right direction: on real rollouts of a tiny
//! model, responses with a positive advantage become more likely and those
//! with a negative one less likely, and the critic moves towards the
//! returns.

use candle_core::Device;
use marlhf_data::{read_advantages, read_rollouts, write_rollouts, RolloutRow};
use marlhf_model::lm::Scored;
use marlhf_model::Checkpoint;
use marlhf_rl::{RlConfig, Termination};
use marlhf_train::ppo::fixture::Run;
use marlhf_train::ppo::{rollout, run_segment, update, RolloutConfig, SegmentConfig, UpdateConfig};

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
fn update_follows_the_advantages() {
    let run = Run::new("ppo-learn", 8).unwrap();
    let dir = run.root().join("iter-000");
    let rollouts = dir.join("rollouts.parquet");
    rollout(&RolloutConfig {
        prompts: run.prompts(),
        actor: run.sft(),
        reference: run.sft(),
        critic: run.rm(),
        reward_model: run.rm(),
        out: rollouts.clone(),
        iteration: 0,
        rollout_batch: 8,
        batch_size: 8,
        max_prompt_tokens: 64,
        max_new_tokens: 8,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 3,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
    })
    .unwrap();
    // Scores of ±2, far beyond the untrained critic's values, so that with
    // no KL penalty and λ = 1 every token's advantage (score − value) has
    // the sign of its response's score.
    let mut rows = read_rollouts(&rollouts).unwrap();
    for (i, r) in rows.iter_mut().enumerate() {
        r.score = if i % 2 == 0 { 2.0 } else { -2.0 };
    }
    write_rollouts(&rollouts, &rows).unwrap();
    run_segment(&SegmentConfig {
        rollouts: rollouts.clone(),
        out: dir.join("segments.parquet"),
        termination: Termination::Fixed { n: 3 },
        seed: 0,
        tokenizer: None,
    })
    .unwrap();
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
        clip: 0.2,
        value_clip: 0.2,
        ppo_epochs: 3,
        mini_batch: 4,
        actor_lr: 3e-3,
        critic_lr: 3e-3,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed: 1,
        device: Device::Cpu,
        dtype: candle_core::DType::F32,
    };
    let report = update(&cfg).unwrap();
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
