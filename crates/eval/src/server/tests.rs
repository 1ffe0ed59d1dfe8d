//! Real round trips over HTTP on 127.0.0.1 (ephemeral ports).

use super::*;
use crate::client::{ChatClient, ClientConfig};
use crate::judge::{judge_pairs, HttpJudge, HttpJudgeConfig, JudgePair, JudgeTask, WinRate};
use crate::protocol::FinishReason;
use std::sync::atomic::AtomicUsize;

/// Echoes the last message, cut to `max_tokens` whitespace tokens.
struct Echo;

impl ChatBackend for Echo {
    fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let last = &req.messages.last().expect("validated").content;
        let words: Vec<&str> = last.split_whitespace().collect();
        let limit = req.max_tokens.map(|m| m as usize).unwrap_or(usize::MAX);
        let kept = &words[..words.len().min(limit)];
        let prompt_tokens: usize = req
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count())
            .sum();
        Ok(ChatCompletion {
            content: kept.join(" "),
            finish_reason: if kept.len() < words.len() {
                FinishReason::Length
            } else {
                FinishReason::Stop
            },
            prompt_tokens: prompt_tokens as u32,
            completion_tokens: kept.len() as u32,
        })
    }
}

/// A judge model: prefers the response whose text contains "good", answering
/// in the JSON format of the dialogue template.
struct KeywordJudge;

impl ChatBackend for KeywordJudge {
    fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let text = &req.messages.last().expect("validated").content;
        let a = text
            .split("Response A:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\nResponse B:").next())
            .unwrap_or("");
        let choice = if a.contains("good") { "A" } else { "B" };
        Ok(ChatCompletion {
            content: format!(
                "```json\n{{\"comparison\": \"Response {choice} is better.\", \"choice\": \"{choice}\"}}\n```"
            ),
            finish_reason: FinishReason::Stop,
            prompt_tokens: 1,
            completion_tokens: 1,
        })
    }
}

/// Fails with an error until it has been called `fail_first` times.
struct Flaky {
    calls: AtomicUsize,
    fail_first: usize,
}

impl ChatBackend for Flaky {
    fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.fail_first {
            bail!("simulated failure {call}");
        }
        Echo.complete(req)
    }
}

fn client(base_url: String, retries: u32) -> ChatClient {
    ChatClient::new(ClientConfig {
        base_url,
        max_retries: retries,
        initial_backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

fn chat(model: &str, content: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_string(),
        messages: vec![ChatMessage::system("sys"), ChatMessage::user(content)],
        ..ChatRequest::default()
    }
}

/// Status and parsed body of a raw request, bypassing the client's retries.
fn raw(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        (_, Some(b)) => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(b),
        (_, None) => agent.post(url).send_empty(),
    }
    .unwrap();
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[test]
fn echo_round_trip_with_usage_and_finish_reason() {
    let server = serve("127.0.0.1:0", Arc::new(Echo), "echo").unwrap();
    assert!(server.addr().ip().is_loopback());
    assert_ne!(server.addr().port(), 0);
    let c = client(server.base_url(), 0);
    let response = c.chat(&chat("echo", "one two three")).unwrap();
    assert_eq!(response.object, "chat.completion");
    assert_eq!(response.model, "echo");
    assert_eq!(response.content(), Some("one two three"));
    assert_eq!(response.choices[0].message.role, "assistant");
    assert_eq!(response.choices[0].finish_reason, Some(FinishReason::Stop));
    let usage = response.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (4, 3, 7)
    );

    let mut capped = chat("echo", "one two three");
    capped.max_tokens = Some(2);
    let response = c.chat(&capped).unwrap();
    assert_eq!(response.content(), Some("one two"));
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::Length)
    );

    let models = c.get_json("models").unwrap();
    assert_eq!(models["data"][0]["id"], "echo");
    let (status, health) = raw("GET", &format!("http://{}/health", server.addr()), None);
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    server.shutdown();
}

