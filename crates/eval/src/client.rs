//! A blocking client for OpenAI-compatible chat-completions endpoints, with
//! retries and exponential backoff on rate limits, server errors, timeouts
//! and refused connections (a local server that is still starting).
//!
//! The API key never leaves through an error: every message this client
//! builds from a server's reply (an error body echoing the `Authorization`
//! header, a reply that is not a completion) or from the transport passes
//! through [`Redactor`], which replaces the key's value and any long piece
//! of it, and credentials in the URL, with `[redacted]`.

use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::protocol::{ChatCompletionResponse, ChatRequest, ErrorBody};

#[derive(Clone)]
pub struct ClientConfig {
    /// Up to and including the version, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...` when present.
    pub api_key: Option<String>,
    /// Whole-request timeout, per attempt.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// What stands in for a secret in every message.
pub const REDACTED: &str = "[redacted]";

/// Removes secrets from text that may echo them: each secret's value and
/// every run of at least [`Redactor::MIN_PIECE`] characters of it (a server
/// may quote a key cut short), and the user-information part of URLs.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<Vec<char>>,
}

impl Redactor {
    /// Pieces of a secret this long or longer are redacted too (shorter
    /// secrets only whole).
    pub const MIN_PIECE: usize = 12;

    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(secrets: I) -> Self {
        Self {
            secrets: secrets
                .into_iter()
                .map(|s| s.as_ref().chars().collect::<Vec<char>>())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    pub fn clean(&self, text: &str) -> String {
        let text = redact_url(text);
        if self.secrets.is_empty() {
            return text;
        }
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < chars.len() {
            let longest = self
                .secrets
                .iter()
                .map(|secret| {
                    let min = Self::MIN_PIECE.min(secret.len());
                    let best = (0..secret.len())
                        .map(|j| {
                            secret[j..]
                                .iter()
                                .zip(&chars[i..])
                                .take_while(|(a, b)| a == b)
                                .count()
                        })
                        .max()
                        .unwrap_or(0);
                    if best >= min {
                        best
                    } else {
                        0
                    }
                })
                .max()
                .unwrap_or(0);
            if longest > 0 {
                out.push_str(REDACTED);
                i += longest;
            } else {
                out.push(chars[i]);
                i += 1;
            }
        }
        out
    }
}

/// `scheme://user:password@host` → `scheme://[redacted]@host`, anywhere in
/// `text`.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(userinfo) => {
                out.push_str(REDACTED);
                out.push_str(&tail[userinfo..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A request that got no usable answer: the server's status when it sent
/// one, and why (secrets redacted). Found with `anyhow::Error::downcast_ref`
/// under the context the client adds.
#[derive(Debug, Clone)]
pub struct RequestError {
    pub status: Option<u16>,
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// An answer that would be the same for every request: a refused key
    /// (401, 403), an unknown model or route (404).
    pub fn is_configuration(&self) -> bool {
        matches!(self.status, Some(401 | 403 | 404))
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_string(),
            api_key: None,
            timeout: Duration::from_secs(120),
            max_retries: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

pub struct ChatClient {
    agent: ureq::Agent,
    config: ClientConfig,
    redactor: Redactor,
}

/// One attempt's failure, and whether another attempt may help.
struct Failure {
    error: RequestError,
    retry: bool,
    /// The server's Retry-After, in seconds.
    retry_after: Option<u64>,
}

impl ChatClient {
    pub fn new(config: ClientConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let redactor = Redactor::new(config.api_key.iter());
        Self {
            agent,
            config,
            redactor,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `text` with this client's key removed: for anything a server said
    /// that goes into a message, a log or a file.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.clean(text)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.config.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// `POST {base_url}/chat/completions`.
    pub fn chat(&self, request: &ChatRequest) -> Result<ChatCompletionResponse> {
        let body = serde_json::to_string(request)?;
        let url = self.url("chat/completions");
        let text = self.with_retries(&url, || self.post_once(&url, &body))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow!(RequestError {
                status: None,
                message: self.redact(&format!(
                    "{url} answered with something that is not a chat completion ({e}): {}",
                    clip(&text)
                )),
            })
        })
    }

    /// `GET {base_url}/{path}` as JSON (e.g. `models`).
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let url = self.url(path);
        let text = self.with_retries(&url, || self.get_once(&url))?;
        serde_json::from_str(&text)
            .with_context(|| self.redact(&format!("{url} did not answer JSON")))
    }

    fn with_retries(
        &self,
        url: &str,
        mut attempt: impl FnMut() -> Result<String, Failure>,
    ) -> Result<String> {
        let mut backoff = self.config.initial_backoff;
        let mut tries = 0;
        loop {
            match attempt() {
                Ok(text) => return Ok(text),
                Err(f) if f.retry && tries < self.config.max_retries => {
                    let wait = match f.retry_after {
                        Some(secs) => Duration::from_secs(secs).min(self.config.max_backoff),
                        None => backoff,
                    };
                    thread::sleep(wait);
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    tries += 1;
                }
                Err(f) => {
                    let attempts = tries + 1;
                    let url = self.redact(url);
                    return Err(anyhow!(f.error)
                        .context(format!("{url} failed after {attempts} attempt(s)")));
                }
            }
        }
    }

    fn post_once(&self, url: &str, body: &str) -> Result<String, Failure> {
        let mut request = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        read(request.send(body), &self.redactor)
    }

    fn get_once(&self, url: &str) -> Result<String, Failure> {
        let mut request = self.agent.get(url);
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        read(request.call(), &self.redactor)
    }
}

fn read(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    redactor: &Redactor,
) -> Result<String, Failure> {
    let failure = |status, message: String, retry, retry_after| Failure {
        error: RequestError {
            status,
            message: redactor.clean(&message),
        },
        retry,
        retry_after,
    };
    let response = result.map_err(|e| {
        let retry = matches!(
            e,
            ureq::Error::Timeout(_)
                | ureq::Error::Io(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
        );
        failure(None, e.to_string(), retry, None)
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let text = response.into_body().read_to_string().map_err(|e| {
        failure(
            Some(status),
            format!("cannot read the response body: {e}"),
            true,
            None,
        )
    })?;
    if (200..300).contains(&status) {
        return Ok(text);
    }
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| clip(&text));
    let hint = if status == 401 {
        " (is the API key set?)"
    } else {
        ""
    };
    Err(failure(
        Some(status),
        format!("HTTP {status}: {}{hint}", clip(&message)),
        status == 429 || status >= 500,
        retry_after,
    ))
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    let s = s.trim().replace('\n', " ");
    if s.chars().count() <= MAX {
        s
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// Reads an API key from the environment variable named `var`; `None` when
/// it is unset or empty (fine for local servers).
pub fn api_key_from_env(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => bail!("environment variable {var} is not UTF-8"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_by_hand() {
        let r = Redactor::new(["sk-0123456789abcdefghij"]);
        assert_eq!(
            r.clean("key sk-0123456789abcdefghij, again Bearer sk-0123456789abcdefghij."),
            "key [redacted], again Bearer [redacted]."
        );
        // A piece of 12 characters or more is the key too; shorter ones
        // (and other text) are not.
        assert_eq!(r.clean("sk-012345678 is cut"), "[redacted] is cut");
        assert_eq!(r.clean("sk-01234567 stays"), "sk-01234567 stays");
        assert_eq!(
            r.clean("456789abcdefghij…"),
            "[redacted]…",
            "a suffix of the key"
        );
        assert_eq!(
            r.clean("see https://bob:pw@host:8000/v1/chat and http://host/x"),
            "see https://[redacted]@host:8000/v1/chat and http://host/x"
        );
        assert_eq!(Redactor::default().clean("nothing"), "nothing");
        // Non-ASCII text around a key keeps its characters.
        assert_eq!(r.clean("é sk-0123456789abcdefghij ü"), "é [redacted] ü");
    }
}
