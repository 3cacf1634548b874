//! The job's judge spend, kept live in Redis so that a budget stops paid calls row by row.
//!
//! Shard counters (`judge_cost_micro_usd`) are committed only when a shard completes, so a
//! budget checked against them lets every shard in flight on every worker run to its end
//! before judging pauses. The ledger instead adds each call's price to the job's
//! `judge_paid_micro_usd` field the moment the answer arrives, and every row checks that
//! field before it calls the judge: the overshoot is bounded by the calls already in flight
//! (at most `--num-workers` per worker), not by whole shards.
//!
//! `judge_paid_micro_usd` is money actually paid: it also counts calls of attempts that
//! failed later and verdicts replaced by a re-judge, and it is never decreased. The budget is
//! a cap on that.

use common::job::JobId;
use common::keys::JobKeys;
use common::queue::Queue;

use crate::openai::CallError;

/// Job-hash field holding what the judge has paid for this job, in micro-USD.
pub const PAID_FIELD: &str = "judge_paid_micro_usd";

/// One job's live judge spend and its cap.
#[derive(Clone)]
pub struct Ledger {
    queue: Queue,
    job_key: String,
    batch_paid_key: String,
    budget_micro_usd: Option<u64>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("job_key", &self.job_key)
            .field("budget_micro_usd", &self.budget_micro_usd)
            .finish()
    }
}

impl Ledger {
    pub fn new(queue: Queue, job: &JobId, budget_micro_usd: Option<u64>) -> Self {
        Self {
            queue,
            job_key: JobKeys::new(job).job(),
            batch_paid_key: JobKeys::new(job).batch_paid(),
            budget_micro_usd,
        }
    }

    /// What this job's judge calls have cost so far.
    pub async fn paid(&self) -> Result<u64, CallError> {
        let mut conn = self.queue.conn();
        let paid: Option<u64> = redis::cmd("HGET")
            .arg(&self.job_key)
            .arg(PAID_FIELD)
            .query_async(&mut conn)
            .await
            .map_err(|e| CallError::Transient {
                message: format!("cannot read the judge spend from Redis: {e}"),
                retry_after: None,
            })?;
        Ok(paid.unwrap_or(0))
    }

    /// `Err(Paused)` when the budget is spent, so the caller makes no call.
    pub async fn check(&self) -> Result<(), CallError> {
        let Some(budget) = self.budget_micro_usd else {
            return Ok(());
        };
        let paid = self.paid().await?;
        if paid >= budget {
            return Err(CallError::Paused(format!(
                "judge budget of ${:.4} reached (paid ${:.4})",
                budget as f64 / 1e6,
                paid as f64 / 1e6
            )));
        }
        Ok(())
    }

    /// Add the price of an answered call. A failure here is logged, not raised: the call is
    /// paid either way, and its cost still reaches the job with the shard's counters.
    pub async fn record(&self, micro_usd: i64) {
        if micro_usd <= 0 {
            return;
        }
        let mut conn = self.queue.conn();
        let r: Result<i64, _> = redis::cmd("HINCRBY")
            .arg(&self.job_key)
            .arg(PAID_FIELD)
            .arg(micro_usd)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot add a judge call's price to the job's spend");
        }
    }

    /// Add the price of a Batch API batch once, however often its results are downloaded (a
    /// worker that died after the download resumes the same batch).
    pub async fn record_batch(&self, batch_id: &str, micro_usd: i64) {
        let mut conn = self.queue.conn();
        let first: Result<bool, _> = redis::cmd("HSETNX")
            .arg(&self.batch_paid_key)
            .arg(batch_id)
            .arg(micro_usd)
            .query_async(&mut conn)
            .await;
        match first {
            Ok(true) => self.record(micro_usd).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot add a judge batch's price to the job's spend")
            }
        }
    }
}
