//! Scoring given data with any checkpoint, outside the pipeline: the
//! per-token log-probabilities of (prompt, response) rows, and a reward
//! model's pairwise accuracy on preference pairs. Both make a checkpoint's
//! numbers checkable from the shell (e.g. against transformers).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use arrow::datatypes::{DataType, UInt32Type};
use candle_core::{DType, Device};
use marlhf_data::adapters::hh_rlhf::{read_raw_pairs, RawPairs};
use marlhf_data::parquet_io::{
    batch, f32_array, f64_array, list_array, list_of, optional, read_table, required, str_array,
    u64_array, write_table, Columns,
};
use marlhf_model::checkpoint::Use;
use marlhf_model::lm::{split_rows, Scored};
use marlhf_model::Checkpoint;

use crate::encode::{encode_pair, LengthReport};
use crate::progress::Progress;
use crate::rm::{score_pairs, Pair};

/// Token columns: a file that has both is read as token ids, as is
/// (e.g. `rollouts.parquet`); otherwise text columns are tokenized.
pub const PROMPT_TOKENS: &str = "prompt_tokens";
pub const RESPONSE_TOKENS: &str = "response_tokens";

pub struct LogprobOptions {
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// The text column holding responses; `None`: `response`, else
    /// `completion` (sft.parquet).
    pub response_column: Option<String>,
    /// Prepend the tokenizer's BOS to text prompts (as the stages do).
    pub bos: bool,
    pub batch_size: usize,
    pub device: Device,
    pub dtype: DType,
}

pub struct LogprobReport {
    pub rows: usize,
    pub tokens: usize,
    /// Whether the rows came as token ids (else text).
    pub token_input: bool,
    pub mean_logprob: f64,
}

/// One row to score: the context, then the tokens whose log-probability
/// is wanted.
struct Row {
    id: u64,
    prompt: Vec<u32>,
    response: Vec<u32>,
}

