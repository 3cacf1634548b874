//! An external OpenAI-compatible server as the engine (`--engine openai --engine-url URL`):
//! vLLM, SGLang, TGI or mistralrs-server do the batching on the GPU while conftag keeps the
//! leases, the exactly-once bookkeeping and the seed's fidelity (the raw prompt through
//! `/v1/completions` by default, `/v1/chat/completions` with `--chat-template`, temperature 0,
//! the job's max tokens, token counts from `usage`).
//!
//! Errors are sorted like the embedded engine's: a 4xx about the request (prompt too long for
//! the server's context, rejected input) is a row error; 408, 409, 429, 5xx, timeouts, dropped
//! connections and bodies that are not JSON are retried with the server's `retry-after` or
//! jittered exponential backoff, then fail the shard attempt; 401/403/404/405/501 and answers
//! without text or usage stop the worker, since every row would fail the same way.

use std::time::Duration;

use common::config::Secret;
use common::job::PromptMode;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::engine::{EngineError, GenerateError, Generation};

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct OpenAiEngineOptions {
    /// Base URL up to and including `/v1`, e.g. `http://gpu-node:8000/v1`.
    pub base_url: String,
    /// The model name the server serves (vLLM: `--served-model-name`, default the hub id).
    pub model: String,
    pub api_key: Option<Secret>,
    /// Requests in flight at once: the server's batch.
    pub concurrency: usize,
    pub request_timeout: Duration,
    /// Retries of a failing request (429, 5xx, transport) before the shard attempt fails.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long to wait at start for a server that is not up yet (connection refused, or
    /// 502/503 while it loads its model): workers and their server often start together.
    pub wait_ready: Duration,
}

impl OpenAiEngineOptions {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            concurrency: 256,
            request_timeout: Duration::from_secs(600),
            max_retries: 8,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            wait_ready: Duration::from_secs(600),
        }
    }
}

/// Why `GET /models` gave no list.
enum NotReady {
    /// Not up yet (refused, timed out, 502/503/504): worth waiting for.
    Starting(String),
    /// Up, but the answer says this will not work (401, 404, not JSON).
    Refused(String),
}

