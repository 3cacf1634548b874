//! A client for OpenAI-compatible chat completions with strict JSON-schema output, built for
//! judging at the account's rate limit: it honours `retry-after-ms` / `retry-after`, reads
//! `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` to pause *before* hitting 429s (one gate
//! shared by every request of the process), retries 408/409/429/5xx and connection errors
//! with exponential backoff and jitter, and stops on bad credentials or a spent quota.

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use common::config::Secret;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::prompt;

pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

/// A verdict as the judge model returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    pub extracted_final_answer: String,
    pub reasoning: String,
    pub correct: String,
}

#[derive(Debug, Clone)]
pub struct JudgeCall {
    pub verdict: Verdict,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Failed tries (transient errors, unusable answers) before this answer.
    pub retries: u32,
}

/// Why a judge call gave no verdict, by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The row cannot be judged (refusal, malformed output, request rejected): record it on
    /// the row; retrying the shard will not help.
    #[error("{0}")]
    Row(String),
    /// The service is failing or rate-limiting beyond the retry budget: retry the shard later.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Credentials or quota: no call can succeed; the worker must stop.
    #[error("{0}")]
    Fatal(String),
    /// The job's judge budget is spent: no call was made; the shard waits for a new budget.
    #[error("{0}")]
    Paused(String),
}

/// The process-wide gate every judge request passes: a pause set by 429s and by spent token
/// budgets, and a request budget read from `x-ratelimit-remaining-requests` /
/// `x-ratelimit-reset-requests`. Each request reserves one unit of the budget before it is
/// sent, so with many requests in flight the worker stops at the server's limit instead of
/// learning about it from a burst of 429s.
#[derive(Debug, Default)]
pub struct RateGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    until: Option<Instant>,
    /// Requests still allowed before the instant, minus those sent since the server said so.
    budget: Option<(u64, Instant)>,
    in_flight: u64,
}

