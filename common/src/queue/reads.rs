//! What the rest of conftag reads from Redis besides shards and rows: a job's counters and
//! queue sizes (for `status`), the worker registry, whether a job still has work for a
//! stage, which shards are unfinished (for `export`), and server probes for the fleet bench.
//!
//! Each read is one round trip (a pipeline) where it can be, so that `status` stays fast with
//! thousands of shards; the views built from them (`common::status`, `common::export`) never
//! see Redis.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::job::{JobId, JobSpec, JudgeSettings};
use crate::keys::{self, JobKeys};
use crate::queue::conn::RedisConn;
use crate::queue::counters::{Counter, CounterValues};
use crate::queue::{parse_json, Queue, QueueError, Stage};

/// A failed shard as its hash records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedShardRecord {
    pub shard: u64,
    pub stage: String,
    pub attempts: u64,
    pub error: String,
}

/// Queued or leased shards per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerStage {
    pub infer: u64,
    pub judge: u64,
}

/// One job as `status` needs it, read in one pipeline (plus one read per sampled failed
/// shard).
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    pub spec: JobSpec,
    pub judge: JudgeSettings,
    pub counters: CounterValues,
    pub cancelled: bool,
    /// Why judging is paused (budget reached), when it is.
    pub judge_paused: Option<String>,
    pub last_error: Option<String>,
    pub queued: PerStage,
    pub leased: PerStage,
    pub failed: u64,
    /// Up to 20 failed shards, sorted by id.
    pub failed_sample: Vec<FailedShardRecord>,
    /// Completions since `events_since_ms`: `(stage, rows, output tokens)`.
    pub recent_completions: Vec<(Stage, u64, u64)>,
}

/// A read of a job hash, its queue and lease sizes, a sample of failed shards and the recent
/// events.
type SnapshotReads = (
    HashMap<String, String>,
    u64,
    u64,
    u64,
    u64,
    u64,
    Vec<u64>,
    Vec<String>,
);

/// The events `complete.lua` appends: `<shard>|<stage>|<rows>|<tokens>`.
fn parse_event(e: &str) -> Option<(Stage, u64, u64)> {
    let parts: Vec<&str> = e.split('|').collect();
    if parts.len() != 4 {
        return None;
    }
    let stage = match parts[1] {
        "infer" => Stage::Infer,
        "judge" => Stage::Judge,
        _ => return None,
    };
    Some((
        stage,
        parts[2].parse().unwrap_or(0),
        parts[3].parse().unwrap_or(0),
    ))
}

