//! Pairwise judging of policy A against one or more policies B on a seeded
//! sample of the prompts both answered, GPT-4 style: the judge sees the two
//! responses in a random order per pair and answers for the responses as
//! presented; `marlhf_eval::judge` maps its answer back to A's side.
//!
//! Two judges: any OpenAI-compatible chat endpoint ([`HttpJudge`]), and the
//! local reward model ([`RewardModelJudge`]), which needs no network and
//! answers in the same A/B/E terms.
//!
//! An HTTP judge's answers are paid for, so none is lost: each is appended
//! to a journal beside the output ([`Journal`]) and synced as it arrives,
//! and a run asks only for the answers the journal does not hold. A run
//! that is killed, or stopped by a configuration error, keeps what it was
//! told; a request that fails for one pair becomes that pair's `error` row
//! and is asked again by the next run.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use marlhf_eval::judge::{
    judge_pairs_with_progress, parse_choice, Choice, HttpJudge, HttpJudgeConfig, Judge,
    JudgeAnswer, JudgePair, JudgeRequest, JudgeTask, Verdict, WinRate,
};
use marlhf_eval::report::PairwiseRow;
use marlhf_model::Checkpoint;

use crate::progress::Progress;
use marlhf_data::seed::mix_seed;
use marlhf_data::{read_responses_from, write_judgements, JudgementRow, ResponseRow};

/// What the `judge` column says for the reward-model judge.
pub const REWARD_MODEL_JUDGE: &str = "reward model";

/// The reward model as a judge: it scores prompt + response for A and for B
/// the way it was trained (BOS + the prompt's last `max_prompt_tokens`
/// tokens, then the response and EOS) and prefers the higher score. Scores
/// at most `tie_epsilon` apart are a tie (`E`): a difference that small is
/// arithmetic noise (padding, batching), not a preference.
pub struct RewardModelJudge {
    ck: Checkpoint,
    max_prompt_tokens: usize,
    tie_epsilon: f32,
}

impl RewardModelJudge {
    pub fn load(
        dir: &std::path::Path,
        device: &Device,
        dtype: candle_core::DType,
        max_prompt_tokens: usize,
        tie_epsilon: f32,
    ) -> Result<Self> {
        let ck =
            Checkpoint::load_with(dir, device, dtype, marlhf_model::checkpoint::Use::Inference)?;
        if ck.model.v_head.is_none() {
            bail!(
                "{}: the reward model has no value head (v_head.weight); is it a reward model checkpoint?",
                dir.display()
            );
        }
        if !(tie_epsilon >= 0.0 && tie_epsilon.is_finite()) {
            bail!("--tie-epsilon must be a finite number ≥ 0");
        }
        if max_prompt_tokens == 0 {
            bail!("--max-prompt-tokens must be positive");
        }
        Ok(Self {
            ck,
            max_prompt_tokens,
            tie_epsilon,
        })
    }

    fn sequence(&self, prompt: &str, response: &str) -> Result<Vec<u32>> {
        let tok = &self.ck.tokenizer;
        let mut seq = tok.encode_prompt(prompt, self.max_prompt_tokens)?.ids;
        seq.extend(tok.encode(response)?);
        seq.push(tok.eos);
        let max_pos = self.ck.model.config.max_position_embeddings;
        if seq.len() > max_pos {
            // Keep the end: the score is read at the last token.
            seq.drain(..seq.len() - max_pos);
        }
        Ok(seq)
    }

    /// The reward model's scores of A and B.
    pub fn scores(&self, req: &JudgeRequest) -> Result<(f32, f32)> {
        let seqs = vec![
            self.sequence(&req.prompt, &req.response_a)?,
            self.sequence(&req.prompt, &req.response_b)?,
        ];
        let s: Vec<f32> = self
            .ck
            .model
            .scores(&seqs)?
            .detach()
            .to_dtype(DType::F32)?
            .to_vec1()?;
        Ok((s[0], s[1]))
    }
}

