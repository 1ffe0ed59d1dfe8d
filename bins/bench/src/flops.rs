//! Matmul FLOPs of one training step, the work "fraction of GEMM peak" is
//! measured against. Element-wise work (norms, softmax, AdamW) is not
//! counted: it is the overhead the figure exposes.

use marlhf_model::ModelConfig;

/// FLOPs of the matrix products in a forward + backward pass over `rows`
/// sequences of `len` tokens whose tokens from `start` on are scored: the
/// projections and the MLP at every token, causal attention (QKᵀ and PV
/// over the keys at or before each query), and the LM head at the scored
/// positions only. Backward is twice forward (the gradient with respect to
/// each operand of every product).
pub fn train_step(cfg: &ModelConfig, rows: usize, len: usize, start: usize) -> f64 {
    let (h, i) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
    let (nh, nkv, hd) = (
        cfg.num_attention_heads as f64,
        cfg.kv_heads() as f64,
        cfg.head_dim() as f64,
    );
    let layers = cfg.num_hidden_layers as f64;
    let tokens = (rows * len) as f64;
    let dense = h * nh * hd * 2.0 + h * nkv * hd * 2.0 + 3.0 * h * i;
    let pairs = (len * (len + 1) / 2) as f64;
    let attention = rows as f64 * nh * 2.0 * hd * pairs;
    let scored = (rows * (len - start)) as f64;
    let head = scored * h * cfg.vocab_size as f64;
    let macs = layers * (dense * tokens + attention) + head;
    2.0 * macs * 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_step_golden() {
        // Hidden 256, MLP 688, 4 layers, 8 heads of 32, vocab 8192; 8 rows
        // of 256 tokens, 255 scored each. MACs per token per layer:
        // 4·256² + 3·256·688 = 790,528; ×4 layers ×2048 tokens ×6 =
        // 38,856,032,256. Attention: 8 rows · 8 heads · 2 products · 32 ·
        // (256·257/2 = 32,896 pairs) · 4 layers · 6 = 3,233,808,384. LM
        // head: 2040 · 256 · 8192 · 6 = 25,669,140,480.
        let cfg = ModelConfig::tiny_llama(8192, 256, 4, 8, 688);
        assert_eq!(train_step(&cfg, 8, 256, 1), 67_758_981_120.0);
    }
}
