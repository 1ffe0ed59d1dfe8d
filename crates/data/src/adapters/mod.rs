//! Raw datasets, in their published layouts, turned into the prepared
//! files (SFT rows, preference pairs, PPO prompts, validation prompts,
//! evaluation prompts). Each task's module reads its layout into [`Example`]s (one per raw
//! row, dropping only invalid rows and counting why); [`assemble`] then
//! splits them and builds the tables, the same way for every task.
//!
//! Conventions shared by all tasks:
//! - `id` is the 0-based index of the raw row in read order (files sorted by
//!   name, train before test), so every output row traces back to its source
//!   and ids are unique across the four files.
//! - A completion is exactly the text that follows the prompt: prompt +
//!   completion is the full text. Where the data stores the two together
//!   (HH-RLHF dialogues) the completion keeps its leading space; where it
//!   stores them apart and the completion lacks one, a single space is added.
//! - Length limits are not applied here (they depend on the tokenizer).

pub mod apps;
pub mod hh_rlhf;
pub mod tldr;
pub mod webgpt;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::atomic::FileSet;
use crate::error::{DataError, Result};
use crate::split::{self, Split};
use crate::tables::{stage_rows, PairRow, PromptRow, SftRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    HhRlhf,
    Tldr,
    Webgpt,
    Apps,
}

impl Task {
    pub const ALL: [Task; 4] = [Task::HhRlhf, Task::Tldr, Task::Webgpt, Task::Apps];

    /// The task's name, which is also its directory under the raw root.
    pub fn name(self) -> &'static str {
        match self {
            Task::HhRlhf => "hh-rlhf",
            Task::Tldr => "tldr",
            Task::Webgpt => "webgpt",
            Task::Apps => "apps",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                DataError::invalid(format!(
                    "unknown task {s:?}: expected one of hh-rlhf, tldr, webgpt, apps"
                ))
            })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOptions {
    pub seed: u64,
    /// Share of the rows held out for evaluation when the data has no test
    /// split of its own (with train and test files, test is the eval split).
    pub eval_fraction: f64,
    /// Read only the first `limit` raw rows (quick runs).
    pub limit: Option<usize>,
    /// PPO prompts held out as validation prompts (early stopping, tuning):
    /// at most a quarter of the PPO prompts.
    pub validation_prompts: usize,
}

/// The validation prompts held out of the PPO split by default.
pub const DEFAULT_VALIDATION_PROMPTS: usize = 500;

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            seed: split::DEFAULT_SEED,
            eval_fraction: split::DEFAULT_EVAL_FRACTION,
            limit: None,
            validation_prompts: DEFAULT_VALIDATION_PROMPTS,
        }
    }
}

/// What prepare did, written beside the files as `prepare_report.json`.
/// `raw_rows == kept_rows + sum(dropped)` and `kept_rows == sum(split_rows)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrepareReport {
    pub task: String,
    pub layout: String,
    pub sources: Vec<String>,
    pub seed: u64,
    /// The eval share carved out of the rows; null when the data's own test
    /// split was used.
    pub eval_fraction: Option<f64>,
    pub raw_rows: u64,
    pub kept_rows: u64,
    /// Dropped rows by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Kept rows whose chosen and rejected completions are identical (kept
    /// in pairs; the rm stage skips them), over all splits and in pairs.
    pub chosen_equals_rejected: u64,
    pub chosen_equals_rejected_in_pairs: u64,
    /// Kept rows per split (sft, rm, ppo, eval).
    pub split_rows: BTreeMap<String, u64>,
    /// Rows of the ppo/eval splits merged into an earlier identical prompt.
    pub duplicate_prompts_merged: u64,
    /// PPO prompts held out as validation prompts (not in prompts.parquet).
    pub validation_prompts: u64,
    /// Rows per output file.
    pub outputs: BTreeMap<String, u64>,
    pub notes: Vec<String>,
}

impl PrepareReport {
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    fn drop_row(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_string()).or_insert(0) += 1;
    }
}

