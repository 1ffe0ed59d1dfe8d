//! Pairwise judging of two policies' responses, GPT-4 style.
//!
//! For each prompt the judge sees the responses of policy X and policy Y in
//! an order drawn from a seeded RNG (cancelling the judge's position bias),
//! and its A/B/E answer is mapped back to a [`Verdict`] from X's side.
//! Answers that cannot be read are counted as [`Verdict::Unparseable`],
//! never dropped; a request that fails for one pair (retries ran out, the
//! reply is not a completion) is that pair's [`Verdict::Error`], not the
//! end of the run. Code (APPS) is scored with pass@k instead.

mod parse;
pub mod templates;

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::client::{api_key_from_env, ChatClient, ClientConfig, RequestError};
use crate::protocol::{ChatMessage, ChatRequest};

pub use parse::parse_choice;

/// What kind of text is judged; picks the template and answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeTask {
    /// TL;DR summaries: A / B / E on the last line.
    Summary,
    /// HH-RLHF dialogue: JSON `{"comparison", "choice"}`.
    Dialogue,
    /// WebGPT question answering: JSON `{"comparison", "choice"}`.
    Qa,
    /// Story continuations (the stories task): JSON `{"comparison", "choice"}`.
    Story,
}

impl JudgeTask {
    /// The judge task for a pipeline task name (`tldr`, `hh-rlhf`, `webgpt`).
    pub fn for_pipeline(task: &str) -> Result<Self> {
        match task {
            "tldr" => Ok(Self::Summary),
            "hh-rlhf" => Ok(Self::Dialogue),
            "webgpt" => Ok(Self::Qa),
            "stories" => Ok(Self::Story),
            "apps" => bail!("task apps is evaluated with pass@k, not a judge"),
            other => bail!("unknown task {other:?}: expected tldr, hh-rlhf, webgpt or stories"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::Dialogue => "dialogue",
            Self::Qa => "qa",
            Self::Story => "story",
        }
    }
}

impl fmt::Display for JudgeTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The judge's choice between the responses as presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Choice {
    A,
    B,
    /// Equally good.
    Equal,
}

/// One question to a judge: the responses in presentation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeRequest {
    pub task: JudgeTask,
    pub prompt: String,
    pub response_a: String,
    pub response_b: String,
}

/// A judge's raw answer and the choice read from it (`None`: unparseable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeAnswer {
    pub raw: String,
    pub choice: Option<Choice>,
}

/// Anything that compares two responses: an LLM over HTTP, a reward model.
pub trait Judge: Send + Sync {
    fn judge(&self, req: &JudgeRequest) -> Result<JudgeAnswer>;

    /// Whether `error`, returned by [`Judge::judge`], concerns that one
    /// pair (it becomes the pair's [`Verdict::Error`] and judging goes on)
    /// rather than every pair (a wrong key, model or URL; a broken local
    /// judge), which stops the run.
    fn fails_only_this_pair(&self, _error: &anyhow::Error) -> bool {
        false
    }
}

pub use marlhf_data::Verdict;

/// Maps a choice about presented responses back to policy X (shown first
/// or second).
pub fn verdict_from_choice(choice: Option<Choice>, x_shown_first: bool) -> Verdict {
    match (choice, x_shown_first) {
        (None, _) => Verdict::Unparseable,
        (Some(Choice::Equal), _) => Verdict::Tie,
        (Some(Choice::A), true) | (Some(Choice::B), false) => Verdict::Win,
        (Some(Choice::A), false) | (Some(Choice::B), true) => Verdict::Lose,
    }
}

/// Policy X's and policy Y's responses to one prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgePair {
    pub prompt_id: u64,
    pub task: JudgeTask,
    pub prompt: String,
    pub response_x: String,
    pub response_y: String,
}

/// The judge's verdict on one pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judgement {
    pub prompt_id: u64,
    /// X's response was shown as A.
    pub x_shown_first: bool,
    pub verdict: Verdict,
    pub choice: Option<Choice>,
    pub raw: String,
}

/// Verdict counts from X's side; `n` counts the answered pairs, unparseable
/// answers included. Failed requests (`error`) are no answer about the
/// responses: counted apart, not in `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinRate {
    pub win: usize,
    pub tie: usize,
    pub lose: usize,
    pub unparseable: usize,
    pub n: usize,
    #[serde(default)]
    pub error: usize,
}

