//! The OpenAI Batch API (`--mode batch`, half the price, answers within 24 h): a shard's rows
//! become one JSONL file (`custom_id` = row index) uploaded with `purpose=batch`, one batch
//! with `completion_window=24h`, polled while the worker keeps the shard's lease, and joined
//! back by `custom_id`. The batch id is kept in Redis per shard before polling starts, so a
//! worker that restarts (or another that takes the shard over) resumes the same batch instead
//! of paying for it twice.

use std::collections::HashMap;
use std::time::Duration;

use common::config::Secret;
use serde_json::{json, Value};

use crate::openai::{parse_verdict, CallError, JudgeCall};

#[derive(Debug, Clone)]
pub struct BatchClient {
    http: reqwest::Client,
    base: String,
    key: Option<Secret>,
    pub poll_every: Duration,
}

/// Where a batch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchState {
    Running,
    Completed {
        output_file: Option<String>,
    },
    /// failed, expired or cancelled: the shard is retried with a new batch.
    Ended(String),
}

impl BatchClient {
    pub fn new(base: &str, key: Option<Secret>, poll_every: Duration) -> Result<Self, CallError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| CallError::Fatal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            poll_every,
        })
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => r.bearer_auth(k.expose()),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let resp = self
            .auth(r)
            .send()
            .await
            .map_err(|e| CallError::Transient {
                message: format!(
                    "batch API request failed ({})",
                    if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection"
                    }
                ),
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => serde_json::from_str(&text).map_err(|e| CallError::Transient {
                message: format!("batch API answer is not JSON: {e}"),
                retry_after: None,
            }),
            401 | 403 => Err(CallError::Fatal(format!(
                "the batch API refused the credentials (HTTP {status}): check OPENAI_API_KEY"
            ))),
            429 if text.contains("insufficient_quota") => Err(CallError::Fatal(
                "the judge API account has no quota left (insufficient_quota)".into(),
            )),
            _ => Err(CallError::Transient {
                message: format!("batch API error (HTTP {status})"),
                retry_after: None,
            }),
        }
    }

    /// Upload the requests and start a batch; returns the batch id.
    pub async fn start(&self, model: &str, prompts: &[(u64, String)]) -> Result<String, CallError> {
        let mut jsonl = String::new();
        for (index, prompt) in prompts {
            let line = json!({
                "custom_id": index.to_string(),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "response_format": crate::prompt::response_format(),
                }
            });
            jsonl.push_str(&line.to_string());
            jsonl.push('\n');
        }
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part(
                "file",
                reqwest::multipart::Part::bytes(jsonl.into_bytes()).file_name("requests.jsonl"),
            );
        let file = self
            .send(
                self.http
                    .post(format!("{}/files", self.base))
                    .multipart(form),
            )
            .await?;
        let file_id = file["id"].as_str().unwrap_or_default().to_owned();
        let batch = self
            .send(
                self.http
                    .post(format!("{}/batches", self.base))
                    .json(&json!({
                        "input_file_id": file_id,
                        "endpoint": "/v1/chat/completions",
                        "completion_window": "24h",
                    })),
            )
            .await?;
        batch["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CallError::Transient {
                message: "batch API created no batch id".into(),
                retry_after: None,
            })
    }

    pub async fn state(&self, batch_id: &str) -> Result<BatchState, CallError> {
        let b = self
            .send(self.http.get(format!("{}/batches/{batch_id}", self.base)))
            .await?;
        Ok(match b["status"].as_str().unwrap_or("") {
            "completed" => BatchState::Completed {
                output_file: b["output_file_id"].as_str().map(str::to_owned),
            },
            s @ ("failed" | "expired" | "cancelled" | "cancelling") => {
                BatchState::Ended(format!("batch {batch_id} {s}"))
            }
            _ => BatchState::Running,
        })
    }

    /// Results by row index: a verdict, or the row's error.
    pub async fn results(
        &self,
        output_file: &str,
    ) -> Result<HashMap<u64, Result<JudgeCall, String>>, CallError> {
        let resp = self
            .auth(
                self.http
                    .get(format!("{}/files/{output_file}/content", self.base)),
            )
            .send()
            .await
            .map_err(|_| CallError::Transient {
                message: "cannot download batch results".into(),
                retry_after: None,
            })?;
        let text = resp.text().await.unwrap_or_default();
        let mut out = HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(index) = v["custom_id"].as_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let status = v["response"]["status_code"].as_u64().unwrap_or(0);
            let result = if status == 200 {
                parse_verdict(&v["response"]["body"]).map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "batch request failed (HTTP {status}): {}",
                    v["error"]["message"].as_str().unwrap_or("no detail")
                ))
            };
            out.insert(index, result);
        }
        Ok(out)
    }
}