pub struct Prepared {
    pub sft: Vec<SftRow>,
    pub pairs: Vec<PairRow>,
    pub prompts: Vec<PromptRow>,
    /// Held out of the PPO split: disjoint from the PPO prompts and from
    /// the evaluation prompts.
    pub validation_prompts: Vec<PromptRow>,
    pub eval_prompts: Vec<PromptRow>,
    pub report: PrepareReport,
}

/// Reads `<raw>/<task>/` and prepares the four tables.
pub fn prepare(task: Task, raw: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    if !(0.0..1.0).contains(&opts.eval_fraction) {
        return Err(DataError::invalid(format!(
            "eval fraction must be in [0, 1), got {}",
            opts.eval_fraction
        )));
    }
    let root = raw.join(task.name());
    match task {
        Task::HhRlhf => hh_rlhf::prepare(&root, opts),
        Task::Tldr => tldr::prepare(&root, opts),
        Task::Webgpt => webgpt::prepare(&root, opts),
        Task::Apps => apps::prepare(&root, opts),
    }
}

pub const SFT_FILE: &str = "sft.parquet";
pub const PAIRS_FILE: &str = "pairs.parquet";
pub const PROMPTS_FILE: &str = "prompts.parquet";
pub const VALIDATION_PROMPTS_FILE: &str = "validation_prompts.parquet";
pub const EVAL_PROMPTS_FILE: &str = "eval_prompts.parquet";
pub const REPORT_FILE: &str = "prepare_report.json";

/// Writes the five tables and the report into `dir`, all or nothing.
pub fn write_prepared(dir: &Path, prepared: &Prepared) -> Result<()> {
    let mut set = FileSet::new();
    stage_rows(&mut set, &dir.join(SFT_FILE), &prepared.sft)?;
    stage_rows(&mut set, &dir.join(PAIRS_FILE), &prepared.pairs)?;
    stage_rows(&mut set, &dir.join(PROMPTS_FILE), &prepared.prompts)?;
    stage_rows(
        &mut set,
        &dir.join(VALIDATION_PROMPTS_FILE),
        &prepared.validation_prompts,
    )?;
    stage_rows(
        &mut set,
        &dir.join(EVAL_PROMPTS_FILE),
        &prepared.eval_prompts,
    )?;
    let report_path = dir.join(REPORT_FILE);
    let mut json = serde_json::to_string_pretty(&prepared.report)
        .map_err(|e| DataError::file(&report_path, format!("cannot encode: {e}")))?;
    json.push('\n');
    set.stage(&report_path, |tmp| {
        crate::parquet_io::write_bytes(tmp, &report_path, json.as_bytes())
    })?;
    set.commit()
}

/// Where a raw row came from: the dataset's own train or test split, or a
/// file without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Train,
    Test,
    Unsplit,
}

/// One valid raw row, before splitting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Example {
    pub id: u64,
    /// The split key: rows with equal keys land in the same split.
    pub group: String,
    pub prompt: String,
    /// The preferred completion (SFT target, chosen in a pair).
    pub chosen: Option<String>,
    pub rejected: Option<String>,
    pub reference: Option<String>,
    pub subreddit: Option<String>,
    pub tests: Option<String>,
}

/// Counts raw rows, hands out ids and applies `--limit`.
pub(crate) struct Intake {
    limit: Option<usize>,
    pub examples: Vec<(Origin, Example)>,
    pub report: PrepareReport,
}

impl Intake {
    pub fn new(task: Task, layout: &str, opts: &PrepareOptions) -> Self {
        Self {
            limit: opts.limit,
            examples: Vec::new(),
            report: PrepareReport {
                task: task.name().to_string(),
                layout: layout.to_string(),
                seed: opts.seed,
                ..Default::default()
            },
        }
    }

    pub fn full(&self) -> bool {
        self.limit
            .is_some_and(|l| self.report.raw_rows as usize >= l)
    }

    pub fn source(&mut self, path: &Path) {
        self.report.sources.push(path.display().to_string());
    }

