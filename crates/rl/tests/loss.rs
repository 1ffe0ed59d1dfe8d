//! The PPO losses: hand-computed goldens on a padded batch of two responses
//! of different lengths, analytic gradients, and a finite-difference check.

use candle_core::{DType, Device, Tensor, Var};
use marlhf_rl::{actor_loss, critic_loss, explained_variance, explained_variance_flat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn t(rows: &[[f32; 3]; 2]) -> Tensor {
    Tensor::new(rows, &Device::Cpu).unwrap()
}

fn to_rows(x: &Tensor) -> Vec<Vec<f32>> {
    x.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

fn assert_close(got: &[Vec<f32>], want: &[[f32; 3]; 2], tol: f32) {
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < tol, "{got:?} vs {want:?}");
        }
    }
}

/// Row A has 3 response tokens, row B 2 and one padding slot holding junk.
const MASK: [[f32; 3]; 2] = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]];

#[test]
fn actor_golden_padded_batch() {
    // old logprobs 0, new ln r: the ratios are r.
    // A: r = 1.5, 0.5, 1.1; adv = 1, 1, −2
    //   t0: −1·1.5 = −1.5 vs −1·1.2 = −1.2 → −1.2 (clipped)
    //   t1: −0.5 vs −0.8 → −0.5
    //   t2: 2·1.1 = 2.2 vs 2·1.1 = 2.2 → 2.2
    // B: r = 0.7, 1.3; adv = −1, 0.5; padding (logprob 5, adv 9) is masked.
    //   t0: 0.7 vs 0.8 → 0.8 (clipped)
    //   t1: −0.65 vs −0.6 → −0.6 (clipped)
    // loss = (−1.2 − 0.5 + 2.2 + 0.8 − 0.6)/5 = 0.7/5 = 0.14
    // clip fraction: |r − 1| > 0.2 for 1.5, 0.5, 0.7, 1.3 → 4/5
    // approx KL = mean((r − 1) − ln r)
    //   = (0.0945349 + 0.1931472 + 0.0046898 + 0.0566749 + 0.0376357)/5 = 0.0773365
    let ln = |r: f32| r.ln();
    let logprobs =
        Var::from_tensor(&t(&[[ln(1.5), ln(0.5), ln(1.1)], [ln(0.7), ln(1.3), 5.0]])).unwrap();
    let old = t(&[[0.0; 3]; 2]);
    let adv = t(&[[1.0, 1.0, -2.0], [-1.0, 0.5, 9.0]]);
    let (loss, stats) = actor_loss(logprobs.as_tensor(), &old, &adv, &t(&MASK), 0.2).unwrap();
    let loss_value = loss.to_scalar::<f32>().unwrap();
    assert!((loss_value - 0.14).abs() < 1e-6, "{loss_value}");
    assert!((stats.clip_fraction - 0.8).abs() < 1e-6, "{stats:?}");
    assert!((stats.approx_kl - 0.0773365).abs() < 1e-6, "{stats:?}");

    // d loss/d logprob = (d max/d r)·r/5: zero where the clipped branch
    // wins or on padding; −A·r/5 elsewhere: A t1 → −0.5/5 = −0.1,
    // A t2 → 2.2/5 = 0.44 (at the tie the two branches share it).
    let grads = loss.backward().unwrap();
    let g = grads.get(logprobs.as_tensor()).unwrap();
    assert_close(&to_rows(g), &[[0.0, -0.1, 0.44], [0.0, 0.0, 0.0]], 1e-6);
}

#[test]
fn critic_golden_padded_batch() {
    // clip 0.2
    // A t0: V 1, old 0.5 → clipped 0.7; R 2: (1−2)² = 1 vs (0.7−2)² = 1.69 → 1.69
    // A t1: V 2, old 2.1 (inside); R 1: 1 vs 1 → 1
    // A t2: V 0, old 0; R 0.1: 0.01
    // B t0: V −1, old −1; R −1.5: 0.25
    // B t1: V 0.5, old 0 → 0.2; R 1: 0.25 vs 0.64 → 0.64
    // B t2: padding.
    // loss = 0.5·(1.69 + 1 + 0.01 + 0.25 + 0.64)/5 = 0.5·3.59/5 = 0.359
    // clip fraction: |V − old| > 0.2 at A t0 and B t1 → 2/5
    let values = Var::from_tensor(&t(&[[1.0, 2.0, 0.0], [-1.0, 0.5, 7.0]])).unwrap();
    let old = t(&[[0.5, 2.1, 0.0], [-1.0, 0.0, 0.0]]);
    let returns = t(&[[2.0, 1.0, 0.1], [-1.5, 1.0, 3.0]]);
    let (loss, stats) = critic_loss(values.as_tensor(), &old, &returns, &t(&MASK), 0.2).unwrap();
    let loss_value = loss.to_scalar::<f32>().unwrap();
    assert!((loss_value - 0.359).abs() < 1e-6, "{loss_value}");
    assert!((stats.clip_fraction - 0.4).abs() < 1e-6, "{stats:?}");

    // d loss/d V = 0.1·d max/d V: clipped winners and padding 0;
    // A t1: 2·(2 − 1)·0.1 = 0.2; A t2: 2·(0 − 0.1)·0.1 = −0.02;
    // B t0: 2·(−1 + 1.5)·0.1 = 0.1.
    let grads = loss.backward().unwrap();
    let g = grads.get(values.as_tensor()).unwrap();
    assert_close(&to_rows(g), &[[0.0, 0.2, -0.02], [0.1, 0.0, 0.0]], 1e-6);
}

