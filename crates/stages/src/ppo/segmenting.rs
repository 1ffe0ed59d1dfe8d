//! The segment stage: macro-action boundaries for every rollout, each
//! response on its own, with one termination condition.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use marlhf_data::{read_rollouts, write_segments, RolloutRow, SegmentRow};
use marlhf_model::checkpoint::{load_tokenizer, CONFIG, TOKENIZER};
use marlhf_model::{ModelConfig, Tokenizer};
use marlhf_rl::{segment, SegmentInput, Termination};

#[derive(Clone, Debug)]
pub struct SegmentConfig {
    pub rollouts: PathBuf,
    pub out: PathBuf,
    pub termination: Termination,
    /// Seeds the randomized condition (with each rollout's id).
    pub seed: u64,
    /// A checkpoint directory or a `tokenizer.json`; the parsing condition
    /// reads the vocabulary pieces of the response tokens from it.
    pub tokenizer: Option<PathBuf>,
}

#[derive(Clone, Debug, Default)]
pub struct SegmentReport {
    pub rollouts: usize,
    pub empty_responses: usize,
    pub tokens: usize,
    pub macro_actions: usize,
}

impl SegmentReport {
    pub fn mean_macro_length(&self) -> f64 {
        self.tokens as f64 / self.macro_actions.max(1) as f64
    }
}

/// A tokenizer from a checkpoint directory (its config names the special
/// tokens) or from a bare `tokenizer.json`.
pub fn load_tokenizer_at(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        // A LoRA adapter's config is its base's.
        let config = marlhf_model::checkpoint::split(path)?.0.join(CONFIG);
        if config.is_file() {
            let dir = marlhf_model::checkpoint::tokenizer_dir(path)?;
            return load_tokenizer(&dir, &ModelConfig::load(&config)?);
        }
        return Tokenizer::load(&path.join(TOKENIZER), None, None, None);
    }
    if !path.is_file() {
        bail!(
            "{}: no such tokenizer file or checkpoint directory",
            path.display()
        );
    }
    Tokenizer::load(path, None, None, None)
}

/// Each token's vocabulary piece (`Ġthe`, `▁the`), which keeps the leading
/// space the parser reads word boundaries from. SentencePiece byte-fallback
/// pieces (`<0x0A>`) become their character when it is ASCII, else the
/// replacement character, which the parser treats as punctuation.
pub fn vocabulary_pieces(tok: &Tokenizer, ids: &[u32]) -> Result<Vec<String>> {
    ids.iter()
        .map(|&id| {
            let piece = tok
                .inner()
                .id_to_token(id)
                .ok_or_else(|| anyhow!("token id {id} is not in the tokenizer's vocabulary"))?;
            Ok(byte_piece(&piece).unwrap_or(piece))
        })
        .collect()
}

fn byte_piece(piece: &str) -> Option<String> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    let byte = u8::from_str_radix(hex, 16).ok()?;
    Some(if byte.is_ascii() {
        char::from(byte).to_string()
    } else {
        "\u{FFFD}".to_string()
    })
}

/// Segments every rollout. `tok` is needed by the parsing condition only.
/// Errors name the file, the row and the rollout.
pub fn segment_rollouts(
    path: &Path,
    rows: &[RolloutRow],
    termination: &Termination,
    seed: u64,
    tok: Option<&Tokenizer>,
) -> Result<Vec<SegmentRow>> {
    let wants_pieces = matches!(termination, Termination::Parsing { .. });
    let name = termination.to_string();
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let at = || format!("{}: row {} (rollout {})", path.display(), i + 1, row.id);
            let pieces = match (wants_pieces, tok) {
                (true, Some(tok)) => {
                    Some(vocabulary_pieces(tok, &row.response_tokens).with_context(at)?)
                }
                (true, None) => bail!("--termination {name} needs --tokenizer"),
                (false, _) => None,
            };
            let starts = segment(
                termination,
                &SegmentInput {
                    len: row.response_tokens.len(),
                    ref_logprobs: Some(&row.ref_logprobs),
                    pieces: pieces.as_deref(),
                    seed,
                    id: row.id,
                },
            )
            .with_context(at)?;
            Ok(SegmentRow {
                id: row.id,
                termination: name.clone(),
                starts,
            })
        })
        .collect()
}

/// Refuses a token id the actor cannot read: against its config (and
/// positions) for a checkpoint directory, against the tokenizer's size for
/// a bare `tokenizer.json`. One line naming the file, row and column.
fn check_vocabulary(
    path: &Path,
    rows: &[RolloutRow],
    tokenizer: &Path,
    loaded: Option<&Tokenizer>,
) -> Result<()> {
    if tokenizer.join(CONFIG).is_file() {
        return super::models::check_tokens(path, rows, &[("actor", tokenizer)]);
    }
    let owned;
    let tok = match loaded {
        Some(t) => t,
        None => {
            owned = load_tokenizer_at(tokenizer)?;
            &owned
        }
    };
    let size = tok.vocab_size();
    for (i, r) in rows.iter().enumerate() {
        for (column, tokens) in [
            ("prompt_tokens", &r.prompt_tokens),
            ("response_tokens", &r.response_tokens),
        ] {
            if let Some(t) = tokens.iter().find(|&&t| t as usize >= size) {
                bail!(
                    "{}: row {}, column \"{column}\": token id {t} is not in the vocabulary of {} ({size} tokens)",
                    path.display(),
                    i + 1,
                    tokenizer.display()
                );
            }
        }
    }
    Ok(())
}

pub fn run_segment(cfg: &SegmentConfig) -> Result<SegmentReport> {
    let tok = match (&cfg.termination, &cfg.tokenizer) {
        (Termination::Parsing { .. }, None) => bail!(
            "--termination {} needs --tokenizer (a checkpoint directory or tokenizer.json)",
            cfg.termination
        ),
        (Termination::Parsing { .. }, Some(p)) => Some(load_tokenizer_at(p)?),
        _ => None,
    };
    // Non-finite numbers are refused by the reader; token ids beyond the
    // actor's vocabulary here, not an iteration later in the update.
    let rows = read_rollouts(&cfg.rollouts)?;
    if let Some(p) = &cfg.tokenizer {
        check_vocabulary(&cfg.rollouts, &rows, p, tok.as_ref())?;
    }
    let segments = segment_rollouts(
        &cfg.rollouts,
        &rows,
        &cfg.termination,
        cfg.seed,
        tok.as_ref(),
    )?;
    write_segments(&cfg.out, &segments)?;
    Ok(SegmentReport {
        rollouts: rows.len(),
        empty_responses: rows.iter().filter(|r| r.response_tokens.is_empty()).count(),
        tokens: rows.iter().map(|r| r.response_tokens.len()).sum(),
        macro_actions: segments.iter().map(|s| s.starts.len()).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_become_characters() {
        assert_eq!(byte_piece("<0x0A>").as_deref(), Some("\n"));
        assert_eq!(byte_piece("<0x2C>").as_deref(), Some(","));
        assert_eq!(byte_piece("<0xE2>").as_deref(), Some("\u{FFFD}"));
        assert_eq!(byte_piece("▁the"), None);
        assert_eq!(byte_piece("<0x0>"), None);
        assert_eq!(byte_piece("<0xZZ>"), None);
    }
}
