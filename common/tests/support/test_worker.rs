//! `conftag-test-worker`: a worker process with a trivial processor, for tests that kill
//! workers (SIGKILL) at chosen moments. Not part of the product.
//!
//! usage: conftag-test-worker REDIS_URL STAGE WORKER_ID LEASE_MS SLEEP_MS_PER_SHARD

use std::sync::Arc;
use std::time::Duration;

use common::job::{JobSpec, JudgeSettings};
use common::queue::{Counter, Queue, Stage};
use common::records::{JudgeResponse, PredictionRecord, Provenance, ShardRecord, TaggedRecord};
use common::redis_conn::RedisUrl;
use common::worker::{
    run_worker, ProcessError, ShardContext, ShardOutput, ShardProcessor, WorkerConfig,
};

struct Sleepy {
    sleep: Duration,
    worker: String,
}

impl ShardProcessor for Sleepy {
    fn accepts(&self, _: &JobSpec, _: &JudgeSettings) -> bool {
        true
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, ProcessError> {
        tokio::time::sleep(self.sleep).await;
        let l = &ctx.lease;
        let inputs = ctx.queue.input_rows(&l.job, l.start, l.end).await?;
        let mut out = ShardOutput::default();
        out.counters.insert(Counter::rows(l.stage), l.rows() as i64);
        for r in inputs {
            let pred = PredictionRecord {
                response: format!("answer {} by {}", r.index, self.worker),
                question: r.question.clone(),
                correct_answer: r.correct_answer.clone(),
                prompt_tokens: 1,
                completion_tokens: 1,
                finish_reason: "stop".into(),
                error: None,
            };
            let json = match l.stage {
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
                *out.counters.entry(Counter::JudgeCorrect).or_default() += 1;
            }
            out.rows.push((r.index, json));
        }
        Ok(out)
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let stage = if args[2] == "judge" {
        Stage::Judge
    } else {
        Stage::Infer
    };
    let queue = Queue::connect(&RedisUrl::new(args[1].clone()))
        .await
        .unwrap();
    let mut config = WorkerConfig::new(stage);
    config.id = args[3].clone();
    config.lease = Duration::from_millis(args[4].parse().unwrap());
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
        sleep: Duration::from_millis(args[5].parse().unwrap()),
        worker: config.id.clone(),
    };
    let shutdown = common::worker::shutdown_on_signals();
    run_worker(queue, Arc::new(sleepy), config, shutdown)
        .await
        .unwrap();
}