impl WinRate {
    pub fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Win => self.win += 1,
            Verdict::Tie => self.tie += 1,
            Verdict::Lose => self.lose += 1,
            Verdict::Unparseable => self.unparseable += 1,
            Verdict::Error => {
                self.error += 1;
                return;
            }
        }
        self.n += 1;
    }

    pub fn from_verdicts<I: IntoIterator<Item = Verdict>>(verdicts: I) -> Self {
        let mut rate = Self::default();
        verdicts.into_iter().for_each(|v| rate.add(v));
        rate
    }

    /// Wins over all judged pairs, unparseable ones included, so a judge
    /// that fails to answer cannot inflate the rate. 0 when `n` is 0.
    pub fn win_rate(&self) -> f64 {
        fraction(self.win, self.n)
    }

    pub fn tie_rate(&self) -> f64 {
        fraction(self.tie, self.n)
    }

    pub fn lose_rate(&self) -> f64 {
        fraction(self.lose, self.n)
    }

    pub fn unparseable_rate(&self) -> f64 {
        fraction(self.unparseable, self.n)
    }
}

fn fraction(count: usize, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        count as f64 / n as f64
    }
}

/// Judges every pair with a seeded random presentation order.
pub fn judge_pairs(
    judge: &dyn Judge,
    pairs: &[JudgePair],
    seed: u64,
) -> Result<(Vec<Judgement>, WinRate)> {
    judge_pairs_with_progress(judge, pairs, seed, |_| {})
}

/// [`judge_pairs`], calling `progress(done)` after each pair (for a bar).
pub fn judge_pairs_with_progress(
    judge: &dyn Judge,
    pairs: &[JudgePair],
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<Judgement>, WinRate)> {
    // Orders are drawn up front, one per pair, so pair i's order depends
    // only on the seed and i.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let orders: Vec<bool> = pairs.iter().map(|_| rng.random_bool(0.5)).collect();
    let mut judgements = Vec::with_capacity(pairs.len());
    let mut rate = WinRate::default();
    for (i, (pair, &x_shown_first)) in pairs.iter().zip(&orders).enumerate() {
        let (a, b) = if x_shown_first {
            (&pair.response_x, &pair.response_y)
        } else {
            (&pair.response_y, &pair.response_x)
        };
        let request = JudgeRequest {
            task: pair.task,
            prompt: pair.prompt.clone(),
            response_a: a.clone(),
            response_b: b.clone(),
        };
        let answer = match judge.judge(&request) {
            Ok(answer) => answer,
            Err(e) if judge.fails_only_this_pair(&e) => {
                rate.add(Verdict::Error);
                judgements.push(Judgement {
                    prompt_id: pair.prompt_id,
                    x_shown_first,
                    verdict: Verdict::Error,
                    choice: None,
                    raw: format!("{e:#}"),
                });
                progress(i + 1);
                continue;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("judging prompt {} (pair {i})", pair.prompt_id))
            }
        };
        let verdict = verdict_from_choice(answer.choice, x_shown_first);
        rate.add(verdict);
        judgements.push(Judgement {
            prompt_id: pair.prompt_id,
            x_shown_first,
            verdict,
            choice: answer.choice,
            raw: answer.raw,
        });
        progress(i + 1);
    }
    Ok((judgements, rate))
}

/// Settings for [`HttpJudge`].
#[derive(Debug, Clone)]
pub struct HttpJudgeConfig {
    /// Up to and including the API version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    /// The NAME of the environment variable holding the API key; an unset
    /// variable sends no key (local servers).
    pub api_key_env: String,
    pub timeout: Duration,
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_tokens: u32,
}

impl Default for HttpJudgeConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_string(),
            model: "gpt-4o".to_string(),
            api_key_env: "OPENAI_API_KEY".to_string(),
            timeout: Duration::from_secs(120),
            max_retries: 5,
            initial_backoff: Duration::from_secs(1),
            max_tokens: 512,
        }
    }
}

/// A judge behind any OpenAI-compatible chat-completions endpoint, asked at
/// temperature 0.
pub struct HttpJudge {
    client: ChatClient,
    model: String,
    max_tokens: u32,
}

impl HttpJudge {
    pub fn new(config: HttpJudgeConfig) -> Result<Self> {
        let api_key = api_key_from_env(&config.api_key_env)?;
        if api_key.is_none() && config.base_url.contains("api.openai.com") {
            bail!(
                "the judge at {} needs an API key: set the environment variable {}",
                crate::client::redact_url(&config.base_url),
                config.api_key_env
            );
        }
        let client = ChatClient::new(ClientConfig {
            base_url: config.base_url,
            api_key,
            timeout: config.timeout,
            max_retries: config.max_retries,
            initial_backoff: config.initial_backoff,
            ..ClientConfig::default()
        });
        Ok(Self {
            client,
            model: config.model,
            max_tokens: config.max_tokens,
        })
    }

