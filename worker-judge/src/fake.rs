//! A local OpenAI-compatible judge server for tests, benchmarks and the demo
//! (`conftag-judge serve-fake`). It answers `/v1/chat/completions` with strict-schema verdicts
//! decided by a deterministic rule, with configurable latency and a requests-per-window rate
//! limit (429 + `retry-after` + `x-ratelimit-*` headers, like the real API), and on request
//! misbehaves: 5xx bursts, hangs, garbage bodies, refusals, truncation, schema violations,
//! quota and auth errors (`POST /admin/faults`). `GET /admin/stats` counts what it answered.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::prompt;
use crate::rules;

/// Ways the fake server can misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    RateLimit,
    ServerError,
    Hang,
    Garbage,
    Refusal,
    Length,
    BadSchema,
    Quota,
    Unauthorized,
}

#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub latency: Duration,
    /// Requests allowed per `rate_window`; `None` = unlimited.
    pub rate_limit: Option<u32>,
    pub rate_window: Duration,
    /// When set, requests must carry `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// How long a Batch API batch takes to complete.
    pub batch_delay: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            rate_limit: None,
            rate_window: Duration::from_secs(60),
            api_key: None,
            batch_delay: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FakeStats {
    pub requests: u64,
    pub ok: u64,
    pub rate_limited: u64,
    pub faults: u64,
    pub batches_created: u64,
}

#[derive(Debug, Deserialize)]
struct FaultRequest {
    fault: Fault,
    /// How many requests get the fault (0 = until cleared).
    #[serde(default)]
    count: u64,
}

#[derive(Debug)]
struct Inner {
    config: FakeConfig,
    fault: Option<(Fault, u64)>,
    recent: VecDeque<Instant>,
    stats: FakeStats,
    files: HashMap<String, String>,
    batches: HashMap<String, FakeBatch>,
}

#[derive(Debug)]
struct FakeBatch {
    input_file: String,
    created: Instant,
    output_file: Option<String>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake server.
#[derive(Debug)]
pub struct FakeServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl FakeServer {
    /// Bind (port 0 for any free port) and serve in the background.
    pub async fn start(addr: SocketAddr, config: FakeConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = router(config);
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Ok(Self { addr, stop })
    }

    /// `http://127.0.0.1:PORT/v1`, what `OPENAI_BASE_URL` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn router(config: FakeConfig) -> Router {
    let state: Shared = Arc::new(Mutex::new(Inner {
        config,
        fault: None,
        recent: VecDeque::new(),
        stats: FakeStats::default(),
        files: HashMap::new(),
        batches: HashMap::new(),
    }));
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/v1/files", post(upload_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/batches", post(create_batch))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/admin/faults", post(set_fault).delete(clear_fault))
        .route("/admin/stats", get(stats))
        .with_state(state)
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "gpt-4o-2024-08-06", "object": "model"}]}))
}

async fn set_fault(State(s): State<Shared>, Json(req): Json<FaultRequest>) -> StatusCode {
    s.lock().await.fault = Some((req.fault, req.count));
    StatusCode::NO_CONTENT
}

async fn clear_fault(State(s): State<Shared>) -> StatusCode {
    s.lock().await.fault = None;
    StatusCode::NO_CONTENT
}

async fn stats(State(s): State<Shared>) -> Json<FakeStats> {
    Json(s.lock().await.stats.clone())
}

fn error_body(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": code, "param": null}})),
    )
        .into_response()
}

/// A 429 like the real API's, with `retry-after-ms` and `retry-after` (whole seconds, rounded up).
fn rate_limited(retry: Duration) -> Response {
    let mut r = error_body(
        StatusCode::TOO_MANY_REQUESTS,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests.",
    );
    let ms = retry.as_millis().max(1) as u64;
    r.headers_mut()
        .insert("retry-after-ms", HeaderValue::from(ms));
    r.headers_mut()
        .insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
    r
}

