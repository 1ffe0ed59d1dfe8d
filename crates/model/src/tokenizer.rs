//! A checkpoint's `tokenizer.json` with the special ids the stages need and
//! length limits applied at tokenization time, counted, never silent.

use std::path::Path;

use anyhow::{anyhow, bail, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: u32,
}

/// Ids of a text after a length limit, and whether the limit cut it.
pub struct Encoded {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

impl Tokenizer {
    /// Loads `tokenizer.json`; special ids come from the model config when
    /// given, else from the conventional special tokens in the vocabulary.
    pub fn load(path: &Path, bos: Option<u32>, eos: Option<u32>, pad: Option<u32>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: not a valid tokenizer.json: {e}", path.display()))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = bos.or_else(|| find(&["<|bos|>", "<s>", "<|begin_of_text|>", "<bos>"]));
        let eos = eos
            .or_else(|| {
                find(&[
                    "<|eos|>",
                    "</s>",
                    "<|endoftext|>",
                    "<|end_of_text|>",
                    "<eos>",
                ])
            })
            .ok_or_else(|| anyhow!("{}: no EOS token found", path.display()))?;
        let pad = pad
            .or_else(|| find(&["<|pad|>", "<pad>", "<unk>"]))
            .unwrap_or(eos);
        Ok(Tokenizer {
            inner,
            bos,
            eos,
            pad,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A prompt: BOS + text, keeping the LAST `max` tokens when too long
    /// (the end of a dialogue is what the response must follow).
    pub fn encode_prompt(&self, text: &str, max: usize) -> Result<Encoded> {
        let mut ids: Vec<u32> = self.bos.into_iter().collect();
        ids.extend(self.encode(text)?);
        if max == 0 {
            bail!("max prompt tokens must be positive");
        }
        let truncated = ids.len() > max;
        if truncated {
            let keep = ids.split_off(ids.len() - max);
            ids = keep;
        }
        Ok(Encoded { ids, truncated })
    }

    /// A completion: text + EOS, keeping the FIRST `max` tokens. A cut
    /// completion gets no EOS, so the model is never taught to stop there.
    pub fn encode_completion(&self, text: &str, max: usize) -> Result<Encoded> {
        let mut ids = self.encode(text)?;
        ids.push(self.eos);
        let truncated = ids.len() > max;
        ids.truncate(max);
        Ok(Encoded { ids, truncated })
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("tokenizer: {e}"))
    }

    /// The text each token adds when decoding left to right (may be empty
    /// for a token that ends inside a multi-byte character); their
    /// concatenation is the decoded text.
    pub fn pieces(&self, ids: &[u32]) -> Result<Vec<String>> {
        let mut stream = self.inner.decode_stream(true);
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let piece = stream.step(id).map_err(|e| anyhow!("tokenizer: {e}"))?;
            out.push(piece.unwrap_or_default());
        }
        Ok(out)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