    /// What identifies the answer to `req`: the endpoint (credentials
    /// removed) and the whole request body (model, messages with the
    /// responses in their presented order, length, temperature). A journal
    /// of answers is keyed by it.
    pub fn request_identity(&self, req: &JudgeRequest) -> String {
        format!(
            "{}\n{}",
            self.client.redact(&self.client.config().base_url),
            serde_json::to_string(&self.request_for(req)).expect("a request serialises")
        )
    }

    /// The chat request sent for `req`.
    pub fn request_for(&self, req: &JudgeRequest) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages: vec![
                ChatMessage::system(templates::SYSTEM_PROMPT),
                ChatMessage::user(templates::render(req)),
            ],
            max_tokens: Some(self.max_tokens),
            temperature: Some(0.0),
            ..ChatRequest::default()
        }
    }
}

impl Judge for HttpJudge {
    fn judge(&self, req: &JudgeRequest) -> Result<JudgeAnswer> {
        let response = self.client.chat(&self.request_for(req))?;
        let Some(raw) = response.content() else {
            return Err(anyhow::Error::new(RequestError {
                status: None,
                message: "the judge answered with no choices".to_string(),
            }));
        };
        // An answer may quote the request's key (a proxy's echo): the
        // answer goes into files and reports, the key must not.
        Ok(JudgeAnswer {
            raw: self.client.redact(raw),
            choice: parse_choice(req.task, raw),
        })
    }

