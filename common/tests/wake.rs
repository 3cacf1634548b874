//! Idle workers: woken through the wake-up lists at once, polling (with backoff) only as a
//! fallback, so that a lost wake-up never strands a shard. Real `redis-server`, the real
//! worker runtime in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::job::{JobId, JobSpec, JudgeSettings};
use common::keys::{self, JobKeys};
use common::queue::{Counter, Queue, Stage};
use common::records::{PredictionRecord, Provenance, TaggedRecord};
use common::redis_conn::RedisUrl;
use common::worker::{
    run_worker, Failure, ShardContext, ShardOutput, ShardProcessor, WorkerConfig,
};
use testkit::{RedisServer, SyntheticJob};
use tokio_util::sync::CancellationToken;

/// Takes shards of its model, sleeps `work` per shard, writes one small row each.
struct Sleepy {
    model: String,
    work: Duration,
}

impl ShardProcessor for Sleepy {
    fn accepts(&self, spec: &JobSpec, _: &JudgeSettings) -> bool {
        spec.model == self.model
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        tokio::time::sleep(self.work).await;
        let l = &ctx.lease;
        let mut out = ShardOutput::default();
        out.counters.insert(Counter::rows(l.stage), l.rows() as i64);
        out.rows = (l.start..l.end)
            .map(|i| {
                let pred = PredictionRecord {
                    response: format!("r{i}"),
                    question: "q".into(),
                    correct_answer: 1.into(),
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    finish_reason: String::new(),
                    error: None,
                };
                let record = match l.stage {
                    Stage::Infer => pred.into(),
                    Stage::Judge => TaggedRecord::unjudged(
                        &pred,
                        "not judged".into(),
                        Provenance {
                            judged_by: "none".into(),
                            judge_model: "none".into(),
                            judge_prompt_sha: String::new(),
                        },
                    )
                    .into(),
                };
                (i, record)
            })
            .collect();
        Ok(out)
    }
}

/// An idle worker whose polling alone would take far longer than the wake-up bound.
fn slow_polling_worker(i: usize, model: &str) -> WorkerConfig {
    let mut c = WorkerConfig::new(Stage::Infer);
    c.id = format!("idle-{i}");
    c.model = Some(model.into());
    c.lease = Duration::from_secs(30);
    c.idle_poll = Duration::from_secs(4);
    c.idle_poll_max = Duration::from_secs(20);
    c.max_inflight_rows = 1;
    c.drain_grace = Duration::from_secs(1);
    c
}

/// All workers share one `Queue` (as in-process fleets such as `conftag bench queue` do):
/// each must still wait on a connection of its own, or their `BLPOP`s queue behind each
/// other (found by `an_idle_fleet_is_woken_within_a_second_of_a_submit`: a worker of the
/// other model blocking first held up every wake-up for its whole timeout).
fn spawn_workers(
    queue: &Queue,
    configs: Vec<WorkerConfig>,
    work: Duration,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    configs
        .into_iter()
        .map(|cfg| {
            let processor = Arc::new(Sleepy {
                model: cfg.model.clone().unwrap_or_default(),
                work,
            });
            let (q, stop) = (queue.clone(), shutdown.child_token());
            tokio::spawn(async move {
                run_worker(q, processor, cfg, stop).await.expect("worker");
            })
        })
        .collect()
}

/// A job of `shards` one-row shards of `model`.
async fn submit(queue: &Queue, model: &str, split: &str, shards: u64) -> JobId {
    let job = SyntheticJob {
        model,
        split,
        rows: shards,
        shard_size: 1,
        max_attempts: 3,
    };
    testkit::rows::submit_synthetic_id(queue, job).await
}

