//! The judge's side of the OpenAI-compatible API: the strict JSON-schema chat request and the
//! verdict it must come back with. Sending, retries, rate limits and the sorting of answers are
//! the shared client's (`common::openai`); a verdict that is refused, cut off or off the schema
//! is "unusable" to it, so it asks again a bounded number of times before the row records a
//! judge error.

use std::time::Duration;

use common::config::Secret;
use common::failure::Failure;
use common::openai::{Client, ClientOptions, Service};
use serde::Deserialize;
use serde_json::{json, Value};

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

    /// The shared client's options for these settings.
    pub fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::new(self.base_url.clone(), self.api_key.clone());
        o.request_timeout = self.request_timeout;
        o.max_retries = self.max_retries;
        o.max_content_retries = self.max_content_retries;
        o.backoff_base = self.backoff_base;
        o.backoff_max = self.backoff_max;
        o
    }
}

/// The judge API as the shared client names it: a 404 or 405 rejects the request (the row
/// records it), a 501 is passing.
pub const JUDGE_SERVICE: Service = Service {
    name: "judge API",
    key_hint: "check OPENAI_API_KEY",
    missing_endpoint_is_fatal: false,
    rate_limited_counter: Some(common::metrics::JUDGE_HTTP_429),
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid judge base URL `{url}`: {detail} (set --base-url / OPENAI_BASE_URL to e.g. https://api.openai.com/v1)")]
    BadUrl { url: String, detail: String },
    #[error("OPENAI_API_KEY is not set: the judge at {0} needs it. Set it, point OPENAI_BASE_URL at a server that needs no key, or use --mode rules")]
    MissingKey(String),
    #[error("cannot build the HTTP client")]
    Http(#[source] common::openai::ClientError),
}

/// The shared client for the judge API at `options.base_url` (chat completions and the Batch
/// API); a key is required for api.openai.com.
pub fn judge_client(options: ClientOptions) -> Result<Client, ClientError> {
    let client = Client::new(JUDGE_SERVICE, options.clone()).map_err(|e| match e {
        common::openai::ClientError::BadUrl { url, detail } => ClientError::BadUrl { url, detail },
        other => ClientError::Http(other),
    })?;
    let is_openai = url::Url::parse(&options.base_url)
        .ok()
        .is_some_and(|u| u.host_str() == Some("api.openai.com"));
    if is_openai && options.api_key.is_none() {
        return Err(ClientError::MissingKey(client.shown_url().to_owned()));
    }
    Ok(client)
}

#[derive(Debug, Clone)]
pub struct OpenAiClient {
    client: Client,
    model: String,
}

impl OpenAiClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        Ok(Self {
            client: judge_client(config.options())?,
            model: config.model,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Judge one rendered prompt with `model` (the job's judge model). A row failure is the
    /// row's judge error (refused, rejected, unusable after the content retries).
    pub async fn judge(&self, model: &str, user_prompt: &str) -> Result<JudgeCall, Failure> {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": user_prompt}],
            "response_format": prompt::response_format(),
        });
        let call = self
            .client
            .post_json("chat/completions", &body, verdict)
            .await?;
        Ok(JudgeCall {
            retries: call.retries,
            ..call.value
        })
    }
}

/// A verdict from a chat-completion body (also what a Batch API result line carries): the
/// row's judge error when there is none.
pub fn parse_verdict(body: &Value) -> Result<JudgeCall, String> {
    verdict(body).map_err(|f| f.report())
}

/// A verdict, or a row failure saying why the answer is unusable.
fn verdict(v: &Value) -> Result<JudgeCall, Failure> {
    let choice = &v["choices"][0];
    if choice.is_null() {
        return Err(Failure::row("judge answer has no choices"));
    }
    if let Some(refusal) = choice["message"]["refusal"].as_str() {
        return Err(Failure::row(format!("judge refused: {refusal}")));
    }
    if choice["finish_reason"].as_str() == Some("length") {
        return Err(Failure::row(
            "judge answer was cut off (finish_reason=length)",
        ));
    }
    let Some(content) = choice["message"]["content"].as_str() else {
        return Err(Failure::row("judge answer has no content"));
    };
    let verdict: Verdict = serde_json::from_str(content)
        .map_err(|e| Failure::row("judge answer does not fit the schema").with_source(e))?;
    if verdict.correct != "yes" && verdict.correct != "no" {
        return Err(Failure::row(format!(
            "judge answer does not fit the schema: correct = {:?}",
            verdict.correct
        )));
    }
    Ok(JudgeCall {
        verdict,
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        retries: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_for_openai_is_an_error_naming_the_fix() {
        let e = OpenAiClient::new(ClientConfig::new(OPENAI_DEFAULT_BASE, None, "m")).unwrap_err();
        assert!(e.to_string().contains("OPENAI_API_KEY") && e.to_string().contains("--mode rules"));
        let e = OpenAiClient::new(ClientConfig::new("not a url", None, "m")).unwrap_err();
        assert!(e.to_string().contains("not a url"));
    }

    #[test]
    fn unusable_verdicts_are_row_failures_with_their_cause() {
        let body = |content: &str| json!({"choices": [{"message": {"content": content}, "finish_reason": "stop"}]});
        let ok = r#"{"extracted_final_answer":"yes","reasoning":"r","correct":"yes"}"#;
        assert_eq!(verdict(&body(ok)).unwrap().verdict.correct, "yes");
        let e = verdict(&body("{not json")).unwrap_err();
        assert!(matches!(e, Failure::Row { .. }));
        assert!(std::error::Error::source(&e).is_some());
        assert!(parse_verdict(&body("{not json"))
            .unwrap_err()
            .starts_with("judge answer does not fit the schema: "));
        let e = parse_verdict(&json!({"choices": [{"message": {"refusal": "no"}}]})).unwrap_err();
        assert_eq!(e, "judge refused: no");
    }
}
