//! The one client of OpenAI-compatible HTTP servers: the judge's chat completions and Batch API
//! (`conftag-judge`) and the external inference engine (`conftag-infer --engine openai`) send
//! every request through it, so retries, backoff, rate limits, the sorting of answers into
//! [`Failure`]s and the care for secrets are written (and tested) once.
//!
//! What it does for every request:
//! - the API key goes in the `Authorization` header only (a [`Secret`]); any echo of it in a
//!   server's message is replaced by `[redacted]`, and transport errors are kept without the URL
//!   (which may carry credentials or a query string);
//! - one rate gate (`gate.rs`) per client pauses before 429s: it reads `x-ratelimit-remaining-*` /
//!   `x-ratelimit-reset-*` on every answer and the wait of every 429;
//! - answers are sorted (`Client::classify`): 401/403 and `insufficient_quota` stop the worker
//!   (fatal), 408/409/429/5xx and transport errors are transient, a 2xx whose body is not JSON
//!   (a gateway's error page) is transient, other 4xx reject this request only (a row failure);
//!   404/405/501 are fatal where the [`Service`] says a missing endpoint means every request
//!   would fail the same way;
//! - [`Client::post_json`] retries transient failures with exponential backoff and jitter, or
//!   after the server's `retry-after-ms` / `retry-after`, up to `max_retries` times, and asks
//!   the caller's `parse` whether a 2xx answer is usable: a row failure from `parse` means "not
//!   usable, ask again" (the judge's malformed or refused verdicts), up to
//!   `max_content_retries` times before it is returned.

mod gate;
pub mod headers;

use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::config::Secret;
use crate::failure::Failure;

use gate::RateGate;

/// Who a client talks to: how its messages name the server and the few rules that differ.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// How messages name the server: `judge API`, `engine`.
    pub name: &'static str,
    /// What to do about refused credentials, e.g. `check OPENAI_API_KEY`.
    pub key_hint: &'static str,
    /// Whether 404, 405 and 501 mean the server lacks the endpoint altogether (every request
    /// would fail the same way: fatal) rather than rejecting this request (404, 405: a row
    /// failure) or failing for now (501: transient).
    pub missing_endpoint_is_fatal: bool,
    /// A counter to add one to per 429 answer (a `common::metrics` name).
    pub rate_limited_counter: Option<&'static str>,
}

/// How to reach the server and how hard to try.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Per request, connecting and reading the answer included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of transient failures per call before it fails transiently.
    pub max_retries: u32,
    /// Retries of unusable answers per call before it is a row failure.
    pub max_content_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Requests out at once (a slot is held only while a request is out, never while waiting
    /// to retry); unlimited when `None`.
    pub max_in_flight: Option<usize>,
}

impl ClientOptions {
    pub fn new(base_url: impl Into<String>, api_key: Option<Secret>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            request_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            max_retries: 6,
            max_content_retries: 2,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_in_flight: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `url` is shown with any credentials in it replaced by `***`.
    #[error("invalid base URL `{url}`: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// A usable answer and how many failed tries (transient failures, unusable answers) came
/// before it.
#[derive(Debug, Clone)]
pub struct Call<T> {
    pub value: T,
    pub retries: u32,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    shown: String,
    service: Service,
    options: Arc<ClientOptions>,
    gate: Arc<RateGate>,
    slots: Option<Arc<Semaphore>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service.name)
            .field("url", &self.shown)
            .finish()
    }
}

