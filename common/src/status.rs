//! Job and worker status from counters only (the job hash, queue sizes, the recent-events
//! window and the failed set), so that status stays fast with millions of rows.
//!
//! The JSON document (`conftag status --json`) is versioned by [`STATUS_SCHEMA`]; fields are
//! only ever added within a version.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobSpec, JudgeSettings};
use crate::keys::{self, JobKeys};
use crate::queue::{parse_json, Queue, QueueError};

pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageCounts {
    pub infer: u64,
    pub judge: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardCounts {
    pub total: u64,
    pub queued: StageCounts,
    pub leased: StageCounts,
    pub done: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedShard {
    pub shard: u64,
    pub stage: String,
    pub attempts: u64,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JudgeTotals {
    pub model: String,
    pub mode: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What the verdicts now stored cost (committed with their shards).
    pub cost_usd: f64,
    /// What the judge has been paid for this job in all: also calls of attempts that failed
    /// later and verdicts a re-judge replaced. The budget caps this.
    #[serde(default)]
    pub paid_usd: f64,
    pub llm_calls: u64,
    pub rules_decided: u64,
    pub rules_llm_agree: u64,
    pub rules_llm_disagree: u64,
    /// Judge API calls that failed (429, 5xx, timeouts, unusable answers) and were retried
    /// before the row got its verdict, counted in the attempt that stored the row.
    #[serde(default)]
    pub call_retries: u64,
    /// The judge budget, when one is set.
    pub budget_usd: Option<f64>,
    /// Why judging is paused (budget reached), when it is.
    pub paused: Option<String>,
}

/// How often a stage's shard attempts ended without a result.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageFailures {
    /// Attempts a worker reported as failed (and that spent an attempt).
    pub attempts_failed: u64,
    /// Leases that lapsed and were reclaimed: the holder died, hung or lost Redis for longer
    /// than the lease. Those of started shards spent an attempt.
    pub leases_expired: u64,
    /// Of `leases_expired`, those whose shard had not started: it waited in the dead worker's
    /// look-ahead and went back to the queue without spending an attempt (what a preempted
    /// worker costs beyond the shards it was running).
    #[serde(default)]
    pub leases_lapsed_unstarted: u64,
}

/// Failed attempts and lapsed leases per stage, so that every failure a run rode out shows
/// (a retried shard leaves no other trace once it is done).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failures {
    pub infer: StageFailures,
    pub judge: StageFailures,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rates {
    /// Rows inferred per second over the last minute.
    pub infer_rows_per_s: f64,
    /// Rows judged per second over the last minute.
    pub judge_rows_per_s: f64,
    /// Output tokens generated per second over the last minute.
    pub tokens_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: JobId,
    pub model: String,
    pub dataset: String,
    /// Confidence-token domain of the dataset spec (`MATH` for `<CN_MATH>`).
    #[serde(default)]
    pub domain: String,
    /// Digest of the dataset spec, for jobs of a spec file (not for built-ins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
    pub split: String,
    pub state: JobState,
    pub rows: u64,
    pub shards: ShardCounts,
    pub rows_inferred: u64,
    pub rows_infer_errors: u64,
    pub rows_judged: u64,
    pub rows_correct: u64,
    pub rows_judge_errors: u64,
    /// correct / judged, when anything was judged.
    pub accuracy: Option<f64>,
    pub prompt_tokens: u64,
    pub tokens_generated: u64,
    pub judge: JudgeTotals,
    pub rates: Rates,
    /// Seconds until every row is judged at the last minute's rate.
    pub eta_s: Option<f64>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub failures: Failures,
    /// Up to 20 failed shards with their last error.
    pub failed_shards: Vec<FailedShard>,
}

/// What a worker publishes on every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    /// `infer` or `judge`.
    pub kind: String,
    pub model: Option<String>,
    /// `running`, `draining`, or `stopped: <reason>`.
    pub state: String,
    /// `job/shard` of every shard held.
    pub shards: Vec<String>,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    pub rows_done: u64,
    /// `cpu`, or the GPU's name as `nvidia-smi` reports it (infer workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Output tokens this worker has generated (per row as rows finish, also in attempts that
    /// failed later).
    #[serde(default)]
    pub tokens_done: u64,
    /// Output tokens per second over the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// The decode ceiling of this worker's GPU for its model and batch (`common::roofline`),
    /// when the GPU is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling_tokens_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Heartbeat within the last 30 s.
    pub alive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusDocument {
    pub schema: u32,
    pub jobs: Vec<JobStatus>,
    pub workers: Vec<WorkerStatus>,
}

/// Milliseconds since the epoch by the Redis server's clock (the clock leases use).
pub async fn server_time_ms(queue: &Queue) -> Result<u64, QueueError> {
    let mut c = queue.conn();
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
    Ok(s * 1000 + us / 1000)
}

fn counter(h: &HashMap<String, String>, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as u64
}

/// What one pipelined read of a job returns: job hash, queue and lease sizes, a sample of
/// failed shards, recent events.
type StatusReads = (
    HashMap<String, String>,
    u64,
    u64,
    u64,
    u64,
    Vec<u64>,
    Vec<String>,
);

pub async fn job_status(queue: &Queue, id: &JobId) -> Result<JobStatus, QueueError> {
    let keys = JobKeys::new(id);
    let mut c = queue.conn();
    let now = server_time_ms(queue).await?;
    let (h, qi, qj, li, lj, failed_ids, events): StatusReads = redis::pipe()
        .hgetall(keys.job())
        .zcard(keys.queue("infer"))
        .zcard(keys.queue("judge"))
        .zcard(keys.leased("infer"))
        .zcard(keys.leased("judge"))
        .cmd("SRANDMEMBER")
        .arg(keys.failed())
        .arg(20)
        .zrangebyscore(keys.events(), now.saturating_sub(60_000), "+inf")
        .query_async(&mut c)
        .await?;
    let spec: JobSpec = match h.get("spec") {
        Some(s) => parse_json(&keys.job(), s)?,
        None => return Err(QueueError::NoSuchJob(id.clone())),
    };
    let judge: JudgeSettings = parse_json(&keys.job(), h.get("judge").map_or("", |s| s))?;
    let failed_count: u64 = c.scard(keys.failed()).await?;
    let mut failed_shards = Vec::new();
    for shard in failed_ids {
        let f: (Option<String>, Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(keys.shard(shard))
            .arg("stage")
            .arg("attempts")
            .arg("error")
            .query_async(&mut c)
            .await?;
        failed_shards.push(FailedShard {
            shard,
            stage: f.0.unwrap_or_default(),
            attempts: f.1.unwrap_or_default(),
            error: f.2.unwrap_or_default(),
        });
    }
    failed_shards.sort_by_key(|f| f.shard);

    let shards = ShardCounts {
        total: counter(&h, "shards_total"),
        queued: StageCounts {
            infer: qi,
            judge: qj,
        },
        leased: StageCounts {
            infer: li,
            judge: lj,
        },
        done: counter(&h, "shards_done"),
        failed: failed_count,
    };
    let rows_judged = counter(&h, "judge_rows");
    let rows_correct = counter(&h, "judge_correct");
    let rows_judge_errors = counter(&h, "judge_errors");
    let decided = rows_judged.saturating_sub(rows_judge_errors);

    let (mut infer_rows, mut judge_rows, mut tokens) = (0u64, 0u64, 0u64);
    for e in &events {
        let parts: Vec<&str> = e.split('|').collect();
        if parts.len() == 4 {
            let rows: u64 = parts[2].parse().unwrap_or(0);
            match parts[1] {
                "infer" => {
                    infer_rows += rows;
                    tokens += parts[3].parse::<u64>().unwrap_or(0);
                }
                _ => judge_rows += rows,
            }
        }
    }
    let rates = Rates {
        infer_rows_per_s: infer_rows as f64 / 60.0,
        judge_rows_per_s: judge_rows as f64 / 60.0,
        tokens_per_s: tokens as f64 / 60.0,
    };
    let remaining = spec.rows.saturating_sub(rows_judged);
    let eta_s = if remaining == 0 {
        Some(0.0)
    } else if rates.judge_rows_per_s > 0.0 {
        Some(remaining as f64 / rates.judge_rows_per_s)
    } else {
        None
    };

    let cancelled = h.get("state").map(String::as_str) == Some("cancelled");
    let state = if cancelled {
        JobState::Cancelled
    } else if shards.total > 0 && shards.done == shards.total {
        JobState::Done
    } else if shards.failed > 0
        && shards.queued.infer + shards.queued.judge + shards.leased.infer + shards.leased.judge
            == 0
    {
        JobState::Failed
    } else if shards.leased.infer + shards.leased.judge > 0
        || counter(&h, "infer_rows") > 0
        || shards.failed > 0
    {
        JobState::Running
    } else {
        JobState::Queued
    };

    Ok(JobStatus {
        id: id.clone(),
        model: spec.model.clone(),
        dataset: spec.dataset.clone(),
        domain: spec
            .dataset_spec()
            .map(|d| d.domain.clone())
            .unwrap_or_default(),
        spec_digest: spec.spec_digest.clone(),
        split: spec.split.clone(),
        state,
        rows: spec.rows,
        shards,
        rows_inferred: counter(&h, "infer_rows"),
        rows_infer_errors: counter(&h, "infer_row_errors"),
        rows_judged,
        rows_correct,
        rows_judge_errors,
        accuracy: (decided > 0).then(|| rows_correct as f64 / decided as f64),
        prompt_tokens: counter(&h, "infer_prompt_tokens"),
        tokens_generated: counter(&h, "infer_completion_tokens"),
        judge: JudgeTotals {
            model: judge.model,
            mode: judge.mode.name().to_owned(),
            prompt_tokens: counter(&h, "judge_prompt_tokens"),
            completion_tokens: counter(&h, "judge_completion_tokens"),
            cost_usd: counter(&h, "judge_cost_micro_usd") as f64 / 1e6,
            // A job from before the live counter has only the committed cost.
            paid_usd: counter(&h, "judge_paid_micro_usd").max(counter(&h, "judge_cost_micro_usd"))
                as f64
                / 1e6,
            llm_calls: counter(&h, "judge_llm_calls"),
            rules_decided: counter(&h, "judge_rules_decided"),
            rules_llm_agree: counter(&h, "judge_rules_llm_agree"),
            rules_llm_disagree: counter(&h, "judge_rules_llm_disagree"),
            call_retries: counter(&h, "judge_call_retries"),
            budget_usd: judge.budget_micro_usd.map(|b| b as f64 / 1e6),
            paused: h.get("judge_paused").cloned(),
        },
        rates,
        eta_s,
        last_error: h.get("last_error").cloned().filter(|s| !s.is_empty()),
        failures: Failures {
            infer: StageFailures {
                attempts_failed: counter(&h, "infer_attempts_failed"),
                leases_expired: counter(&h, "infer_leases_expired"),
                leases_lapsed_unstarted: counter(&h, "infer_leases_lapsed_unstarted"),
            },
            judge: StageFailures {
                attempts_failed: counter(&h, "judge_attempts_failed"),
                leases_expired: counter(&h, "judge_leases_expired"),
                leases_lapsed_unstarted: counter(&h, "judge_leases_lapsed_unstarted"),
            },
        },
        failed_shards,
    })
}

/// Publish a worker's heartbeat.
pub async fn publish_worker(queue: &Queue, info: &WorkerInfo) -> Result<(), QueueError> {
    let mut c = queue.conn();
    let _: () = c
        .hset(
            keys::workers(),
            &info.id,
            serde_json::to_string(info).expect("worker info serializes"),
        )
        .await?;
    Ok(())
}

/// Remove a worker from the registry (clean exit).
pub async fn forget_worker(queue: &Queue, id: &str) -> Result<(), QueueError> {
    let mut c = queue.conn();
    let _: () = c.hdel(keys::workers(), id).await?;
    Ok(())
}

pub async fn workers(queue: &Queue) -> Result<Vec<WorkerStatus>, QueueError> {
    let mut c = queue.conn();
    let now = server_time_ms(queue).await?;
    let all: HashMap<String, String> = c.hgetall(keys::workers()).await?;
    let mut out: Vec<WorkerStatus> = all
        .values()
        .filter_map(|v| serde_json::from_str::<WorkerInfo>(v).ok())
        .map(|info| WorkerStatus {
            alive: now.saturating_sub(info.heartbeat_ms) < 30_000,
            info,
        })
        .collect();
    out.sort_by(|a, b| a.info.id.cmp(&b.info.id));
    Ok(out)
}

/// The whole status document, for the given jobs (all when empty).
pub async fn document(queue: &Queue, jobs: &[JobId]) -> Result<StatusDocument, QueueError> {
    let ids = if jobs.is_empty() {
        queue.job_ids().await?
    } else {
        jobs.to_vec()
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        out.push(job_status(queue, id).await?);
    }
    Ok(StatusDocument {
        schema: STATUS_SCHEMA,
        jobs: out,
        workers: workers(queue).await?,
    })
}