impl RateGate {
    /// Wait until a request may be sent, and count it in flight (pair with [`done`](Self::done)).
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut g = self.state.lock().await;
                let now = Instant::now();
                match g.until.filter(|t| *t > now) {
                    Some(t) => Some(t),
                    None => match g.budget {
                        Some((0, reset)) if reset > now => Some(reset),
                        Some((left, reset)) if reset > now => {
                            g.budget = Some((left - 1, reset));
                            None
                        }
                        // The window reset: unknown until the next response says.
                        Some(_) => {
                            g.budget = None;
                            None
                        }
                        None => None,
                    },
                }
            };
            match wait {
                Some(t) => tokio::time::sleep_until(t).await,
                None => {
                    self.state.lock().await.in_flight += 1;
                    return;
                }
            }
        }
    }

    pub async fn done(&self) {
        let mut g = self.state.lock().await;
        g.in_flight = g.in_flight.saturating_sub(1);
    }

    /// The server's word on the request budget, seen on a response to one of our requests.
    pub async fn observe(&self, remaining: u64, reset_in: Duration) {
        let mut g = self.state.lock().await;
        let others = g.in_flight.saturating_sub(1);
        g.budget = Some((remaining.saturating_sub(others), Instant::now() + reset_in));
    }

    pub async fn pause_for(&self, d: Duration) {
        let t = Instant::now() + d;
        let mut g = self.state.lock().await;
        if g.until.is_none_or(|cur| cur < t) {
            g.until = Some(t);
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub request_timeout: Duration,
    /// Retries of transient errors per row before the shard attempt is given up.
    pub max_retries: u32,
    /// Retries of malformed / refused / truncated answers per row before it is a row error.
    pub max_content_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<Secret>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            model: model.into(),
            request_timeout: Duration::from_secs(300),
            max_retries: 6,
            max_content_retries: 2,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid judge base URL `{url}`: {detail} (set --base-url / OPENAI_BASE_URL to e.g. https://api.openai.com/v1)")]
    BadUrl { url: String, detail: String },
    #[error("OPENAI_API_KEY is not set: the judge at {0} needs it. Set it, point OPENAI_BASE_URL at a server that needs no key, or use --mode rules")]
    MissingKey(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

#[derive(Debug, Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
    endpoint: String,
    gate: Arc<RateGate>,
}

impl OpenAiClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        // A base URL may carry credentials (`https://user:key@proxy/v1`): never show them.
        let shown = common::redis_conn::redact_url(&config.base_url);
        let parsed = url::Url::parse(&config.base_url).map_err(|e| ClientError::BadUrl {
            url: shown.clone(),
            detail: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ClientError::BadUrl {
                url: shown,
                detail: "expected an http(s) URL with a host".into(),
            });
        }
        let is_openai = parsed.host_str() == Some("api.openai.com");
        if is_openai && config.api_key.is_none() {
            return Err(ClientError::MissingKey(shown));
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            http,
            config: Arc::new(config),
            endpoint,
            gate: Arc::new(RateGate::default()),
        })
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    fn backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.config.backoff_base)
            .with_max_interval(self.config.backoff_max)
            .with_randomization_factor(0.5)
            .with_max_elapsed_time(None)
            .build()
    }

    /// Judge one rendered prompt with `model` (the job's judge model).
    pub async fn judge(&self, model: &str, user_prompt: &str) -> Result<JudgeCall, CallError> {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": user_prompt}],
            "response_format": prompt::response_format(),
        });
        let mut backoff = self.backoff();
        let mut transient_failures = 0u32;
        let mut content_failures = 0u32;
        loop {
            self.gate.acquire().await;
            let mut req = self.http.post(&self.endpoint).json(&body);
            if let Some(key) = &self.config.api_key {
                req = req.bearer_auth(key.expose());
            }
            let outcome = match req.send().await {
                Err(e) => {
                    Attempt::Transient(format!("judge request failed: {}", without_url(&e)), None)
                }
                Ok(resp) => self.read_response(resp).await,
            };
            self.gate.done().await;
            match outcome {
                Attempt::Done(mut call) => {
                    call.retries = transient_failures + content_failures;
                    return Ok(call);
                }
                Attempt::Fatal(m) => return Err(CallError::Fatal(m)),
                Attempt::Row(m) => return Err(CallError::Row(m)),
                Attempt::Content(m) => {
                    content_failures += 1;
                    debug!(error = %m, content_failures, "unusable judge answer");
                    if content_failures > self.config.max_content_retries {
                        return Err(CallError::Row(m));
                    }
                }
                Attempt::Transient(m, retry_after) => {
                    transient_failures += 1;
                    if transient_failures > self.config.max_retries {
                        return Err(CallError::Transient {
                            message: format!(
                                "{m} (gave up after {} retries)",
                                self.config.max_retries
                            ),
                            retry_after,
                        });
                    }
                    let wait = retry_after.unwrap_or_else(|| {
                        backoff.next_backoff().unwrap_or(self.config.backoff_max)
                    });
                    debug!(error = %m, retry_in = ?wait, "judge call will be retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn read_response(&self, resp: reqwest::Response) -> Attempt {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let retry_after = retry_after(&headers);
        if let Some((left, reset)) = request_budget(&headers) {
            self.gate.observe(left, reset).await;
        }
        if let Some(pause) = ratelimit_pause(&headers) {
            self.gate.pause_for(pause).await;
        }
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                return Attempt::Transient(
                    format!("reading judge answer: {}", without_url(&e)),
                    retry_after,
                )
            }
        };
        match status {
            200 => parse_success(&text),
            401 | 403 => Attempt::Fatal(format!(
                "the judge API refused the credentials (HTTP {status}): check OPENAI_API_KEY"
            )),
            429 => {
                let code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if code == "insufficient_quota" {
                    return Attempt::Fatal(
                        "the judge API account has no quota left (insufficient_quota)".into(),
                    );
                }
                let pause = retry_after.unwrap_or(Duration::from_secs(1));
                self.gate.pause_for(pause).await;
                warn!(retry_after = ?pause, "judge rate limited (429)");
                metrics::counter!(common::metrics::JUDGE_HTTP_429).increment(1);
                Attempt::Transient("rate limited (HTTP 429)".into(), Some(pause))
            }
            408 | 409 | 500..=599 => {
                Attempt::Transient(format!("judge API error (HTTP {status})"), retry_after)
            }
            _ => Attempt::Row(format!(
                "judge API rejected the request (HTTP {status}): {}",
                text.chars().take(300).collect::<String>()
            )),
        }
    }
}

enum Attempt {
    Done(JudgeCall),
    Transient(String, Option<Duration>),
    Content(String),
    Row(String),
    Fatal(String),
}

/// reqwest errors print the URL; keep messages short and free of query strings.
fn without_url(e: &reqwest::Error) -> String {
    common::http::transport_failure(e.is_timeout(), e.is_connect(), e.is_body() || e.is_decode())
        .to_owned()
}