#[test]
fn http_judge_round_trip_maps_orders_back() {
    let server = serve("127.0.0.1:0", Arc::new(KeywordJudge), "judge-model").unwrap();
    let judge = HttpJudge::new(HttpJudgeConfig {
        base_url: server.base_url(),
        model: "judge-model".into(),
        api_key_env: "MARLHF_TEST_UNSET_KEY_VAR".into(),
        max_retries: 0,
        ..HttpJudgeConfig::default()
    })
    .unwrap();
    let pairs: Vec<JudgePair> = (0..12)
        .map(|i| JudgePair {
            prompt_id: i,
            task: JudgeTask::Dialogue,
            prompt: "\n\nHuman: help?\n\nAssistant:".into(),
            // X wins on even prompts, loses on odd ones.
            response_x: if i % 2 == 0 {
                "good answer"
            } else {
                "poor answer"
            }
            .into(),
            response_y: if i % 2 == 0 {
                "poor answer"
            } else {
                "good answer"
            }
            .into(),
        })
        .collect();
    let (judgements, rate) = judge_pairs(&judge, &pairs, 42).unwrap();
    assert_eq!(
        rate,
        WinRate {
            win: 6,
            tie: 0,
            lose: 6,
            unparseable: 0,
            n: 12,
            error: 0,
        }
    );
    for j in &judgements {
        let expected = if j.prompt_id % 2 == 0 {
            crate::judge::Verdict::Win
        } else {
            crate::judge::Verdict::Lose
        };
        assert_eq!(j.verdict, expected, "{j:?}");
        assert!(j.raw.starts_with("```json"));
    }
    assert!(judgements.iter().any(|j| j.x_shown_first));
    assert!(judgements.iter().any(|j| !j.x_shown_first));
}

#[test]
fn errors_have_openai_shape_and_status() {
    let server = serve(
        "127.0.0.1:0",
        Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_first: usize::MAX,
        }),
        "m",
    )
    .unwrap();
    let base = format!("http://{}", server.addr());
    let chat_url = format!("{base}/v1/chat/completions");

    let (status, body) = raw("POST", &chat_url, Some("{not json"));
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid request body"));

    let (status, body) = raw("POST", &chat_url, Some(r#"{"model": "m", "messages": []}"#));
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "messages");

    let two = r#"{"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}"#;
    let (status, body) = raw("POST", &chat_url, Some(two));
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "n");

    let role = r#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#;
    let (status, body) = raw("POST", &chat_url, Some(role));
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages[0].role"));

    let hot =
        r#"{"model": "m", "temperature": 3.5, "messages": [{"role": "user", "content": "x"}]}"#;
    assert_eq!(raw("POST", &chat_url, Some(hot)).0, 400);

    let other = r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}"#;
    let (status, body) = raw("POST", &chat_url, Some(other));
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");

    let (status, body) = raw("GET", &format!("{base}/v1/engines"), None);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_url");

    let (status, _) = raw("GET", &chat_url, None);
    assert_eq!(status, 405);

    let ok = r#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#;
    let (status, body) = raw("POST", &chat_url, Some(ok));
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("simulated failure"));
}

#[test]
fn client_retries_server_errors_but_not_bad_requests() {
    let backend = Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first: 2,
    });
    let server = serve("127.0.0.1:0", backend.clone(), "m").unwrap();
    let c = client(server.base_url(), 3);
    let response = c.chat(&chat("m", "back again")).unwrap();
    assert_eq!(response.content(), Some("back again"));
    assert_eq!(backend.calls.load(Ordering::SeqCst), 3);

    // A 4xx is the caller's mistake: one attempt, the server's message.
    let err = c.chat(&chat("other-model", "x")).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("1 attempt(s)"), "{text}");
    assert!(text.contains("HTTP 404"), "{text}");
    assert!(text.contains("does not exist"), "{text}");

    // Retries run out.
    let always = Arc::new(Flaky {
        calls: AtomicUsize::new(0),
        fail_first: usize::MAX,
    });
    let server2 = serve("127.0.0.1:0", always.clone(), "m").unwrap();
    let err = client(server2.base_url(), 2)
        .chat(&chat("m", "x"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("3 attempt(s)"), "{err:#}");
    assert_eq!(always.calls.load(Ordering::SeqCst), 3);
}

#[test]
fn shutdown_closes_the_port_and_only_loopback_is_served() {
    let server = serve("127.0.0.1:0", Arc::new(Echo), "echo").unwrap();
    let base = server.base_url();
    client(base.clone(), 0).get_json("models").unwrap();
    server.shutdown();
    let err = client(base, 1).get_json("models").unwrap_err();
    assert!(format!("{err:#}").contains("2 attempt(s)"), "{err:#}");

    let err = serve("0.0.0.0:0", Arc::new(Echo), "echo").err().unwrap();
    assert!(
        err.to_string().contains("refusing to serve on 0.0.0.0"),
        "{err}"
    );
}