/// The choice for two scores: `E` when they differ by at most `epsilon`.
pub fn choice_from_scores(a: f32, b: f32, epsilon: f32) -> Option<Choice> {
    if !(a.is_finite() && b.is_finite()) {
        return None;
    }
    Some(if (a - b).abs() <= epsilon {
        Choice::Equal
    } else if a > b {
        Choice::A
    } else {
        Choice::B
    })
}

fn choice_letter(choice: Option<Choice>) -> Option<String> {
    choice.map(|c| {
        match c {
            Choice::A => "A",
            Choice::B => "B",
            Choice::Equal => "E",
        }
        .to_string()
    })
}

impl Judge for RewardModelJudge {
    fn judge(&self, req: &JudgeRequest) -> Result<JudgeAnswer> {
        let (a, b) = self.scores(req)?;
        let choice = choice_from_scores(a, b, self.tie_epsilon);
        let letter = choice_letter(choice).unwrap_or_else(|| "none".into());
        Ok(JudgeAnswer {
            raw: format!("score A {a:.6}, score B {b:.6}: {letter}"),
            choice,
        })
    }
}

/// Which judge to ask.
#[derive(Clone, Debug)]
pub enum JudgeKind {
    RewardModel {
        dir: PathBuf,
        max_prompt_tokens: usize,
        tie_epsilon: f32,
        device: Device,
        dtype: candle_core::DType,
    },
    Http(HttpJudgeConfig),
}

#[derive(Clone, Debug)]
pub struct JudgeConfig {
    /// responses.parquet files; each policy answers in one of them.
    pub responses: Vec<PathBuf>,
    /// (A, B) comparisons, each on the same prompts; verdicts are from A's
    /// side.
    pub pairs: Vec<(String, String)>,
    /// The pipeline task (`hh-rlhf`, `tldr`, `webgpt`): the judge's template.
    pub task: String,
    /// Pairs judged per comparison (the paper's 50); all common prompts
    /// when fewer.
    pub sample: usize,
    pub seed: u64,
    pub judge: JudgeKind,
    pub out: PathBuf,
}

#[derive(Clone, Debug)]
pub struct JudgeReport {
    /// Prompts answered by A and by every B.
    pub common_prompts: usize,
    pub rows: Vec<PairwiseRow>,
    /// The HTTP judge's journal, and how many answers this run asked for
    /// and took from it.
    pub journal: Option<JournalUse>,
}

#[derive(Clone, Debug)]
pub struct JournalUse {
    pub path: PathBuf,
    pub asked: usize,
    pub reused: usize,
}

/// The answers an HTTP judge gave, one JSON line each (`{"key", "raw"}`),
/// appended and synced as each arrives. `key` identifies the request (a
/// 128-bit FNV-1a hash of the endpoint and the request body: model,
/// messages, length, temperature), so an answer is reused only for the same
/// question to the same judge; `raw` is the answer, the API key redacted.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    answers: HashMap<String, String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JournalLine {
    key: String,
    raw: String,
}

impl Journal {
    /// `judgements.parquet` → `judgements.journal.jsonl`, beside it.
    pub fn path_for(out: &Path) -> PathBuf {
        out.with_extension("journal.jsonl")
    }

    /// Opens (or starts) the journal at `path`. A line cut short by a kill
    /// is dropped; a line that is not a journal entry is an error naming
    /// it, since the file would otherwise be rewritten around it.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let mut file = File::options()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("{}: cannot open the judge's journal", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64)
                .with_context(|| format!("{}: cannot drop a cut line", path.display()))?;
            file.seek(std::io::SeekFrom::End(0))?;
        }
        let mut answers = HashMap::new();
        for (i, line) in text[..complete].split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let entry: JournalLine = serde_json::from_slice(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}: line {}: not a judge journal entry ({e}); move the file away to start over",
                    path.display(),
                    i + 1
                )
            })?;
            answers.insert(entry.key, entry.raw);
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            answers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    fn get(&self, key: &str) -> Option<&String> {
        self.answers.get(key)
    }

    /// Appends one answer and syncs it to disk before returning.
    fn append(&self, key: &str, raw: &str) -> Result<()> {
        let mut line = serde_json::to_vec(&JournalLine {
            key: key.to_string(),
            raw: raw.to_string(),
        })?;
        line.push(b'\n');
        let mut file = self.file.lock().expect("no panic while holding");
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("{}: cannot append an answer", self.path.display()))
    }
}

