//! The shard queue on Redis: the client side of the Lua scripts in `common/lua/`.
//!
//! Life cycle of a shard (see the project's design contract):
//! `queued --claim--> leased(token) --start--> leased, started --complete--> next stage
//! queued | done`, with lapsed leases reclaimed on the next claim, errors retried after a
//! backoff until `max_attempts`, then `failed`; operators requeue. Every transition is one
//! script, so a crash between two commands can never split it, and every transition that
//! writes results checks the lease token (fencing), so a worker that lost its lease cannot
//! write.
//!
//! Attempts are spent by failures and by lapsed leases of *started* shards only. A worker
//! leases a little ahead of its engine (look-ahead); when it dies (SIGKILL, preemption, OOM)
//! the shards it held but had not started go back to the queue without spending an attempt
//! (counted as `<stage>_leases_lapsed_unstarted`), while the ones it was running spend one,
//! so a shard that kills every worker that runs it still ends `failed`.

use std::time::Duration;

pub mod conn;
pub mod counters;
mod judge_store;
mod reads;

pub use counters::{Counter, CounterDeltas, CounterValues};
pub use judge_store::JudgeSpend;
pub use reads::{FailedShardRecord, JobSnapshot, PerStage, ServerInfo, ServerProbe};

use redis::AsyncCommands;
use serde::de::DeserializeOwned;

use crate::dataset::InputRow;
use crate::job::{JobId, JobSpec, JudgeSettings};
use crate::keys::{self, JobKeys};
use crate::records::{PredictionRecord, TaggedRecord};
use conn::{ConnectError, RedisConn, RedisUrl};

/// The two stages a shard goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Infer,
    Judge,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Infer => "infer",
            Stage::Judge => "judge",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A shard leased to this worker. The token is the fencing token every later transition of
/// this lease must present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardLease {
    pub job: JobId,
    pub shard: u64,
    pub stage: Stage,
    pub token: String,
    /// First row index (inclusive).
    pub start: u64,
    /// Last row index (exclusive).
    pub end: u64,
    /// Attempts already spent on this stage (0 on the first try).
    pub attempts: u32,
}

