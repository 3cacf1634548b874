//! An external OpenAI-compatible server as the engine (`--engine openai --engine-url URL`):
//! vLLM, SGLang, TGI or mistralrs-server do the batching on the GPU while conftag keeps the
//! leases, the exactly-once bookkeeping and the seed's fidelity (the raw prompt through
//! `/v1/completions` by default, `/v1/chat/completions` with `--chat-template`, temperature 0,
//! the job's max tokens, token counts from `usage`).
//!
//! Every request goes through the shared OpenAI-compatible client (`common::openai`), which
//! sorts errors like the embedded engine's: a 4xx about the request (prompt too long for the
//! server's context, rejected input) is a row error; 408, 409, 429, 5xx, timeouts, dropped
//! connections and bodies that are not JSON are retried with the server's `retry-after` or
//! jittered exponential backoff, then fail the shard attempt; 401/403/404/405/501, a spent
//! quota and answers without text or usage stop the worker, since every row would fail the
//! same way. What stays here is the engine's own part: the request bodies, reading a
//! generation, and waiting at start for a server that is still loading its model.

use std::time::Duration;

use common::config::Secret;
use common::failure::Failure;
use common::job::PromptMode;
use common::openai::{Client, ClientOptions, Service};
use reqwest::Method;
use serde_json::{json, Value};
use tracing::info;

use crate::engine::{EngineError, Generation};

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

/// The external engine as the shared client names it: a missing endpoint (404, 405, 501)
/// means every row would fail the same way, so it stops the worker.
pub const ENGINE_SERVICE: Service = Service {
    name: "engine",
    key_hint: "set CONFTAG_ENGINE_API_KEY",
    missing_endpoint_is_fatal: true,
    rate_limited_counter: None,
};

pub struct OpenAiEngine {
    /// Every request goes through it; it also holds the `concurrency` slots (taken only while
    /// a request is out, never while waiting to retry).
    client: Client,
    model: String,
    concurrency: usize,
    backoff_base: Duration,
}

impl std::fmt::Debug for OpenAiEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiEngine")
            .field("url", &self.client.shown_url())
            .field("model", &self.model)
            .field("concurrency", &self.concurrency)
            .finish()
    }
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
        let concurrency = opts.concurrency.max(1);
        let mut options = ClientOptions::new(opts.base_url.clone(), opts.api_key.clone());
        options.request_timeout = opts.request_timeout;
        options.max_retries = opts.max_retries;
        options.backoff_base = opts.backoff_base;
        options.backoff_max = opts.backoff_max;
        options.max_in_flight = Some(concurrency);
        let client = Client::new(ENGINE_SERVICE, options).map_err(|e| match e {
            common::openai::ClientError::BadUrl { detail, .. } if detail.contains("http(s)") => {
                bad("expected an http(s) URL with a host, e.g. http://gpu-node:8000/v1".into())
            }
            common::openai::ClientError::BadUrl { detail, .. } => bad(detail),
            other => bad(common::failure::chain(&other, ": ")),
        })?;
        let engine = Self {
            client,
            model: opts.model.clone(),
            concurrency,
            backoff_base: opts.backoff_base,
        };
        let served = engine
            .wait_until_ready(opts.wait_ready)
            .await
            .map_err(|f| bad(f.report()))?;
        if !served.is_empty() && !served.iter().any(|m| m == &opts.model) {
            return Err(bad(format!(
                "the server does not serve `{}` (it serves: {}); pass --engine-model NAME",
                opts.model,
                served.join(", ")
            )));
        }
        info!(url = %engine.client.shown_url(), model = %engine.model, concurrency = engine.concurrency, "external engine ready");
        Ok(engine)
    }

    /// `GET /models` until the server answers, for at most `patience`: a transient failure is
    /// a server still starting, any other ends the wait.
    async fn wait_until_ready(&self, patience: Duration) -> Result<Vec<String>, Failure> {
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
                Err(f @ Failure::Transient { .. }) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(Failure::fatal(format!(
                            "waited {:.1} s for the server",
                            start.elapsed().as_secs_f64()
                        ))
                        .with_source(f));
                    }
                    info!(url = %self.client.shown_url(), reason = %f.report(), "waiting for the engine server to come up");
                    tokio::time::sleep(delay.min(left)).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// The models the server lists: transient while it is not up yet (refused, timed out,
    /// 502/503/504), fatal when its answer says this will not work (401, 404, not JSON, a host
    /// name that does not resolve, TLS that fails).
    async fn served_models(&self, timeout: Duration) -> Result<Vec<String>, Failure> {
        let req = self.client.request(Method::GET, "models").timeout(timeout);
        let resp = req.send().await.map_err(|e| {
            // A name that does not resolve or a TLS handshake that fails will not fix itself.
            let chain = common::failure::chain(&e, ": ").to_ascii_lowercase();
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
            let kind = common::openai::headers::transport_failure(&e);
            // The error names the URL (credentials included): keep it without.
            let e = e.without_url();
            if hopeless {
                Failure::fatal(format!(
                    "engine request {kind} (the host name does not resolve or TLS failed)"
                ))
                .with_source(e)
            } else {
                Failure::transient(format!("engine request {kind}")).with_source(e)
            }
        })?;
        let status = resp.status();
        if matches!(status.as_u16(), 502..=504) {
            return Err(Failure::transient(format!(
                "GET /models answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(Failure::fatal(format!(
                "GET /models answered HTTP {status}"
            )));
        }
        let body: Value = resp.json().await.map_err(|e| {
            Failure::fatal("GET /models did not answer JSON").with_source(e.without_url())
        })?;
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

    /// Generate greedily for one row, retrying what the server says is passing. A row failure
    /// is the row's error (a prompt past the server's context, rejected input).
    pub async fn generate(
        &self,
        prompt: &str,
        mode: PromptMode,
        max_tokens: u32,
    ) -> Result<Generation, Failure> {
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
        // JSON without text or usage is how this server answers, and every row would fail.
        let parse = |v: &Value| {
            generation(v, mode).map_err(|m| {
                Failure::fatal(format!(
                    "{m}: the server at --engine-url does not answer like an OpenAI completions API"
                ))
            })
        };
        Ok(self.client.post_json(path, &body, parse).await?.value)
    }
}

/// Text, finish reason and token counts of an OpenAI completions or chat completions body
/// (a body that is not JSON is the client's failure, before this).
fn generation(v: &Value, mode: PromptMode) -> Result<Generation, String> {
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

    fn parse(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn completion_and_chat_bodies_parse_and_garbage_does_not() {
        let c = r#"{"choices":[{"text":"  Yes.\n","finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#;
        let g = generation(&parse(c), PromptMode::Raw).unwrap();
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
        assert_eq!(
            generation(&parse(chat), PromptMode::Chat).unwrap().text,
            "No"
        );
        assert!(generation(&parse(r#"{"choices":[]}"#), PromptMode::Raw).is_err());
        assert!(
            generation(&parse(r#"{"choices":[{"text":"x"}]}"#), PromptMode::Raw)
                .unwrap_err()
                .contains("usage.prompt_tokens")
        );
    }
}