/// An OpenAI-compatible server that misbehaves on purpose, one way per
/// request path segment: `/echo/v1` answers with a completion quoting the
/// request's Authorization header (and without `created`), `/deny/v1`
/// refuses it with 401 quoting the header, `/html/v1` answers 200 with a
/// page that is no completion, `/down/v1` answers 503 quoting the header.
fn hostile_server() -> (String, std::thread::JoinHandle<()>, Arc<Server>) {
    let server = Arc::new(Server::http("127.0.0.1:0").unwrap());
    let addr = server.server_addr().to_ip().unwrap();
    let s = server.clone();
    let worker = std::thread::spawn(move || {
        for mut request in s.incoming_requests() {
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let auth = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.as_str().to_string())
                .unwrap_or_default();
            let quoted =
                serde_json::to_string(&format!("Incorrect API key provided: {auth}")).unwrap();
            let (status, text) = match request.url().split('/').nth(1).unwrap_or("") {
                "echo" => (
                    200,
                    serde_json::json!({
                        "choices": [{"message": {"role": "assistant", "content": format!(
                            "{{\"comparison\": \"sent with {auth}\", \"choice\": \"A\"}}"
                        )}}]
                    })
                    .to_string(),
                ),
                "deny" => (401, format!("{{\"error\": {{\"message\": {quoted}}}}}")),
                "down" => (503, format!("upstream says {auth}")),
                _ => (200, format!("<html>{auth}</html>")),
            };
            let _ = request.respond(Response::from_string(text).with_status_code(status));
        }
    });
    (format!("http://{addr}"), worker, server)
}

/// Issue 21, items 5 and 6: a server that quotes the API key (in an answer,
/// a 401, a 503, a page) gets it into no answer and no message; a reply
/// without `created` is a completion; a reply that is none fails only its
/// own pair, a refused key the whole run.
#[test]
fn an_echoed_key_appears_nowhere_and_failures_are_classified() {
    let key = "sk-proj-marlhf-test-0123456789abcdefghijklmnopqrstuvwxyz";
    let var = "MARLHF_TEST_ECHOED_KEY";
    std::env::set_var(var, key);
    let (base, worker, server) = hostile_server();
    let judge_at = |route: &str| {
        HttpJudge::new(HttpJudgeConfig {
            base_url: format!("{base}/{route}/v1"),
            model: "m".into(),
            api_key_env: var.into(),
            max_retries: 1,
            initial_backoff: Duration::from_millis(1),
            ..HttpJudgeConfig::default()
        })
        .unwrap()
    };
    let req = crate::judge::JudgeRequest {
        task: JudgeTask::Dialogue,
        prompt: "\n\nHuman: hi\n\nAssistant:".into(),
        response_a: "hello".into(),
        response_b: "go away".into(),
    };
    let leaks = |text: &str| {
        text.contains(key) || text.contains(&key[..crate::client::Redactor::MIN_PIECE])
    };
    use crate::judge::Judge;
    let echo = judge_at("echo");
    let answer = echo.judge(&req).unwrap();
    assert_eq!(answer.choice, Some(crate::judge::Choice::A));
    assert!(!leaks(&answer.raw), "{}", answer.raw);
    assert!(answer.raw.contains("Bearer [redacted]"), "{}", answer.raw);
    for (route, per_pair) in [("deny", false), ("down", true), ("html", true)] {
        let judge = judge_at(route);
        let err = judge.judge(&req).unwrap_err();
        let text = format!("{err:#} {err:?}");
        assert!(!leaks(&text), "{route}: {text}");
        assert!(text.contains("[redacted]"), "{route}: {text}");
        assert_eq!(
            judge.fails_only_this_pair(&err),
            per_pair,
            "{route}: {text}"
        );
    }
    // The configuration itself never shows the key either.
    let config = format!(
        "{:?}",
        ClientConfig {
            api_key: Some(key.into()),
            base_url: "https://user:hunter2@example.com/v1".into(),
            ..ClientConfig::default()
        }
    );
    assert!(!leaks(&config) && !config.contains("hunter2"), "{config}");
    server.unblock();
    worker.join().unwrap();
}
