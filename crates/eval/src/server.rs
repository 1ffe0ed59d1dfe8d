//! OpenAI's chat-completions protocol served over HTTP on loopback, for any
//! [`ChatBackend`] (a policy checkpoint, a test double). Lets off-the-shelf
//! tools, and this crate's own judge client, talk to a local model.
//!
//! Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`.
//! Errors use OpenAI's shape `{"error": {"message", "type", "param",
//! "code"}}` with status 400 (bad request), 404 (unknown route or model),
//! 405 (wrong method) or 500 (the backend failed).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::protocol::{
    ChatChoice, ChatCompletion, ChatCompletionResponse, ChatMessage, ChatRequest, ErrorBody,
    ErrorDetail, Usage,
};

/// Generates one completion for a validated request (`n` is 1, messages
/// are non-empty with known roles).
pub trait ChatBackend: Send + Sync {
    fn complete(&self, req: &ChatRequest) -> Result<ChatCompletion>;

    /// Whether this backend can answer `req` at all (its messages fit the
    /// prompt format, say). An error here is the client's mistake: the
    /// server answers 400 with it, where a failure of `complete` is a 500.
    fn check(&self, _req: &ChatRequest) -> Result<()> {
        Ok(())
    }
}

/// Requests larger than this are refused.
const MAX_BODY_BYTES: u64 = 8 << 20;
/// How often idle workers look at the shutdown flag.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The model name announced by `/v1/models` and required in requests.
    pub model_name: String,
    /// Worker threads; each handles one request at a time.
    pub workers: usize,
}

/// A running server. Dropping it shuts it down.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, what an OpenAI client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stops accepting requests, lets in-flight ones finish, joins workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Serves until the process is killed.
    pub fn wait(mut self) {
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }

    fn stop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `backend` on `addr` (e.g. `127.0.0.1:8000`, or port 0 for any)
/// with four workers.
pub fn serve(addr: &str, backend: Arc<dyn ChatBackend>, model_name: &str) -> Result<ServerHandle> {
    serve_with(
        addr,
        backend,
        ServeOptions {
            model_name: model_name.to_string(),
            workers: 4,
        },
    )
}