fn read_rows(opts: &LogprobOptions, ck: &Checkpoint) -> Result<(Vec<Row>, bool)> {
    let path = &opts.data;
    let table = read_table(path)?;
    let c = Columns::new(path, &table);
    let names = c.names();
    let has = |n: &str| names.iter().any(|x| x == n);
    let ids: Vec<u64> = if has("id") {
        c.u64("id")?
    } else {
        (0..c.len() as u64).collect()
    };
    let token_input = has(PROMPT_TOKENS) && has(RESPONSE_TOKENS);
    let (prompts, responses) = if token_input {
        (c.list_u32(PROMPT_TOKENS)?, c.list_u32(RESPONSE_TOKENS)?)
    } else {
        let column = match &opts.response_column {
            Some(n) => n.clone(),
            None if has("response") => "response".into(),
            None if has("completion") => "completion".into(),
            None => bail!(
                "{}: expected columns prompt and response (or completion), or {PROMPT_TOKENS} and {RESPONSE_TOKENS}; found {}",
                path.display(),
                names.join(", ")
            ),
        };
        let prompts = c.string("prompt")?;
        let responses = c.string(&column)?;
        let tok = &ck.tokenizer;
        let mut p = Vec::with_capacity(prompts.len());
        let mut r = Vec::with_capacity(prompts.len());
        for (text, resp) in prompts.iter().zip(&responses) {
            let mut ids: Vec<u32> = if opts.bos {
                tok.bos.into_iter().collect()
            } else {
                Vec::new()
            };
            ids.extend(tok.encode(text)?);
            p.push(ids);
            r.push(tok.encode(resp)?);
        }
        (p, r)
    };
    let vocab = ck.model.config.vocab_size;
    let max = ck.model.config.max_position_embeddings;
    let mut rows = Vec::with_capacity(ids.len());
    for (i, ((id, prompt), response)) in ids.into_iter().zip(prompts).zip(responses).enumerate() {
        let row = i + 1;
        if prompt.is_empty() {
            bail!(
                "{} row {row}: empty prompt (the first response token needs a context)",
                path.display()
            );
        }
        if prompt.len() + response.len() > max {
            bail!(
                "{} row {row}: {} tokens, more than the model's {max} positions",
                path.display(),
                prompt.len() + response.len()
            );
        }
        if let Some(t) = prompt
            .iter()
            .chain(&response)
            .find(|&&t| t as usize >= vocab)
        {
            bail!(
                "{} row {row}: token id {t} is outside the model's vocabulary of {vocab}",
                path.display()
            );
        }
        rows.push(Row {
            id,
            prompt,
            response,
        });
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok((rows, token_input))
}

/// Log-probabilities of every response token given everything before it,
/// at temperature 1, written to `out` as Parquet: `id`, `prompt_tokens`,
/// `response_tokens`, `logprobs` (aligned with the response tokens),
/// `sum_logprob`, `mean_logprob` (null for an empty response).
pub fn logprobs(opts: &LogprobOptions, progress: &dyn Progress) -> Result<LogprobReport> {
    if opts.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    let ck = Checkpoint::load_with(&opts.checkpoint, &opts.device, opts.dtype, Use::Inference)?;
    let (rows, token_input) = read_rows(opts, &ck)?;
    let bar = progress.bar(rows.len() as u64, "logprobs");
    let mut all: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(opts.batch_size) {
        // Rows without response tokens have nothing to score.
        let scored: Vec<&Row> = chunk.iter().filter(|r| !r.response.is_empty()).collect();
        let mut lps = if scored.is_empty() {
            Vec::new()
        } else {
            let batch = Scored {
                seqs: scored
                    .iter()
                    .map(|r| [r.prompt.as_slice(), r.response.as_slice()].concat())
                    .collect(),
                starts: scored.iter().map(|r| r.prompt.len()).collect(),
            };
            let (lp, counts) = ck.model.token_logprobs(&batch)?;
            split_rows(&lp.to_dtype(DType::F32)?.to_vec1::<f32>()?, &counts)
        }
        .into_iter();
        for r in chunk {
            all.push(if r.response.is_empty() {
                Vec::new()
            } else {
                lps.next().expect("one result per scored row")
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if let Some((i, _)) = all
        .iter()
        .enumerate()
        .find(|(_, l)| l.iter().any(|v| !v.is_finite()))
    {
        bail!(
            "{} row {}: a log-probability is not finite; the checkpoint's weights may hold NaN",
            opts.data.display(),
            i + 1
        );
    }
    let sums: Vec<f64> = all
        .iter()
        .map(|l| l.iter().map(|&v| v as f64).sum())
        .collect();
    let means: Vec<Option<f64>> = all
        .iter()
        .zip(&sums)
        .map(|(l, s)| (!l.is_empty()).then(|| s / l.len() as f64))
        .collect();
    let prompts: Vec<&[u32]> = rows.iter().map(|r| r.prompt.as_slice()).collect();
    let responses: Vec<&[u32]> = rows.iter().map(|r| r.response.as_slice()).collect();
    let lp_refs: Vec<&[f32]> = all.iter().map(|l| l.as_slice()).collect();
    let table = batch(
        &opts.out,
        vec![
            required("id", DataType::UInt64),
            required(PROMPT_TOKENS, list_of(DataType::UInt32)),
            required(RESPONSE_TOKENS, list_of(DataType::UInt32)),
            required("logprobs", list_of(DataType::Float32)),
            required("sum_logprob", DataType::Float64),
            optional("mean_logprob", DataType::Float64),
        ],
        vec![
            u64_array(rows.iter().map(|r| r.id)),
            list_array::<UInt32Type>(&prompts),
            list_array::<UInt32Type>(&responses),
            list_array::<arrow::datatypes::Float32Type>(&lp_refs),
            f64_array(sums.iter().map(|&s| Some(s)).collect()),
            f64_array(means),
        ],
    )?;
    write_table(&opts.out, &table)?;
    let tokens: usize = all.iter().map(|l| l.len()).sum();
    Ok(LogprobReport {
        rows: rows.len(),
        tokens,
        token_input,
        mean_logprob: sums.iter().sum::<f64>() / tokens.max(1) as f64,
    })
}

pub struct AccuracyOptions {
    pub checkpoint: PathBuf,
    /// `pairs.parquet`, or a raw HH-RLHF `{train,test}.jsonl(.gz)` file.
    pub pairs: PathBuf,
    /// Per-pair scores as Parquet, when given.
    pub out: Option<PathBuf>,
    pub batch_size: usize,
    /// `None`: the limit the reward model was trained with (its
    /// `trainer_state.json`), else [`DEFAULT_RM_LIMITS`].
    pub max_prompt_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub limit: Option<usize>,
    pub device: Device,
    pub dtype: DType,
}

/// Prompt and completion limits for a reward model that records none (one
/// trained elsewhere).
pub const DEFAULT_RM_LIMITS: (usize, usize) = (256, 128);

/// The prompt and completion limits to score with: each flag given, else
/// what the checkpoint's trainer state records (the reward model is scored
/// on what it was trained on), else [`DEFAULT_RM_LIMITS`]; and where they
/// came from.
pub fn rm_limits(
    checkpoint: &Path,
    prompt: Option<usize>,
    completion: Option<usize>,
) -> Result<(usize, usize, String)> {
    let recorded = crate::trainer::read_state(checkpoint)?.map(|st| {
        let get = |key: &str| st.settings.get(key).and_then(|v| v.parse::<usize>().ok());
        (get("max_prompt_tokens"), get("max_completion_tokens"))
    });
    let (rec_p, rec_c) = recorded.unwrap_or((None, None));
    let from = |given: Option<usize>, rec: Option<usize>, default: usize| match (given, rec) {
        (Some(v), _) => (v, "flag"),
        (None, Some(v)) => (v, "trainer_state.json"),
        (None, None) => (default, "default"),
    };
    let (p, p_from) = from(prompt, rec_p, DEFAULT_RM_LIMITS.0);
    let (c, c_from) = from(completion, rec_c, DEFAULT_RM_LIMITS.1);
    let source = if p_from == c_from {
        p_from.to_string()
    } else {
        format!("{p_from} / {c_from}")
    };
    Ok((p, c, source))
}

#[derive(Debug, Default)]
pub struct AccuracyReport {
    pub pairs: usize,
    /// The chosen completion scored higher …
    pub correct: usize,
    /// … lower …
    pub wrong: usize,
    /// … or exactly the same (identical token ids always tie).
    pub ties: usize,
    pub mean_margin: f64,
    /// Tokenization: truncations and skipped rows, by reason.
    pub lengths: LengthReport,
    /// Raw rows that could not be split into prompt and completions.
    pub unsplit: Vec<(String, usize)>,
    /// The prompt and completion limits used, and where they came from
    /// (`flag`, `trainer_state.json`, `default`).
    pub limits: (usize, usize, String),
}

impl AccuracyReport {
    /// Correct over all scored pairs, ties counted as not correct.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.pairs.max(1) as f64
    }

    /// Correct over the pairs that did not tie.
    pub fn accuracy_without_ties(&self) -> f64 {
        self.correct as f64 / (self.correct + self.wrong).max(1) as f64
    }
}

fn read_any_pairs(path: &Path, limit: Option<usize>) -> Result<RawPairs> {
    let parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if parquet {
        let mut pairs = marlhf_data::read_pairs(path)?;
        if let Some(n) = limit {
            pairs.truncate(n);
        }
        Ok(RawPairs {
            pairs,
            unsplit: Vec::new(),
        })
    } else {
        Ok(read_raw_pairs(path, limit)?)
    }
}

/// The reward model's score of chosen and rejected completion of every
/// pair (tokenized as the RM stage does, with the same length limits), and
/// how often it prefers the chosen one.
pub fn pairwise_accuracy(
    opts: &AccuracyOptions,
    progress: &dyn Progress,
) -> Result<AccuracyReport> {
    if opts.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    let RawPairs {
        pairs: rows,
        unsplit,
    } = read_any_pairs(&opts.pairs, opts.limit)?;
    if rows.is_empty() {
        bail!("{}: no preference pairs", opts.pairs.display());
    }
    let ck = Checkpoint::load_with(&opts.checkpoint, &opts.device, opts.dtype, Use::Inference)?;
    if ck.model.v_head.is_none() {
        bail!(
            "{}: no value head (v_head.weight); is it a reward model checkpoint?",
            opts.checkpoint.display()
        );
    }
    let (mut max_prompt, mut max_completion, mut source) = rm_limits(
        &opts.checkpoint,
        opts.max_prompt_tokens,
        opts.max_completion_tokens,
    )?;
    let max_pos = ck.model.config.max_position_embeddings;
    if max_prompt + max_completion > max_pos && !source.contains("flag") {
        // Defaults made for no model in particular: fitted to this one's
        // positions, the completion first (the score is read at its end).
        max_completion = max_completion.min(max_pos / 2);
        max_prompt = max_prompt.min(max_pos - max_completion);
        source = format!("{source}, fitted to the model's {max_pos} positions");
    }
    if max_prompt + max_completion > max_pos {
        bail!(
            "{}: prompts of {max_prompt} + completions of {max_completion} tokens ({source}) exceed the model's {max_pos} positions; lower --max-prompt-tokens or --max-completion-tokens",
            opts.checkpoint.display()
        );
    }
    let tok = &ck.tokenizer;
    let mut report = AccuracyReport {
        unsplit,
        limits: (max_prompt, max_completion, source),
        ..Default::default()
    };
    let mut pairs = Vec::with_capacity(rows.len());
    for r in &rows {
        report.lengths.rows += 1;
        let encode = |text: &str, lengths: &mut LengthReport| {
            encode_pair(
                tok,
                r.id,
                &r.prompt,
                text,
                max_prompt,
                max_completion,
                lengths,
            )
        };
        let c = encode(&r.chosen, &mut report.lengths)?;
        // The prompt is shared: count its truncation once per pair.
        let mut second = LengthReport::default();
        let j = encode(&r.rejected, &mut second)?;
        report.lengths.completion_truncated += second.completion_truncated;
        for (reason, n) in second.skipped {
            for _ in 0..n {
                report.lengths.skip(&reason);
            }
        }
        if let (Some(c), Some(j)) = (c, j) {
            pairs.push(Pair {
                id: r.id,
                chosen: c.sequence(),
                rejected: j.sequence(),
            });
        }
    }
    if pairs.is_empty() {
        bail!(
            "{}: no pair left to score after tokenization",
            opts.pairs.display()
        );
    }
    let bar = progress.bar(pairs.len() as u64, "pairs");
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    for chunk in pairs.chunks(opts.batch_size) {
        let refs: Vec<&Pair> = chunk.iter().collect();
        let (c, r) = score_pairs(&ck.model, &refs)?;
        chosen.extend(c.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        rejected.extend(r.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let mut outcome = Vec::with_capacity(pairs.len());
    let mut margin = 0f64;
    for (i, p) in pairs.iter().enumerate() {
        let (c, r) = (chosen[i], rejected[i]);
        if !(c.is_finite() && r.is_finite()) {
            bail!(
                "pair id {}: score is not finite; the checkpoint's weights may hold NaN",
                p.id
            );
        }
        // Identical inputs tie by definition, whatever rounding a batched
        // matmul does to two copies of one row.
        let o = if p.chosen == p.rejected || c == r {
            report.ties += 1;
            "tie"
        } else if c > r {
            report.correct += 1;
            "chosen"
        } else {
            report.wrong += 1;
            "rejected"
        };
        margin += (c - r) as f64;
        outcome.push(o);
    }
    report.pairs = pairs.len();
    report.mean_margin = margin / pairs.len() as f64;
    if let Some(out) = &opts.out {
        let table = batch(
            out,
            vec![
                required("id", DataType::UInt64),
                required("chosen_score", DataType::Float32),
                required("rejected_score", DataType::Float32),
                required("preferred", DataType::Utf8),
            ],
            vec![
                u64_array(pairs.iter().map(|p| p.id)),
                f32_array(chosen),
                f32_array(rejected),
                str_array(outcome),
            ],
        )?;
        write_table(out, &table)?;
    }
    Ok(report)
}