/// A 128-bit FNV-1a hash in hex: a stable name for a request (not a
/// defence against anyone choosing collisions, which no one here does).
fn fnv1a_128(text: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in text.as_bytes() {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032x}")
}

/// An HTTP judge that answers from its journal when it can and journals
/// every new answer before handing it on.
pub struct JournaledJudge {
    inner: HttpJudge,
    journal: Journal,
    asked: AtomicUsize,
    reused: AtomicUsize,
}

impl JournaledJudge {
    pub fn new(inner: HttpJudge, journal: Journal) -> Self {
        Self {
            inner,
            journal,
            asked: AtomicUsize::new(0),
            reused: AtomicUsize::new(0),
        }
    }

    fn usage(&self) -> JournalUse {
        JournalUse {
            path: self.journal.path().to_path_buf(),
            asked: self.asked.load(Ordering::SeqCst),
            reused: self.reused.load(Ordering::SeqCst),
        }
    }
}

impl Judge for JournaledJudge {
    fn judge(&self, req: &JudgeRequest) -> Result<JudgeAnswer> {
        let key = fnv1a_128(&self.inner.request_identity(req));
        if let Some(raw) = self.journal.get(&key) {
            self.reused.fetch_add(1, Ordering::SeqCst);
            return Ok(JudgeAnswer {
                raw: raw.clone(),
                choice: parse_choice(req.task, raw),
            });
        }
        self.asked.fetch_add(1, Ordering::SeqCst);
        let answer = self.inner.judge(req)?;
        self.journal.append(&key, &answer.raw)?;
        Ok(answer)
    }

    fn fails_only_this_pair(&self, error: &anyhow::Error) -> bool {
        self.inner.fails_only_this_pair(error)
    }
}

/// The first sample of each prompt a policy answered, by prompt id.
fn by_prompt<'r>(rows: &'r [ResponseRow], policy: &str) -> BTreeMap<u64, &'r ResponseRow> {
    let mut map: BTreeMap<u64, &ResponseRow> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.policy == policy) {
        let slot = map.entry(r.prompt_id).or_insert(r);
        if r.sample < slot.sample {
            *slot = r;
        }
    }
    map
}