pub struct OpenAiEngine {
    http: reqwest::Client,
    base_url: String,
    /// `base_url` with any credentials in it replaced by `***`, for messages and logs.
    shown_url: String,
    model: String,
    api_key: Option<Secret>,
    slots: Semaphore,
    concurrency: usize,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl std::fmt::Debug for OpenAiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEngine")
            .field("url", &self.shown_url)
            .field("model", &self.model)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// What one HTTP attempt came to.
enum Attempt {
    Done(Generation),
    Retry(String, Option<Duration>),
    Row(String),
    Fatal(String),
}

impl OpenAiEngine {
    /// Check the URL and ask the server which models it serves: a wrong URL, key or model name
    /// fails here, before any shard is leased.
    pub async fn connect(opts: OpenAiEngineOptions) -> Result<Self, EngineError> {
        let shown_url = common::redis_conn::redact_url(opts.base_url.trim_end_matches('/'));
        let bad = |detail: String| EngineError::Load {
            model: opts.model.clone(),
            origin: format!("--engine-url {shown_url}"),
            detail,
        };
        let parsed = url::Url::parse(&opts.base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad(
                "expected an http(s) URL with a host, e.g. http://gpu-node:8000/v1".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let engine = Self {
            http,
            base_url: opts.base_url.trim_end_matches('/').to_owned(),
            shown_url: shown_url.clone(),
            model: opts.model.clone(),
            api_key: opts.api_key.clone(),
            slots: Semaphore::new(opts.concurrency.max(1)),
            concurrency: opts.concurrency.max(1),
            max_retries: opts.max_retries,
            backoff_base: opts.backoff_base,
            backoff_max: opts.backoff_max,
        };
        let served = engine
            .wait_until_ready(opts.wait_ready)
            .await
            .map_err(bad)?;
        if !served.is_empty() && !served.iter().any(|m| m == &opts.model) {
            return Err(bad(format!(
                "the server does not serve `{}` (it serves: {}); pass --engine-model NAME",
                opts.model,
                served.join(", ")
            )));
        }
        info!(url = %engine.shown_url, model = %engine.model, concurrency = engine.concurrency, "external engine ready");
        Ok(engine)
    }

    /// `GET /models` until the server answers, for at most `patience`.
    async fn wait_until_ready(&self, patience: Duration) -> Result<Vec<String>, String> {
        let start = tokio::time::Instant::now();
        let deadline = start + patience;
        let mut delay = self.backoff_base.max(Duration::from_millis(100));
        loop {
            // Each probe gets what is left of the patience (1 to 30 s): a server that accepts
            // connections but never answers must not outlast --engine-wait-secs.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let probe = left.clamp(Duration::from_secs(1), Duration::from_secs(30));
            match self.served_models(probe).await {
                Ok(served) => return Ok(served),
                Err(NotReady::Refused(m)) => return Err(m),
                Err(NotReady::Starting(m)) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(format!(
                            "{m} (waited {:.1} s for the server)",
                            start.elapsed().as_secs_f64()
                        ));
                    }
                    info!(url = %self.shown_url, reason = %m, "waiting for the engine server to come up");
                    tokio::time::sleep(delay.min(left)).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn served_models(&self, timeout: Duration) -> Result<Vec<String>, NotReady> {
        let mut req = self
            .http
            .get(format!("{}/models", self.base_url))
            .timeout(timeout);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        let resp = req.send().await.map_err(|e| {
            // A name that does not resolve or a TLS handshake that fails will not fix itself.
            let chain = common::config::error_chain(&e).to_ascii_lowercase();
            let hopeless = [
                "dns error",
                "failed to lookup address",
                "certificate",
                "handshake",
                "invalidcontenttype",
                "corrupt message",
            ]
            .iter()
            .any(|w| chain.contains(w));
            if hopeless {
                // The chain names the URL (credentials included): say what failed, not where.
                NotReady::Refused(format!(
                    "{} (the host name does not resolve or TLS failed)",
                    transport(&e)
                ))
            } else {
                NotReady::Starting(transport(&e))
            }
        })?;
        let status = resp.status();
        if matches!(status.as_u16(), 502..=504) {
            return Err(NotReady::Starting(format!(
                "GET /models answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(NotReady::Refused(format!(
                "GET /models answered HTTP {status}"
            )));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|_| NotReady::Refused("GET /models did not answer JSON".to_owned()))?;
        Ok(body["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Generate greedily for one row, retrying what the server says is passing.
    pub async fn generate(
        &self,
        prompt: &str,
        mode: PromptMode,
        max_tokens: u32,
    ) -> Result<Generation, GenerateError> {
        let (path, body) = match mode {
            PromptMode::Raw => (
                "completions",
                json!({
                    "model": self.model,
                    "prompt": prompt,
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                    "n": 1,
                    "stream": false,
                }),
            ),
            PromptMode::Chat => (
                "chat/completions",
                json!({
                    "model": self.model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "temperature": 0.0,
                    "n": 1,
                    "stream": false,
                }),
            ),
        };
        let url = format!("{}/{path}", self.base_url);
        // The same policy as the judge's client: jittered exponential waits, or what the
        // server's `retry-after` asks for.
        let mut backoff = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.backoff_base)
            .with_max_interval(self.backoff_max)
            .with_randomization_factor(0.5)
            .with_max_elapsed_time(None)
            .build();
        let mut failures = 0u32;
        loop {
            // A slot is held only while a request is out, never while waiting to retry.
            let attempt = {
                let _permit = self.slots.acquire().await.expect("semaphore open");
                let mut req = self.http.post(&url).json(&body);
                if let Some(key) = &self.api_key {
                    req = req.bearer_auth(key.expose());
                }
                match req.send().await {
                    Ok(resp) => read_response(resp, mode).await,
                    Err(e) => Attempt::Retry(transport(&e), None),
                }
            };
            match attempt {
                Attempt::Done(g) => return Ok(g),
                Attempt::Row(m) => return Err(GenerateError::Row(m)),
                Attempt::Fatal(m) => return Err(GenerateError::Fatal(m)),
                Attempt::Retry(m, wait) => {
                    failures += 1;
                    if failures > self.max_retries {
                        return Err(GenerateError::Engine(format!("{m} ({failures} attempts)")));
                    }
                    let wait = wait
                        .or_else(|| backoff::backoff::Backoff::next_backoff(&mut backoff))
                        .unwrap_or(self.backoff_max);
                    debug!(error = %m, retry_in = ?wait, "engine request will be retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// reqwest errors print the URL; say what happened without it.
fn transport(e: &reqwest::Error) -> String {
    let kind = common::http::transport_failure(
        e.is_timeout(),
        e.is_connect(),
        e.is_body() || e.is_decode(),
    );
    format!("engine request {kind}")
}

async fn read_response(resp: reqwest::Response, mode: PromptMode) -> Attempt {
    let status = resp.status();
    let headers = resp.headers().clone();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = common::http::retry_after(get("retry-after-ms"), get("retry-after"));
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => return Attempt::Retry(transport(&e), None),
    };
    let message = || {
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v["error"]["message"]
                    .as_str()
                    .or(v["message"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| text.chars().take(200).collect())
    };
    match status.as_u16() {
        // A body that is not JSON (a proxy's error page, a cut-off answer) may be passing;
        // JSON without text or usage is how this server answers, and every row would fail.
        200..=299 => match parse_generation(&text, mode) {
            Ok(g) => Attempt::Done(g),
            Err(m) if serde_json::from_str::<Value>(&text).is_err() => Attempt::Retry(m, None),
            Err(m) => Attempt::Fatal(format!(
                "{m}: the server at --engine-url does not answer like an OpenAI completions API"
            )),
        },
        405 | 501 => Attempt::Fatal(format!(
            "engine answered HTTP {status}: {} (does it serve /v1/completions?)",
            message()
        )),
        401 | 403 => Attempt::Fatal(format!(
            "engine refused the credentials (HTTP {status}): {}; set CONFTAG_ENGINE_API_KEY",
            message()
        )),
        404 => Attempt::Fatal(format!("engine answered HTTP 404: {}", message())),
        429 => {
            warn!(retry_after = ?retry_after, "engine rate limited (429)");
            Attempt::Retry("engine rate limited (HTTP 429)".into(), retry_after)
        }
        408 | 409 | 500..=599 => Attempt::Retry(
            format!("engine answered HTTP {status}: {}", message()),
            retry_after,
        ),
        _ => Attempt::Row(format!(
            "engine rejected the row (HTTP {status}): {}",
            message()
        )),
    }
}

/// Text, finish reason and token counts of an OpenAI completions or chat completions body.
pub fn parse_generation(text: &str, mode: PromptMode) -> Result<Generation, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|_| "engine answered a body that is not JSON")?;
    let choice = v["choices"].get(0).ok_or("engine answer has no choices")?;
    let out = match mode {
        PromptMode::Raw => choice["text"].as_str(),
        PromptMode::Chat => choice["message"]["content"].as_str(),
    }
    .ok_or("engine answer has no text")?;
    let count = |k: &str| {
        v["usage"][k]
            .as_u64()
            .ok_or(format!("engine answer has no usage.{k}"))
    };
    Ok(Generation {
        text: out.trim().to_owned(),
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_and_chat_bodies_parse_and_garbage_does_not() {
        let c = r#"{"choices":[{"text":"  Yes.\n","finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#;
        let g = parse_generation(c, PromptMode::Raw).unwrap();
        assert_eq!(
            (
                g.text.as_str(),
                g.prompt_tokens,
                g.completion_tokens,
                g.finish_reason.as_str()
            ),
            ("Yes.", 7, 2, "stop")
        );
        let chat = r#"{"choices":[{"message":{"content":"No"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        assert_eq!(parse_generation(chat, PromptMode::Chat).unwrap().text, "No");
        assert!(parse_generation("<html>", PromptMode::Raw).is_err());
        assert!(parse_generation(r#"{"choices":[]}"#, PromptMode::Raw).is_err());
        assert!(
            parse_generation(r#"{"choices":[{"text":"x"}]}"#, PromptMode::Raw)
                .unwrap_err()
                .contains("usage.prompt_tokens")
        );
    }
}
