//! Worker processes killed with SIGKILL mid-shard: their shards come back after the lease
//! lapses, are completed once by another worker, and a late completion with the dead
//! worker's token is refused. Also: SIGTERM drains, releasing shards without an attempt.
//!
//! The workers are this test binary re-executed in the role of `testkit::test_worker` (a
//! worker with a trivial processor): cargo builds only a package's own binaries for its
//! tests, and a test-only binary does not belong in the production crate. Hence
//! `harness = false`: `main` dispatches between the two roles and runs the tests one after
//! another.

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use common::job::JobId;
use common::keys::JobKeys;
use common::queue::{CompleteOutcome, Counter, CounterDeltas, Queue, ShardLease, Stage};
use common::redis_conn::RedisUrl;
use common::status::{self, JobState};
use testkit::{test_worker, wait, RedisServer, SyntheticJob};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(test_worker::ROLE) {
        return test_worker::main(&args[2..]);
    }
    let tests: [(&str, fn()); 3] = [
        (
            "a_killed_workers_shard_is_reclaimed_completed_once_and_its_token_fenced",
            || block_on(a_killed_workers_shard_is_reclaimed_completed_once_and_its_token_fenced()),
        ),
        (
            "sigterm_drains_and_releases_without_spending_attempts",
            || block_on(sigterm_drains_and_releases_without_spending_attempts()),
        ),
        ("a_second_signal_exits_at_once", || {
            block_on(a_second_signal_exits_at_once())
        }),
    ];
    testkit::harness::run_tests(&args[1..], &tests)
}

fn block_on(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

fn worker(url: &str, stage: &str, id: &str, lease_ms: u64, sleep_ms: u64) -> Child {
    test_worker::command(url, stage, id, lease_ms, sleep_ms)
        .spawn()
        .unwrap()
}

async fn submit(queue: &Queue, rows: u64, shard_size: u64) -> JobId {
    testkit::rows::submit_synthetic_id(
        queue,
        SyntheticJob {
            rows,
            shard_size,
            ..SyntheticJob::default()
        },
    )
    .await
}

/// Until a worker holds a lease of `job`.
async fn wait_for_a_lease(queue: &Queue, job: &JobId) {
    wait::job_status(queue, job, "a lease", Duration::from_secs(20), |st| {
        st.shards.leased.infer > 0
    })
    .await;
}

async fn a_killed_workers_shard_is_reclaimed_completed_once_and_its_token_fenced() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let job = submit(&queue, 12, 4).await;
    let keys = JobKeys::new(&job);

    // A slow worker takes shards; kill it while it holds one.
    let mut doomed = worker(&redis.url(), "infer", "doomed", 800, 60_000);
    wait_for_a_lease(&queue, &job).await;
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
    wait::job_status(
        &queue,
        &job,
        "inference done",
        Duration::from_secs(30),
        |st| st.rows_inferred == 12,
    )
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

async fn sigterm_drains_and_releases_without_spending_attempts() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let job = submit(&queue, 8, 4).await;
    let child = worker(&redis.url(), "infer", "drainer", 10_000, 60_000);
    wait_for_a_lease(&queue, &job).await;
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

async fn a_second_signal_exits_at_once() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let job = submit(&queue, 4, 4).await;
    let child = test_worker::command(&redis.url(), "infer", "stubborn", 10_000, 60_000)
        .env("CONFTAG_TEST_DRAIN_MS", "60000")
        .spawn()
        .unwrap();
    wait_for_a_lease(&queue, &job).await;
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
