//! Preemptible fleets (issue 13), with real processes: a real `redis-server`, `conftag
//! submit` in-process, `conftag-infer` processes SIGKILLed and restarted, the rules judge.
//! The engine behind the workers is the project's fake OpenAI-compatible server on loopback
//! (`--engine openai`, one request at a time like a CPU worker, a fixed latency per row), so
//! that the test, not the speed of a model, decides when a shard is running.
//!
//! - A worker killed again and again (more times than the default `--max-attempts`) while it
//!   holds shards it has not started: the job still ends `done` with every row once; only
//!   the shards it was running spent attempts.
//! - A shard that crashes every worker that runs it (the test SIGKILLs the worker as soon as
//!   the shard is marked started) still ends `failed` after the default attempts.
//!
//! The queue-level version: the preemption tests in `common/tests/queue.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::job::JobId;
use common::keys::JobKeys;
use common::queue::Queue;
use common::redis_conn::RedisUrl;
use common::status::{self, JobState, JobStatus};
use serde_json::{json, Value};
use testkit::{fake_judge, samples, RedisServer, Submit};
use worker_judge::fake::{FakeConfig, FakeServer};

use support::{conftag, infer_bin, judge_all};

const MODEL: &str = "tiny";
/// `conftag submit`'s default `--max-attempts`.
const DEFAULT_MAX_ATTEMPTS: u64 = 5;

/// The fake server as the inference engine: every row takes `latency`.
async fn fake_engine(latency: Duration) -> FakeServer {
    fake_judge::start(FakeConfig {
        latency,
        served_models: vec![MODEL.into()],
        ..FakeConfig::default()
    })
    .await
}

/// A `conftag-infer` process on the fake engine, one request at a time, 3 s leases.
fn infer_worker(redis: &str, engine: &FakeServer, id: &str, extra: &[&str]) -> Child {
    Command::new(infer_bin())
        .args(["--redis-url", redis, "--model", MODEL])
        .args(["--engine", "openai", "--engine-url"])
        .arg(engine.base_url())
        .args(["--concurrency", "1", "--lease-secs", "3", "--worker-id", id])
        .args(extra)
        .env("RUST_LOG", "warn")
        .env_remove("CONFTAG_ENGINE_URL")
        .env_remove("CONFTAG_ENGINE")
        .spawn()
        .unwrap()
}

