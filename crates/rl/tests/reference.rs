//! The crate against independent ports of the reference code
//! (`ppo_trainer.py` of the MA-RLHF DeepSpeed-Chat fork), written here in
//! its own shape: padded `[batch, time]` arrays, DeepSpeed-Chat's index
//! arithmetic, f32 throughout.

use candle_core::{Device, Tensor};
use marlhf_rl::segment::ppl;
use marlhf_rl::{
    actor_loss, pad, process_batch, response_mask, segment, MacroKl, MacroLambda, RlConfig,
    SegmentInput, SequenceInput, Termination, ValueFunction,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The macro actions of a response of `len` tokens under `termination`
/// (the fixed n-grams the ports below implement).
fn starts(termination: Termination, len: usize) -> Vec<u32> {
    segment(
        &termination,
        &SegmentInput {
            len,
            ..Default::default()
        },
    )
    .unwrap()
}

struct Rollout {
    logprobs: Vec<f32>,
    ref_logprobs: Vec<f32>,
    values: Vec<f32>,
    score: f32,
}

fn rollouts(lens: &[usize], seed: u64) -> Vec<Rollout> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    lens.iter()
        .map(|&len| {
            let mut draw = |lo: f32, hi: f32| -> Vec<f32> {
                (0..len).map(|_| rng.random_range(lo..hi)).collect()
            };
            Rollout {
                logprobs: draw(-6.0, 0.0),
                ref_logprobs: draw(-6.0, 0.0),
                values: draw(-2.0, 2.0),
                score: rng.random_range(-4.0..4.0),
            }
        })
        .collect()
}

/// A padded `[batch, time]` array.
type Rows = Vec<Vec<f32>>;

