//! Import of Karpathy's llama2.c checkpoints (e.g. the pretrained
//! `stories260K`) and their tokenizer into the Hugging Face layout.
//!
//! llama2.c trains with interleaved RoPE (pairs (2i, 2i+1)); the Hugging
//! Face layout used here rotates halves, so the rows of wq and wk are
//! permuted per head exactly as transformers' `convert_llama_weights_to_hf`
//! does. The tokenizer is SentencePiece BPE with byte fallback: rebuilt as
//! a `tokenizers` BPE whose merges are ordered by the merged piece's score.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::json;

use crate::config::{ModelConfig, TokenIds};
use crate::names::{self, in_layer, weight};
use crate::params::Params;

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.at + n > self.buf.len() {
            bail!(
                "{}: truncated file (wanted {n} bytes at offset {})",
                self.path.display(),
                self.at
            );
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok(self
            .take(n * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }
}

/// Interleaved → rotate-half row order for one projection [heads·hd, d].
fn permute_rope(w: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                // source row: h·hd + 2i + j  →  target row: h·hd + j·hd/2 + i
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * (hd / 2) + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Reads a llama2.c model file into a config and parameters.
pub fn import_model(path: &Path, dev: &Device) -> Result<(ModelConfig, Params)> {
    let buf = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut r = Reader {
        buf: &buf,
        at: 0,
        path,
    };
    let dim = r.i32()? as usize;
    let hidden = r.i32()? as usize;
    let layers = r.i32()? as usize;
    let heads = r.i32()? as usize;
    let kv_heads = r.i32()? as usize;
    let vocab_raw = r.i32()?;
    let seq_len = r.i32()? as usize;
    let shared = vocab_raw > 0;
    let vocab = vocab_raw.unsigned_abs() as usize;
    if dim == 0 || heads == 0 || kv_heads == 0 || layers == 0 || !dim.is_multiple_of(heads) {
        bail!("{}: implausible llama2.c header", path.display());
    }
    let hs = dim / heads;
    let kv_dim = kv_heads * hs;
    let mut cfg = ModelConfig::tiny_llama(vocab, dim, layers, heads, hidden);
    cfg.num_key_value_heads = Some(kv_heads);
    cfg.max_position_embeddings = seq_len;
    cfg.tie_word_embeddings = Some(shared);
    cfg.bos_token_id = Some(1);
    // llama2.c's data put BOS (1) before every story and no EOS, and its
    // run.c stops generating at the next BOS: 1 is where a story ends.
    // SentencePiece's EOS (2) stays listed for tokenizers that use it.
    cfg.eos_token_id = Some(TokenIds::Many(vec![1, 2]));
    cfg.pad_token_id = Some(0);
    cfg.validate()?;

    let p = Params::empty();
    let put = |name: &str, data: Vec<f32>, shape: &[usize]| -> Result<()> {
        p.insert(name, Tensor::from_vec(data, shape, dev)?)
    };
    put(names::EMBED, r.f32s(vocab * dim)?, &[vocab, dim])?;
    let per_layer = |r: &mut Reader, n: usize| -> Result<Vec<Vec<f32>>> {
        (0..layers).map(|_| r.f32s(n)).collect()
    };
    let rms_att = per_layer(&mut r, dim)?;
    let wq = per_layer(&mut r, dim * dim)?;
    let wk = per_layer(&mut r, kv_dim * dim)?;
    let wv = per_layer(&mut r, kv_dim * dim)?;
    let wo = per_layer(&mut r, dim * dim)?;
    let rms_ffn = per_layer(&mut r, dim)?;
    let w1 = per_layer(&mut r, hidden * dim)?;
    let w2 = per_layer(&mut r, dim * hidden)?;
    let w3 = per_layer(&mut r, hidden * dim)?;
    for l in 0..layers {
        let pre = names::layer(l);
        let proj = |name: &str| weight(&in_layer(&pre, name));
        put(
            &in_layer(&pre, names::INPUT_NORM),
            rms_att[l].clone(),
            &[dim],
        )?;
        put(
            &proj(names::Q_PROJ),
            permute_rope(&wq[l], heads, dim, dim),
            &[dim, dim],
        )?;
        put(
            &proj(names::K_PROJ),
            permute_rope(&wk[l], kv_heads, kv_dim, dim),
            &[kv_dim, dim],
        )?;
        put(&proj(names::V_PROJ), wv[l].clone(), &[kv_dim, dim])?;
        put(&proj(names::O_PROJ), wo[l].clone(), &[dim, dim])?;
        put(
            &in_layer(&pre, names::POST_ATTENTION_NORM),
            rms_ffn[l].clone(),
            &[dim],
        )?;
        put(&proj(names::GATE_PROJ), w1[l].clone(), &[hidden, dim])?;
        put(&proj(names::DOWN_PROJ), w2[l].clone(), &[dim, hidden])?;
        put(&proj(names::UP_PROJ), w3[l].clone(), &[hidden, dim])?;
    }
    put(names::FINAL_NORM, r.f32s(dim)?, &[dim])?;
    // Precomputed RoPE tables (unused: recomputed from rope_theta).
    r.take(seq_len * hs / 2 * 4 * 2)?;
    if !shared {
        put(names::LM_HEAD, r.f32s(vocab * dim)?, &[vocab, dim])?;
    }
    if r.at != buf.len() {
        bail!(
            "{}: {} unexpected trailing bytes",
            path.display(),
            buf.len() - r.at
        );
    }
    Ok((cfg, p))
}

/// Converts a llama2.c `tokenizer.bin` into a Hugging Face `tokenizer.json`
/// (Llama-2 style: BPE with byte fallback, `▁` for spaces, dummy prefix).
pub fn import_tokenizer(path: &Path, vocab_size: usize) -> Result<String> {
    let buf = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut r = Reader {
        buf: &buf,
        at: 0,
        path,
    };
    let _max_len = r.i32()?;
    let mut pieces = Vec::with_capacity(vocab_size);
    let mut scores = Vec::with_capacity(vocab_size);
    for i in 0..vocab_size {
        let score = r.f32s(1)?[0];
        let len = r.i32()?;
        if len < 0 {
            bail!("{}: token {i}: negative length", path.display());
        }
        let bytes = r.take(len as usize)?;
        let s = std::str::from_utf8(bytes)
            .with_context(|| format!("{}: token {i}: not UTF-8", path.display()))?;
        // llama2.c's export writes BOS/EOS as "\n<s>\n"/"\n</s>\n" and
        // spaces for SentencePiece's "▁".
        let piece = match i {
            0 => "<unk>".to_string(),
            1 => "<s>".to_string(),
            2 => "</s>".to_string(),
            _ => s.replace(' ', "\u{2581}"),
        };
        pieces.push(piece);
        scores.push(score);
    }
    let vocab: HashMap<&str, usize> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    // Every piece that splits into two vocabulary pieces yields a merge;
    // SentencePiece applies the merge whose result scores highest first.
    let mut merges: Vec<(f32, usize, String, String)> = Vec::new();
    for (id, piece) in pieces.iter().enumerate().skip(3) {
        if piece.starts_with("<0x") {
            continue;
        }
        let chars: Vec<(usize, char)> = piece.char_indices().collect();
        for &(at, _) in chars.iter().skip(1) {
            let (l, rgt) = piece.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(rgt)) {
                if li > 2 && ri > 2 {
                    merges.push((scores[id], id, l.to_string(), rgt.to_string()));
                }
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let vocab_json: serde_json::Map<String, serde_json::Value> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}
        ]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab_json,
            "merges": merges.iter().map(|(_, _, l, r)| json!([l, r])).collect::<Vec<_>>(),
        }
    });
    Ok(serde_json::to_string_pretty(&tok)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_moves_interleaved_pairs_to_halves() {
        // one head of dim 4, rows r0..r3 (each 1 column): interleaved pairs
        // (r0,r1),(r2,r3) become halves [r0,r2 | r1,r3].
        let w = vec![0.0, 1.0, 2.0, 3.0];
        assert_eq!(permute_rope(&w, 1, 4, 1), vec![0.0, 2.0, 1.0, 3.0]);
    }
}
