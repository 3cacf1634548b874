//! `conftag bench`: measure the queue itself, with processors that do no work.
//!
//! - `queue`: shards/s and rows/s through claim → complete(infer) → claim → complete(judge)
//!   with W infer and W judge workers in this process, each row writing a small record;
//! - `status`: latency of `conftag status` on a job with many rows and shards.
//!
//! Benchmarks write to the Redis they are given: point them at a scratch server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::job::{JobSpec, JudgeSettings, PromptMode};
use common::queue::{Counter, Queue, Stage};
use common::records::{JudgeResponse, PredictionRecord, Provenance, ShardRecord, TaggedRecord};
use common::status;
use common::synthetic::synthetic_rows;
use common::worker::{
    run_worker, Failure, ShardContext, ShardOutput, ShardProcessor, WorkerConfig,
};
use tokio_util::sync::CancellationToken;

use crate::error::CommandError;

/// A processor that returns a fixed small record per row, instantly.
#[derive(Debug)]
struct NoopProcessor {
    model: String,
}

impl ShardProcessor for NoopProcessor {
    fn accepts(&self, spec: &JobSpec, _: &JudgeSettings) -> bool {
        spec.model == self.model
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        let l = &ctx.lease;
        let pred = PredictionRecord {
            response: "yes".into(),
            question: "q".into(),
            correct_answer: serde_json::Value::Bool(true),
            prompt_tokens: 1,
            completion_tokens: 1,
            finish_reason: "stop".into(),
            error: None,
        };
        let record = match l.stage {
            Stage::Infer => ShardRecord::from(pred),
            Stage::Judge => ShardRecord::from(TaggedRecord::tag(
                common::dataset_spec::builtin("boolq").expect("built in"),
                &pred,
                JudgeResponse {
                    correct_answer: serde_json::Value::Bool(true),
                    model_answer: "yes".into(),
                    reasoning: "noop".into(),
                    correct: "yes".into(),
                },
                Provenance {
                    judged_by: "noop".into(),
                    judge_model: "noop".into(),
                    judge_prompt_sha: String::new(),
                },
            )),
        };
        let mut out = ShardOutput::default();
        out.counters.insert(Counter::rows(l.stage), l.rows() as i64);
        out.rows = (l.start..l.end).map(|i| (i, record.clone())).collect();
        Ok(out)
    }
}

async fn submit_bench_job(
    queue: &Queue,
    model: &str,
    rows_total: u64,
    shard_size: u64,
) -> Result<common::JobId, CommandError> {
    let r = synthetic_rows(rows_total);
    let spec = JobSpec::for_rows(
        model,
        common::dataset_spec::builtin("boolq").expect("built in"),
        "bench",
        "bench",
        &r,
        1,
        PromptMode::Raw,
    );
    queue
        .submit(&spec, &JudgeSettings::default(), &r, shard_size, 3)
        .await?;
    Ok(spec.id())
}

/// One queue-throughput run; returns (seconds, shards, rows).
pub async fn queue_run(
    queue: &Queue,
    workers: usize,
    shards: u64,
    rows_per_shard: u64,
) -> Result<f64, CommandError> {
    let model = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let job = submit_bench_job(queue, &model, shards * rows_per_shard, rows_per_shard).await?;
    let processor = Arc::new(NoopProcessor {
        model: model.clone(),
    });
    let start = Instant::now();
    let mut handles = Vec::new();
    for stage in [Stage::Infer, Stage::Judge] {
        for w in 0..workers {
            let mut cfg = WorkerConfig::new(stage);
            cfg.id = format!("bench-{stage}-{w}");
            cfg.exit_when_done = true;
            cfg.idle_poll = Duration::from_millis(5);
            cfg.max_inflight_rows = rows_per_shard;
            cfg.lease = Duration::from_secs(60);
            handles.push(tokio::spawn(run_worker(
                queue.clone(),
                processor.clone(),
                cfg,
                CancellationToken::new(),
            )));
        }
    }
    for h in handles {
        h.await
            .map_err(|e| CommandError::Usage(format!("bench worker panicked: {e}")))?
            .map_err(|e| CommandError::Usage(e.to_string()))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let st = status::job_status(queue, &job).await?;
    if st.rows_judged != shards * rows_per_shard {
        return Err(CommandError::Usage(format!(
            "bench job ended with {} of {} rows judged",
            st.rows_judged,
            shards * rows_per_shard
        )));
    }
    queue.purge(&job).await?;
    Ok(secs)
}

pub async fn queue_bench(
    queue: &Queue,
    workers: &[usize],
    shards: u64,
    rows_per_shard: u64,
) -> Result<(), CommandError> {
    println!("| workers per stage | shards | rows/shard | seconds | shards/s | rows/s |");
    println!("|---|---|---|---|---|---|");
    for &w in workers {
        let secs = queue_run(queue, w, shards, rows_per_shard).await?;
        println!(
            "| {w} | {shards} | {rows_per_shard} | {secs:.2} | {:.0} | {:.0} |",
            shards as f64 / secs,
            (shards * rows_per_shard) as f64 / secs
        );
    }
    Ok(())
}

pub async fn status_bench(
    queue: &Queue,
    rows_total: u64,
    shard_size: u64,
    repeats: usize,
) -> Result<(), CommandError> {
    let model = format!("bench-status-{}", uuid::Uuid::new_v4().simple());
    let t = Instant::now();
    let job = submit_bench_job(queue, &model, rows_total, shard_size).await?;
    let submit_secs = t.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let doc = status::document(queue, std::slice::from_ref(&job)).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(doc.jobs[0].rows, rows_total);
    }
    times.sort_by(f64::total_cmp);
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!("| rows | shards | submit s | status p50 ms | status p95 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {rows_total} | {} | {submit_secs:.1} | {:.2} | {:.2} | {:.2} |",
        rows_total.div_ceil(shard_size),
        p(0.5),
        p(0.95),
        times[times.len() - 1]
    );
    queue.purge(&job).await?;
    Ok(())
}