/// A 200 whose body is not JSON at all (a proxy's or gateway's HTML page, a cut-off body)
/// says nothing about the row: it is transient, like a 5xx. Treating it as an unusable answer
/// would record the row as undecidable after a few such bodies, and a gateway fault storm
/// would turn healthy rows into permanent judge errors.
fn parse_success(text: &str) -> Attempt {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Attempt::Transient(
                format!("judge API answered 200 with a body that is not JSON: {e}"),
                None,
            )
        }
    };
    parse_body(&v)
}

/// A verdict from a chat-completion body (also what a Batch API result line carries).
pub fn parse_verdict(body: &Value) -> Result<JudgeCall, String> {
    match parse_body(body) {
        Attempt::Done(call) => Ok(call),
        Attempt::Content(m) | Attempt::Row(m) | Attempt::Fatal(m) | Attempt::Transient(m, _) => {
            Err(m)
        }
    }
}

fn parse_body(v: &Value) -> Attempt {
    let choice = &v["choices"][0];
    if choice.is_null() {
        return Attempt::Content("judge answer has no choices".into());
    }
    if let Some(refusal) = choice["message"]["refusal"].as_str() {
        return Attempt::Content(format!("judge refused: {refusal}"));
    }
    if choice["finish_reason"].as_str() == Some("length") {
        return Attempt::Content("judge answer was cut off (finish_reason=length)".into());
    }
    let Some(content) = choice["message"]["content"].as_str() else {
        return Attempt::Content("judge answer has no content".into());
    };
    let verdict: Verdict = match serde_json::from_str(content) {
        Ok(v) => v,
        Err(e) => return Attempt::Content(format!("judge answer does not fit the schema: {e}")),
    };
    if verdict.correct != "yes" && verdict.correct != "no" {
        return Attempt::Content(format!(
            "judge answer does not fit the schema: correct = {:?}",
            verdict.correct
        ));
    }
    Attempt::Done(JudgeCall {
        verdict,
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        retries: 0,
    })
}

/// `retry-after-ms` (milliseconds) or `retry-after` (seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    common::http::retry_after(get("retry-after-ms"), get("retry-after"))
}

/// `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`, when both are there.
pub fn request_budget(headers: &reqwest::header::HeaderMap) -> Option<(u64, Duration)> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let left = get("x-ratelimit-remaining-requests")?
        .trim()
        .parse::<u64>()
        .ok()?;
    let reset = get("x-ratelimit-reset-requests").and_then(parse_reset)?;
    Some((left, reset))
}

/// When the headers say the request or token budget is spent, how long until it resets.
pub fn ratelimit_pause(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut pause: Option<Duration> = None;
    for (remaining, reset, low) in [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            0u64,
        ),
        (
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            1000u64,
        ),
    ] {
        let Some(left) = get(remaining).and_then(|v| v.trim().parse::<u64>().ok()) else {
            continue;
        };
        if left <= low {
            if let Some(d) = get(reset).and_then(parse_reset) {
                pause = Some(pause.map_or(d, |p| p.max(d)));
            }
        }
    }
    pause
}

/// OpenAI's reset format: `1s`, `6m0s`, `120ms`, `1h2m3.5s`.
pub fn parse_reset(s: &str) -> Option<Duration> {
    let s = s.trim();
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let value: f64 = num.parse().ok()?;
        num.clear();
        any = true;
        total += match c {
            'h' => value * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                value / 1000.0
            }
            'm' => value * 60.0,
            's' => value,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total += num.parse::<f64>().ok()?;
        any = true;
    }
    any.then(|| Duration::from_secs_f64(total.min(600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_parse() {
        assert_eq!(parse_reset("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(parse_reset("1m30.5s"), Some(Duration::from_secs_f64(90.5)));
        assert_eq!(parse_reset("x"), None);
    }

    #[test]
    fn missing_key_for_openai_is_an_error_naming_the_fix() {
        let e = OpenAiClient::new(ClientConfig::new(OPENAI_DEFAULT_BASE, None, "m")).unwrap_err();
        assert!(e.to_string().contains("OPENAI_API_KEY") && e.to_string().contains("--mode rules"));
        let e = OpenAiClient::new(ClientConfig::new("not a url", None, "m")).unwrap_err();
        assert!(e.to_string().contains("not a url"));
    }
}
