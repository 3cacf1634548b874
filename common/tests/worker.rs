//! The worker runtime's look-ahead against a real `redis-server`: rows a processor reports
//! finished stop counting, so a shard that waits for its slowest row does not keep the
//! worker from claiming the next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::job::{JobSpec, JudgeSettings};
use common::queue::{Counter, Queue, Stage};
use common::redis_conn::RedisUrl;
use common::status::{self, JobState};
use common::worker::{
    run_worker, Failure, ShardContext, ShardOutput, ShardProcessor, WorkerConfig,
};
use testkit::{submit_synthetic, RedisServer, SyntheticJob};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Even rows finish at once; odd rows wait until the gate opens. Counts the shards it has
/// been given.
struct SlowOddRows {
    shards_entered: AtomicU64,
    gate: watch::Receiver<bool>,
}

impl ShardProcessor for SlowOddRows {
    fn accepts(&self, _: &JobSpec, _: &JudgeSettings) -> bool {
        true
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        self.shards_entered.fetch_add(1, Ordering::SeqCst);
        let l = &ctx.lease;
        let rows = ctx.queue.input_rows(&l.job, l.start, l.end).await?;
        let mut out = ShardOutput::default();
        for r in &rows {
            if r.index % 2 == 1 {
                let mut gate = self.gate.clone();
                gate.wait_for(|open| *open)
                    .await
                    .expect("gate sender alive");
            }
            ctx.row_finished();
            let record = testkit::prediction(r, format!("answer {}", r.index));
            out.rows.push((r.index, record.into()));
        }
        out.counters.insert(Counter::InferRows, rows.len() as i64);
        Ok(out)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_rows_free_look_ahead_for_the_next_shard() {
    let server = RedisServer::start().expect("redis-server");
    let queue = Queue::connect(&RedisUrl::new(server.url())).await.unwrap();
    let job = SyntheticJob {
        rows: 6,
        shard_size: 2,
        max_attempts: 3,
        ..SyntheticJob::default()
    };
    let spec = submit_synthetic(&queue, job).await;

    let (open, gate) = watch::channel(false);
    let processor = Arc::new(SlowOddRows {
        shards_entered: AtomicU64::new(0),
        gate,
    });
    let mut config = WorkerConfig::new(Stage::Infer);
    config.lease = Duration::from_secs(10);
    // Three unfinished rows at most. Counting whole shards, the worker would stop at two
    // shards (4 rows held); counting unfinished rows, each shard's finished even row frees a
    // place, so all three shards (one waiting row each) are held at once.
    config.max_inflight_rows = 3;
    config.exit_when_done = true;
    let worker = tokio::spawn(run_worker(
        queue.clone(),
        processor.clone(),
        config,
        CancellationToken::new(),
    ));

    let deadline = Instant::now() + Duration::from_secs(20);
    while processor.shards_entered.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "the worker held only {} shards while their finished rows left room",
            processor.shards_entered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    open.send(true).unwrap();
    let stats = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("worker exits when done")
        .unwrap()
        .unwrap();
    assert_eq!(stats.rows_done.load(Ordering::Relaxed), 6);
    let job = status::job_status(&queue, &spec.id()).await.unwrap();
    assert_eq!(job.rows_inferred, 6);
    assert_ne!(job.state, JobState::Failed);
}
