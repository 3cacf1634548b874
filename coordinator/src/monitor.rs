//! `conftag monitor`: serve every job's progress as Prometheus gauges. Workers export what
//! they did themselves (`--metrics-addr` on each); the cluster-wide picture (rows done, shards
//! by state, queue depth, spend, live workers) lives in Redis, so one small process reads the
//! same counters `conftag status` reads and publishes them. Scrape it instead of running
//! `status --json` in a loop.

use std::time::Duration;

use common::queue::{Queue, QueueError};
use common::status::{self, StatusDocument};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Refresh the gauges every `interval` until `shutdown`. A Redis error is logged and retried
/// at the next tick (the gauges keep their last values, `conftag_monitor_up` drops to 0).
pub async fn run(
    queue: &Queue,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), QueueError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match status::document(queue, &[]).await {
            Ok(doc) => {
                publish(&doc);
                metrics::gauge!("conftag_monitor_up").set(1.0);
            }
            Err(e) => {
                warn!(error = %e, "cannot read status; keeping the last values");
                metrics::gauge!("conftag_monitor_up").set(0.0);
            }
        }
    }
}

/// Set the gauges from one status document.
pub fn publish(doc: &StatusDocument) {
    for j in &doc.jobs {
        let labels = [
            ("job", j.id.to_string()),
            ("model", j.model.clone()),
            ("dataset", j.dataset.clone()),
            ("split", j.split.clone()),
        ];
        let with = |extra: (&'static str, &'static str)| {
            let mut l: Vec<(&'static str, String)> = labels.to_vec();
            l.push((extra.0, extra.1.to_owned()));
            l
        };
        metrics::gauge!("conftag_job_rows", &labels).set(j.rows as f64);
        metrics::gauge!("conftag_job_rows_done", &with(("stage", "infer")))
            .set(j.rows_inferred as f64);
        metrics::gauge!("conftag_job_rows_done", &with(("stage", "judge")))
            .set(j.rows_judged as f64);
        metrics::gauge!("conftag_job_row_errors", &with(("stage", "infer")))
            .set(j.rows_infer_errors as f64);
        metrics::gauge!("conftag_job_row_errors", &with(("stage", "judge")))
            .set(j.rows_judge_errors as f64);
        metrics::gauge!("conftag_job_rows_correct", &labels).set(j.rows_correct as f64);
        if let Some(a) = j.accuracy {
            metrics::gauge!("conftag_job_accuracy", &labels).set(a);
        }
        let s = &j.shards;
        for (state, n) in [
            ("queued_infer", s.queued.infer),
            ("queued_judge", s.queued.judge),
            ("leased_infer", s.leased.infer),
            ("leased_judge", s.leased.judge),
            ("done", s.done),
            ("failed", s.failed),
        ] {
            metrics::gauge!("conftag_job_shards", &with(("state", state))).set(n as f64);
        }
        metrics::gauge!("conftag_queue_depth", &with(("stage", "infer")))
            .set(s.queued.infer as f64);
        metrics::gauge!("conftag_queue_depth", &with(("stage", "judge")))
            .set(s.queued.judge as f64);
        metrics::gauge!("conftag_job_tokens_generated", &labels).set(j.tokens_generated as f64);
        metrics::gauge!("conftag_job_tokens_per_second", &labels).set(j.rates.tokens_per_s);
        metrics::gauge!("conftag_job_judge_spend_usd", &labels).set(j.judge.paid_usd);
        metrics::gauge!("conftag_job_judge_paused", &labels).set(if j.judge.paused.is_some() {
            1.0
        } else {
            0.0
        });
    }
    for kind in ["infer", "judge"] {
        for alive in [true, false] {
            let n = doc
                .workers
                .iter()
                .filter(|w| w.info.kind == kind && w.alive == alive)
                .count();
            metrics::gauge!("conftag_workers", "kind" => kind, "alive" => if alive { "true" } else { "false" })
                .set(n as f64);
        }
    }
}