#[test]
fn empty_batch_gives_zero_loss() {
    let empty = Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap();
    let (loss, stats) = actor_loss(&empty, &empty, &empty, &empty, 0.2).unwrap();
    assert_eq!(loss.to_scalar::<f32>().unwrap(), 0.0);
    assert_eq!(stats.clip_fraction, 0.0);
    let all_padding = t(&[[0.0; 3]; 2]);
    let x = t(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let (loss, _) = critic_loss(&x, &x, &all_padding, &all_padding, 0.2).unwrap();
    assert_eq!(loss.to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn bad_inputs_are_errors() {
    let ok = t(&[[0.0; 3]; 2]);
    let mask = t(&MASK);
    let nan = t(&[[0.0, 0.0, 0.0], [0.0, 0.0, f32::NAN]]);
    let err = actor_loss(&ok, &ok, &nan, &mask, 0.2)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "advantages[5] is not finite");
    let err = critic_loss(&nan, &ok, &ok, &mask, 0.2)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "values[5] is not finite");
    let half = t(&[[1.0, 0.5, 1.0], [1.0, 1.0, 0.0]]);
    let err = actor_loss(&ok, &ok, &ok, &half, 0.2)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "mask[1] is 0.5, expected 0 or 1");
    let short = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let err = actor_loss(&ok, &short, &ok, &mask, 0.2)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "old_logprobs has shape [2, 2], logprobs has [2, 3]");
    let flat = Tensor::zeros(6, DType::F32, &Device::Cpu).unwrap();
    let err = critic_loss(&flat, &flat, &flat, &flat, 0.2)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "values must be [batch, time], got shape [6]");
    let err = critic_loss(&ok, &ok, &ok, &mask, -1.0)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "invalid clip: -1 is out of range");
}

/// A loss as a function of the one tensor it differentiates.
type LossOf<'a> = dyn Fn(&Tensor) -> Tensor + 'a;

/// Compares candle's gradient with central differences, in f64.
fn check_gradient(x: &[Vec<f64>], loss: &LossOf) {
    let dev = Device::Cpu;
    let var = Var::from_tensor(&Tensor::new(x.to_vec(), &dev).unwrap()).unwrap();
    let l = loss(var.as_tensor());
    let analytic = l
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let eps = 1e-6;
    for i in 0..x.len() {
        for j in 0..x[i].len() {
            let at = |d: f64| {
                let mut y = x.to_vec();
                y[i][j] += d;
                loss(&Tensor::new(y, &dev).unwrap())
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i][j]).abs() < 1e-6,
                "[{i}][{j}]: numeric {numeric}, autograd {}",
                analytic[i][j]
            );
        }
    }
}

fn random_rows(
    rng: &mut ChaCha8Rng,
    lens: &[usize],
    width: usize,
    lo: f64,
    hi: f64,
) -> Vec<Vec<f64>> {
    lens.iter()
        .map(|_| (0..width).map(|_| rng.random_range(lo..hi)).collect())
        .collect()
}

fn mask_of(lens: &[usize], width: usize) -> Tensor {
    let rows: Vec<Vec<f64>> = lens
        .iter()
        .map(|&l| (0..width).map(|t| if t < l { 1.0 } else { 0.0 }).collect())
        .collect();
    Tensor::new(rows, &Device::Cpu).unwrap()
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn actor_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (lens, width, clip) = ([5usize, 2, 7], 7, 0.2);
    let old = random_rows(&mut rng, &lens, width, -3.0, -0.5);
    let adv = random_rows(&mut rng, &lens, width, -2.0, 2.0);
    // New log-probs near the old ones, off the clip kinks at ln(1 ± 0.2).
    let mut new = old.clone();
    for row in new.iter_mut().zip(&old) {
        for (n, o) in row.0.iter_mut().zip(row.1) {
            loop {
                let d: f64 = rng.random_range(-0.4..0.4);
                let r = d.exp();
                if ((r - 1.0).abs() - clip).abs() > 1e-3 {
                    *n = o + d;
                    break;
                }
            }
        }
    }
    let (old, adv, mask) = (tensor(&old), tensor(&adv), mask_of(&lens, width));
    check_gradient(&new, &|x| actor_loss(x, &old, &adv, &mask, clip).unwrap().0);
}