/// [`serve`] with explicit options. Only loopback addresses are accepted:
/// the server has no authentication.
pub fn serve_with(
    addr: &str,
    backend: Arc<dyn ChatBackend>,
    options: ServeOptions,
) -> Result<ServerHandle> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve server address {addr:?}"))?
        .collect();
    if resolved.is_empty() {
        bail!("server address {addr:?} resolves to nothing");
    }
    if let Some(open) = resolved.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to serve on {open}: the server has no authentication, use a loopback address such as 127.0.0.1"
        );
    }
    let listener =
        TcpListener::bind(&resolved[..]).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let server = Arc::new(
        Server::from_listener(listener, None)
            .map_err(|e| anyhow!("cannot start the HTTP server on {bound}: {e}"))?,
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    let state = Arc::new(State {
        backend,
        model_name: options.model_name,
        next_id: AtomicU64::new(0),
    });
    let workers = (0..options.workers.max(1))
        .map(|_| {
            let server = Arc::clone(&server);
            let shutdown = Arc::clone(&shutdown);
            let state = Arc::clone(&state);
            thread::spawn(move || {
                while !shutdown.load(Ordering::SeqCst) {
                    match server.recv_timeout(POLL) {
                        Ok(Some(request)) => state.handle(request),
                        Ok(None) => {}
                        // Accept errors are per connection; keep serving.
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    Ok(ServerHandle {
        addr: bound,
        shutdown,
        workers,
    })
}

struct State {
    backend: Arc<dyn ChatBackend>,
    model_name: String,
    next_id: AtomicU64,
}

/// An HTTP error in OpenAI's shape.
struct ApiError {
    status: u16,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            code: None,
            param,
            message: message.into(),
        }
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            code: Some(code),
            param: None,
            message: message.into(),
        }
    }

    fn body(&self) -> String {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.map(str::to_string),
                code: self.code.map(str::to_string),
            },
        };
        serde_json::to_string(&body).expect("error body serialises")
    }
}

impl State {
    fn handle(&self, mut request: Request) {
        let path = request.url().split('?').next().unwrap_or("").to_string();
        let method = request.method().clone();
        let result = match (method, path.as_str()) {
            (Method::Post, "/v1/chat/completions") => self.chat(&mut request),
            (Method::Get, "/v1/models") => Ok(self.models()),
            (Method::Get, "/health") => Ok(json!({"status": "ok"}).to_string()),
            (_, "/v1/chat/completions" | "/v1/models" | "/health") => Err(ApiError {
                status: 405,
                kind: "invalid_request_error",
                code: Some("method_not_allowed"),
                param: None,
                message: format!("{} is not allowed on {path}", request.method()),
            }),
            _ => Err(ApiError::not_found(
                "unknown_url",
                format!("unknown route {} {path}", request.method()),
            )),
        };
        let (status, body) = match result {
            Ok(body) => (200, body),
            Err(e) => (e.status, e.body()),
        };
        let header = Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
            .expect("static header");
        let response = Response::from_string(body)
            .with_status_code(status)
            .with_header(header);
        // The client may have gone away; nothing to do about it.
        let _ = request.respond(response);
    }

    fn models(&self) -> String {
        json!({
            "object": "list",
            "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "marlhf"}]
        })
        .to_string()
    }

    fn chat(&self, request: &mut Request) -> Result<String, ApiError> {
        let mut body = Vec::new();
        request
            .as_reader()
            .take(MAX_BODY_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                ApiError::bad_request(None, format!("cannot read the request body: {e}"))
            })?;
        if body.len() as u64 > MAX_BODY_BYTES {
            return Err(ApiError::bad_request(
                None,
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            ));
        }
        let req: ChatRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(None, format!("invalid request body: {e}")))?;
        self.validate(&req)?;
        self.backend
            .check(&req)
            .map_err(|e| ApiError::bad_request(Some("messages"), format!("{e:#}")))?;
        let completion = self.backend.complete(&req).map_err(|e| ApiError {
            status: 500,
            kind: "server_error",
            code: None,
            param: None,
            message: format!("generation failed: {e:#}"),
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let response = ChatCompletionResponse {
            id: format!("chatcmpl-marlhf-{id}"),
            object: "chat.completion".to_string(),
            created,
            model: self.model_name.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage::assistant(completion.content),
                finish_reason: Some(completion.finish_reason),
            }],
            usage: Some(Usage {
                prompt_tokens: completion.prompt_tokens,
                completion_tokens: completion.completion_tokens,
                total_tokens: completion.prompt_tokens + completion.completion_tokens,
            }),
        };
        Ok(serde_json::to_string(&response).expect("response serialises"))
    }

    fn validate(&self, req: &ChatRequest) -> Result<(), ApiError> {
        if req.model != self.model_name {
            return Err(ApiError::not_found(
                "model_not_found",
                format!(
                    "the model {:?} does not exist; this server serves {:?}",
                    req.model, self.model_name
                ),
            ));
        }
        if req.messages.is_empty() {
            return Err(ApiError::bad_request(
                Some("messages"),
                "messages must not be empty",
            ));
        }
        if let Some((i, m)) = req
            .messages
            .iter()
            .enumerate()
            .find(|(_, m)| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
        {
            return Err(ApiError::bad_request(
                Some("messages"),
                format!(
                    "messages[{i}].role is {:?}; expected system, user or assistant",
                    m.role
                ),
            ));
        }
        if req.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request(Some("n"), "only n = 1 is supported"));
        }
        if req.stream == Some(true) {
            return Err(ApiError::bad_request(
                Some("stream"),
                "streaming is not supported",
            ));
        }
        if req.max_tokens == Some(0) {
            return Err(ApiError::bad_request(
                Some("max_tokens"),
                "max_tokens must be at least 1",
            ));
        }
        if let Some(t) = req.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::bad_request(
                    Some("temperature"),
                    format!("temperature {t} is outside [0, 2]"),
                ));
            }
        }
        if let Some(p) = req.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::bad_request(
                    Some("top_p"),
                    format!("top_p {p} is outside (0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