    /// Registers a raw row; `row` is its validated example or the reason it
    /// was dropped. Returns whether more rows are wanted.
    pub fn take(&mut self, origin: Origin, row: std::result::Result<Example, &str>) -> bool {
        let id = self.report.raw_rows;
        self.report.raw_rows += 1;
        match row {
            Ok(mut example) => {
                example.id = id;
                self.examples.push((origin, example));
            }
            Err(reason) => self.report.drop_row(reason),
        }
        !self.full()
    }
}

/// How a task's kept rows are divided.
pub(crate) struct Plan {
    /// The training buckets (the paper's 20/40/40 unless a task has no use
    /// for one of them).
    pub train: Vec<(Split, f64)>,
    /// Prompts are useless without unit tests (APPS).
    pub prompts_need_tests: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            train: split::PAPER_SPLIT.to_vec(),
            prompts_need_tests: false,
        }
    }
}

pub(crate) fn nonempty(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

/// Prefixes a space unless the completion already starts with whitespace.
pub(crate) fn after_prompt(completion: &str) -> String {
    if completion.starts_with(char::is_whitespace) {
        completion.to_string()
    } else {
        format!(" {completion}")
    }
}

/// The split of every example, `None` for a dropped one. The data's own
/// test split is the eval split only when it also has a train split (an
/// eval prompt also in the training data is dropped); otherwise everything
/// is one pool and eval is carved out of it.
fn assign_splits(
    examples: &[(Origin, Example)],
    opts: &PrepareOptions,
    plan: &Plan,
    report: &mut PrepareReport,
) -> Vec<Option<Split>> {
    let has_train = examples.iter().any(|(o, _)| *o == Origin::Train);
    let has_test = examples.iter().any(|(o, _)| *o == Origin::Test);
    let mut splits: Vec<Option<Split>> = vec![None; examples.len()];
    if has_train && has_test {
        let train_idx: Vec<usize> = (0..examples.len())
            .filter(|&i| examples[i].0 != Origin::Test)
            .collect();
        let keys: Vec<&str> = train_idx
            .iter()
            .map(|&i| examples[i].1.group.as_str())
            .collect();
        for (&i, s) in train_idx
            .iter()
            .zip(split::assign(&keys, &plan.train, opts.seed))
        {
            splits[i] = Some(s);
        }
        let train_groups: HashSet<&str> = keys.into_iter().collect();
        for (i, (origin, ex)) in examples.iter().enumerate() {
            if *origin == Origin::Test {
                if train_groups.contains(ex.group.as_str()) {
                    report.drop_row("eval prompt also in the training data");
                } else {
                    splits[i] = Some(Split::Eval);
                }
            }
        }
        report.eval_fraction = None;
        report
            .notes
            .push("eval split = the dataset's test files".to_string());
    } else {
        let keys: Vec<&str> = examples.iter().map(|(_, e)| e.group.as_str()).collect();
        let buckets = split::with_eval(opts.eval_fraction, &plan.train);
        for (slot, s) in splits
            .iter_mut()
            .zip(split::assign(&keys, &buckets, opts.seed))
        {
            *slot = Some(s);
        }
        report.eval_fraction = Some(opts.eval_fraction);
    }
    splits
}

/// Moves a seeded sample of the PPO prompts, `opts.validation_prompts` of
/// them but at most a quarter, into a validation set: (PPO, validation),
/// each in its original order. The sample depends only on the seed and
/// the PPO prompts, so the other files do not change with it.
fn hold_out_validation(
    prompts: Vec<PromptRow>,
    opts: &PrepareOptions,
) -> (Vec<PromptRow>, Vec<PromptRow>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let n = opts.validation_prompts.min(prompts.len() / 4);
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    // A stream of its own: "validation" in ASCII.
    let stream = crate::seed::mix_seed(opts.seed, &[0x7661_6c69_6461_7469]);
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(stream));
    let mut held = vec![false; prompts.len()];
    for &i in &order[..n] {
        held[i] = true;
    }
    let (mut ppo, mut validation) = (Vec::new(), Vec::new());
    for (row, h) in prompts.into_iter().zip(held) {
        if h {
            validation.push(row);
        } else {
            ppo.push(row);
        }
    }
    (ppo, validation)
}

