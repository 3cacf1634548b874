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
use common::job::JobId;
use common::queue::Queue;

/// One job's live judge spend, checked against the budget the job has now.
#[derive(Clone)]
pub struct Ledger {
    queue: Queue,
    job: JobId,
    /// Whether the shard was leased with a budget at all (no budget: no Redis read per row).
    budgeted: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("job", &self.job)
            .field("budgeted", &self.budgeted)
            .finish()
    }
}

impl Ledger {
    /// `budgeted`: whether the job had a budget when the shard was leased. A budget set or
    /// changed later is read live by [`Ledger::check`].
    pub fn new(queue: Queue, job: &JobId, budgeted: bool) -> Self {
        Self {
            queue,
            job: job.clone(),
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
        let spend = self.queue.judge_spend(&self.job).await.map_err(|e| {
            Failure::transient("cannot read the judge spend from Redis").with_source(e)
        })?;
        let Some(budget) = spend.budget_micro_usd else {
            return Ok(());
        };
        let spent = spend.spent_micro_usd();
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
        if let Err(e) = self.queue.add_judge_paid(&self.job, micro_usd).await {
            tracing::warn!(error = %e, "cannot add a judge call's price to the job's spend");
        }
    }

    /// Add the price of a Batch API batch once, however often its results are downloaded (a
    /// worker that died after the download resumes the same batch).
    pub async fn record_batch(&self, batch_id: &str, micro_usd: i64) {
        if let Err(e) = self
            .queue
            .add_batch_paid_once(&self.job, batch_id, micro_usd)
            .await
        {
            tracing::warn!(error = %e, "cannot add a judge batch's price to the job's spend");
        }
    }
}