impl Client {
    /// Check the URL (an http(s) URL with a host) and build the HTTP client; nothing is sent.
    pub fn new(service: Service, options: ClientOptions) -> Result<Self, ClientError> {
        let base = options.base_url.trim_end_matches('/').to_owned();
        // A base URL may carry credentials (`https://user:key@proxy/v1`): never show them.
        let shown = crate::redis_conn::redact_url(&base);
        let bad = |detail: String| ClientError::BadUrl {
            url: shown.clone(),
            detail,
        };
        let parsed = url::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("expected an http(s) URL with a host".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(ClientError::Http)?;
        let slots = options
            .max_in_flight
            .map(|n| Arc::new(Semaphore::new(n.max(1))));
        Ok(Self {
            http,
            base,
            shown,
            service,
            options: Arc::new(options),
            gate: Arc::new(RateGate::default()),
            slots,
        })
    }

    /// The base URL with any credentials replaced by `***`, for messages and logs.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// A request to `path` (relative to the base URL), with the API key when there is one.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(
            method,
            format!("{}/{}", self.base, path.trim_start_matches('/')),
        );
        match &self.options.api_key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        }
    }

    /// POST `body` to `path` until `parse` accepts a 2xx answer, retrying what is passing (see
    /// the module doc). `parse` sorts a JSON answer: `Ok`, a row failure (unusable: asked again
    /// up to `max_content_retries` times, then returned), or any other failure (returned, or
    /// retried when transient).
    pub async fn post_json<T>(
        &self,
        path: &str,
        body: &Value,
        mut parse: impl FnMut(&Value) -> Result<T, Failure>,
    ) -> Result<Call<T>, Failure> {
        let mut backoff = self.backoff();
        let mut transient_failures = 0u32;
        let mut content_failures = 0u32;
        loop {
            let failure = match self.send(self.request(Method::POST, path).json(body)).await {
                Ok(v) => match parse(&v) {
                    Ok(value) => {
                        return Ok(Call {
                            value,
                            retries: transient_failures + content_failures,
                        })
                    }
                    Err(f @ Failure::Row { .. }) => {
                        content_failures += 1;
                        debug!(service = self.service.name, error = %f.report(), content_failures, "unusable answer");
                        if content_failures > self.options.max_content_retries {
                            return Err(f);
                        }
                        continue;
                    }
                    Err(f) => f,
                },
                Err(f) => f,
            };
            if !matches!(failure, Failure::Transient { .. }) {
                return Err(failure);
            }
            transient_failures += 1;
            if transient_failures > self.options.max_retries {
                let retry_after = failure.retry_after();
                return Err(Failure::transient_after(
                    format!(
                        "{}: gave up after {transient_failures} attempts",
                        self.service.name
                    ),
                    retry_after,
                )
                .with_source(failure));
            }
            let wait = failure
                .retry_after()
                .unwrap_or_else(|| backoff.next_backoff().unwrap_or(self.options.backoff_max));
            debug!(service = self.service.name, error = %failure.report(), retry_in = ?wait, "request will be retried");
            tokio::time::sleep(wait).await;
        }
    }

    /// Send one request (no retries) and read its answer as JSON; a non-2xx answer or a body
    /// that is not JSON is sorted into a failure as for [`post_json`](Self::post_json).
    pub async fn send(&self, req: RequestBuilder) -> Result<Value, Failure> {
        let (status, text) = self.exchange(req).await?;
        serde_json::from_str(&text).map_err(|e| {
            Failure::transient(format!(
                "{} answered HTTP {status} with a body that is not JSON",
                self.service.name
            ))
            .with_source(e)
        })
    }

    /// Send one request (no retries) and return the body of a 2xx answer as it is (a JSONL
    /// file); a non-2xx answer is sorted into a failure.
    pub async fn send_text(&self, req: RequestBuilder) -> Result<String, Failure> {
        Ok(self.exchange(req).await?.1)
    }

    /// One request through the slots and the rate gate: the 2xx status and body, or the
    /// failure the answer amounts to.
    async fn exchange(&self, req: RequestBuilder) -> Result<(u16, String), Failure> {
        let _slot = match &self.slots {
            Some(s) => Some(s.acquire().await.expect("semaphore open")),
            None => None,
        };
        let _in_flight = self.gate.acquire().await;
        self.exchange_gated(req).await
    }

    async fn exchange_gated(&self, req: RequestBuilder) -> Result<(u16, String), Failure> {
        let request = req.build().map_err(|e| self.transport(e, None))?;
        let path = request.url().path().to_owned();
        let resp = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.transport(e, None))?;
        let status = resp.status().as_u16();
        let headers = resp.headers();
        let retry_after = headers::retry_after(headers);
        if let Some((left, reset)) = headers::request_budget(headers) {
            self.gate.observe(left, reset);
        }
        if let Some(pause) = headers::ratelimit_pause(headers) {
            self.gate.pause_for(pause);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport(e, retry_after))?;
        if (200..300).contains(&status) {
            return Ok((status, text));
        }
        let failure = self.classify(status, &path, &text, retry_after);
        if status == 429 {
            if let Some(pause) = failure.retry_after() {
                self.gate.pause_for(pause);
                warn!(service = self.service.name, retry_after = ?pause, "rate limited (429)");
                if let Some(counter) = self.service.rate_limited_counter {
                    metrics::counter!(counter).increment(1);
                }
            }
        }
        Err(failure)
    }

    /// What a non-2xx answer to a request of `path` amounts to.
    fn classify(
        &self,
        status: u16,
        path: &str,
        body: &str,
        retry_after: Option<Duration>,
    ) -> Failure {
        let name = self.service.name;
        let json = serde_json::from_str::<Value>(body).ok();
        let detail = self.redact(&server_message(json.as_ref(), body));
        match status {
            401 | 403 => Failure::fatal(format!(
                "{name} refused the credentials (HTTP {status}: {detail}); {}",
                self.service.key_hint
            )),
            429 if is_quota(json.as_ref(), body) => Failure::fatal(format!(
                "{name} account has no quota left (insufficient_quota: {detail})"
            )),
            429 => Failure::transient_after(
                format!("{name} rate limited (HTTP 429)"),
                Some(retry_after.unwrap_or(Duration::from_secs(1))),
            ),
            404 | 405 | 501 if self.service.missing_endpoint_is_fatal => Failure::fatal(format!(
                "{name} answered HTTP {status}: {detail} (does the server at {} serve {path}?)",
                self.shown
            )),
            408 | 409 | 500..=599 => Failure::transient_after(
                format!("{name} answered HTTP {status}: {detail}"),
                retry_after,
            ),
            _ => Failure::row(format!(
                "{name} rejected the request (HTTP {status}): {detail}"
            )),
        }
    }

    /// `text` with the API key, should a server echo it, replaced by `[redacted]`.
    fn redact(&self, text: &str) -> String {
        match &self.options.api_key {
            Some(k) if !k.expose().is_empty() => text.replace(k.expose(), "[redacted]"),
            _ => text.to_owned(),
        }
    }

    fn transport(&self, e: reqwest::Error, retry_after: Option<Duration>) -> Failure {
        let kind = headers::transport_failure(&e);
        Failure::transient_after(
            format!("{} request failed: {kind}", self.service.name),
            retry_after,
        )
        .with_source(e.without_url())
    }

    fn backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(self.options.backoff_base)
            .with_max_interval(self.options.backoff_max)
            .with_randomization_factor(0.5)
            .with_max_elapsed_time(None)
            .build()
    }
}