fn fmt_reset(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

async fn chat(State(s): State<Shared>, headers: HeaderMap, body: Option<Json<Value>>) -> Response {
    let (latency, fault, limit_headers, limited) = {
        let mut g = s.lock().await;
        g.stats.requests += 1;
        if let Some(key) = &g.config.api_key {
            let ok = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == format!("Bearer {key}"));
            if !ok {
                g.stats.faults += 1;
                return error_body(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    "invalid_api_key",
                    "Incorrect API key provided.",
                );
            }
        }
        let fault = match g.fault {
            Some((f, 0)) => Some(f),
            Some((f, n)) => {
                g.fault = if n > 1 { Some((f, n - 1)) } else { None };
                Some(f)
            }
            None => None,
        };
        // Sliding-window rate limit.
        let now = Instant::now();
        let window = g.config.rate_window;
        while g
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            g.recent.pop_front();
        }
        let mut limit_headers = Vec::new();
        let mut limited = None;
        if let Some(limit) = g.config.rate_limit {
            let used = g.recent.len() as u32;
            let reset = g
                .recent
                .front()
                .map(|t| window.saturating_sub(now.duration_since(*t)))
                .unwrap_or(window);
            if used >= limit {
                limited = Some(reset);
            } else {
                g.recent.push_back(now);
            }
            let remaining = limit.saturating_sub(used + u32::from(limited.is_none()));
            limit_headers.push(("x-ratelimit-limit-requests", limit.to_string()));
            limit_headers.push(("x-ratelimit-remaining-requests", remaining.to_string()));
            limit_headers.push(("x-ratelimit-reset-requests", fmt_reset(reset)));
        }
        if limited.is_some() {
            g.stats.rate_limited += 1;
        } else if fault.is_some() {
            g.stats.faults += 1;
        }
        (g.config.latency, fault, limit_headers, limited)
    };
    let with_headers = |mut r: Response| {
        for (k, v) in &limit_headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                r.headers_mut().insert(*k, v);
            }
        }
        r
    };
    if let Some(reset) = limited {
        return with_headers(rate_limited(reset));
    }
    tokio::time::sleep(latency).await;
    let fault_response = match fault {
        Some(Fault::RateLimit) => Some(rate_limited(Duration::from_millis(200))),
        Some(Fault::ServerError) => Some(error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "The server had an error while processing your request.",
        )),
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        Some(Fault::Garbage) => {
            Some((StatusCode::OK, "<html>upstream gateway oops").into_response())
        }
        Some(Fault::Quota) => Some(error_body(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota.",
        )),
        Some(Fault::Unauthorized) => Some(error_body(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
        )),
        _ => None,
    };
    if let Some(r) = fault_response {
        return with_headers(r);
    }
    let Some(Json(body)) = body else {
        return with_headers(error_body(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            "We could not parse the JSON body of your request.",
        ));
    };
    let model = body["model"]
        .as_str()
        .unwrap_or("gpt-4o-2024-08-06")
        .to_owned();
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let verdict = decide(&user);
    let content = match fault {
        Some(Fault::BadSchema) => json!({"answer": "maybe"}).to_string(),
        _ => verdict.to_string(),
    };
    let (refusal, finish, content) = match fault {
        Some(Fault::Refusal) => (
            json!("I'm sorry, I can't help with that."),
            "stop",
            Value::Null,
        ),
        Some(Fault::Length) => (Value::Null, "length", json!(content[..content.len() / 2])),
        _ => (Value::Null, "stop", json!(content)),
    };
    s.lock().await.stats.ok += 1;
    with_headers(Json(completion_body(&model, &user, content, refusal, finish)).into_response())
}

fn completion_body(model: &str, user: &str, content: Value, refusal: Value, finish: &str) -> Value {
    let prompt_tokens = user.split_whitespace().count() as u64;
    let completion_tokens = content.as_str().map_or(0, |c| c.split_whitespace().count()) as u64;
    json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "finish_reason": finish,
            "logprobs": null
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
}

async fn upload_file(State(s): State<Shared>, mut form: Multipart) -> Response {
    let mut content = None;
    let mut purpose = String::new();
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("purpose") => purpose = field.text().await.unwrap_or_default(),
            Some("file") => content = field.text().await.ok(),
            _ => {}
        }
    }
    let Some(content) = content else {
        return error_body(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "missing_file",
            "No file was uploaded.",
        );
    };
    let id = format!("file-{}", uuid::Uuid::new_v4().simple());
    let bytes = content.len();
    s.lock().await.files.insert(id.clone(), content);
    Json(json!({"id": id, "object": "file", "purpose": purpose, "bytes": bytes})).into_response()
}

