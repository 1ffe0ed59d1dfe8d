//! Causal self-attention of a padded batch (no KV cache), forward and
//! backward, in the layout the projections produce: q [B, T, nh, hd],
//! k and v [B, T, nkv, hd], output [B, T, nh, hd]. No transposes, no
//! [B, nh, T, T] score tensors: each (row, head) task works through blocks
//! of queries, computing the scores of a block against only the keys at or
//! before its last query, and the backward pass recomputes them rather than
//! keeping them (flash-attention style), so memory stays O(B·T·hd).
//!
//! A query may see key j when j ≤ its index, key j is a real token, and,
//! with a sliding window w, the query's position minus key j's is below w
//! (positions count real tokens only, as `positions_from_mask` gives).
//! A query that sees no key (a padding query of a left-padded row) outputs
//! zeros; nothing real reads a padding position's output.

use rayon::prelude::*;

use super::{exp, gemm, gemm_raw, Par, SendPtr, View};

/// Queries per block: the scores of a block (QBLOCK × T floats) stay in
/// the L2 cache, and causal blocks skip the keys after their last query.
const QBLOCK: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
}

impl Dims {
    fn q_off(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.t + t) * self.nh + h) * self.hd
    }

    fn kv_off(&self, b: usize, t: usize, g: usize) -> usize {
        ((b * self.t + t) * self.nkv + g) * self.hd
    }

    fn q_len(&self) -> usize {
        self.b * self.t * self.nh * self.hd
    }

    fn kv_len(&self) -> usize {
        self.b * self.t * self.nkv * self.hd
    }

    /// The kv head that query head `h` reads (grouped-query attention).
    fn group(&self, h: usize) -> usize {
        h / (self.nh / self.nkv)
    }
}

/// Which keys each query sees: B·T real-token flags and positions.
pub struct Mask<'a> {
    pub key_mask: &'a [u8],
    pub pos: &'a [u32],
    pub window: Option<usize>,
}

impl Mask<'_> {
    pub fn allows(&self, d: &Dims, b: usize, q: usize, j: usize) -> bool {
        let row = b * d.t;
        j <= q
            && self.key_mask[row + j] != 0
            && self
                .window
                .is_none_or(|w| (self.pos[row + q] as i64 - self.pos[row + j] as i64) < w as i64)
    }
}

/// How raw dot products become logits: × scale, then Gemma 2's soft cap
/// `cap · tanh(x / cap)`, rounded as the composite candle ops round them.
#[derive(Clone, Copy, Debug)]
pub struct Scoring {
    pub scale: f64,
    pub softcap: Option<f64>,
}

/// Scores and probabilities of queries q0..q1 of (b, h) against keys
/// 0..q1: `s` gets the logits (−∞ where masked), `p` the softmax (0 where
/// masked; a row with no visible key is all zeros). Rows are q1 apart.
#[allow(clippy::too_many_arguments)]
fn probs(
    d: &Dims,
    mask: &Mask,
    sc: Scoring,
    q: &[f32],
    k: &[f32],
    b: usize,
    h: usize,
    q0: usize,
    q1: usize,
    s: &mut [f32],
    p: &mut [f32],
) {
    let (bq, kend) = (q1 - q0, q1);
    gemm(
        bq,
        kend,
        d.hd,
        s,
        View::rows(0, kend),
        false,
        q,
        View::rows(d.q_off(b, q0, h), d.nh * d.hd),
        k,
        View::cols(d.kv_off(b, 0, d.group(h)), d.nkv * d.hd),
        Par::Serial,
    );
    let scale = sc.scale as f32;
    let cap = sc.softcap.map(|c| ((1.0 / c) as f32, c as f32));
    let key_mask = &mask.key_mask[b * d.t..b * d.t + kend];
    for i in 0..bq {
        let qi = q0 + i;
        let row = &mut s[i * kend..(i + 1) * kend];
        let prow = &mut p[i * kend..(i + 1) * kend];
        // Keys after the query are masked by causality alone.
        let seen = qi + 1;
        row[seen..].fill(f32::NEG_INFINITY);
        prow[seen..].fill(0.0);
        let (row, prow) = (&mut row[..seen], &mut prow[..seen]);
        if cap.is_none() && mask.window.is_none() {
            // The common case, in a loop the compiler vectorizes.
            for (x, &k) in row.iter_mut().zip(key_mask) {
                *x = if k != 0 {
                    *x * scale
                } else {
                    f32::NEG_INFINITY
                };
            }
        } else {
            for (j, x) in row.iter_mut().enumerate() {
                *x = if mask.allows(d, b, qi, j) {
                    let mut v = *x * scale;
                    if let Some((inv, c)) = cap {
                        v = (v * inv).tanh() * c;
                    }
                    v
                } else {
                    f32::NEG_INFINITY
                };
            }
        }
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            prow.fill(0.0);
            continue;
        }
        let inv = 1.0 / exp::exp_sub_sum_into(row, m, prow);
        prow.iter_mut().for_each(|o| *o *= inv);
    }
}