    /// A failed request of one pair (retries ran out, a reply that is not
    /// a completion, a 400 about this prompt) is that pair's; a refused
    /// key, an unknown model or URL would fail every pair.
    fn fails_only_this_pair(&self, error: &anyhow::Error) -> bool {
        error
            .downcast_ref::<RequestError>()
            .is_some_and(|e| !e.is_configuration())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Always prefers the response containing "good", records what it saw.
    struct Keyword {
        seen: Mutex<Vec<(String, String)>>,
    }

    impl Judge for Keyword {
        fn judge(&self, req: &JudgeRequest) -> Result<JudgeAnswer> {
            self.seen
                .lock()
                .unwrap()
                .push((req.response_a.clone(), req.response_b.clone()));
            let raw = if req.response_a.contains("unclear") {
                "hmm, hard to say".to_string()
            } else if req.response_a.contains("good") && req.response_b.contains("good") {
                "E".to_string()
            } else if req.response_a.contains("good") {
                "A".to_string()
            } else {
                "B".to_string()
            };
            let choice = parse_choice(req.task, &raw);
            Ok(JudgeAnswer { raw, choice })
        }
    }

    fn pair(id: u64, x: &str, y: &str) -> JudgePair {
        JudgePair {
            prompt_id: id,
            task: JudgeTask::Summary,
            prompt: format!("post {id}"),
            response_x: x.to_string(),
            response_y: y.to_string(),
        }
    }

    #[test]
    fn verdict_mapping_by_hand() {
        assert_eq!(verdict_from_choice(Some(Choice::A), true), Verdict::Win);
        assert_eq!(verdict_from_choice(Some(Choice::A), false), Verdict::Lose);
        assert_eq!(verdict_from_choice(Some(Choice::B), true), Verdict::Lose);
        assert_eq!(verdict_from_choice(Some(Choice::B), false), Verdict::Win);
        assert_eq!(
            verdict_from_choice(Some(Choice::Equal), false),
            Verdict::Tie
        );
        assert_eq!(verdict_from_choice(None, true), Verdict::Unparseable);
        for v in [
            Verdict::Win,
            Verdict::Tie,
            Verdict::Lose,
            Verdict::Unparseable,
        ] {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), v);
        }
    }

    #[test]
    fn order_is_randomised_and_mapped_back_to_x() {
        // X is always the better one: whatever the order, X must win.
        let pairs: Vec<JudgePair> = (0..64).map(|i| pair(i, "good", "bad")).collect();
        let judge = Keyword {
            seen: Mutex::new(Vec::new()),
        };
        let (judgements, rate) = judge_pairs(&judge, &pairs, 7).unwrap();
        assert_eq!(
            rate,
            WinRate {
                win: 64,
                tie: 0,
                lose: 0,
                unparseable: 0,
                n: 64,
                error: 0,
            }
        );
        let firsts = judgements.iter().filter(|j| j.x_shown_first).count();
        // Both orders occur (the chance of 64 equal coin flips is 2^-63).
        assert!(firsts > 0 && firsts < 64, "{firsts}");
        // Another seed draws other orders (equal with chance 2^-64).
        let (again, _) = judge_pairs(&judge, &pairs, 8).unwrap();
        assert_ne!(
            judgements
                .iter()
                .map(|j| j.x_shown_first)
                .collect::<Vec<_>>(),
            again.iter().map(|j| j.x_shown_first).collect::<Vec<_>>()
        );
        // The judge saw X as A exactly when x_shown_first says so.
        let seen = judge.seen.lock().unwrap();
        for (j, (a, _)) in judgements.iter().zip(seen.iter()) {
            assert_eq!(j.x_shown_first, a == "good");
            assert_eq!(
                j.choice,
                Some(if j.x_shown_first {
                    Choice::A
                } else {
                    Choice::B
                })
            );
        }
    }

    #[test]
    fn same_seed_same_orders_and_counts_every_verdict() {
        let pairs = vec![
            pair(1, "good", "bad"),
            pair(2, "bad", "good"),
            pair(3, "good", "good"),
            pair(4, "unclear", "unclear"),
            pair(5, "bad", "good"),
        ];
        let judge = Keyword {
            seen: Mutex::new(Vec::new()),
        };
        let (first, rate) = judge_pairs(&judge, &pairs, 1234).unwrap();
        let (second, _) = judge_pairs(&judge, &pairs, 1234).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            rate,
            WinRate {
                win: 1,
                tie: 1,
                lose: 2,
                unparseable: 1,
                n: 5,
                error: 0,
            }
        );
        assert_eq!(first[3].verdict, Verdict::Unparseable);
        assert_eq!(first[3].raw, "hmm, hard to say");
        assert!((rate.win_rate() - 0.2).abs() < 1e-12);
        assert!((rate.unparseable_rate() - 0.2).abs() < 1e-12);
        let mut progress = Vec::new();
        judge_pairs_with_progress(&judge, &pairs, 1, |d| progress.push(d)).unwrap();
        assert_eq!(progress, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn templates_carry_the_texts_and_format() {
        let req = JudgeRequest {
            task: JudgeTask::Summary,
            prompt: "SUBREDDIT: r/test\n\nPOST: my post\n\nTL;DR:".into(),
            response_a: " first summary ".into(),
            response_b: "second summary".into(),
        };
        let text = templates::render(&req);
        assert!(text.contains("Summary A:\nfirst summary\n\nSummary B:\nsecond summary"));
        for quality in ["relevance", "coherence", "consistency", "fluency"] {
            assert!(text.contains(quality), "{quality}");
        }
        assert!(text.contains("\"E\""));
        let dialogue = templates::render(&JudgeRequest {
            task: JudgeTask::Dialogue,
            ..req.clone()
        });
        assert!(dialogue.contains("\"choice\""));
        assert!(dialogue.contains("Response A:\nfirst summary"));
        assert!(dialogue.contains("helpful"));
        let qa = templates::render(&JudgeRequest {
            task: JudgeTask::Qa,
            ..req
        });
        assert!(qa.contains("Question:") && qa.contains("Answer B:\nsecond summary"));
    }

    #[test]
    fn pipeline_tasks_map_to_judge_tasks() {
        assert_eq!(JudgeTask::for_pipeline("tldr").unwrap(), JudgeTask::Summary);
        assert_eq!(
            JudgeTask::for_pipeline("hh-rlhf").unwrap(),
            JudgeTask::Dialogue
        );
        assert_eq!(JudgeTask::for_pipeline("webgpt").unwrap(), JudgeTask::Qa);
        assert_eq!(
            JudgeTask::for_pipeline("apps").unwrap_err().to_string(),
            "task apps is evaluated with pass@k, not a judge"
        );
        assert!(JudgeTask::for_pipeline("imdb").is_err());
    }

    #[test]
    fn http_judge_demands_a_key_for_openai() {
        let err = HttpJudge::new(HttpJudgeConfig {
            api_key_env: "MARLHF_TEST_UNSET_KEY_VAR".into(),
            ..HttpJudgeConfig::default()
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("MARLHF_TEST_UNSET_KEY_VAR"),
            "{err}"
        );
        let judge = HttpJudge::new(HttpJudgeConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key_env: "MARLHF_TEST_UNSET_KEY_VAR".into(),
            ..HttpJudgeConfig::default()
        })
        .unwrap();
        let req = judge.request_for(&JudgeRequest {
            task: JudgeTask::Qa,
            prompt: "q".into(),
            response_a: "a".into(),
            response_b: "b".into(),
        });
        assert_eq!(req.temperature, Some(0.0));
        assert_eq!(req.messages.len(), 2);
        assert_eq!(req.messages[1].role, "user");
    }
}