async fn file_content(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    match s.lock().await.files.get(&id) {
        Some(text) => text.clone().into_response(),
        None => error_body(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            "No such file.",
        ),
    }
}

async fn create_batch(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut g = s.lock().await;
    let input = body["input_file_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !g.files.contains_key(&input) {
        return error_body(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_file",
            "No such input file.",
        );
    }
    let id = format!("batch_{}", uuid::Uuid::new_v4().simple());
    g.stats.batches_created += 1;
    g.batches.insert(
        id.clone(),
        FakeBatch {
            input_file: input,
            created: Instant::now(),
            output_file: None,
        },
    );
    Json(json!({"id": id, "object": "batch", "status": "validating", "completion_window": "24h"}))
        .into_response()
}

async fn get_batch(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let mut g = s.lock().await;
    let delay = g.config.batch_delay;
    let (input_file, created, output) = match g.batches.get(&id) {
        Some(b) => (b.input_file.clone(), b.created, b.output_file.clone()),
        None => {
            return error_body(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                "No such batch.",
            )
        }
    };
    if created.elapsed() < delay {
        return Json(json!({"id": id, "object": "batch", "status": "in_progress"})).into_response();
    }
    let output = match output {
        Some(o) => o,
        None => {
            let input = g.files.get(&input_file).cloned().unwrap_or_default();
            let mut lines = String::new();
            for line in input.lines().filter(|l| !l.trim().is_empty()) {
                let req: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                let user = req["body"]["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or("")
                    .to_owned();
                let model = req["body"]["model"].as_str().unwrap_or("gpt-4o-2024-08-06");
                let body = completion_body(
                    model,
                    &user,
                    json!(decide(&user).to_string()),
                    Value::Null,
                    "stop",
                );
                lines.push_str(
                    &json!({
                        "id": format!("batch_req_{}", uuid::Uuid::new_v4().simple()),
                        "custom_id": req["custom_id"],
                        "response": {"status_code": 200, "request_id": "req", "body": body},
                        "error": null
                    })
                    .to_string(),
                );
                lines.push('\n');
            }
            let out_id = format!("file-{}", uuid::Uuid::new_v4().simple());
            g.files.insert(out_id.clone(), lines);
            if let Some(b) = g.batches.get_mut(&id) {
                b.output_file = Some(out_id.clone());
            }
            out_id
        }
    };
    Json(json!({"id": id, "object": "batch", "status": "completed", "output_file_id": output}))
        .into_response()
}

/// The deterministic judge: BoolQ by yes/no, MATH by boxed answers, otherwise "the response
/// contains the correct answer's text".
pub fn decide(user_prompt: &str) -> Value {
    let Some((_, response, correct)) = prompt::parse_rendered(user_prompt) else {
        return json!({
            "extracted_final_answer": "None",
            "reasoning": "The message is not a judge prompt.",
            "correct": "no",
            "strict": true
        });
    };
    let lower = response.to_lowercase();
    let (extracted, ok) = if correct == "True" || correct == "False" {
        let first = lower
            .split(|c: char| !c.is_alphanumeric())
            .find(|w| !w.is_empty())
            .unwrap_or("")
            .to_owned();
        let said_yes = first == "yes" || first == "true";
        let said_no = first == "no" || first == "false";
        let ok = (said_yes && correct == "True") || (said_no && correct == "False");
        (
            if said_yes || said_no {
                first
            } else {
                "None".into()
            },
            ok,
        )
    } else if let Some(truth) = rules::last_boxed(&correct) {
        match rules::last_boxed(&response) {
            Some(said) => {
                let ok = rules::normalize_math(&said) == rules::normalize_math(&truth);
                (said, ok)
            }
            None => ("None".into(), false),
        }
    } else {
        let ok = !correct.is_empty() && lower.contains(&correct.to_lowercase());
        (
            if ok {
                correct.clone()
            } else {
                response.chars().take(40).collect()
            },
            ok,
        )
    };
    json!({
        "extracted_final_answer": extracted,
        "reasoning": format!(
            "The extracted answer {} the correct answer.",
            if ok { "matches" } else { "does not match" }
        ),
        "correct": if ok { "yes" } else { "no" },
        "strict": true
    })
}