/// DeepSpeed-Chat's vanilla PPO on a right-padded batch: `compute_rewards`,
/// zeroing rewards and values after each response's end, then
/// `get_advantages_and_returns` over the full padded width.
fn deepspeed_vanilla(
    batch: &[Rollout],
    kl_ctl: f32,
    clip_reward_value: f32,
    gamma: f32,
    lam: f32,
) -> (Rows, Rows, Rows) {
    let width = batch.iter().map(|r| r.logprobs.len()).max().unwrap_or(0);
    // Padding holds junk, as a padded model output would.
    let junk = |v: &[f32]| -> Vec<f32> {
        let mut row = v.to_vec();
        row.resize(width, 123.0);
        row
    };
    let mut rewards: Vec<Vec<f32>> = Vec::new();
    let mut values: Vec<Vec<f32>> = Vec::new();
    for r in batch {
        let (lp, rlp) = (junk(&r.logprobs), junk(&r.ref_logprobs));
        let mut row: Vec<f32> = (0..width).map(|t| -kl_ctl * (lp[t] - rlp[t])).collect();
        let end = r.logprobs.len();
        if end > 0 {
            row[end - 1] += r.score.clamp(-clip_reward_value, clip_reward_value);
        }
        let mut v = junk(&r.values);
        for t in end..width {
            row[t] = 0.0;
            v[t] = 0.0;
        }
        rewards.push(row);
        values.push(v);
    }
    let mut advantages = vec![vec![0.0f32; width]; batch.len()];
    let mut lastgaelam = vec![0.0f32; batch.len()];
    for t in (0..width).rev() {
        for j in 0..batch.len() {
            let nextvalues = if t < width - 1 { values[j][t + 1] } else { 0.0 };
            let delta = rewards[j][t] + gamma * nextvalues - values[j][t];
            lastgaelam[j] = delta + gamma * lam * lastgaelam[j];
            advantages[j][t] = lastgaelam[j];
        }
    }
    let returns = advantages
        .iter()
        .zip(&values)
        .map(|(a, v)| a.iter().zip(v).map(|(a, v)| a + v).collect())
        .collect();
    (rewards, advantages, returns)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn fixed_one_is_vanilla_ppo_bit_for_bit() {
    let lens = [1, 2, 5, 17, 64, 3, 0, 33];
    for seed in 0..5 {
        let batch = rollouts(&lens, seed);
        // Every value function, rewards aggregated as released or summed,
        // γ and λ per macro action or per token: all are token-level PPO
        // when every macro action is one token.
        let settings = [
            ValueFunction::Equal,
            ValueFunction::Unit,
            ValueFunction::Position,
        ]
        .into_iter()
        .flat_map(|vf| [(vf, 1.0, 0.95), (vf, 0.99, 0.9)])
        .flat_map(|s| [(s, MacroKl::Mean), (s, MacroKl::Sum)])
        .flat_map(|s| [(s, MacroLambda::PerMacro), (s, MacroLambda::PerToken)]);
        for (((vf, gamma, lambda), macro_kl), macro_lambda) in settings {
            let cfg = RlConfig {
                value_function: vf,
                gamma,
                lambda,
                macro_kl,
                macro_lambda,
                ..RlConfig::default()
            };
            let starts: Vec<Vec<u32>> = batch
                .iter()
                .map(|r| starts(Termination::TOKEN, r.logprobs.len()))
                .collect();
            let inputs: Vec<SequenceInput> = batch
                .iter()
                .zip(&starts)
                .enumerate()
                .map(|(i, (r, s))| SequenceInput {
                    id: i as u64,
                    logprobs: &r.logprobs,
                    ref_logprobs: &r.ref_logprobs,
                    values: &r.values,
                    score: r.score,
                    starts: s,
                })
                .collect();
            let ours = process_batch(&cfg, &inputs).unwrap();
            let (rewards, advantages, returns) =
                deepspeed_vanilla(&batch, cfg.kl_coef, cfg.clip_reward, cfg.gamma, cfg.lambda);
            for (j, out) in ours.iter().enumerate() {
                let len = lens[j];
                assert_eq!(out.starts, (0..len as u32).collect::<Vec<_>>());
                assert_eq!(bits(&out.rewards), bits(&rewards[j][..len]), "rewards {j}");
                assert_eq!(
                    bits(&out.advantages),
                    bits(&advantages[j][..len]),
                    "adv {j} {vf}"
                );
                assert_eq!(
                    bits(&out.returns),
                    bits(&returns[j][..len]),
                    "returns {j} {vf}"
                );
                assert_eq!(bits(&out.macro_advantages), bits(&out.advantages));
            }
        }
    }
}

/// The reference's macro-action path for one sequence (a batch of one, as
/// the reference handles), on arrays indexed like DeepSpeed-Chat's: the
/// response starts at `start = prompt_len − 1`.
struct Reference {
    start: usize,
    ngram: usize,
    value_function: ValueFunction,
}

impl Reference {
    fn fixed_ngram_selection(&self, mask: &[f32]) -> Vec<usize> {
        let mut current_count = 0.0;
        let mut ma_length = vec![self.start];
        for i in 0..mask[self.start..].len() - 1 {
            current_count += mask[self.start + i];
            if current_count == self.ngram as f32 {
                ma_length.push(self.start + i + 1);
                current_count = 0.0;
            }
        }
        ma_length.push(mask.len() - 1);
        ma_length
    }

    fn split_list(ma_lengths: &[usize]) -> Vec<usize> {
        let mut split: Vec<usize> = ma_lengths.windows(2).map(|w| w[1] - w[0]).collect();
        split.push(1);
        split
    }

    fn modeling_macro_action(&self, variables: &[f32], mask: &[f32], ma: &[usize]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut at = self.start;
        for n in Self::split_list(ma) {
            let masked: Vec<f32> = (at..at + n)
                .filter(|&t| mask[t] != 0.0)
                .map(|t| variables[t])
                .collect();
            at += n;
            let k = masked.len();
            let sigma: Vec<f32> = match self.value_function {
                ValueFunction::Equal => vec![1.0 / k as f32; k],
                ValueFunction::Unit => (0..k).map(|i| if i + 1 == k { 1.0 } else { 0.0 }).collect(),
                ValueFunction::Position => {
                    let raw: Vec<f32> = (0..k).map(|i| 1.0 / (i as f32 + 1.0)).collect();
                    let total: f32 = raw.iter().sum();
                    raw.iter().map(|w| w / total).collect()
                }
            };
            out.push(masked.iter().zip(&sigma).map(|(x, s)| x * s).sum());
        }
        out
    }

    fn get_advantages_and_returns(
        values: &[f32],
        rewards: &[f32],
        gamma: f32,
        lam: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let length = rewards.len();
        let mut lastgaelam = 0.0f32;
        let mut reversed = Vec::new();
        for t in (0..length).rev() {
            let nextvalues = if t < length - 1 { values[t + 1] } else { 0.0 };
            let delta = rewards[t] + gamma * nextvalues - values[t];
            lastgaelam = delta + gamma * lam * lastgaelam;
            reversed.push(lastgaelam);
        }
        reversed.reverse();
        let returns = reversed.iter().zip(values).map(|(a, v)| a + v).collect();
        (reversed, returns)
    }

    /// `actor_loss_fn` with its split loop.
    fn actor_loss_fn(
        &self,
        logprobs: &[f32],
        old: &[f32],
        adv: &[f32],
        mask: &[f32],
        ma: &[usize],
        clip: f32,
    ) -> f32 {
        let ratio: Vec<f32> = logprobs
            .iter()
            .zip(old)
            .zip(mask)
            .map(|((l, o), m)| ((l - o) * m).exp())
            .collect();
        let (mut pg_loss, mut total) = (0.0f32, 0.0f32);
        let mut at = 0;
        for (i, n) in Self::split_list(ma).into_iter().enumerate() {
            for t in at..at + n {
                let pg1 = -adv[i] * ratio[t];
                let pg2 = -adv[i] * ratio[t].clamp(1.0 - clip, 1.0 + clip);
                pg_loss += pg1.max(pg2) * mask[t];
                total += mask[t];
            }
            at += n;
        }
        pg_loss / total
    }
}

#[test]
fn macro_path_matches_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (len, n) in [(12usize, 5usize), (9, 3), (30, 5), (8, 2), (20, 10), (2, 5)] {
        // The reference repeats the last start when (len − 1) is a multiple
        // of n, leaving an empty macro action; those lengths are avoided
        // here because this crate (on purpose) never makes one.
        assert_ne!((len - 1) % n, 0);
        for vf in [
            ValueFunction::Equal,
            ValueFunction::Unit,
            ValueFunction::Position,
        ] {
            let prompt_len = 4;
            let start = prompt_len - 1;
            let batch = rollouts(&[len], rng.random());
            let r = &batch[0];
            let cfg = RlConfig {
                value_function: vf,
                ..RlConfig::default()
            };
            let starts = starts(Termination::Fixed { n: n as u32 }, r.logprobs.len());
            let ours = process_batch(
                &cfg,
                &[SequenceInput {
                    logprobs: &r.logprobs,
                    ref_logprobs: &r.ref_logprobs,
                    values: &r.values,
                    score: r.score,
                    starts: &starts,
                    ..Default::default()
                }],
            )
            .unwrap()
            .remove(0);

            // Reference layout: positions 0..start are the prompt (junk),
            // the response fills start..start + len; action mask all ones.
            let at_offset = |v: &[f32]| -> Vec<f32> {
                let mut row = vec![0.5f32; start];
                row.extend_from_slice(v);
                row
            };
            let mask = vec![1.0f32; start + len];
            let (lp, rlp, values) = (
                at_offset(&r.logprobs),
                at_offset(&r.ref_logprobs),
                at_offset(&r.values),
            );
            let mut rewards: Vec<f32> = lp
                .iter()
                .zip(&rlp)
                .map(|(l, q)| -cfg.kl_coef * (l - q))
                .collect();
            rewards[start + len - 1] += r.score.clamp(-cfg.clip_reward, cfg.clip_reward);
            let reference = Reference {
                start,
                ngram: n,
                value_function: vf,
            };
            let ma = reference.fixed_ngram_selection(&mask);
            let want_starts: Vec<u32> = ma.iter().map(|&s| (s - start) as u32).collect();
            assert_eq!(ours.starts, want_starts, "len {len} n {n}");

            let ma_values = reference.modeling_macro_action(&values, &mask, &ma);
            let ma_rewards = reference.modeling_macro_action(&rewards, &mask, &ma);
            let (adv, ret) = Reference::get_advantages_and_returns(
                &ma_values,
                &ma_rewards,
                cfg.gamma,
                cfg.lambda,
            );
            let close = |a: &[f32], b: &[f32], what: &str| {
                assert_eq!(a.len(), b.len(), "{what}");
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() < 1e-5,
                        "{what} len {len} n {n} {vf}: {a:?} vs {b:?}"
                    );
                }
            };
            close(&ours.macro_advantages, &adv, "macro advantages");
            close(&ours.macro_returns, &ret, "macro returns");

            // The actor loss on per-token advantages equals the reference's
            // split loop over macro actions.
            let new_lp: Vec<f32> = r
                .logprobs
                .iter()
                .map(|l| l + rng.random_range(-0.3..0.3))
                .collect();
            let want = reference.actor_loss_fn(
                &new_lp,
                &r.logprobs,
                &adv,
                &vec![1.0; len],
                &ma.iter().map(|s| s - start).collect::<Vec<_>>(),
                0.2,
            );
            let dev = Device::Cpu;
            let (loss, _) = actor_loss(
                &pad(&[&new_lp], &dev).unwrap(),
                &pad(&[&r.logprobs], &dev).unwrap(),
                &pad(&[&ours.advantages], &dev).unwrap(),
                &response_mask(&[len], &dev).unwrap(),
                0.2,
            )
            .unwrap();
            let got = loss.to_scalar::<f32>().unwrap();
            assert!((got - want).abs() < 1e-5, "actor loss {got} vs {want}");
        }
    }
}