impl Queue {
    /// Milliseconds since the epoch by the Redis server's clock (the clock leases use).
    pub async fn server_time_ms(&self) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await?;
        Ok(s * 1000 + us / 1000)
    }

    /// A job's counters, sizes and recent completions (those at or after `events_since_ms`).
    pub async fn job_snapshot(
        &self,
        id: &JobId,
        events_since_ms: u64,
    ) -> Result<JobSnapshot, QueueError> {
        let keys = JobKeys::new(id);
        let mut c = self.conn.clone();
        let (h, qi, qj, li, lj, failed, failed_ids, events): SnapshotReads = redis::pipe()
            .hgetall(keys.job())
            .zcard(keys.queue("infer"))
            .zcard(keys.queue("judge"))
            .zcard(keys.leased("infer"))
            .zcard(keys.leased("judge"))
            .scard(keys.failed())
            .cmd("SRANDMEMBER")
            .arg(keys.failed())
            .arg(20)
            .zrangebyscore(keys.events(), events_since_ms, "+inf")
            .query_async(&mut c)
            .await?;
        let spec: JobSpec = match h.get("spec") {
            Some(s) => parse_json(&keys.job(), s)?,
            None => return Err(QueueError::NoSuchJob(id.clone())),
        };
        let judge: JudgeSettings = parse_json(&keys.job(), h.get("judge").map_or("", |s| s))?;
        // The sampled failed shards' records, in one more round trip.
        let mut pipe = redis::pipe();
        for &shard in &failed_ids {
            pipe.cmd("HMGET")
                .arg(keys.shard(shard))
                .arg("stage")
                .arg("attempts")
                .arg("error");
        }
        let records: Vec<(Option<String>, Option<u64>, Option<String>)> = if failed_ids.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut c).await?
        };
        let mut failed_sample: Vec<FailedShardRecord> = failed_ids
            .into_iter()
            .zip(records)
            .map(|(shard, (stage, attempts, error))| FailedShardRecord {
                shard,
                stage: stage.unwrap_or_default(),
                attempts: attempts.unwrap_or_default(),
                error: error.unwrap_or_default(),
            })
            .collect();
        failed_sample.sort_by_key(|f| f.shard);
        Ok(JobSnapshot {
            spec,
            judge,
            counters: CounterValues::from_fields(&h),
            cancelled: h.get("state").map(String::as_str) == Some("cancelled"),
            judge_paused: h.get("judge_paused").cloned(),
            last_error: h.get("last_error").cloned().filter(|s| !s.is_empty()),
            queued: PerStage {
                infer: qi,
                judge: qj,
            },
            leased: PerStage {
                infer: li,
                judge: lj,
            },
            failed,
            failed_sample,
            recent_completions: events.iter().filter_map(|e| parse_event(e)).collect(),
        })
    }

    /// One counter of a job (0 when absent).
    pub async fn counter(&self, job: &JobId, counter: Counter) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        let v: Option<i64> = c.hget(JobKeys::new(job).job(), counter.name()).await?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// Shards of `stage` leased right now.
    pub async fn leased_count(&self, job: &JobId, stage: Stage) -> Result<u64, QueueError> {
        let mut c = self.conn.clone();
        Ok(c.zcard(JobKeys::new(job).leased(stage.name())).await?)
    }

    /// Whether a job still has shards that will reach `stage` (queued or leased at it or
    /// before), and is not cancelled.
    pub async fn has_pending_work(&self, job: &JobId, stage: Stage) -> Result<bool, QueueError> {
        let keys = JobKeys::new(job);
        let mut c = self.conn.clone();
        let stages: &[&str] = match stage {
            Stage::Infer => &["infer"],
            Stage::Judge => &["infer", "judge"],
        };
        let mut pipe = redis::pipe();
        for s in stages {
            pipe.zcard(keys.queue(s)).zcard(keys.leased(s));
        }
        pipe.hget(keys.job(), "state");
        let v: Vec<redis::Value> = pipe.query_async(&mut c).await?;
        let cancelled = matches!(v.last(), Some(redis::Value::BulkString(s)) if s == b"cancelled");
        let any = v[..v.len() - 1]
            .iter()
            .any(|x| matches!(x, redis::Value::Int(n) if *n > 0));
        Ok(any && !cancelled)
    }

    /// A job's shard count and the ids of its shards that are not done.
    pub async fn unfinished_shards(&self, job: &JobId) -> Result<(u64, Vec<u64>), QueueError> {
        let keys = JobKeys::new(job);
        let mut c = self.conn.clone();
        // Absent only when there is no such job (submit writes it with the spec).
        let total: Option<u64> = c.hget(keys.job(), Counter::ShardsTotal.name()).await?;
        let total = total.ok_or_else(|| QueueError::NoSuchJob(job.clone()))?;
        let mut pipe = redis::pipe();
        for n in 0..total {
            pipe.hget(keys.shard(n), "state");
        }
        let states: Vec<Option<String>> = if total == 0 {
            Vec::new()
        } else {
            pipe.query_async(&mut c).await?
        };
        let missing = states
            .into_iter()
            .enumerate()
            .filter(|(_, s)| s.as_deref() != Some("done"))
            .map(|(n, _)| n as u64)
            .collect();
        Ok((total, missing))
    }

    /// Publish a worker's heartbeat record under its id.
    pub async fn publish_worker<T: Serialize>(&self, id: &str, info: &T) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(info).expect("worker info serializes");
        let _: () = c.hset(keys::workers(), id, json).await?;
        Ok(())
    }

    /// Remove a worker from the registry (clean exit).
    pub async fn forget_worker(&self, id: &str) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c.hdel(keys::workers(), id).await?;
        Ok(())
    }

    /// Every worker record of the registry that parses as `T` (others are skipped: a worker
    /// of a newer version may publish fields this one does not know).
    pub async fn worker_records<T: DeserializeOwned>(&self) -> Result<Vec<T>, QueueError> {
        let mut c = self.conn.clone();
        let all: HashMap<String, String> = c.hgetall(keys::workers()).await?;
        Ok(all
            .values()
            .filter_map(|v| serde_json::from_str(v).ok())
            .collect())
    }

    /// Bytes Redis uses for a job's stored predictions (`MEMORY USAGE`, all samples), for the
    /// memory-per-row figure of the fleet bench; `None` where the server does not say.
    pub async fn predictions_memory(&self, job: &JobId) -> Result<Option<u64>, QueueError> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(JobKeys::new(job).predictions())
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut c)
            .await?)
    }

    /// Milliseconds from a job's submit to the first claim of one of its shards, once it
    /// was claimed (the pick-up delay the fleet bench measures).
    pub async fn pickup_delay_ms(
        &self,
        job: &JobId,
        shard: u64,
    ) -> Result<Option<u64>, QueueError> {
        let keys = JobKeys::new(job);
        let mut c = self.conn.clone();
        let (created, claimed): (Option<u64>, Option<u64>) = redis::pipe()
            .hget(keys.job(), "created_ms")
            .hget(keys.shard(shard), "claimed_ms")
            .query_async(&mut c)
            .await?;
        Ok(match (created, claimed) {
            (Some(a), Some(b)) if b > 0 => Some(b.saturating_sub(a)),
            _ => None,
        })
    }
}

/// One Redis server's own statistics (`INFO`), for the fleet bench (one probe per master of
/// a Cluster: the busiest saturates first).
#[derive(Clone)]
pub struct ServerProbe {
    conn: RedisConn,
}

impl std::fmt::Debug for ServerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProbe").finish_non_exhaustive()
    }
}

/// The `INFO` fields the fleet bench reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerInfo {
    /// CPU seconds the server has used (system + user).
    pub cpu_s: f64,
    pub commands: u64,
    pub clients: u64,
    pub used_memory: u64,
}

impl ServerProbe {
    /// A connection to the one server at `url` (a node's own address, not a Cluster URL).
    pub async fn connect(url: &crate::queue::conn::RedisUrl) -> Result<Self, QueueError> {
        Ok(Self {
            conn: RedisConn::connect(url, std::time::Duration::from_secs(5)).await?,
        })
    }

    pub async fn info(&self) -> Result<ServerInfo, QueueError> {
        let mut c = self.conn.clone();
        let text: String = redis::cmd("INFO").query_async(&mut c).await?;
        let field = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Ok(ServerInfo {
            cpu_s: field("used_cpu_sys") + field("used_cpu_user"),
            commands: field("total_commands_processed") as u64,
            clients: field("connected_clients") as u64,
            used_memory: field("used_memory") as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_by_stage() {
        assert_eq!(
            parse_event("3|infer|32|4096"),
            Some((Stage::Infer, 32, 4096))
        );
        assert_eq!(parse_event("3|judge|32|0"), Some((Stage::Judge, 32, 0)));
        assert_eq!(parse_event("3|judge|32"), None);
        assert_eq!(parse_event("3|other|1|1"), None);
    }
}
