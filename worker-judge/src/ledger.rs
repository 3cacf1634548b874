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
//! a cap on that. Batch mode (`--mode batch`) pays per batch, one per shard: there the budget
//! is checked when a shard starts, so batches already submitted can pass it.

use common::failure::Failure;
use common::job::{JobId, JudgeSettings};
use common::keys::JobKeys;
use common::queue::Queue;

/// Job-hash field holding what the judge has paid for this job, in micro-USD.
pub const PAID_FIELD: &str = "judge_paid_micro_usd";

/// One job's live judge spend, checked against the budget the job has now.
#[derive(Clone)]
pub struct Ledger {
    queue: Queue,
    job_key: String,
    batch_paid_key: String,
    /// Whether the shard was leased with a budget at all (no budget: no Redis read per row).
    budgeted: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("job_key", &self.job_key)
            .field("budgeted", &self.budgeted)
            .finish()
    }
}

fn redis_error(e: redis::RedisError) -> Failure {
    Failure::transient("cannot read the judge spend from Redis").with_source(e)
}

/// Adds a batch's price once per batch id, both writes in one script (a crash between two
/// commands would lose the price for good: the resumed worker would find the id recorded).
const RECORD_BATCH: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[2])
end
return 0
"#;

impl Ledger {
    /// `budgeted`: whether the job had a budget when the shard was leased. A budget set or
    /// changed later is read live by [`Ledger::check`].
    pub fn new(queue: Queue, job: &JobId, budgeted: bool) -> Self {
        Self {
            queue,
            job_key: JobKeys::new(job).job(),
            batch_paid_key: JobKeys::new(job).batch_paid(),
            budgeted,
        }
    }

    /// `Err(Paused)` when the budget is spent, so the caller makes no call. The budget is the
    /// job's current one (an operator may have raised it while this shard ran), and the spend
    /// is the larger of what was paid and what the stored verdicts cost (a job from before
    /// the live counter has only the latter).
    pub async fn check(&self) -> Result<(), Failure> {
        if !self.budgeted {
            return Ok(());
        }
        let mut conn = self.queue.conn();
        let (judge, paid, cost): (Option<String>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&self.job_key)
            .arg("judge")
            .arg(PAID_FIELD)
            .arg("judge_cost_micro_usd")
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        let budget = judge
            .and_then(|j| serde_json::from_str::<JudgeSettings>(&j).ok())
            .and_then(|j| j.budget_micro_usd);
        let Some(budget) = budget else {
            return Ok(());
        };
        let spent = paid.unwrap_or(0).max(cost.unwrap_or(0));
        if spent >= budget {
            return Err(Failure::paused(format!(
                "judge budget of ${:.4} reached (paid ${:.4})",
                budget as f64 / 1e6,
                spent as f64 / 1e6
            )));
        }
        Ok(())
    }

    /// Add the price of an answered call. A failure here is logged, not raised: the call is
    /// paid either way, and the next successful record or the shard's committed cost
    /// (`judge_cost_micro_usd`, which `check` also reads) brings the spend back in view.
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
        let r: Result<i64, _> = redis::Script::new(RECORD_BATCH)
            .key(&self.batch_paid_key)
            .key(&self.job_key)
            .arg(batch_id)
            .arg(micro_usd)
            .arg(PAID_FIELD)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot add a judge batch's price to the job's spend");
        }
    }
}
