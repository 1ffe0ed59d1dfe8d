//! What the parity tests against the `../shared/fixtures` references
//! share: reading a `reference.json`, comparing within a tolerance, and the
//! model's teacher-forced log-probabilities and last-position logits.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::DType;
use marlhf_model::lm::Scored;
use marlhf_model::padding::{pad, Side};
use marlhf_model::Checkpoint;
use serde_json::Value;

pub const TOL: f32 = 1e-4;

pub fn fixture(name: &str) -> PathBuf {
    let dir = marlhf_testkit::shared("fixtures/hf-tiny").join(name);
    assert!(
        dir.join("reference.json").is_file(),
        "{}: fixture missing (the workplace's shared/fixtures/hf-tiny)",
        dir.display()
    );
    dir
}

pub struct Reference {
    pub prompt: String,
    pub ids: Vec<u32>,
    pub greedy: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub last_logits: Vec<f32>,
}

pub fn reference(dir: &Path) -> Reference {
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let ints = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let floats = |k: &str| -> Vec<f32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    Reference {
        prompt: v["prompt"].as_str().unwrap().to_string(),
        ids: ints("prompt_ids"),
        greedy: ints("greedy_16"),
        logprobs: floats("next_token_logprobs"),
        last_logits: floats("last_position_logits"),
    }
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let d = max_diff(got, want);
    assert!(d < tol, "{what}: max difference {d} (tolerance {tol})");
}

pub fn logprobs(ck: &Checkpoint, seqs: Vec<Vec<u32>>) -> Vec<Vec<f32>> {
    let n = seqs.len();
    let (lp, counts) = ck
        .model
        .token_logprobs(&Scored {
            seqs,
            starts: vec![1; n],
        })
        .unwrap();
    marlhf_model::lm::split_rows(
        &lp.to_dtype(DType::F32).unwrap().to_vec1().unwrap(),
        &counts,
    )
}

/// Logits after the last real token of each row of a padded batch.
pub fn last_logits(ck: &Checkpoint, seqs: &[Vec<u32>], side: Side) -> Vec<Vec<f32>> {
    let llama = &ck.model.llama;
    let p = pad(seqs, 0, side, llama.device()).unwrap();
    let hidden = llama.forward_hidden(&p.ids, &p.mask).unwrap();
    let last = marlhf_model::llama::last_token_index(&p.mask, p.b, p.t);
    let hs = marlhf_model::llama::gather_rows(&hidden, &last).unwrap();
    llama
        .logits(&hs)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// Log-probabilities and last logits against the reference, alone and
/// batched beside a shorter prompt with left and right padding.
pub fn check_numbers(name: &str, ck: &Checkpoint, r: &Reference, tol: f32) {
    let alone = logprobs(ck, vec![r.ids.clone()]);
    close(&format!("{name}: log-probs"), &alone[0], &r.logprobs, tol);
    let last = last_logits(ck, std::slice::from_ref(&r.ids), Side::Right);
    close(
        &format!("{name}: last logits"),
        &last[0],
        &r.last_logits,
        tol,
    );
    // Batched beside a shorter prompt: the shorter row pads the longer
    // one's batch neither way, the longer row pads the shorter one.
    let short = r.ids[..7].to_vec();
    let batch = vec![short.clone(), r.ids.clone()];
    let lp = logprobs(ck, batch.clone());
    close(
        &format!("{name}: batched log-probs"),
        &lp[1],
        &r.logprobs,
        tol,
    );
    close(
        &format!("{name}: short row's log-probs"),
        &lp[0],
        &r.logprobs[..6],
        tol,
    );
    for side in [Side::Left, Side::Right] {
        let l = last_logits(ck, &batch, side);
        close(
            &format!("{name}: last logits, {side:?}-padded batch"),
            &l[1],
            &r.last_logits,
            tol,
        );
        let alone = last_logits(ck, std::slice::from_ref(&short), side);
        close(
            &format!("{name}: short row, {side:?}-padded batch"),
            &l[0],
            &alone[0],
            tol,
        );
    }
}