async fn hget(queue: &Queue, key: &str, field: &str) -> Option<u64> {
    let mut c = queue.conn();
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn leased(queue: &Queue, job: &JobId) -> u64 {
    let mut c = queue.conn();
    redis::cmd("ZCARD")
        .arg(JobKeys::new(job).leased("infer"))
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Milliseconds from the job's creation to the claim of shard `n` (Redis clock), waiting up
/// to `within` for the claim.
async fn pickup_ms(queue: &Queue, job: &JobId, n: u64, within: Duration) -> Option<u64> {
    let keys = JobKeys::new(job);
    let created = hget(queue, &keys.job(), "created_ms").await.unwrap();
    let t = Instant::now();
    loop {
        if let Some(c) = hget(queue, &keys.shard(n), "claimed_ms").await {
            if c > 0 {
                return Some(c - created);
            }
        }
        if t.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_idle_fleet_is_woken_within_a_second_of_a_submit() {
    let server = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(server.url())).await.unwrap();
    let shutdown = CancellationToken::new();
    // Eight workers of model m, each holding one one-row shard at a time, and two of another
    // model that must not take the wake-ups' shards.
    let mut configs: Vec<WorkerConfig> = (0..8).map(|i| slow_polling_worker(i, "m")).collect();
    configs.extend((8..10).map(|i| slow_polling_worker(i, "other")));
    let handles = spawn_workers(&queue, configs, Duration::from_secs(5), &shutdown);
    // Let them find nothing and settle into their idle wait (polls 4 s, 8 s, …).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let job = submit(&queue, "m", "a", 8).await;
    let first = pickup_ms(&queue, &job, 0, Duration::from_secs(3))
        .await
        .expect("claimed");
    assert!(first < 1000, "first shard picked up after {first} ms");
    // The wake-up spreads: every one of the eight idle workers holds a shard within 1 s.
    let t = Instant::now();
    while leased(&queue, &job).await < 8 && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latest = 0;
    for n in 0..8 {
        latest = latest.max(
            pickup_ms(&queue, &job, n, Duration::ZERO)
                .await
                .unwrap_or(u64::MAX),
        );
    }
    assert!(
        latest < 1000,
        "last of 8 shards picked up after {latest} ms"
    );

    shutdown.cancel();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_lost_wake_up_never_strands_a_shard() {
    let server = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(server.url())).await.unwrap();
    let shutdown = CancellationToken::new();
    // The submit's wake-up tokens are lost (deleted before any worker waits), and a shard
    // that becomes ready again after a failed attempt sends none: only polling finds it.
    let job = submit(&queue, "m", "lost", 1).await;
    let mut c = queue.conn();
    let _: () = redis::cmd("DEL")
        .arg(keys::wake("infer", Some("m")))
        .query_async(&mut c)
        .await
        .unwrap();
    let lease = queue
        .claim(&job, Stage::Infer, "other", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut cfg = slow_polling_worker(0, "m");
    cfg.idle_poll = Duration::from_millis(200);
    cfg.idle_poll_max = Duration::from_secs(1);
    let handles = spawn_workers(&queue, vec![cfg], Duration::ZERO, &shutdown);
    // The worker backs off to its longest pause (1 s ± 20%) waiting on an empty list.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    queue
        .fail(&lease, "boom", Duration::ZERO, false)
        .await
        .unwrap();
    let failed_at = Instant::now();
    let keys = JobKeys::new(&job);
    while hget(&queue, &keys.job(), "infer_rows").await != Some(1) {
        assert!(
            failed_at.elapsed() < Duration::from_secs(3),
            "the retried shard was not picked up by the fallback poll"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let len: u64 = redis::cmd("LLEN")
        .arg(keys::wake("infer", Some("m")))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(len <= 64, "the wake-up list is capped ({len})");
    shutdown.cancel();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn idle_workers_back_off_and_a_busy_worker_claims_without_waiting() {
    let server = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(server.url())).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut c = queue.conn();
    // One idle worker polling from 100 ms up to 800 ms: over 4 s, far fewer claim rounds than
    // the 40 a fixed 100 ms poll makes (an idle job exists, so each round claims once).
    let _idle_job = submit(&queue, "m", "idle", 0).await;
    let mut cfg = slow_polling_worker(0, "m");
    cfg.idle_poll = Duration::from_millis(100);
    cfg.idle_poll_max = Duration::from_millis(800);
    let before: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let handles = spawn_workers(&queue, vec![cfg], Duration::from_millis(300), &shutdown);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let evalsha = |s: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rounds = evalsha(&after) - evalsha(&before);
    assert!(
        (3..=15).contains(&rounds),
        "{rounds} claims in 4 s of idling"
    );
    // A job of 3 shards: the one-shard worker runs them back to back, claiming each as the
    // last one completes, not after an idle pause.
    let job = submit(&queue, "m", "busy", 3).await;
    let t = Instant::now();
    while hget(&queue, &JobKeys::new(&job).job(), "infer_rows").await != Some(3) {
        assert!(t.elapsed() < Duration::from_secs(5), "not done in 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "3 × 300 ms took {:?}",
        t.elapsed()
    );
    shutdown.cancel();
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn an_infer_completion_wakes_an_idle_judge() {
    let server = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(server.url())).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut cfg = WorkerConfig::new(Stage::Judge);
    cfg.id = "judge".into();
    cfg.idle_poll = Duration::from_secs(4);
    cfg.idle_poll_max = Duration::from_secs(20);
    cfg.drain_grace = Duration::from_secs(1);
    let processor = Arc::new(Sleepy {
        model: "m".into(),
        work: Duration::ZERO,
    });
    let (q, stop) = (queue.clone(), shutdown.child_token());
    let judge = tokio::spawn(async move { run_worker(q, processor, cfg, stop).await.unwrap() });
    let job = submit(&queue, "m", "j", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lease = queue
        .claim(&job, Stage::Infer, "infer", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut counters = std::collections::BTreeMap::new();
    counters.insert(Counter::InferRows, 1);
    let rows = vec![(
        0,
        r#"{"response":"r","question":"q","correct_answer":1}"#.to_string(),
    )];
    queue.complete(&lease, &counters, &rows).await.unwrap();
    let done = Instant::now();
    while hget(&queue, &JobKeys::new(&job).job(), "judge_rows").await != Some(1) {
        assert!(
            done.elapsed() < Duration::from_secs(1),
            "the idle judge did not take the shard within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    judge.await.unwrap();
}