/// Splits the examples and builds the tables.
pub(crate) fn assemble(
    intake: Intake,
    opts: &PrepareOptions,
    plan: &Plan,
    empty_what: &Path,
) -> Result<Prepared> {
    let Intake {
        examples,
        mut report,
        ..
    } = intake;
    if examples.is_empty() {
        let reasons: Vec<String> = report
            .dropped
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        return Err(DataError::file(
            empty_what,
            format!(
                "empty dataset: no valid rows out of {} ({})",
                report.raw_rows,
                if reasons.is_empty() {
                    "none read".to_string()
                } else {
                    reasons.join(", ")
                }
            ),
        ));
    }

    let splits = assign_splits(&examples, opts, plan, &mut report);

    let mut out = Prepared {
        sft: vec![],
        pairs: vec![],
        prompts: vec![],
        validation_prompts: vec![],
        eval_prompts: vec![],
        report: PrepareReport::default(),
    };
    let mut seen_prompts: HashMap<Split, HashSet<String>> = HashMap::new();
    for ((_, ex), split) in examples.into_iter().zip(splits) {
        let Some(split) = split else { continue };
        if ex.chosen.is_some() && ex.chosen == ex.rejected {
            report.chosen_equals_rejected += 1;
        }
        match split {
            Split::Sft => {
                let Some(completion) = ex.chosen else {
                    report.drop_row("sft split: no completion");
                    continue;
                };
                out.sft.push(SftRow {
                    id: ex.id,
                    prompt: ex.prompt,
                    completion,
                });
            }
            Split::Rm => {
                let (Some(chosen), Some(rejected)) = (ex.chosen, ex.rejected) else {
                    report.drop_row("rm split: no pair");
                    continue;
                };
                if chosen == rejected {
                    report.chosen_equals_rejected_in_pairs += 1;
                }
                out.pairs.push(PairRow {
                    id: ex.id,
                    prompt: ex.prompt,
                    chosen,
                    rejected,
                });
            }
            Split::Ppo | Split::Eval => {
                if plan.prompts_need_tests && ex.tests.is_none() {
                    report.drop_row("no unit tests");
                    continue;
                }
                *report
                    .split_rows
                    .entry(split.name().to_string())
                    .or_insert(0) += 1;
                if !seen_prompts
                    .entry(split)
                    .or_default()
                    .insert(ex.prompt.clone())
                {
                    report.duplicate_prompts_merged += 1;
                    continue;
                }
                let row = PromptRow {
                    id: ex.id,
                    prompt: ex.prompt,
                    reference: ex.reference,
                    subreddit: ex.subreddit,
                    tests: ex.tests,
                };
                if split == Split::Eval {
                    out.eval_prompts.push(row)
                } else {
                    out.prompts.push(row)
                }
                continue;
            }
        }
        *report
            .split_rows
            .entry(split.name().to_string())
            .or_insert(0) += 1;
    }
    for s in [Split::Sft, Split::Rm, Split::Ppo, Split::Eval] {
        report.split_rows.entry(s.name().to_string()).or_insert(0);
    }
    (out.prompts, out.validation_prompts) =
        hold_out_validation(std::mem::take(&mut out.prompts), opts);
    report.validation_prompts = out.validation_prompts.len() as u64;
    if out.validation_prompts.len() < opts.validation_prompts {
        report.notes.push(format!(
            "validation prompts: {} of the {} asked for (at most a quarter of the PPO prompts)",
            out.validation_prompts.len(),
            opts.validation_prompts
        ));
    }
    report.kept_rows = report.split_rows.values().sum();
    report.outputs = BTreeMap::from([
        (SFT_FILE.to_string(), out.sft.len() as u64),
        (PAIRS_FILE.to_string(), out.pairs.len() as u64),
        (PROMPTS_FILE.to_string(), out.prompts.len() as u64),
        (
            VALIDATION_PROMPTS_FILE.to_string(),
            out.validation_prompts.len() as u64,
        ),
        (EVAL_PROMPTS_FILE.to_string(), out.eval_prompts.len() as u64),
    ]);
    out.report = report;
    Ok(out)
}
