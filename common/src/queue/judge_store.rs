//! What the judge keeps in Redis beside the shard transitions, so that no verdict and no
//! batch is paid for twice and a budget stops paid calls row by row:
//!
//! - the **verdict cache** (`…:jcache`): a verdict paid for in an attempt of a shard that then
//!   failed on other rows; the retried shard reuses it instead of calling again;
//! - the **shard's batch id** (`…:batch:<n>`, judge `batch` mode): a restarted worker resumes
//!   the batch instead of submitting (and paying for) a second one;
//! - the **live spend** (`judge_paid_micro_usd` on the job hash, and `…:batchpaid` so a batch
//!   is added once): the judge's ledger checks it against the job's budget before each call.

use redis::AsyncCommands;

use crate::job::{JobId, JudgeSettings};
use crate::keys::JobKeys;
use crate::queue::counters::Counter;
use crate::queue::{Queue, QueueError};

/// A job's judge budget and what was spent against it, as the ledger reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JudgeSpend {
    /// The budget the job has now (an operator may change it while shards run).
    pub budget_micro_usd: Option<u64>,
    /// What was paid in all ([`Counter::JudgePaidMicroUsd`]).
    pub paid_micro_usd: u64,
    /// What the stored verdicts cost ([`Counter::JudgeCostMicroUsd`]); a job from before the
    /// live counter has only this.
    pub committed_micro_usd: u64,
}

impl JudgeSpend {
    /// The spend the budget caps: the larger of the two.
    pub fn spent_micro_usd(&self) -> u64 {
        self.paid_micro_usd.max(self.committed_micro_usd)
    }
}

impl Queue {
    /// The job's judge budget and spend, in one read.
    pub async fn judge_spend(&self, job: &JobId) -> Result<JudgeSpend, QueueError> {
        let mut c = self.conn.clone();
        let (judge, paid, cost): (Option<String>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(JobKeys::new(job).job())
            .arg("judge")
            .arg(Counter::JudgePaidMicroUsd.name())
            .arg(Counter::JudgeCostMicroUsd.name())
            .query_async(&mut c)
            .await?;
        Ok(JudgeSpend {
            budget_micro_usd: judge
                .and_then(|j| serde_json::from_str::<JudgeSettings>(&j).ok())
                .and_then(|j| j.budget_micro_usd),
            paid_micro_usd: paid.unwrap_or(0).max(0) as u64,
            committed_micro_usd: cost.unwrap_or(0).max(0) as u64,
        })
    }

    /// Add the price of an answered judge call to the job's live spend.
    pub async fn add_judge_paid(&self, job: &JobId, micro_usd: i64) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: i64 = c
            .hincr(
                JobKeys::new(job).job(),
                Counter::JudgePaidMicroUsd.name(),
                micro_usd,
            )
            .await?;
        Ok(())
    }

    /// Add the price of a Batch API batch to the job's live spend once per batch id, however
    /// often its results are downloaded (both writes in one script: a crash between them
    /// would lose the price for good, as the resumed worker finds the id recorded).
    pub async fn add_batch_paid_once(
        &self,
        job: &JobId,
        batch_id: &str,
        micro_usd: i64,
    ) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: i64 = self
            .scripts
            .batch_paid
            .key(JobKeys::new(job).job())
            .arg(batch_id)
            .arg(micro_usd)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Cached verdict entries of rows `[start, end)` (None where a row has none).
    pub async fn cached_verdicts(
        &self,
        job: &JobId,
        start: u64,
        end: u64,
    ) -> Result<Vec<Option<String>>, QueueError> {
        // Raw entries: a cache entry that does not parse is ignored by the judge, not an error.
        self.hash_range_raw(&JobKeys::new(job).judge_cache(), start, end)
            .await
    }

    /// Keep a paid verdict of row `index` for a retry of its shard.
    pub async fn cache_verdict(
        &self,
        job: &JobId,
        index: u64,
        entry: &str,
    ) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c
            .hset(JobKeys::new(job).judge_cache(), index, entry)
            .await?;
        Ok(())
    }

    /// The Batch API batch a judge submitted for a shard, if one is recorded.
    pub async fn shard_batch(&self, job: &JobId, shard: u64) -> Result<Option<String>, QueueError> {
        let mut c = self.conn.clone();
        Ok(c.get(JobKeys::new(job).batch(shard)).await?)
    }

    /// Record the batch submitted for a shard (before waiting on it).
    pub async fn set_shard_batch(
        &self,
        job: &JobId,
        shard: u64,
        batch_id: &str,
    ) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c.set(JobKeys::new(job).batch(shard), batch_id).await?;
        Ok(())
    }

    /// Forget a shard's batch (it ended without results: the next attempt submits anew).
    pub async fn clear_shard_batch(&self, job: &JobId, shard: u64) -> Result<(), QueueError> {
        let mut c = self.conn.clone();
        let _: () = c.del(JobKeys::new(job).batch(shard)).await?;
        Ok(())
    }
}
