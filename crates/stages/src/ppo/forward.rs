//! Teacher-forced passes over prompt+response sequences: per response token
//! log-probabilities (with the policy's entropy) and critic values, and the
//! reward model's score of each whole sequence.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use marlhf_model::lm::{split_rows, Scored};
use marlhf_model::{ops, Model};

/// Prompt+response sequences; the response of row r starts at `starts[r]`.
#[derive(Clone, Copy)]
pub struct Responses<'a> {
    pub seqs: &'a [Vec<u32>],
    pub starts: &'a [usize],
}

impl Responses<'_> {
    fn scored(&self, rows: &[usize]) -> Scored {
        Scored {
            seqs: rows.iter().map(|&r| self.seqs[r].clone()).collect(),
            starts: rows.iter().map(|&r| self.starts[r]).collect(),
        }
    }

    /// Row indices in chunks of `batch`, grouped by length so that a chunk
    /// pads little; the chunks are fixed by the lengths alone, so the result
    /// is deterministic.
    fn chunks(&self, batch: usize) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.seqs.len()).collect();
        order.sort_by_key(|&r| self.seqs[r].len());
        order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
    }
}

fn to_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// Runs `per_chunk` over chunks of rows and puts each row's result back in
/// its place.
fn batched(
    resp: &Responses,
    batch: usize,
    tick: &dyn Fn(u64),
    mut per_chunk: impl FnMut(&Scored) -> Result<(Vec<f32>, Vec<usize>)>,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); resp.seqs.len()];
    for rows in resp.chunks(batch) {
        let (flat, counts) = per_chunk(&resp.scored(&rows))?;
        for (r, v) in rows.iter().zip(split_rows(&flat, &counts)) {
            out[*r] = v;
        }
        tick(rows.len() as u64);
    }
    Ok(out)
}

/// Log-probability of every response token under `model`'s distribution
/// at `temperature` (the one the tokens were sampled from).
pub fn logprobs(
    model: &Model,
    resp: &Responses,
    temperature: f64,
    batch: usize,
    tick: &dyn Fn(u64),
) -> Result<Vec<Vec<f32>>> {
    batched(resp, batch, tick, |s| {
        let (lp, counts) = model.token_logprobs_at(s, temperature)?;
        Ok((to_f32(&lp)?, counts))
    })
}

/// The critic's value of the state before every response token.
pub fn values(
    model: &Model,
    resp: &Responses,
    batch: usize,
    tick: &dyn Fn(u64),
) -> Result<Vec<Vec<f32>>> {
    batched(resp, batch, tick, |s| {
        let (v, counts) = model.token_values(s)?;
        Ok((to_f32(&v)?, counts))
    })
}

/// The reward model's score of every whole sequence.
pub fn scores(
    model: &Model,
    resp: &Responses,
    batch: usize,
    tick: &dyn Fn(u64),
) -> Result<Vec<f32>> {
    let mut out = vec![0f32; resp.seqs.len()];
    for rows in resp.chunks(batch) {
        let seqs: Vec<Vec<u32>> = rows.iter().map(|&r| resp.seqs[r].clone()).collect();
        let s = to_f32(&model.scores(&seqs)?)?;
        for (&r, v) in rows.iter().zip(s) {
            out[r] = v;
        }
        tick(rows.len() as u64);
    }
    Ok(out)
}

const ENTROPY_ROWS: usize = 256;

/// The policy's log-probabilities of a mini-batch's response tokens at the
/// sampling temperature (differentiable, flattened row by row) and the
/// entropy of that same distribution at each of them (a metric, no
/// gradient).
pub struct PolicyPass {
    pub logprobs: Tensor,
    pub counts: Vec<usize>,
    pub entropy: Vec<f32>,
}

/// What `Model::token_logprobs_at` computes, keeping the logits long enough
/// to read the entropy off them: it costs one softmax over rows the LM head
/// has already produced.
pub fn policy_pass(model: &Model, batch: &Scored, temperature: f64) -> Result<PolicyPass> {
    let s = model.token_logits(batch)?;
    let logits = ops::temper(&s.logits, temperature)?;
    let logprobs = ops::gather_logprobs(&logits, &s.targets)?;
    // In slices of rows: the softmax is a few more copies of the logits,
    // which for a large vocabulary would otherwise double peak memory.
    let logits = logits.detach();
    let n = logits.dim(0)?;
    let mut entropy = Vec::with_capacity(n);
    for at in (0..n).step_by(ENTROPY_ROWS) {
        let rows = ENTROPY_ROWS.min(n - at);
        entropy.extend(to_f32(&ops::entropy(&logits.narrow(0, at, rows)?)?)?);
    }
    Ok(PolicyPass {
        logprobs,
        counts: s.counts,
        entropy,
    })
}

/// Lays a flat per-token tensor [M] (rows of `counts` tokens, one after the
/// other) out as a right-padded [rows, longest] tensor with zeros in the
/// padding, keeping the gradient path to the flat tensor.
pub fn padded(flat: &Tensor, counts: &[usize]) -> Result<Tensor> {
    let total: usize = counts.iter().sum();
    if flat.dims1()? != total {
        bail!("{} values for {total} tokens", flat.dims1()?);
    }
    let width = counts.iter().copied().max().unwrap_or(0);
    // Index `total` points at an appended zero, which fills the padding.
    let mut idx = Vec::with_capacity(counts.len() * width);
    let mut at = 0u32;
    for &c in counts {
        idx.extend(at..at + c as u32);
        idx.extend(std::iter::repeat_n(total as u32, width - c));
        at += c as u32;
    }
    let dev: &Device = flat.device();
    let zero = Tensor::zeros(1, flat.dtype(), dev)?;
    let ext = Tensor::cat(&[flat, &zero], 0)?;
    let idx = Tensor::from_vec(idx, counts.len() * width, dev)?;
    Ok(ext.index_select(&idx, 0)?.reshape((counts.len(), width))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn padded_lays_out_rows_and_passes_gradients() {
        let v = Var::new(&[1f32, 2.0, 3.0, 4.0, 5.0], &Device::Cpu).unwrap();
        let p = padded(v.as_tensor(), &[2, 0, 3]).unwrap();
        assert_eq!(
            p.to_vec2::<f32>().unwrap(),
            vec![
                vec![1.0, 2.0, 0.0],
                vec![0.0, 0.0, 0.0],
                vec![3.0, 4.0, 5.0]
            ]
        );
        // d/dv of Σ p·w picks each token's own weight; padding routes nowhere.
        let w = Tensor::new(
            &[[1f32, 10.0, 100.0], [7.0, 7.0, 7.0], [1000.0, 1e4, 1e5]],
            &Device::Cpu,
        )
        .unwrap();
        let g = (p * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = g.get(v.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(g, vec![1.0, 10.0, 1000.0, 1e4, 1e5]);
        let err = padded(v.as_tensor(), &[2, 2]).unwrap_err().to_string();
        assert_eq!(err, "5 values for 4 tokens");
    }
}