impl ShardLease {
    pub fn rows(&self) -> u64 {
        self.end - self.start
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job {0} does not exist")]
    NoSuchJob(JobId),
    #[error("job {job} already exists with other settings ({differences}); cancel it, or submit with other settings under another model name")]
    Conflict { job: JobId, differences: String },
    #[error("job {job}: only {staged} of {expected} rows reached Redis; submit again")]
    RowsMissing {
        job: JobId,
        staged: u64,
        expected: u64,
    },
    #[error("corrupt record at {key}: {detail}")]
    Corrupt { key: String, detail: String },
}

impl QueueError {
    /// Connection-level problems that a retry may cure (Redis restarting, network blip).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Redis(e) => conn::is_unreachable(e),
            QueueError::Connect(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Result of submitting a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    Created { shards: u64 },
    AlreadyExists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    Renewed,
    /// The shard was reclaimed or requeued: stop working on it.
    Lost,
    /// The job was cancelled: stop working on it.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// Marked (or already marked) started: a lapse of this lease now spends an attempt.
    Started,
    /// The token no longer holds the lease: stop working on the shard.
    Stale,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompleteOutcome {
    Stored,
    /// The token no longer holds the lease: nothing was written.
    Stale,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again after the backoff delay.
    Retrying,
    /// Attempts used up (or permanent error): the shard is `failed`.
    Failed,
    Stale,
    Cancelled,
}

/// Which shards an operator requeues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueSelection {
    Failed,
    /// Leased shards whose lease lapsed (with `force`: every leased shard).
    Stuck,
    /// Every shard (with target `judge`: re-judge a finished job).
    All,
    Shards(Vec<u64>),
}

#[derive(Debug, Clone)]
pub struct RequeueRequest {
    pub selection: RequeueSelection,
    /// Stage to run again; `None` = the stage each shard is in.
    pub target: Option<Stage>,
    /// Also take back live leases and done shards.
    pub force: bool,
    /// New judge settings for the job (re-judging with another judge).
    pub judge: Option<JudgeSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequeueOutcome {
    pub requeued: u64,
    pub skipped: Vec<u64>,
}

struct Scripts {
    submit: redis::Script,
    claim: redis::Script,
    start: redis::Script,
    renew: redis::Script,
    complete: redis::Script,
    fail: redis::Script,
    release: redis::Script,
    requeue: redis::Script,
    cancel: redis::Script,
    batch_paid: redis::Script,
}

macro_rules! script {
    ($file:literal) => {
        redis::Script::new(concat!(
            include_str!("../../lua/lib.lua"),
            "\n",
            include_str!(concat!("../../lua/", $file))
        ))
    };
}

impl Scripts {
    fn load() -> Self {
        Self {
            submit: script!("submit.lua"),
            claim: script!("claim.lua"),
            start: script!("start.lua"),
            renew: script!("renew.lua"),
            complete: script!("complete.lua"),
            fail: script!("fail.lua"),
            release: script!("release.lua"),
            requeue: script!("requeue.lua"),
            cancel: script!("cancel.lua"),
            batch_paid: script!("batch_paid.lua"),
        }
    }
}

/// A handle on the queue; cheap to clone (one multiplexed connection underneath, and a second
/// one, opened on first use, for the blocking wait of an idle worker).
#[derive(Clone)]
pub struct Queue {
    conn: RedisConn,
    scripts: std::sync::Arc<Scripts>,
    url: RedisUrl,
    blocking: std::sync::Arc<tokio::sync::OnceCell<RedisConn>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("url", &self.url).finish()
    }
}

/// Wake-up tokens kept at most per list: tokens pushed while no worker waits pile up only this
/// far (each costs a later idle worker one early claim round).
const WAKE_LIST_CAP: isize = 64;
/// Tokens a submit pushes; each worker that finds work after waiting pushes two more (see
/// `worker.rs`), so the wake-up spreads through an idle fleet in a few round trips.
pub const WAKE_ON_SUBMIT: usize = 2;
/// The longest blocking wait: below the connections' 30 s response timeout.
const WAKE_WAIT_MAX: Duration = Duration::from_secs(25);

/// Rows are staged in batches of this many per pipeline.
const STAGE_BATCH: usize = 500;
/// Staged rows of a submit that never completed disappear after a day.
const STAGE_TTL_SECS: i64 = 86_400;

impl Queue {
    pub async fn connect(url: &RedisUrl) -> Result<Self, QueueError> {
        let conn = RedisConn::connect(url, Duration::from_secs(5)).await?;
        let queue = Self {
            conn,
            scripts: std::sync::Arc::new(Scripts::load()),
            url: url.clone(),
            blocking: std::sync::Arc::default(),
        };
        // Fail now, with the URL, rather than at the first command.
        let mut c = queue.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map_err(|e| {
                let detail = e.to_string();
                let url = url.redacted();
                if conn::is_unreachable(&e) {
                    ConnectError::Unreachable { url, detail }
                } else {
                    ConnectError::Rejected { url, detail }
                }
            })?;
        Ok(queue)
    }