#[test]
fn ppl_matches_the_reference_selection() {
    // `ppl_selection` on perplexities exp(cross-entropy) = exp(−ref_logprob).
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for len in 1..40 {
        let r: Vec<f32> = (0..len).map(|_| rng.random_range(-5.0..0.0)).collect();
        let ppl_values: Vec<f32> = r.iter().map(|x| (-x).exp()).collect();
        let mut want: Vec<u32> = Vec::new();
        for i in 0..ppl_values.len() - 1 {
            if ppl_values[i + 1] > ppl_values[i] {
                want.push(i as u32);
            }
        }
        if !want.contains(&0) {
            want.insert(0, 0);
        }
        want.push(len as u32 - 1);
        want.dedup(); // len 1: the reference would list 0 twice
        assert_eq!(ppl(&r).unwrap(), want, "len {len}");
    }
}

#[test]
fn padded_tensors() {
    let dev = Device::Cpu;
    let a = [1.0f32, 2.0, 3.0];
    let b = [4.0f32];
    let x = pad(&[&a, &b, &[]], &dev).unwrap();
    assert_eq!(
        x.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 2.0, 3.0], vec![4.0, 0.0, 0.0], vec![0.0; 3]]
    );
    let m = response_mask(&[3, 1, 0], &dev).unwrap();
    assert_eq!(
        m.to_vec2::<f32>().unwrap(),
        vec![vec![1.0, 1.0, 1.0], vec![1.0, 0.0, 0.0], vec![0.0; 3]]
    );
    let none: Tensor = pad(&[], &dev).unwrap();
    assert_eq!(none.dims(), &[0, 0]);
}