/// The server's own words about an error: `error.message`, `message`, or the start of the body.
fn server_message(json: Option<&Value>, body: &str) -> String {
    json.and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or(v["message"].as_str())
            .map(str::to_owned)
    })
    .unwrap_or_else(|| body.chars().take(300).collect())
}

/// A 429 that no wait will cure: the account's quota is spent.
fn is_quota(json: Option<&Value>, body: &str) -> bool {
    match json {
        Some(v) => {
            v["error"]["code"].as_str() == Some("insufficient_quota")
                || v["error"]["type"].as_str() == Some("insufficient_quota")
        }
        None => body.contains("insufficient_quota"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    const SERVICE: Service = Service {
        name: "test API",
        key_hint: "check TEST_KEY",
        missing_endpoint_is_fatal: false,
        rate_limited_counter: None,
    };

    fn client(service: Service) -> Client {
        Client::new(
            service,
            ClientOptions::new("http://127.0.0.1:9/v1", Some(Secret::new("sk-hush"))),
        )
        .unwrap()
    }

    #[test]
    fn answers_are_sorted_by_what_to_do_about_them() {
        let c = client(SERVICE);
        let kind = |status, body: &str| c.classify(status, "/v1/x", body, None).kind();
        assert_eq!(kind(401, "{}"), FailureKind::Fatal);
        assert_eq!(kind(403, "nope"), FailureKind::Fatal);
        let quota = r#"{"error":{"message":"You exceeded your current quota.","code":"insufficient_quota"}}"#;
        assert_eq!(kind(429, quota), FailureKind::Fatal);
        assert_eq!(kind(429, "slow down"), FailureKind::Transient);
        for s in [408, 409, 500, 502, 503, 501] {
            assert_eq!(kind(s, ""), FailureKind::Transient, "{s}");
        }
        for s in [400, 404, 405, 413, 422] {
            assert_eq!(kind(s, ""), FailureKind::Row, "{s}");
        }
        let strict = client(Service {
            missing_endpoint_is_fatal: true,
            ..SERVICE
        });
        for s in [404, 405, 501] {
            assert_eq!(
                strict.classify(s, "/v1/x", "", None).kind(),
                FailureKind::Fatal
            );
        }
        // A 429 without a wait asks for one second.
        assert_eq!(
            c.classify(429, "/v1/x", "", None).retry_after(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            c.classify(503, "/v1/x", "", Some(Duration::from_millis(7)))
                .retry_after(),
            Some(Duration::from_millis(7))
        );
    }

    #[test]
    fn messages_name_the_service_and_never_the_key() {
        let c = client(SERVICE);
        let f = c.classify(
            401,
            "/v1/x",
            r#"{"error":{"message":"Incorrect API key provided: sk-hush"}}"#,
            None,
        );
        let m = f.report();
        assert!(
            m.contains("test API") && m.contains("HTTP 401") && m.contains("check TEST_KEY"),
            "{m}"
        );
        assert!(!m.contains("sk-hush") && m.contains("[redacted]"), "{m}");
        let m = c.classify(400, "/v1/x", "bad sk-hush", None).report();
        assert!(!m.contains("sk-hush"), "{m}");
    }

    #[test]
    fn a_url_that_is_not_http_or_shows_credentials_is_refused_without_them() {
        let e = Client::new(SERVICE, ClientOptions::new("ftp://u:pw@x/v1", None)).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("http(s) URL") && !m.contains("pw"), "{m}");
        let e = Client::new(SERVICE, ClientOptions::new("not a url", None)).unwrap_err();
        assert!(e.to_string().contains("not a url"));
    }
}
