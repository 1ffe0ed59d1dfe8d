//! Training the byte-level BPE tokenizer a from-scratch model uses. Byte
//! level means every string round-trips losslessly and nothing is unknown;
//! no prefix space is added, so decode(encode(s)) == s exactly.

#![forbid(unsafe_code)]

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use marlhf_data::adapters::{EVAL_PROMPTS_FILE, PAIRS_FILE, PROMPTS_FILE, SFT_FILE};
use marlhf_data::{read_pairs, read_prompts, read_sft};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};
use tokenizers::{DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};

/// Special tokens, in id order: `<|pad|>` = 0, `<|bos|>` = 1, `<|eos|>` = 2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|pad|>", "<|bos|>", "<|eos|>"];
pub const PAD: &str = SPECIAL_TOKENS[0];
pub const BOS: &str = SPECIAL_TOKENS[1];
pub const EOS: &str = SPECIAL_TOKENS[2];

/// The smallest vocabulary: the special tokens and the 256 byte symbols.
pub const MIN_VOCAB: usize = SPECIAL_TOKENS.len() + 256;

/// The training texts of a prepared data directory: every prompt and
/// completion of sft.parquet, pairs.parquet and prompts.parquet, in file
/// order. eval_prompts.parquet is left out on purpose: nothing fitted to the
/// data, the tokenizer included, sees the held-out prompts.
pub fn corpus(data: &Path) -> anyhow::Result<Vec<String>> {
    if !data.is_dir() {
        bail!(
            "{}: data directory not found (run prepare first)",
            data.display()
        );
    }
    let mut texts = Vec::new();
    for r in read_sft(&data.join(SFT_FILE))? {
        texts.push(r.prompt);
        texts.push(r.completion);
    }
    for r in read_pairs(&data.join(PAIRS_FILE))? {
        texts.push(r.prompt);
        texts.push(r.chosen);
        texts.push(r.rejected);
    }
    for r in read_prompts(&data.join(PROMPTS_FILE))? {
        texts.push(r.prompt);
    }
    // Checked so a half-prepared directory is not silently accepted.
    let eval = data.join(EVAL_PROMPTS_FILE);
    if !eval.is_file() {
        bail!("{}: file not found (run prepare first)", eval.display());
    }
    if texts.is_empty() {
        bail!("{}: no text to train on", data.display());
    }
    Ok(texts)
}

/// Trains a byte-level BPE of at most `vocab_size` tokens (special tokens and
/// the 256 bytes included) on `texts`; merges need `min_frequency` pairs.
pub fn train_tokenizer(
    texts: &[String],
    vocab_size: usize,
    min_frequency: u64,
) -> anyhow::Result<Tokenizer> {
    if vocab_size < MIN_VOCAB {
        bail!("vocab size {vocab_size} is too small: at least {MIN_VOCAB} (3 special tokens + 256 bytes)");
    }
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tokenizer = TokenizerBuilder::<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default().into())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(|e| anyhow!("cannot build tokenizer: {e}"))?;
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
    let tokenizer = Tokenizer::from(tokenizer);
    for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
        if tokenizer.token_to_id(token) != Some(id as u32) {
            bail!("special token {token} did not get id {id}");
        }
    }
    Ok(tokenizer)
}

/// Compact JSON; stable for the same training data.
pub fn to_json(tokenizer: &Tokenizer) -> anyhow::Result<String> {
    tokenizer
        .to_string(false)
        .map_err(|e| anyhow!("cannot serialise tokenizer: {e}"))
}

/// Writes `tokenizer.json` atomically.
pub fn save(tokenizer: &Tokenizer, path: &Path) -> anyhow::Result<()> {
    let json = to_json(tokenizer)?;
    marlhf_data::atomic::write_file(path, |tmp| {
        std::fs::write(tmp, json.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))
    })
}

/// Total tokens of `texts` (no special tokens added).
pub fn count_tokens(tokenizer: &Tokenizer, texts: &[String]) -> anyhow::Result<usize> {
    let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encodings = tokenizer
        .encode_batch(inputs, false)
        .map_err(|e| anyhow!("cannot encode: {e}"))?;
    Ok(encodings.iter().map(|e| e.len()).sum())
}