/// `n` BoolQ rows: the sample rows over and over, each question made unique.
fn write_rows(dir: &Path, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(samples("boolq.jsonl")).unwrap();
    let base: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut out = String::new();
    for k in 0..n {
        let mut row = base[k % base.len()].clone();
        let q = row["question"].as_str().unwrap().to_owned();
        row["question"] = json!(format!("{q} (variant {k})"));
        out.push_str(&row.to_string());
        out.push('\n');
    }
    let path = dir.join("boolq.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

/// Submit `rows` BoolQ rows in shards of 2, judged by rules, with the default attempts.
async fn submit(url: &str, dir: &Path, rows: usize) -> JobId {
    let data = format!("boolq={}", write_rows(dir, rows).display());
    let submit = Submit::new(MODEL, "boolq")
        .split("test")
        .data(&data)
        .shard_size(2)
        .max_tokens(24)
        .judge_mode("rules");
    conftag(url, &submit.args()).await.unwrap();
    let queue = Queue::connect(&RedisUrl::new(url.to_owned()))
        .await
        .unwrap();
    let ids = queue.job_ids().await.unwrap();
    assert_eq!(ids.len(), 1);
    ids[0].clone()
}

async fn job_status(queue: &Queue, job: &JobId) -> JobStatus {
    status::job_status(queue, job).await.unwrap()
}

/// (started, unstarted) infer leases that `worker` holds.
async fn held_by(queue: &Queue, job: &JobId, worker: &str) -> (u64, u64) {
    let keys = JobKeys::new(job);
    let mut c = queue.conn();
    let ids: Vec<u64> = redis::cmd("ZRANGE")
        .arg(keys.leased("infer"))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    let (mut started, mut unstarted) = (0, 0);
    for id in ids {
        let (holder, mark): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(keys.shard(id))
            .arg("worker")
            .arg("started_ms")
            .query_async(&mut c)
            .await
            .unwrap();
        if holder.as_deref() == Some(worker) {
            match mark {
                Some(0) => unstarted += 1,
                _ => started += 1,
            }
        }
    }
    (started, unstarted)
}

/// SIGKILL, as a preemption or the OOM killer would.
fn kill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Wait for a worker started with `--exit-when-done` to finish; it must exit 0.
async fn wait_exit(child: &mut Child, what: &str, within: Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        if start.elapsed() > within {
            kill(child);
            panic!("{what} did not finish within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hlen(queue: &Queue, key: String) -> u64 {
    let mut c = queue.conn();
    redis::cmd("HLEN")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// The scenario of issue 13: each worker leases far ahead (`--max-inflight-rows 34`, what the
/// old CPU default held: 17 shards of 2 rows), works through a shard and is SIGKILLed, seven
/// times. Before start marks, every lapsed lease spent an attempt and the job ended `failed`
/// after five kills; now only the shard being run at each kill spends one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_more_often_than_max_attempts_still_finishes_the_job() {
    const ROWS: usize = 60;
    // More than `DEFAULT_MAX_ATTEMPTS`.
    const KILLS: usize = 7;
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let engine = fake_engine(Duration::from_millis(150)).await;
    let job = submit(&url, tmp.path(), ROWS).await;
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();

    let mut unstarted_at_kills = 0;
    for k in 0..KILLS {
        let id = format!("preempted-{k}");
        let mut child = infer_worker(&url, &engine, &id, &["--max-inflight-rows", "34"]);
        let before = job_status(&queue, &job).await.rows_inferred;
        let start = Instant::now();
        // Kill it between two shards: once it completed one of its own and still holds at
        // least two it has not started.
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "worker {id} exited on its own"
            );
            let (_, unstarted) = held_by(&queue, &job, &id).await;
            let done = job_status(&queue, &job).await.rows_inferred;
            if done > before && unstarted >= 2 {
                unstarted_at_kills += unstarted;
                println!(
                    "kill {}: worker {id} holds {unstarted} unstarted shards",
                    k + 1
                );
                break;
            }
            assert!(
                (done as usize) < ROWS,
                "kill {k}: the job ran out of rows before the kills were done"
            );
            if start.elapsed() > Duration::from_secs(120) {
                kill(&mut child);
                panic!("worker {id}: no completed shard with unstarted shards held in 2 minutes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill(&mut child);
    }

    // A last worker, with the default look-ahead, finishes the job.
    let mut last = infer_worker(&url, &engine, "survivor", &["--exit-when-done"]);
    wait_exit(&mut last, "the last infer worker", Duration::from_secs(300)).await;
    judge_all(&queue, None).await;

    let st = job_status(&queue, &job).await;
    assert_eq!(
        st.shards.failed, 0,
        "no shard dead-lettered: {:?}",
        st.failed_shards
    );
    assert_eq!(st.state, JobState::Done);
    let rows = ROWS as u64;
    assert_eq!(
        (st.rows, st.rows_inferred, st.rows_judged),
        (rows, rows, rows),
        "every row inferred and judged exactly once (a row stored twice would count twice)"
    );
    let keys = JobKeys::new(&job);
    assert_eq!(hlen(&queue, keys.predictions()).await, rows);
    assert_eq!(hlen(&queue, keys.tagged()).await, rows);
    for (i, p) in queue
        .predictions(&job, 0, rows)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let p = p.unwrap_or_else(|| panic!("row {i} has no prediction"));
        assert!(p.error.is_none(), "row {i}: {:?}", p.error);
    }

    // Status tells the free lapses from the ones that spent an attempt.
    let f = st.failures.infer;
    let started_lapses = f.leases_expired - f.leases_lapsed_unstarted;
    println!(
        "{KILLS} kills: {} lapsed leases, {} of unstarted shards (held at the kills: {unstarted_at_kills}), {started_lapses} spent an attempt",
        f.leases_expired, f.leases_lapsed_unstarted
    );
    // Each kill found at least two unstarted shards; one may have started between the look
    // and the kill.
    assert!(
        f.leases_lapsed_unstarted >= KILLS as u64,
        "{f:?}: the unstarted shards of {KILLS} kills"
    );
    // One request at a time: a kill catches at most the shard running and the next one.
    assert!(
        started_lapses <= 2 * KILLS as u64,
        "{f:?}: more attempts spent than shards running at the kills"
    );
    let text = coordinator::view::status_text(&status::document(&queue, &[]).await.unwrap());
    assert!(
        text.contains(&format!(
            "{} lapsed lease(s) ({} of unstarted shards, no attempt spent)",
            f.leases_expired, f.leases_lapsed_unstarted
        )),
        "{text}"
    );
}

/// Poison-pill protection stays: a shard that kills every worker the moment it runs (here
/// the test is the crash: it SIGKILLs the worker as soon as the shard is marked started) is
/// dead-lettered after the default attempts, and the rest of the job completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_crashes_its_worker_still_fails_after_its_attempts() {
    const ROWS: usize = 20;
    const POISON: u64 = 3;
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    // Slow enough that the test sees the shard started long before it could complete.
    let engine = fake_engine(Duration::from_millis(400)).await;
    let job = submit(&url, tmp.path(), ROWS).await;
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    let poison_key = JobKeys::new(&job).shard(POISON);

    let mut crashes = 0u64;
    let mut id = "crashy-0".to_owned();
    let mut child = infer_worker(&url, &engine, &id, &["--exit-when-done"]);
    let start = Instant::now();
    loop {
        let mut c = queue.conn();
        let (state, holder, mark): (Option<String>, Option<String>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(&poison_key)
                .arg("state")
                .arg("worker")
                .arg("started_ms")
                .query_async(&mut c)
                .await
                .unwrap();
        if state.as_deref() == Some("failed") {
            break;
        }
        if state.as_deref() == Some("leased")
            && holder.as_deref() == Some(id.as_str())
            && mark.is_some_and(|m| m > 0)
        {
            // The shard runs: it "crashes" its worker.
            kill(&mut child);
            crashes += 1;
            assert!(
                crashes <= DEFAULT_MAX_ATTEMPTS,
                "the poison shard ran {crashes} times, more than its attempts"
            );
            id = format!("crashy-{crashes}");
            child = infer_worker(&url, &engine, &id, &["--exit-when-done"]);
            continue;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("worker {id} exited ({status}) before the poison shard failed");
        }
        if start.elapsed() > Duration::from_secs(300) {
            kill(&mut child);
            panic!("the poison shard did not fail within 5 minutes ({crashes} crashes)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The last worker finishes the other shards and exits: nothing is left for it.
    wait_exit(
        &mut child,
        "the last infer worker",
        Duration::from_secs(300),
    )
    .await;
    judge_all(&queue, None).await;

    assert_eq!(crashes, DEFAULT_MAX_ATTEMPTS, "one crash per attempt");
    let st = job_status(&queue, &job).await;
    assert_eq!(st.state, JobState::Failed);
    assert_eq!(st.shards.failed, 1);
    let poison = &st.failed_shards[0];
    assert_eq!(
        (poison.shard, poison.stage.as_str(), poison.attempts),
        (POISON, "infer", DEFAULT_MAX_ATTEMPTS)
    );
    assert!(poison.error.contains("lease expired"), "{}", poison.error);
    let others = ROWS as u64 - 2;
    assert_eq!(
        (st.rows_inferred, st.rows_judged, st.shards.done),
        (others, others, others / 2),
        "every other row once"
    );
    let f = st.failures.infer;
    assert!(
        f.leases_expired - f.leases_lapsed_unstarted >= DEFAULT_MAX_ATTEMPTS,
        "{f:?}: each crash spent an attempt"
    );
}
