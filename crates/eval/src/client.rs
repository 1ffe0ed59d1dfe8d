//! A blocking client for OpenAI-compatible chat-completions endpoints, with
//! retries and exponential backoff on rate limits, server errors, timeouts
//! and refused connections (a local server that is still starting).

use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::protocol::{ChatCompletionResponse, ChatRequest, ErrorBody};

#[derive(Debug, Clone)]
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
}

/// One attempt's failure, and whether another attempt may help.
struct Failure {
    error: anyhow::Error,
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
        Self { agent, config }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
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
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{url} answered with something that is not a chat completion: {}",
                clip(&text)
            )
        })
    }

    /// `GET {base_url}/{path}` as JSON (e.g. `models`).
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let url = self.url(path);
        let text = self.with_retries(&url, || self.get_once(&url))?;
        serde_json::from_str(&text).with_context(|| format!("{url} did not answer JSON"))
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
                    return Err(f
                        .error
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
        read(request.send(body))
    }

    fn get_once(&self, url: &str) -> Result<String, Failure> {
        let mut request = self.agent.get(url);
        if let Some(key) = &self.config.api_key {
            request = request.header("Authorization", &format!("Bearer {key}"));
        }
        read(request.call())
    }
}

fn read(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<String, Failure> {
    let response = result.map_err(|e| {
        let retry = matches!(
            e,
            ureq::Error::Timeout(_)
                | ureq::Error::Io(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
        );
        Failure {
            error: anyhow!(e),
            retry,
            retry_after: None,
        }
    })?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let text = response.into_body().read_to_string().map_err(|e| Failure {
        error: anyhow!(e).context("cannot read the response body"),
        retry: true,
        retry_after: None,
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
    Err(Failure {
        error: anyhow!("HTTP {status}: {message}{hint}"),
        retry: status == 429 || status >= 500,
        retry_after,
    })
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
