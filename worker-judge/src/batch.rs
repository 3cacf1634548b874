//! The OpenAI Batch API (`--mode batch`, half the price, answers within 24 h): a shard's rows
//! become one JSONL file (`custom_id` = row index) uploaded with `purpose=batch`, one batch
//! with `completion_window=24h`, polled while the worker keeps the shard's lease, and joined
//! back by `custom_id`. The batch id is kept in Redis per shard before polling starts, so a
//! worker that restarts (or another that takes the shard over) resumes the same batch instead
//! of paying for it twice.

use std::collections::HashMap;
use std::time::Duration;

use common::config::Secret;
use common::failure::Failure;
use common::openai::{Client, ClientOptions};
use reqwest::Method;
use serde_json::{json, Value};

use crate::openai::{judge_client, parse_verdict, ClientError, JudgeCall};

/// The Batch API through the shared client: one request per step (the shard is what is
/// retried), sorted like every judge request.
#[derive(Debug, Clone)]
pub struct BatchClient {
    client: Client,
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
    pub fn new(base: &str, key: Option<Secret>, poll_every: Duration) -> Result<Self, ClientError> {
        Ok(Self {
            client: judge_client(ClientOptions::new(base, key))?,
            poll_every,
        })
    }

    /// Upload the requests and start a batch; returns the batch id.
    pub async fn start(&self, model: &str, prompts: &[(u64, String)]) -> Result<String, Failure> {
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
            .client
            .send(self.client.request(Method::POST, "files").multipart(form))
            .await?;
        let file_id = file["id"].as_str().unwrap_or_default().to_owned();
        let batch = self
            .client
            .send(self.client.request(Method::POST, "batches").json(&json!({
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            })))
            .await?;
        batch["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Failure::transient("batch API created no batch id"))
    }

    pub async fn state(&self, batch_id: &str) -> Result<BatchState, Failure> {
        let b = self
            .client
            .send(
                self.client
                    .request(Method::GET, &format!("batches/{batch_id}")),
            )
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
    ) -> Result<HashMap<u64, Result<JudgeCall, String>>, Failure> {
        let text = self
            .client
            .send_text(
                self.client
                    .request(Method::GET, &format!("files/{output_file}/content")),
            )
            .await?;
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
                parse_verdict(&v["response"]["body"])
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