    /// [`connect`](Self::connect) for workers: while Redis is unreachable (down, restarting,
    /// cut off), wait and try again — with backoff up to `max_wait` between tries, logging
    /// each failure — instead of exiting, so a worker started during an outage joins once
    /// Redis is back. A bad URL or a refused password still fails at once.
    pub async fn connect_waiting(url: &RedisUrl, max_wait: Duration) -> Result<Self, QueueError> {
        let mut wait = Duration::from_millis(200).min(max_wait);
        loop {
            match Self::connect(url).await {
                Ok(q) => return Ok(q),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, retry_in = ?wait, "Redis unreachable; waiting for it");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(max_wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A handle on the same command connection with a wait connection of its own (opened on
    /// first use). Each worker needs its own: `BLPOP`s sent on one connection run one after
    /// another, so workers sharing one would wait behind each other's timeouts.
    pub fn with_own_wait_connection(&self) -> Self {
        Self {
            blocking: std::sync::Arc::default(),
            ..self.clone()
        }
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The raw command connection, for tests that inspect or damage the stored state
    /// directly. Only with the `testing` feature, which the workspace enables for its tests
    /// alone (dev-dependencies): production code reaches Redis through this module's methods.
    #[cfg(feature = "testing")]
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// `Some(false)` when the server runs without AOF (results would not survive a restart),
    /// `None` when the server does not say (managed Redis often disables CONFIG).
    pub async fn aof_enabled(&self) -> Option<bool> {
        let mut c = self.conn.clone();
        let v: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut c)
            .await;
        v.ok()
            .and_then(|v| v.get(1).map(|s| s.eq_ignore_ascii_case("yes")))
    }

    /// Create a job with its rows. Idempotent: the same spec again is `AlreadyExists`; the
    /// same id with other settings is a `Conflict` and writes nothing.
    pub async fn submit(
        &self,
        spec: &JobSpec,
        judge: &JudgeSettings,
        rows: &[InputRow],
        shard_size: u64,
        max_attempts: u32,
    ) -> Result<SubmitOutcome, QueueError> {
        let id = spec.id();
        let keys = JobKeys::new(&id);
        let mut c = self.conn.clone();
        if let Some((existing, _)) = self.job_spec(&id).await? {
            if &existing == spec {
                let _: () = c.sadd(keys::jobs_index(), id.as_str()).await?;
                return Ok(SubmitOutcome::AlreadyExists);
            }
            return Err(QueueError::Conflict {
                job: id,
                differences: existing.differences(spec).join("; "),
            });
        }
        for chunk in rows.chunks(STAGE_BATCH) {
            let mut pipe = redis::pipe();
            let items: Vec<(u64, String)> = chunk
                .iter()
                .map(|r| (r.index, serde_json::to_string(r).expect("row serializes")))
                .collect();
            pipe.hset_multiple(keys.rows(), &items).ignore();
            pipe.expire(keys.rows(), STAGE_TTL_SECS).ignore();
            let _: () = pipe.query_async(&mut c).await?;
        }
        let judge_json = serde_json::to_string(judge).expect("judge serializes");
        let (status, detail): (String, String) = self
            .scripts
            .submit
            .key(keys.job())
            .arg(spec.canonical_json())
            .arg(judge_json)
            .arg(rows.len() as u64)
            .arg(shard_size.max(1))
            .arg(max_attempts.max(1))
            .invoke_async(&mut c)
            .await?;
        let outcome = match status.as_str() {
            "created" => SubmitOutcome::Created {
                shards: detail.parse().unwrap_or_default(),
            },
            "exists" => SubmitOutcome::AlreadyExists,
            "conflict" => {
                let existing: JobSpec = parse_json(&keys.job(), &detail)?;
                return Err(QueueError::Conflict {
                    job: id,
                    differences: existing.differences(spec).join("; "),
                });
            }
            _ => {
                return Err(QueueError::RowsMissing {
                    job: id,
                    staged: detail.parse().unwrap_or_default(),
                    expected: rows.len() as u64,
                })
            }
        };
        let _: () = c.sadd(keys::jobs_index(), id.as_str()).await?;
        if let SubmitOutcome::Created { shards } = outcome {
            let n = WAKE_ON_SUBMIT.min(shards as usize);
            self.wake(Stage::Infer, Some(&spec.model), n).await;
        }
        Ok(outcome)
    }

    /// Tell idle workers of `stage` (infer: of the model `topic`) that shards are ready: push
    /// `n` tokens on its wake-up list, each wakes one waiting worker. Best effort: a token that
    /// is lost costs an idle poll, never a shard, so a failure is only logged.
    pub async fn wake(&self, stage: Stage, topic: Option<&str>, n: usize) {
        if n == 0 {
            return;
        }
        let key = keys::wake(stage.name(), topic);
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("LPUSH").arg(&key).arg(vec!["1"; n]).ignore();
        pipe.cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(WAKE_LIST_CAP - 1)
            .ignore();
        if let Err(e) = pipe.query_async::<()>(&mut c).await {
            tracing::debug!(error = %e, "wake-up not sent; idle workers will poll");
        }
    }

    /// Wait up to `timeout` for a wake-up token of `stage` (infer: of the model `topic`):
    /// `Ok(true)` when one came, `Ok(false)` when the time ran out. The wait (`BLPOP`) runs on
    /// a connection of its own, so the worker's renewals and heartbeats are never queued
    /// behind it; clones share it, so one waiter at a time per handle (see
    /// [`with_own_wait_connection`](Self::with_own_wait_connection)).
    pub async fn wait_for_work(
        &self,
        stage: Stage,
        topic: Option<&str>,
        timeout: Duration,
    ) -> Result<bool, QueueError> {
        let conn = self
            .blocking
            .get_or_try_init(|| RedisConn::connect(&self.url, Duration::from_secs(5)))
            .await?;
        let mut c = conn.clone();
        let secs = timeout.clamp(Duration::from_millis(10), WAKE_WAIT_MAX);
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(keys::wake(stage.name(), topic))
            .arg(format!("{:.3}", secs.as_secs_f64()))
            .query_async(&mut c)
            .await?;
        Ok(got.is_some())
    }

    /// All job ids, sorted.
    pub async fn job_ids(&self) -> Result<Vec<JobId>, QueueError> {
        let mut c = self.conn.clone();
        let ids: Vec<String> = c.smembers(keys::jobs_index()).await?;
        let mut ids: Vec<JobId> = ids.iter().filter_map(|s| JobId::parse(s).ok()).collect();
        ids.sort();
        Ok(ids)
    }

    /// The spec and judge settings of a job, if it exists.
    pub async fn job_spec(
        &self,
        id: &JobId,
    ) -> Result<Option<(JobSpec, JudgeSettings)>, QueueError> {
        let keys = JobKeys::new(id);
        let mut c = self.conn.clone();
        let (spec, judge): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(keys.job())
            .arg("spec")
            .arg("judge")
            .query_async(&mut c)
            .await?;
        match (spec, judge) {
            (Some(s), Some(j)) => Ok(Some((
                parse_json(&keys.job(), &s)?,
                parse_json(&keys.job(), &j)?,
            ))),
            _ => Ok(None),
        }
    }

    /// Lease the next ready shard of `stage` in `job`, if any.
    pub async fn claim(
        &self,
        job: &JobId,
        stage: Stage,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<ShardLease>, QueueError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut c = self.conn.clone();
        let got: Option<(u64, u64, u64, u32)> = self
            .scripts
            .claim
            .key(JobKeys::new(job).job())
            .arg(stage.name())
            .arg(&token)
            .arg(worker)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(got.map(|(shard, start, end, attempts)| ShardLease {
            job: job.clone(),
            shard,
            stage,
            token,
            start,
            end,
            attempts,
        }))
    }

    /// Mark the shard of `lease` started: its holder hands the first rows to its engine. A
    /// lease that lapses before this spends no attempt (the shard waited in a look-ahead
    /// that died with its worker); one that lapses after spends one. Idempotent.
    pub async fn start(&self, lease: &ShardLease) -> Result<StartOutcome, QueueError> {
        let mut c = self.conn.clone();
        let r: i64 = self
            .scripts
            .start
            .key(JobKeys::new(&lease.job).job())
            .arg(lease.shard)
            .arg(&lease.token)
            .invoke_async(&mut c)
            .await?;
        Ok(match r {
            1 => StartOutcome::Started,
            -1 => StartOutcome::Cancelled,
            _ => StartOutcome::Stale,
        })
    }

    pub async fn renew(
        &self,
        lease: &ShardLease,
        length: Duration,
    ) -> Result<RenewOutcome, QueueError> {
        let mut c = self.conn.clone();
        let r: i64 = self
            .scripts
            .renew
            .key(JobKeys::new(&lease.job).job())
            .arg(lease.shard)
            .arg(&lease.token)
            .arg(length.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(match r {
            1 => RenewOutcome::Renewed,
            -1 => RenewOutcome::Cancelled,
            _ => RenewOutcome::Lost,
        })
    }

    /// Store a shard's result rows and counters and move it to its next stage, atomically.
    /// Each counter must be one a shard of the lease's stage adds ([`Counter::shard_stage`]).
    pub async fn complete(
        &self,
        lease: &ShardLease,
        counters: &CounterDeltas,
        rows: &[(u64, String)],
    ) -> Result<CompleteOutcome, QueueError> {
        debug_assert!(counters
            .keys()
            .all(|k| k.shard_stage() == Some(lease.stage)));
        let mut c = self.conn.clone();
        let mut inv = self.scripts.complete.key(JobKeys::new(&lease.job).job());
        inv.arg(lease.shard)
            .arg(&lease.token)
            .arg(lease.stage.name())
            .arg(serde_json::to_string(counters).expect("counters serialize"));
        for (index, record) in rows {
            inv.arg(*index).arg(record);
        }
        let r: i64 = inv.invoke_async(&mut c).await?;
        if r == 1 && lease.stage == Stage::Infer {
            // The shard is now queued for judging.
            self.wake(Stage::Judge, None, 1).await;
        }
        Ok(match r {
            1 => CompleteOutcome::Stored,
            -1 => CompleteOutcome::Cancelled,
            _ => CompleteOutcome::Stale,
        })
    }

    /// Report a failed attempt; the shard is retried after `retry_in` unless attempts are
    /// used up or the error is `permanent`.
    pub async fn fail(
        &self,
        lease: &ShardLease,
        error: &str,
        retry_in: Duration,
        permanent: bool,
    ) -> Result<FailOutcome, QueueError> {
        let mut c = self.conn.clone();
        let r: String = self
            .scripts
            .fail
            .key(JobKeys::new(&lease.job).job())
            .arg(lease.shard)
            .arg(&lease.token)
            .arg(truncate(error, 2000))
            .arg(retry_in.as_millis() as u64)
            .arg(if permanent { "1" } else { "0" })
            .invoke_async(&mut c)
            .await?;
        Ok(match r.as_str() {
            "queued" => FailOutcome::Retrying,
            "failed" => FailOutcome::Failed,
            "cancelled" => FailOutcome::Cancelled,
            _ => FailOutcome::Stale,
        })
    }

    /// Give a shard back without spending an attempt (graceful drain).
    pub async fn release(&self, lease: &ShardLease) -> Result<bool, QueueError> {
        let mut c = self.conn.clone();
        let r: i64 = self
            .scripts
            .release
            .key(JobKeys::new(&lease.job).job())
            .arg(lease.shard)
            .arg(&lease.token)
            .invoke_async(&mut c)
            .await?;
        Ok(r == 1)
    }

    pub async fn requeue(
        &self,
        job: &JobId,
        req: &RequeueRequest,
    ) -> Result<RequeueOutcome, QueueError> {
        let Some((spec, _)) = self.job_spec(job).await? else {
            return Err(QueueError::NoSuchJob(job.clone()));
        };
        let mut c = self.conn.clone();
        let (selection, ids): (&str, &[u64]) = match &req.selection {
            RequeueSelection::Failed => ("failed", &[]),
            RequeueSelection::Stuck => ("stuck", &[]),
            RequeueSelection::All => ("all", &[]),
            RequeueSelection::Shards(ids) => ("ids", ids),
        };
        let mut inv = self.scripts.requeue.key(JobKeys::new(job).job());
        inv.arg(selection)
            .arg(req.target.map(Stage::name).unwrap_or(""))
            .arg(if req.force { "1" } else { "0" })
            .arg(
                req.judge
                    .as_ref()
                    .map(|j| serde_json::to_string(j).expect("judge serializes"))
                    .unwrap_or_default(),
            );
        for id in ids {
            inv.arg(*id);
        }
        let out: Vec<u64> = inv.invoke_async(&mut c).await?;
        let requeued = out.first().copied().unwrap_or(0) as usize;
        if req.target != Some(Stage::Judge) {
            self.wake(
                Stage::Infer,
                Some(&spec.model),
                requeued.min(WAKE_ON_SUBMIT),
            )
            .await;
        }
        self.wake(Stage::Judge, None, requeued.min(WAKE_ON_SUBMIT))
            .await;
        Ok(RequeueOutcome {
            requeued: out.first().copied().unwrap_or(0),
            skipped: out.into_iter().skip(1).collect(),
        })
    }

    /// Why judging of a job is paused (its judge budget was reached), if it is.
    pub async fn judge_paused(&self, job: &JobId) -> Result<Option<String>, QueueError> {
        let mut c = self.conn.clone();
        Ok(c.hget(JobKeys::new(job).job(), "judge_paused").await?)
    }

    /// Pause judging of a job (its shards stay queued) until its judge settings change.
    pub async fn pause_judging(&self, job: &JobId, reason: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c
            .hset(JobKeys::new(job).job(), "judge_paused", reason)
            .await?;
        Ok(())
    }

    /// Cancel a job; returns false when it was already cancelled.
    pub async fn cancel(&self, job: &JobId) -> Result<bool, QueueError> {
        if self.job_spec(job).await?.is_none() {
            return Err(QueueError::NoSuchJob(job.clone()));
        }
        let mut c = self.conn.clone();
        let r: i64 = self
            .scripts
            .cancel
            .key(JobKeys::new(job).job())
            .invoke_async(&mut c)
            .await?;
        Ok(r == 1)
    }

    /// Input rows `[start, end)` of a job.
    pub async fn input_rows(
        &self,
        job: &JobId,
        start: u64,
        end: u64,
    ) -> Result<Vec<InputRow>, QueueError> {
        let key = JobKeys::new(job).rows();
        let found = self.hash_range::<InputRow>(&key, start, end).await?;
        found
            .into_iter()
            .zip(start..end)
            .map(|(r, i)| {
                r.ok_or_else(|| QueueError::Corrupt {
                    key: key.clone(),
                    detail: format!("row {i} is missing"),
                })
            })
            .collect()
    }

    /// Predictions of rows `[start, end)` (None where a row has none yet).
    pub async fn predictions(
        &self,
        job: &JobId,
        start: u64,
        end: u64,
    ) -> Result<Vec<Option<PredictionRecord>>, QueueError> {
        self.hash_range(&JobKeys::new(job).predictions(), start, end)
            .await
    }

    /// Tagged rows `[start, end)` (None where a row has none yet).
    pub async fn tagged(
        &self,
        job: &JobId,
        start: u64,
        end: u64,
    ) -> Result<Vec<Option<TaggedRecord>>, QueueError> {
        self.hash_range(&JobKeys::new(job).tagged(), start, end)
            .await
    }

    async fn hash_range<T: DeserializeOwned>(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Option<T>>, QueueError> {
        self.hash_range_raw(key, start, end)
            .await?
            .into_iter()
            .map(|v| v.map(|s| parse_json(key, &s)).transpose())
            .collect()
    }

    /// Fields `[start, end)` of a hash as stored, read 1,000 fields per HMGET.
    pub(crate) async fn hash_range_raw(
        &self,
        key: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Option<String>>, QueueError> {
        let mut c = self.conn.clone();
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut from = start;
        while from < end {
            let to = (from + 1000).min(end);
            let fields: Vec<u64> = (from..to).collect();
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(key)
                .arg(&fields)
                .query_async(&mut c)
                .await?;
            out.extend(values);
            from = to;
        }
        Ok(out)
    }

    /// Delete a job and all its keys (used by tests and `conftag cancel --purge`).
    pub async fn purge(&self, job: &JobId) -> Result<(), QueueError> {
        let keys = JobKeys::new(job);
        let mut c = self.conn.clone();
        let total: Option<u64> = c.hget(keys.job(), Counter::ShardsTotal.name()).await?;
        for n in 0..total.unwrap_or(0) {
            let _: () = c.del(&[keys.shard(n), keys.batch(n)]).await?;
        }
        for k in keys.all_fixed() {
            let _: () = c.del(k).await?;
        }
        let _: () = c.srem(keys::jobs_index(), job.as_str()).await?;
        Ok(())
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(key: &str, s: &str) -> Result<T, QueueError> {
    serde_json::from_str(s).map_err(|e| QueueError::Corrupt {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