/// out [B, T, nh, hd] = softmax(mask(scores(q·kᵀ)))·v.
pub fn forward(
    d: &Dims,
    mask: &Mask,
    sc: Scoring,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    assert!(q.len() == d.q_len() && out.len() == d.q_len());
    assert!(k.len() == d.kv_len() && v.len() == d.kv_len());
    let dst = SendPtr::new(out);
    (0..d.b * d.nh).into_par_iter().for_each(|task| {
        let (b, h) = (task / d.nh, task % d.nh);
        let mut s = vec![0f32; QBLOCK.min(d.t) * d.t];
        let mut p = vec![0f32; s.len()];
        for q0 in (0..d.t).step_by(QBLOCK) {
            let q1 = (q0 + QBLOCK).min(d.t);
            probs(d, mask, sc, q, k, b, h, q0, q1, &mut s, &mut p);
            // SAFETY: task (b, h) writes only the rows of head h of row b.
            unsafe {
                gemm_raw(
                    q1 - q0,
                    d.hd,
                    q1,
                    dst,
                    View::rows(d.q_off(b, q0, h), d.nh * d.hd),
                    false,
                    &p,
                    View::rows(0, q1),
                    v,
                    View::rows(d.kv_off(b, 0, d.group(h)), d.nkv * d.hd),
                    Par::Serial,
                )
            };
        }
    });
}

/// Gradients of `forward` with respect to q, k and v given the output's
/// gradient `go`, written to dq [B, T, nh, hd], dk and dv [B, T, nkv, hd].
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: &Dims,
    mask: &Mask,
    sc: Scoring,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    go: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    assert!(q.len() == d.q_len() && go.len() == d.q_len() && dq.len() == d.q_len());
    assert!(k.len() == d.kv_len() && v.len() == d.kv_len());
    assert!(dk.len() == d.kv_len() && dv.len() == d.kv_len());
    let scale = sc.scale as f32;
    let inv_cap = sc.softcap.map(|c| (1.0 / c) as f32);
    let dq_ptr = SendPtr::new(dq);
    // Per (row, head): that head's share of dk and dv, [T, hd] each; heads
    // of one kv group are summed below in a fixed order (deterministic).
    let parts: Vec<[Vec<f32>; 2]> = (0..d.b * d.nh)
        .into_par_iter()
        .map(|task| {
            let (b, h) = (task / d.nh, task % d.nh);
            let g = d.group(h);
            let mut dkh = vec![0f32; d.t * d.hd];
            let mut dvh = vec![0f32; d.t * d.hd];
            let mut s = vec![0f32; QBLOCK.min(d.t) * d.t];
            let mut p = vec![0f32; s.len()];
            let mut dp = vec![0f32; s.len()];
            for q0 in (0..d.t).step_by(QBLOCK) {
                let q1 = (q0 + QBLOCK).min(d.t);
                let (bq, kend) = (q1 - q0, q1);
                let qv = View::rows(d.q_off(b, q0, h), d.nh * d.hd);
                probs(d, mask, sc, q, k, b, h, q0, q1, &mut s, &mut p);
                // dv += pᵀ · go
                gemm(
                    kend,
                    d.hd,
                    bq,
                    &mut dvh,
                    View::rows(0, d.hd),
                    true,
                    &p,
                    View::cols(0, kend),
                    go,
                    qv,
                    Par::Serial,
                );
                // dp = go · vᵀ
                gemm(
                    bq,
                    kend,
                    d.hd,
                    &mut dp,
                    View::rows(0, kend),
                    false,
                    go,
                    qv,
                    v,
                    View::cols(d.kv_off(b, 0, g), d.nkv * d.hd),
                    Par::Serial,
                );
                // d(raw score) = p ⊙ (dp − Σ p·dp) · cap′ · scale
                for i in 0..bq {
                    let (pr, sr) = (&p[i * kend..(i + 1) * kend], &s[i * kend..(i + 1) * kend]);
                    let dr = &mut dp[i * kend..(i + 1) * kend];
                    let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    for j in 0..kend {
                        dr[j] = if pr[j] == 0.0 {
                            0.0
                        } else {
                            let mut x = pr[j] * (dr[j] - dot);
                            if let Some(ic) = inv_cap {
                                let t = sr[j] * ic;
                                x *= 1.0 - t * t;
                            }
                            x * scale
                        };
                    }
                }
                // dq = d(raw) · k   (each query row of head h written once)
                // SAFETY: task (b, h) writes only the rows of head h of row b.
                unsafe {
                    gemm_raw(
                        bq,
                        d.hd,
                        kend,
                        dq_ptr,
                        qv,
                        false,
                        &dp,
                        View::rows(0, kend),
                        k,
                        View::rows(d.kv_off(b, 0, g), d.nkv * d.hd),
                        Par::Serial,
                    )
                };
                // dk += d(raw)ᵀ · q
                gemm(
                    kend,
                    d.hd,
                    bq,
                    &mut dkh,
                    View::rows(0, d.hd),
                    true,
                    &dp,
                    View::cols(0, kend),
                    q,
                    qv,
                    Par::Serial,
                );
            }
            [dkh, dvh]
        })
        .collect();
    let rep = d.nh / d.nkv;
    // which = 0: dk, 1: dv.
    let sum_heads = |dst: &mut [f32], which: usize| {
        dst.par_chunks_mut(d.nkv * d.hd)
            .enumerate()
            .for_each(|(bt, row)| {
                let (b, t) = (bt / d.t, bt % d.t);
                for g in 0..d.nkv {
                    let o = &mut row[g * d.hd..(g + 1) * d.hd];
                    o.fill(0.0);
                    for r in 0..rep {
                        let part = &parts[b * d.nh + g * rep + r][which];
                        for (x, y) in o.iter_mut().zip(&part[t * d.hd..(t + 1) * d.hd]) {
                            *x += y;
                        }
                    }
                }
            });
    };
    sum_heads(dk, 0);
    sum_heads(dv, 1);
}
