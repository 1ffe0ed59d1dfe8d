//! The PPO forward passes on a tiny random model: the training pass equals
//! the model's own log-probs, batching puts every row back in its place, and
//! a uniform policy has the golden log-prob and entropy ln V.

use candle_core::{Device, Tensor};
use marlhf_model::lm::Scored;
use marlhf_model::{Model, Params};
use marlhf_stages::ppo::forward::{logprobs, policy_pass, values, Responses};
use marlhf_testkit::ppo::{config, VOCAB};

fn model(seed: u64) -> Model {
    let cfg = config();
    let params = Params::init(&cfg, seed, &Device::Cpu).unwrap();
    params.add_value_head(&cfg, seed).unwrap();
    Model::new(cfg, params).unwrap()
}

/// Three sequences of different lengths with responses starting at
/// different offsets.
fn batch() -> Scored {
    let seqs: Vec<Vec<u32>> = vec![
        vec![1, 40, 41, 42, 43, 44, 45],
        vec![1, 7, 300, 2],
        vec![1, 99, 98, 97, 96, 95, 94, 93, 92, 91],
    ];
    Scored {
        seqs,
        starts: vec![3, 1, 6],
    }
}

#[test]
fn policy_pass_is_the_models_log_probs_with_entropy() {
    let m = model(3);
    let b = batch();
    let pass = policy_pass(&m, &b, 1.0).unwrap();
    let (want, counts) = m.token_logprobs(&b).unwrap();
    assert_eq!(pass.counts, counts);
    assert_eq!(pass.counts, [4, 3, 4]);
    assert_eq!(
        pass.logprobs.to_vec1::<f32>().unwrap(),
        want.to_vec1::<f32>().unwrap()
    );
    assert_eq!(pass.entropy.len(), 11);
    let max = (VOCAB as f32).ln();
    assert!(pass.entropy.iter().all(|&h| h > 0.0 && h <= max + 1e-4));
}

#[test]
fn uniform_policy_golden() {
    // A zero LM head gives equal logits: every token has log-prob −ln V and
    // every distribution entropy ln V.
    let m = model(4);
    let (_, head) = m
        .params
        .vars()
        .into_iter()
        .find(|(name, _)| name == "lm_head.weight")
        .unwrap();
    head.set(&Tensor::zeros(head.dims(), head.dtype(), &Device::Cpu).unwrap())
        .unwrap();
    // A long response too, so the entropy is read in several slices.
    let mut b = batch();
    b.seqs.push((0..600).map(|i| 3 + i % 500).collect());
    b.starts.push(20);
    let pass = policy_pass(&m, &b, 1.0).unwrap();
    assert_eq!(pass.entropy.len(), 11 + 580);
    let ln_v = (VOCAB as f32).ln();
    for lp in pass.logprobs.to_vec1::<f32>().unwrap() {
        assert!((lp + ln_v).abs() < 1e-5, "{lp}");
    }
    for h in pass.entropy {
        assert!((h - ln_v).abs() < 1e-4, "{h}");
    }
}

#[test]
fn batched_passes_put_rows_back_in_order() {
    let m = model(5);
    let b = batch();
    let resp = Responses {
        seqs: &b.seqs,
        starts: &b.starts,
    };
    let ticks = std::cell::Cell::new(0);
    let tick = |n: u64| ticks.set(ticks.get() + n);
    // Batches of 2 sorted by length: rows (1, 0), then (2).
    let lp = logprobs(&m, &resp, 1.0, 2, &tick).unwrap();
    let v = values(&m, &resp, 2, &tick).unwrap();
    assert_eq!(ticks.get(), 6);
    for r in 0..3 {
        let one = Scored {
            seqs: vec![b.seqs[r].clone()],
            starts: vec![b.starts[r]],
        };
        let want_lp: Vec<f32> = m.token_logprobs(&one).unwrap().0.to_vec1().unwrap();
        let want_v: Vec<f32> = m.token_values(&one).unwrap().0.to_vec1().unwrap();
        assert_eq!(lp[r].len(), b.seqs[r].len() - b.starts[r]);
        for (a, w) in lp[r].iter().zip(&want_lp).chain(v[r].iter().zip(&want_v)) {
            assert!((a - w).abs() < 1e-5, "row {r}: {a} vs {w}");
        }
    }
}
