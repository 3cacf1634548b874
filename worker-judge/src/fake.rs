//! A local OpenAI-compatible judge server for tests, benchmarks and the demo
//! (`conftag-judge serve-fake`). It answers `/v1/chat/completions` with strict-schema verdicts
//! decided by a deterministic rule, with configurable latency and a requests-per-window rate
//! limit (429 + `retry-after` + `x-ratelimit-*` headers, like the real API), and on request
//! misbehaves: 5xx bursts, hangs, garbage bodies, refusals, truncation, schema violations,
//! quota and auth errors (`POST /admin/faults`). `GET /admin/stats` counts what it answered.
//!
//! User-facing, not a test fixture: `conftag-judge serve-fake` runs the README demo and the
//! judge bench without an API key; tests use it through `testkit::fake_judge`.

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
    /// Context of the fake completion model, in whitespace-separated words: longer prompts get
    /// the 400 a vLLM server gives.
    pub max_context: usize,
    /// Model names listed at `/v1/models` besides the judge model.
    pub served_models: Vec<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            rate_limit: None,
            rate_window: Duration::from_secs(60),
            api_key: None,
            batch_delay: Duration::from_millis(200),
            max_context: 4096,
            served_models: Vec::new(),
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
    /// `/v1/completions` requests answered.
    pub completions: u64,
    /// Most `/v1/completions` requests in progress at once.
    pub max_completions_in_flight: u64,
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
    completions_in_flight: u64,
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
        completions_in_flight: 0,
    }));
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/v1/files", post(upload_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/batches", post(create_batch))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/admin/faults", post(set_fault).delete(clear_fault))
        .route("/admin/stats", get(stats))
        .with_state(state)
}

async fn models(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let (served, key) = {
        let g = s.lock().await;
        (g.config.served_models.clone(), g.config.api_key.clone())
    };
    if !authorized(key.as_deref(), &headers) {
        return unauthorized();
    }
    let data: Vec<Value> = std::iter::once("gpt-4o-2024-08-06".to_owned())
        .chain(served)
        .map(|id| json!({"id": id, "object": "model"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
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

/// Whether the request carries `Authorization: Bearer <key>` (always, when no key is set).
fn authorized(key: Option<&str>, headers: &HeaderMap) -> bool {
    key.is_none_or(|key| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {key}"))
    })
}

fn unauthorized() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided.",
    )
}

/// What the shared front half of every model endpoint decided: answer now (auth failure, rate
/// limit, injected fault) or go on with the fault that shapes the body.
enum Gate {
    Respond(Response),
    Proceed {
        fault: Option<Fault>,
        headers: Vec<(&'static str, String)>,
    },
}

fn with_headers(mut r: Response, headers: &[(&'static str, String)]) -> Response {
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

/// Authentication, the sliding-window rate limit, latency and injected faults, shared by the
/// chat (judge) and completions (inference engine) endpoints.
async fn gate(s: &Shared, headers: &HeaderMap) -> Gate {
    let (latency, fault, limit_headers, limited) = {
        let mut g = s.lock().await;
        g.stats.requests += 1;
        if !authorized(g.config.api_key.as_deref(), headers) {
            g.stats.faults += 1;
            return Gate::Respond(unauthorized());
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
    if let Some(reset) = limited {
        return Gate::Respond(with_headers(rate_limited(reset), &limit_headers));
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
        Some(Fault::Unauthorized) => Some(unauthorized()),
        _ => None,
    };
    match fault_response {
        Some(r) => Gate::Respond(with_headers(r, &limit_headers)),
        None => Gate::Proceed {
            fault,
            headers: limit_headers,
        },
    }
}

async fn chat(State(s): State<Shared>, headers: HeaderMap, body: Option<Json<Value>>) -> Response {
    let (fault, limit_headers) = match gate(&s, &headers).await {
        Gate::Respond(r) => return r,
        Gate::Proceed { fault, headers } => (fault, headers),
    };
    let with_headers = |r: Response| with_headers(r, &limit_headers);
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

/// A completions server standing in for vLLM & co. behind `conftag-infer --engine openai`:
/// a deterministic, dataset-shaped answer per prompt, cut at `max_tokens` words (finish reason
/// `length`), and, like vLLM, a 400 naming the context length when prompt + `max_tokens` words
/// exceed `max_context`.
async fn completions(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let (fault, limit_headers) = match gate(&s, &headers).await {
        Gate::Respond(r) => return r,
        Gate::Proceed { fault, headers } => (fault, headers),
    };
    let Some(Json(body)) = body else {
        return with_headers(
            error_body(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                "We could not parse the JSON body of your request.",
            ),
            &limit_headers,
        );
    };
    let prompt = body["prompt"].as_str().unwrap_or("").to_owned();
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(16) as usize;
    let model = body["model"].as_str().unwrap_or("fake").to_owned();
    let prompt_tokens = prompt.split_whitespace().count();
    let max_context = s.lock().await.config.max_context;
    if prompt_tokens + max_tokens > max_context {
        return with_headers(
            error_body(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "context_length_exceeded",
                &format!(
                    "This model's maximum context length is {max_context} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion).",
                    prompt_tokens + max_tokens
                ),
            ),
            &limit_headers,
        );
    }
    {
        let mut g = s.lock().await;
        g.completions_in_flight += 1;
        g.stats.max_completions_in_flight = g
            .stats
            .max_completions_in_flight
            .max(g.completions_in_flight);
    }
    // Let concurrent requests overlap so the in-flight maximum means something.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let answer = fake_answer(&prompt);
    let words: Vec<&str> = answer.split_whitespace().collect();
    let (text, finish) = if words.len() > max_tokens {
        (words[..max_tokens].join(" "), "length")
    } else {
        (words.join(" "), "stop")
    };
    let (text, finish) = if fault == Some(Fault::Length) {
        let half = text.chars().count() / 2;
        (text.chars().take(half).collect(), "length")
    } else {
        (format!(" {text}"), finish)
    };
    {
        let mut g = s.lock().await;
        g.completions_in_flight -= 1;
        g.stats.completions += 1;
        g.stats.ok += 1;
    }
    let completion_tokens = text.split_whitespace().count();
    with_headers(
        Json(json!({
            "id": format!("cmpl-{}", uuid::Uuid::new_v4().simple()),
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        }))
        .into_response(),
        &limit_headers,
    )
}

/// The fake model's answer: yes/no for BoolQ prompts, an option for MedQA, a boxed number for
/// MATH, chosen by a hash of the prompt so reruns agree.
pub fn fake_answer(prompt: &str) -> String {
    let h = prompt.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    if prompt.ends_with("Answer (yes or no):") {
        let yes = h % 2 == 0;
        format!(
            "{}, according to the passage.",
            if yes { "Yes" } else { "No" }
        )
    } else if prompt.contains("\nOptions:\n") {
        let options: Vec<&str> = prompt
            .lines()
            .filter(|l| {
                l.len() > 2 && l.as_bytes()[1] == b':' && l.as_bytes()[0].is_ascii_uppercase()
            })
            .collect();
        match options.get((h as usize) % options.len().max(1)) {
            Some(o) => format!("The answer is {o}"),
            None => "The answer is A.".into(),
        }
    } else {
        format!(
            "We work through the problem step by step and simplify . The final answer is \\boxed{{{}}} .",
            h % 10
        )
    }
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
