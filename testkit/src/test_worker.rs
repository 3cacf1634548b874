//! A worker process with a trivial processor, for tests that kill workers (SIGKILL, SIGTERM)
//! at chosen moments: the real worker runtime ([`run_worker`]) around a processor that sleeps
//! per shard and writes one small record per row (infer) or a tagged row (judge; even rows
//! correct).
//!
//! It used to be `conftag-test-worker`, a `[[bin]]` of the production crate `common`. Now a
//! test target runs it by re-executing itself ([`command`] and, in the target's `main`,
//! [`ROLE`] then [`main`]), so the code under test is always the code of this tree and no
//! test binary ships with the product.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use common::job::{JobSpec, JudgeSettings};
use common::queue::{counters, Counter, Queue, Stage};
use common::records::{JudgeResponse, Provenance, ShardRecord, TaggedRecord};
use common::redis_conn::RedisUrl;
use common::worker::{
    run_worker, Failure, ShardContext, ShardOutput, ShardProcessor, WorkerConfig,
};

/// First argument that makes a `harness = false` test binary run as the test worker.
pub const ROLE: &str = "__test-worker";

/// The test binary re-executed as a test worker: `stage` is `infer` or `judge`, leases of
/// `lease_ms`, `sleep_ms` per shard, exits when no work is left. `CONFTAG_TEST_DRAIN_MS` in
/// its environment sets the drain grace (default 200 ms). Callers add environment and spawn.
pub fn command(url: &str, stage: &str, id: &str, lease_ms: u64, sleep_ms: u64) -> Command {
    let me = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(me);
    cmd.args([ROLE, url, stage, id])
        .args([lease_ms.to_string(), sleep_ms.to_string()])
        .env("RUST_LOG", "warn");
    cmd
}

#[derive(Debug)]
struct Sleepy {
    sleep: Duration,
    worker: String,
}

impl ShardProcessor for Sleepy {
    fn accepts(&self, _: &JobSpec, _: &JudgeSettings) -> bool {
        true
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        tokio::time::sleep(self.sleep).await;
        let l = &ctx.lease;
        let inputs = ctx.queue.input_rows(&l.job, l.start, l.end).await?;
        let mut out = ShardOutput::default();
        out.counters.insert(Counter::rows(l.stage), l.rows() as i64);
        for r in inputs {
            let pred =
                crate::rows::prediction(&r, format!("answer {} by {}", r.index, self.worker));
            let record = match l.stage {
                Stage::Infer => ShardRecord::from(pred),
                Stage::Judge => ShardRecord::from(TaggedRecord::tag(
                    ctx.spec.dataset_spec().expect("a known dataset"),
                    &pred,
                    JudgeResponse {
                        correct_answer: r.correct_answer.clone(),
                        model_answer: "x".into(),
                        reasoning: "test".into(),
                        correct: if r.index % 2 == 0 { "yes" } else { "no" }.into(),
                    },
                    Provenance {
                        judged_by: "test".into(),
                        judge_model: self.worker.clone(),
                        judge_prompt_sha: String::new(),
                    },
                )),
            };
            if l.stage == Stage::Judge && r.index % 2 == 0 {
                counters::add(&mut out.counters, Counter::JudgeCorrect, 1);
            }
            out.rows.push((r.index, record));
        }
        Ok(out)
    }
}

/// The worker role: `args` are `REDIS_URL STAGE WORKER_ID LEASE_MS SLEEP_MS_PER_SHARD` (what
/// follows [`ROLE`]). Exits 0 when done or drained; 130 on a second signal (the runtime's
/// rule).
pub fn main(args: &[String]) -> ExitCode {
    let [url, stage, id, lease_ms, sleep_ms] = args else {
        eprintln!("usage: {ROLE} REDIS_URL STAGE WORKER_ID LEASE_MS SLEEP_MS_PER_SHARD");
        return ExitCode::from(2);
    };
    let stage = if stage == "judge" {
        Stage::Judge
    } else {
        Stage::Infer
    };
    let mut config = WorkerConfig::new(stage);
    config.id = id.clone();
    config.lease = Duration::from_millis(lease_ms.parse().expect("LEASE_MS"));
    config.idle_poll = Duration::from_millis(50);
    config.exit_when_done = true;
    config.max_inflight_rows = 4;
    config.drain_grace = Duration::from_millis(
        std::env::var("CONFTAG_TEST_DRAIN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );
    let sleepy = Sleepy {
        sleep: Duration::from_millis(sleep_ms.parse().expect("SLEEP_MS_PER_SHARD")),
        worker: config.id.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async move {
        let queue = Queue::connect(&RedisUrl::new(url.clone()))
            .await
            .expect("connect to Redis");
        let shutdown = common::worker::shutdown_on_signals();
        run_worker(queue, Arc::new(sleepy), config, shutdown)
            .await
            .expect("the worker runs");
    });
    ExitCode::SUCCESS
}