#[test]
fn critic_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (lens, width, clip) = ([3usize, 6, 1], 6, 0.2);
    let old = random_rows(&mut rng, &lens, width, -1.0, 1.0);
    let returns = random_rows(&mut rng, &lens, width, -1.0, 1.0);
    let mut values = old.clone();
    for (i, row) in values.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            // Off the kinks: |V − old| ≠ clip, and the two squares apart.
            loop {
                let cand = old[i][j] + rng.random_range(-0.5..0.5);
                let clipped = cand.clamp(old[i][j] - clip, old[i][j] + clip);
                let (sq1, sq2) = (
                    (cand - returns[i][j]).powi(2),
                    (clipped - returns[i][j]).powi(2),
                );
                let inside = (cand - old[i][j]).abs() < clip;
                if ((cand - old[i][j]).abs() - clip).abs() > 1e-3
                    && (inside || (sq1 - sq2).abs() > 1e-3)
                {
                    *v = cand;
                    break;
                }
            }
        }
    }
    let (old, returns, mask) = (tensor(&old), tensor(&returns), mask_of(&lens, width));
    check_gradient(&values, &|x| {
        critic_loss(x, &old, &returns, &mask, clip).unwrap().0
    });
}

#[test]
fn explained_variance_golden() {
    // returns [1, 2, 4], values [1, 2, 3]: errors [0, 0, 1]
    // Var(returns) = (16 + 1 + 25)/9/3 = 14/9; Var(errors) = (1 + 1 + 4)/9/3 = 2/9
    // EV = 1 − (2/9)/(14/9) = 6/7. Padding (junk) is left out by the mask.
    let values = Tensor::new(&[[1.0f32, 2.0], [3.0, 50.0]], &Device::Cpu).unwrap();
    let returns = Tensor::new(&[[1.0f32, 2.0], [4.0, -9.0]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1.0f32, 1.0], [1.0, 0.0]], &Device::Cpu).unwrap();
    let ev = explained_variance(&values, &returns, &mask)
        .unwrap()
        .unwrap();
    assert!((ev - 6.0 / 7.0).abs() < 1e-6, "{ev}");
    let ev = explained_variance_flat(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0])
        .unwrap()
        .unwrap();
    assert!((ev - 6.0 / 7.0).abs() < 1e-6, "{ev}");
    // Constant returns or no tokens: undefined.
    assert_eq!(
        explained_variance_flat(&[1.0, 2.0], &[3.0, 3.0]).unwrap(),
        None
    );
    assert_eq!(explained_variance_flat(&[], &[]).unwrap(), None);
    // A perfect critic explains everything.
    assert_eq!(
        explained_variance_flat(&[1.0, 5.0], &[1.0, 5.0]).unwrap(),
        Some(1.0)
    );
}

#[test]
fn loss_aggregation_weights_golden() {
    use marlhf_rl::LossAgg;
    // Two rows of a micro-batch, 3 and 1 response tokens, in a step of 4
    // responses holding 10 tokens.
    let w = |agg: LossAgg| to_rows(&agg.weights(&[3, 1], 3, 4, 10, &Device::Cpu).unwrap());
    // token-mean: 1/10 per token.
    assert_close(
        &w(LossAgg::TokenMean),
        &[[0.1, 0.1, 0.1], [0.1, 0.0, 0.0]],
        1e-7,
    );
    // seq-mean-token-mean: 1/(4·3) and 1/(4·1).
    assert_close(
        &w(LossAgg::SeqMeanTokenMean),
        &[[1.0 / 12.0; 3], [0.25, 0.0, 0.0]],
        1e-7,
    );
    // seq-mean-token-sum: 1/4 per token.
    assert_close(
        &w(LossAgg::SeqMeanTokenSum),
        &[[0.25; 3], [0.25, 0.0, 0.0]],
        1e-7,
    );
    for agg in LossAgg::ALL {
        assert_eq!(agg.to_string().parse::<LossAgg>().unwrap(), agg);
    }
    assert!("sum".parse::<LossAgg>().is_err());
    assert!(LossAgg::TokenMean
        .weights(&[4], 3, 1, 4, &Device::Cpu)
        .is_err());
}

#[test]
fn weighted_actor_loss_golden() {
    use marlhf_rl::actor_loss_weighted;
    // The padded batch of `actor_golden_padded_batch`, per-token surrogates
    // A: −1.2, −0.5, 2.2; B: 0.8, −0.6. Each response weighted equally
    // (seq-mean-token-mean over these 2): (−1.2 − 0.5 + 2.2)/3/2 +
    // (0.8 − 0.6)/2/2 = 0.0833333 + 0.05 = 0.1333333.
    let ln = |r: f32| r.ln();
    let logprobs = t(&[[ln(1.5), ln(0.5), ln(1.1)], [ln(0.7), ln(1.3), 5.0]]);
    let old = t(&[[0.0; 3]; 2]);
    let adv = t(&[[1.0, 1.0, -2.0], [-1.0, 0.5, 9.0]]);
    let weights = marlhf_rl::LossAgg::SeqMeanTokenMean
        .weights(&[3, 2], 3, 2, 5, &Device::Cpu)
        .unwrap();
    let (loss, stats) =
        actor_loss_weighted(&logprobs, &old, &adv, &t(&MASK), &weights, 0.2).unwrap();
    let loss = loss.to_scalar::<f32>().unwrap();
    assert!((loss - 0.133_333_3).abs() < 1e-6, "{loss}");
    // The figures stay per-token means.
    assert!((stats.clip_fraction - 0.8).abs() < 1e-6);
}
