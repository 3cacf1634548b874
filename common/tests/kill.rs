//! Worker processes killed with SIGKILL mid-shard: their shards come back after the lease
//! lapses, are completed once by another worker, and a late completion with the dead
//! worker's token is refused. Also: SIGTERM drains, releasing shards without an attempt.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::job::{rows_digest, JobId, JobSpec, JudgeSettings, PromptMode};
use common::keys::JobKeys;
use common::queue::{CompleteOutcome, Counter, CounterDeltas, Queue, ShardLease, Stage};
use common::redis_conn::RedisUrl;
use common::status::{self, JobState};
use common::testutil::{synthetic_rows, RedisServer};

fn worker(url: &str, stage: &str, id: &str, lease_ms: u64, sleep_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_conftag-test-worker"))
        .args([url, stage, id, &lease_ms.to_string(), &sleep_ms.to_string()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

async fn submit(queue: &Queue, n: u64, shard: u64) -> JobId {
    let rows = synthetic_rows(n);
    let spec = JobSpec {
        model: "m".into(),
        dataset: "boolq".into(),
        split: "test".into(),
        source: "kill".into(),
        rows: n,
        max_tokens: 1,
        prompt_mode: PromptMode::Raw,
        rows_digest: rows_digest(&rows),
        spec_digest: None,
        dataset_spec: None,
    };
    queue
        .submit(&spec, &JudgeSettings::default(), &rows, shard, 5)
        .await
        .unwrap();
    spec.id()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_shard_is_reclaimed_completed_once_and_its_token_fenced() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let job = submit(&queue, 12, 4).await;
    let keys = JobKeys::new(&job);

    // A slow worker takes shards; kill it while it holds one.
    let mut doomed = worker(&redis.url(), "infer", "doomed", 800, 60_000);
    let q = queue.clone();
    let j = job.clone();
    wait_until("a lease", 20, || {
        let q = q.clone();
        let j = j.clone();
        async move {
            status::job_status(&q, &j)
                .await
                .unwrap()
                .shards
                .leased
                .infer
                > 0
        }
    })
    .await;
    let mut c = queue.conn();
    let (shard, token): (u64, String) = {
        let leased: Vec<u64> = redis::cmd("ZRANGE")
            .arg(keys.leased("infer"))
            .arg(0)
            .arg(0)
            .query_async(&mut c)
            .await
            .unwrap();
        let token: String = redis::cmd("HGET")
            .arg(keys.shard(leased[0]))
            .arg("token")
            .query_async(&mut c)
            .await
            .unwrap();
        (leased[0], token)
    };
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();

    // A healthy worker finishes everything, including the dead worker's shard.
    let mut healthy = worker(&redis.url(), "infer", "healthy", 5_000, 10);
    let q = queue.clone();
    let j = job.clone();
    wait_until("inference done", 30, || {
        let q = q.clone();
        let j = j.clone();
        async move { status::job_status(&q, &j).await.unwrap().rows_inferred == 12 }
    })
    .await;
    assert!(healthy.wait().unwrap().success());

    // The dead worker's late completion is refused.
    let stale = ShardLease {
        job: job.clone(),
        shard,
        stage: Stage::Infer,
        token,
        start: shard * 4,
        end: shard * 4 + 4,
        attempts: 0,
    };
    let counters: CounterDeltas = [(Counter::InferRows, 4)].into();
    let fake_rows: Vec<(u64, String)> = (stale.start..stale.end)
        .map(|i| (i, "\"stale\"".to_owned()))
        .collect();
    assert_eq!(
        queue.complete(&stale, &counters, &fake_rows).await.unwrap(),
        CompleteOutcome::Stale
    );

    let st = status::job_status(&queue, &job).await.unwrap();
    assert_eq!(st.rows_inferred, 12, "every row once");
    let preds = queue.predictions(&job, 0, 12).await.unwrap();
    for p in preds {
        assert!(p.unwrap().response.ends_with("by healthy"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_releases_without_spending_attempts() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let job = submit(&queue, 8, 4).await;
    let child = worker(&redis.url(), "infer", "drainer", 10_000, 60_000);
    let q = queue.clone();
    let j = job.clone();
    wait_until("a lease", 20, || {
        let q = q.clone();
        let j = j.clone();
        async move {
            status::job_status(&q, &j)
                .await
                .unwrap()
                .shards
                .leased
                .infer
                > 0
        }
    })
    .await;
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "drained cleanly");
    let st = status::job_status(&queue, &job).await.unwrap();
    assert_eq!(st.shards.leased.infer, 0, "nothing left leased");
    assert_eq!(st.shards.queued.infer, 2, "released back to the queue");
    let mut c = queue.conn();
    for n in 0..2 {
        let attempts: u64 = redis::cmd("HGET")
            .arg(JobKeys::new(&job).shard(n))
            .arg("attempts")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(attempts, 0, "a drain spends no attempt");
    }
    // And the job completes with another worker, through both stages.
    let mut a = worker(&redis.url(), "infer", "w2", 5_000, 0);
    assert!(a.wait().unwrap().success());
    let mut b = worker(&redis.url(), "judge", "j1", 5_000, 0);
    assert!(b.wait().unwrap().success());
    let st = status::job_status(&queue, &job).await.unwrap();
    assert_eq!(
        (st.state, st.rows_judged, st.rows_correct),
        (JobState::Done, 8, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let job = submit(&queue, 4, 4).await;
    let child = Command::new(env!("CARGO_BIN_EXE_conftag-test-worker"))
        .args([redis.url().as_str(), "infer", "stubborn", "10000", "60000"])
        .env("RUST_LOG", "warn")
        .env("CONFTAG_TEST_DRAIN_MS", "60000")
        .spawn()
        .unwrap();
    let q = queue.clone();
    let j = job.clone();
    wait_until("a lease", 20, || {
        let q = q.clone();
        let j = j.clone();
        async move {
            status::job_status(&q, &j)
                .await
                .unwrap()
                .shards
                .leased
                .infer
                > 0
        }
    })
    .await;
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "second signal: exit now");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "did not wait for the 60 s drain"
    );
}
