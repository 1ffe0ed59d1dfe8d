//! The real `marlhf-serve` binary on the real stories260K model: answers
//! over HTTP are exactly what the model generates in-process, and the HTTP
//! judge (through the eval stage's judge step) talks to it, counting the
//! answers it cannot read instead of dropping them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use candle_core::Device;
use marlhf_data::{read_judgements, write_responses, ResponseRow};
use marlhf_eval::client::{ChatClient, ClientConfig};
use marlhf_eval::judge::{parse_choice, HttpJudgeConfig, JudgeTask};
use marlhf_eval::protocol::{ChatMessage, ChatRequest, FinishReason};
use marlhf_eval::server::ChatBackend;
use marlhf_stages::evaluate::chat_backend::ModelBackend;
use marlhf_stages::evaluate::judging::{judge_responses, JudgeConfig, JudgeKind};
use marlhf_stages::progress::Silent;
use marlhf_testkit::eval::write_stories;
use marlhf_testkit::TempDir;

const EXE: &str = env!("CARGO_BIN_EXE_marlhf-serve");
const MODEL: &str = "stories";
const MAX_NEW: usize = 16;

/// The server process, killed when the test ends however it ends.
struct Server {
    child: Child,
    base_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(checkpoint: &Path) -> Server {
    let mut child = Command::new(EXE)
        .args([
            "--checkpoint",
            &checkpoint.display().to_string(),
            "--addr",
            "127.0.0.1:0",
            "--model-name",
            MODEL,
            "--max-new-tokens",
            &MAX_NEW.to_string(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start marlhf-serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let base_url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if let Some(at) = line.find("http://") {
                    break line[at..].trim().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                panic!("marlhf-serve printed no URL:\n{seen}");
            }
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base_url }
}

fn client(base_url: &str) -> ChatClient {
    ChatClient::new(ClientConfig {
        base_url: base_url.to_string(),
        timeout: Duration::from_secs(60),
        max_retries: 2,
        initial_backoff: Duration::from_millis(100),
        ..ClientConfig::default()
    })
}

fn request(text: &str, temperature: f32, seed: Option<u64>, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: MODEL.into(),
        messages: vec![ChatMessage::user(text)],
        max_tokens: Some(max_tokens),
        temperature: Some(temperature),
        seed,
        ..ChatRequest::default()
    }
}

#[test]
#[ignore = "needs ../shared"]
fn answers_over_http_match_the_model_and_the_http_judge_counts_every_pair() {
    let tmp = TempDir::new("serve");
    let ck = tmp.path().join("stories");
    write_stories(&ck, None).unwrap();
    let server = start(&ck);
    assert!(server.base_url.starts_with("http://127.0.0.1:"));
    assert!(server.base_url.ends_with("/v1"));
    let http = client(&server.base_url);
    let local = ModelBackend::load(
        &ck,
        "hh-rlhf",
        &Device::Cpu,
        candle_core::DType::F32,
        512,
        MAX_NEW,
        1234,
    )
    .unwrap();

    // Greedy: the server's answer is the in-process answer, token budget
    // and all.
    let req = request("Once upon a time", 0.0, None, 10);
    let over_http = http.chat(&req).unwrap();
    let here = local.complete(&req).unwrap();
    assert_eq!(over_http.content(), Some(here.content.as_str()));
    assert!(!here.content.is_empty());
    let usage = over_http.usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, here.completion_tokens);
    assert_eq!(usage.prompt_tokens, here.prompt_tokens);
    assert!(usage.completion_tokens <= 10);
    let finish = over_http.choices[0].finish_reason;
    assert_eq!(
        finish,
        Some(if usage.completion_tokens < 10 {
            FinishReason::Stop
        } else {
            FinishReason::Length
        })
    );
    // A request beyond the server's budget is held to it.
    let long = http
        .chat(&request("Tom had a dog", 0.0, None, 1000))
        .unwrap();
    assert!(long.usage.unwrap().completion_tokens as usize <= MAX_NEW);

    // Seeded sampling is reproducible; another seed samples differently.
    let a = http
        .chat(&request("Lily saw a bird", 1.0, Some(5), 16))
        .unwrap();
    let b = http
        .chat(&request("Lily saw a bird", 1.0, Some(5), 16))
        .unwrap();
    assert_eq!(a.content(), b.content());
    let others: Vec<String> = (6..10)
        .map(|s| {
            http.chat(&request("Lily saw a bird", 1.0, Some(s), 16))
                .unwrap()
                .content()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(others.iter().any(|o| Some(o.as_str()) != a.content()));

    // The eval stage's HTTP judge against this server.
    let responses = tmp.path().join("responses.parquet");
    let texts = [
        ("The dog ran to the park.", "Tim is happy."),
        ("Sue ate a red apple.", "The cat slept all day long."),
        ("They played with the ball.", "Mom baked a big cake."),
    ];
    let mut rows = Vec::new();
    for (i, (x, y)) in texts.iter().enumerate() {
        for (policy, text) in [("ma-ppo", x), ("ppo", y)] {
            rows.push(ResponseRow {
                id: rows.len() as u64,
                prompt_id: 10 + i as u64,
                policy: policy.into(),
                sample: 0,
                prompt: "\n\nHuman: Tell me a story.\n\nAssistant:".into(),
                response: text.to_string(),
                response_tokens: vec![1],
                score: 0.0,
                finished: true,
                gold: None,
            });
        }
    }
    write_responses(&responses, &rows).unwrap();
    let out = tmp.path().join("judgements.parquet");
    let report = judge_responses(
        &JudgeConfig {
            responses: vec![responses.clone()],
            pairs: vec![("ma-ppo".into(), "ppo".into())],
            task: "hh-rlhf".into(),
            sample: 50,
            seed: 1234,
            judge: JudgeKind::Http(HttpJudgeConfig {
                base_url: server.base_url.clone(),
                model: MODEL.into(),
                api_key_env: "MARLHF_TEST_NO_SUCH_KEY".into(),
                timeout: Duration::from_secs(60),
                max_retries: 1,
                initial_backoff: Duration::from_millis(100),
                max_tokens: 512,
            }),
            out: out.clone(),
        },
        &Silent,
    )
    .unwrap();
    assert_eq!(report.common_prompts, 3);
    let rate = report.rows[0].rate;
    assert_eq!(rate.n, 3, "every pair is counted");
    assert_eq!(rate.win + rate.tie + rate.lose + rate.unparseable, 3);
    let js = read_judgements(&out).unwrap();
    assert_eq!(js.len(), 3);
    for j in &js {
        assert_eq!(j.judge, MODEL);
        // The verdict is unparseable exactly when the answer cannot be read.
        let parsed = parse_choice(JudgeTask::Dialogue, &j.raw);
        assert_eq!(
            j.verdict.as_str() == "unparseable",
            parsed.is_none(),
            "{j:?}"
        );
        assert_eq!(j.choice.is_none(), parsed.is_none());
    }
    // A 260K-parameter story model does not answer in the judge's JSON.
    assert_eq!(rate.unparseable, 3, "{js:?}");
    assert!(js.iter().any(|j| !j.raw.is_empty()));

    // A wrong model name is the server's 404, reported as one error.
    let mut wrong = request("Hi", 0.0, None, 4);
    wrong.model = "gpt-4o".into();
    let err = format!("{:#}", http.chat(&wrong).unwrap_err());
    assert!(err.contains("does not exist"), "{err}");
    // Issue 13, item 9: messages the prompt format cannot take are the
    // client's mistake (400), not a failure of the server (500).
    let mut system_only = request("Hi", 0.0, None, 4);
    system_only.messages = vec![ChatMessage::system("You are terse.")];
    let err = format!("{:#}", http.chat(&system_only).unwrap_err());
    assert!(
        err.contains("HTTP 400") && err.contains("must be from the user"),
        "{err}"
    );
}

#[test]
fn a_missing_checkpoint_is_one_error_line() {
    let out = Command::new(EXE)
        .args(["--checkpoint", "/nonexistent/ck", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "error: /nonexistent/ck: checkpoint directory not found"
    );
    let out = Command::new(EXE)
        .args(["--checkpoint", "/nonexistent/ck", "--addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
