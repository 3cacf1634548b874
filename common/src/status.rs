//! Job and worker status from counters only (the job hash, queue sizes, the recent-events
//! window and the failed set), so that status stays fast with millions of rows.
//!
//! The JSON document (`conftag status --json`) is versioned by [`STATUS_SCHEMA`]; fields are
//! only ever added within a version.

use serde::{Deserialize, Serialize};

use crate::job::JobId;
use crate::queue::{Counter, JobSnapshot, Queue, QueueError, Stage};

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

/// The window the rates are taken over.
const RATE_WINDOW_MS: u64 = 60_000;

pub async fn job_status(queue: &Queue, id: &JobId) -> Result<JobStatus, QueueError> {
    let now = queue.server_time_ms().await?;
    let snap = queue
        .job_snapshot(id, now.saturating_sub(RATE_WINDOW_MS))
        .await?;
    Ok(job_status_of(id, snap))
}

/// The status of a job from what [`Queue::job_snapshot`] read.
pub fn job_status_of(id: &JobId, snap: JobSnapshot) -> JobStatus {
    let c = &snap.counters;
    let shards = ShardCounts {
        total: c.get(Counter::ShardsTotal),
        queued: StageCounts {
            infer: snap.queued.infer,
            judge: snap.queued.judge,
        },
        leased: StageCounts {
            infer: snap.leased.infer,
            judge: snap.leased.judge,
        },
        done: c.get(Counter::ShardsDone),
        failed: snap.failed,
    };
    let failed_shards = snap
        .failed_sample
        .into_iter()
        .map(|f| FailedShard {
            shard: f.shard,
            stage: f.stage,
            attempts: f.attempts,
            error: f.error,
        })
        .collect();
    let rows_judged = c.get(Counter::JudgeRows);
    let rows_correct = c.get(Counter::JudgeCorrect);
    let rows_judge_errors = c.get(Counter::JudgeErrors);
    let decided = rows_judged.saturating_sub(rows_judge_errors);

    let (mut infer_rows, mut judge_rows, mut tokens) = (0u64, 0u64, 0u64);
    for &(stage, rows, toks) in &snap.recent_completions {
        match stage {
            Stage::Infer => {
                infer_rows += rows;
                tokens += toks;
            }
            Stage::Judge => judge_rows += rows,
        }
    }
    let window_s = RATE_WINDOW_MS as f64 / 1000.0;
    let rates = Rates {
        infer_rows_per_s: infer_rows as f64 / window_s,
        judge_rows_per_s: judge_rows as f64 / window_s,
        tokens_per_s: tokens as f64 / window_s,
    };
    let spec = snap.spec;
    let judge = snap.judge;
    let remaining = spec.rows.saturating_sub(rows_judged);
    let eta_s = if remaining == 0 {
        Some(0.0)
    } else if rates.judge_rows_per_s > 0.0 {
        Some(remaining as f64 / rates.judge_rows_per_s)
    } else {
        None
    };

    let state = if snap.cancelled {
        JobState::Cancelled
    } else if shards.total > 0 && shards.done == shards.total {
        JobState::Done
    } else if shards.failed > 0
        && shards.queued.infer + shards.queued.judge + shards.leased.infer + shards.leased.judge
            == 0
    {
        JobState::Failed
    } else if shards.leased.infer + shards.leased.judge > 0
        || c.get(Counter::InferRows) > 0
        || shards.failed > 0
    {
        JobState::Running
    } else {
        JobState::Queued
    };

    JobStatus {
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
        rows_inferred: c.get(Counter::InferRows),
        rows_infer_errors: c.get(Counter::InferRowErrors),
        rows_judged,
        rows_correct,
        rows_judge_errors,
        accuracy: (decided > 0).then(|| rows_correct as f64 / decided as f64),
        prompt_tokens: c.get(Counter::InferPromptTokens),
        tokens_generated: c.get(Counter::InferCompletionTokens),
        judge: JudgeTotals {
            model: judge.model,
            mode: judge.mode.name().to_owned(),
            prompt_tokens: c.get(Counter::JudgePromptTokens),
            completion_tokens: c.get(Counter::JudgeCompletionTokens),
            cost_usd: c.get(Counter::JudgeCostMicroUsd) as f64 / 1e6,
            // A job from before the live counter has only the committed cost.
            paid_usd: c
                .get(Counter::JudgePaidMicroUsd)
                .max(c.get(Counter::JudgeCostMicroUsd)) as f64
                / 1e6,
            llm_calls: c.get(Counter::JudgeLlmCalls),
            rules_decided: c.get(Counter::JudgeRulesDecided),
            rules_llm_agree: c.get(Counter::JudgeRulesLlmAgree),
            rules_llm_disagree: c.get(Counter::JudgeRulesLlmDisagree),
            call_retries: c.get(Counter::JudgeCallRetries),
            budget_usd: judge.budget_micro_usd.map(|b| b as f64 / 1e6),
            paused: snap.judge_paused,
        },
        rates,
        eta_s,
        last_error: snap.last_error,
        failures: Failures {
            infer: StageFailures {
                attempts_failed: c.get(Counter::InferAttemptsFailed),
                leases_expired: c.get(Counter::InferLeasesExpired),
                leases_lapsed_unstarted: c.get(Counter::InferLeasesLapsedUnstarted),
            },
            judge: StageFailures {
                attempts_failed: c.get(Counter::JudgeAttemptsFailed),
                leases_expired: c.get(Counter::JudgeLeasesExpired),
                leases_lapsed_unstarted: c.get(Counter::JudgeLeasesLapsedUnstarted),
            },
        },
        failed_shards,
    }
}

/// Every registered worker, by id; alive means a heartbeat within the last 30 s.
pub async fn workers(queue: &Queue) -> Result<Vec<WorkerStatus>, QueueError> {
    let now = queue.server_time_ms().await?;
    let mut out: Vec<WorkerStatus> = queue
        .worker_records::<WorkerInfo>()
        .await?
        .into_iter()
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