/// "the file" or "the files", for messages about `cfg.responses`.
fn files(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn judge_responses(cfg: &JudgeConfig, progress: &dyn Progress) -> Result<JudgeReport> {
    let task = JudgeTask::for_pipeline(&cfg.task).with_context(|| "--task".to_string())?;
    if cfg.pairs.is_empty() {
        bail!("no comparison: give --a and --b, or --pair A:B");
    }
    if cfg.sample == 0 {
        bail!("--sample must be positive");
    }
    for (i, (a, b)) in cfg.pairs.iter().enumerate() {
        if a == b {
            bail!("{a:?} against itself: compare two different policies");
        }
        if cfg.pairs[..i].contains(&(a.clone(), b.clone())) {
            bail!("{a:?} against {b:?} is asked twice");
        }
    }
    let rows = read_responses_from(&cfg.responses)?;
    let mut known: Vec<&str> = Vec::new();
    for r in &rows {
        if !known.contains(&r.policy.as_str()) {
            known.push(&r.policy);
        }
    }
    for name in cfg.pairs.iter().flat_map(|(a, b)| [a, b]) {
        if !known.contains(&name.as_str()) {
            bail!(
                "{}: no responses of policy {name:?}; the responses are of {}",
                files(&cfg.responses),
                known
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut names: Vec<&String> = cfg.pairs.iter().flat_map(|(a, b)| [a, b]).collect();
    names.sort_unstable();
    names.dedup();
    let answers: BTreeMap<&String, BTreeMap<u64, &ResponseRow>> =
        names.iter().map(|&n| (n, by_prompt(&rows, n))).collect();
    // The same prompts for every comparison, so the rows of the report are
    // comparable with each other.
    let common: Vec<u64> = answers[names[0]]
        .keys()
        .copied()
        .filter(|id| answers.values().all(|m| m.contains_key(id)))
        .collect();
    if common.is_empty() {
        bail!(
            "{}: policies {} answered no prompt in common",
            files(&cfg.responses),
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let picked: Vec<u64> = super::sample_indices(common.len(), cfg.sample, cfg.seed)
        .into_iter()
        .map(|i| common[i])
        .collect();

    marlhf_data::atomic::check_writable(&cfg.out)?;
    let (rm_judge, http_judge, judge_name) = match &cfg.judge {
        JudgeKind::RewardModel {
            dir,
            max_prompt_tokens,
            tie_epsilon,
            device,
            dtype,
        } => (
            Some(RewardModelJudge::load(
                dir,
                device,
                *dtype,
                *max_prompt_tokens,
                *tie_epsilon,
            )?),
            None,
            REWARD_MODEL_JUDGE.to_string(),
        ),
        JudgeKind::Http(http) => {
            let inner = HttpJudge::new(http.clone())?;
            let journal = Journal::open(&Journal::path_for(&cfg.out))?;
            if !journal.is_empty() {
                progress.note(&format!(
                    "{}: {} answers of earlier runs; only questions without one are asked",
                    journal.path().display(),
                    journal.len()
                ));
            }
            (
                None,
                Some(JournaledJudge::new(inner, journal)),
                http.model.clone(),
            )
        }
    };
    let judge: &dyn Judge = match (&rm_judge, &http_judge) {
        (Some(rm), _) => rm,
        (None, Some(http)) => http,
        (None, None) => unreachable!("one judge is built above"),
    };

    let mut out_rows = Vec::new();
    let mut report = JudgeReport {
        common_prompts: common.len(),
        rows: Vec::new(),
        journal: None,
    };
    for (j, (a_name, b_name)) in cfg.pairs.iter().enumerate() {
        let (a, b) = (&answers[a_name], &answers[b_name]);
        let pairs: Vec<JudgePair> = picked
            .iter()
            .map(|id| JudgePair {
                prompt_id: *id,
                task,
                prompt: a[id].prompt.clone(),
                response_x: a[id].response.clone(),
                response_y: b[id].response.clone(),
            })
            .collect();
        let pb = progress.bar(pairs.len() as u64, &format!("{a_name} vs {b_name}"));
        let (judgements, rate) =
            judge_pairs_with_progress(judge, &pairs, mix_seed(cfg.seed, &[1 + j as u64]), |done| {
                pb.set_position(done as u64)
            })
            .with_context(|| format!("{a_name} vs {b_name}: {judge_name} judge"))?;
        pb.finish();
        for jd in judgements {
            out_rows.push(JudgementRow {
                prompt_id: jd.prompt_id,
                policy_a: a_name.clone(),
                policy_b: b_name.clone(),
                judge: judge_name.clone(),
                a_shown_first: jd.x_shown_first,
                verdict: jd.verdict,
                choice: choice_letter(jd.choice),
                raw: jd.raw,
            });
        }
        report.rows.push(PairwiseRow {
            policy_a: a_name.clone(),
            policy_b: b_name.clone(),
            judge: judge_name.clone(),
            rate,
        });
    }
    write_judgements(&cfg.out, &out_rows)?;
    report.journal = http_judge.as_ref().map(JournaledJudge::usage);
    let failed = out_rows
        .iter()
        .filter(|r| r.verdict == Verdict::Error)
        .count();
    if failed > 0 {
        progress.note(&format!(
            "{failed} of {} requests failed (verdict `error`); running the judge again asks only for them",
            out_rows.len()
        ));
    }
    Ok(report)
}

/// Win/tie/lose counts per (A, B, judge), in order of first appearance.
pub fn win_rates(rows: &[JudgementRow]) -> Vec<PairwiseRow> {
    let mut out: Vec<PairwiseRow> = Vec::new();
    for r in rows {
        let verdict = r.verdict;
        match out
            .iter_mut()
            .find(|p| p.policy_a == r.policy_a && p.policy_b == r.policy_b && p.judge == r.judge)
        {
            Some(p) => p.rate.add(verdict),
            None => out.push(PairwiseRow {
                policy_a: r.policy_a.clone(),
                policy_b: r.policy_b.clone(),
                judge: r.judge.clone(),
                rate: WinRate::from_verdicts([verdict]),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_from_scores_by_hand() {
        assert_eq!(choice_from_scores(1.0, 0.5, 1e-3), Some(Choice::A));
        assert_eq!(choice_from_scores(-1.0, 0.5, 1e-3), Some(Choice::B));
        assert_eq!(choice_from_scores(0.5, 0.5005, 1e-3), Some(Choice::Equal));
        assert_eq!(choice_from_scores(0.5, 0.502, 1e-3), Some(Choice::B));
        assert_eq!(choice_from_scores(0.5, 0.501, 1e-3), Some(Choice::Equal));
        assert_eq!(choice_from_scores(0.5, 0.5, 0.0), Some(Choice::Equal));
        assert_eq!(choice_from_scores(0.5, 0.5001, 0.0), Some(Choice::B));
        assert_eq!(choice_from_scores(f32::NAN, 0.5, 1e-3), None);
    }

    #[test]
    fn request_keys_are_fnv1a_128() {
        // The published test vectors of 128-bit FNV-1a.
        assert_eq!(fnv1a_128(""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(fnv1a_128("a"), "d228cb696f1a8caf78912b704e4a8964");
        assert_eq!(fnv1a_128("foobar"), "343e1662793c64bf6f0d3597ba446f18");
    }

    /// A line cut short by a kill is dropped (and the file is appended to
    /// after it); a line that is no entry is an error naming it.
    #[test]
    fn journal_keeps_whole_lines_and_drops_a_cut_one() {
        let dir = marlhf_testkit::TempDir::new("judge-journal");
        let path = dir.path().join("j.journal.jsonl");
        std::fs::write(
            &path,
            "{\"key\":\"k1\",\"raw\":\"A\"}\n{\"key\":\"k2\",\"raw\":\"B\"}\n{\"key\":\"k3\",\"ra",
        )
        .unwrap();
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.len(), 2);
        assert_eq!(journal.get("k2").map(String::as_str), Some("B"));
        journal.append("k3", "E").unwrap();
        drop(journal);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"key\":\"k1\",\"raw\":\"A\"}\n{\"key\":\"k2\",\"raw\":\"B\"}\n{\"key\":\"k3\",\"raw\":\"E\"}\n"
        );
        assert_eq!(Journal::open(&path).unwrap().len(), 3);
        std::fs::write(&path, "not json\n").unwrap();
        let err = Journal::open(&path).err().unwrap().to_string();
        assert!(err.contains("line 1: not a judge journal entry"), "{err}");
        assert_eq!(
            Journal::path_for(Path::new("eval/judgements.parquet")),
            Path::new("eval/judgements.journal.jsonl")
        );
    }

    #[test]
    fn win_rates_group_in_order_of_appearance() {
        let row = |b: &str, v: &str| JudgementRow {
            prompt_id: 0,
            policy_a: "ma-ppo".into(),
            policy_b: b.into(),
            judge: "reward model".into(),
            a_shown_first: true,
            verdict: v.parse().unwrap(),
            choice: None,
            raw: String::new(),
        };
        let rows = vec![
            row("ppo", "win"),
            row("sft", "lose"),
            row("ppo", "tie"),
            row("ppo", "unparseable"),
            row("ppo", "win"),
        ];
        let rates = win_rates(&rows);
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0].policy_b, "ppo");
        assert_eq!(
            rates[0].rate,
            WinRate {
                win: 2,
                tie: 1,
                lose: 0,
                unparseable: 1,
                n: 4,
                error: 0,
            }
        );
        assert_eq!(rates[1].rate.lose, 1);
        // A verdict outside the four cannot be built; the reader refuses it
        // (marlhf_data::tables, eval.rs tests).
    }
}
