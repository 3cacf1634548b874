//! Judge workers end to end: a real Redis, the project's fake OpenAI-compatible server over
//! real HTTP on loopback, and inference results written through the queue as an infer
//! worker would.

use std::time::Duration;

use common::dataset::{load_split, DatasetSource};
use common::job::{JobId, JobSpec, JudgeMode, JudgeSettings, PromptMode};
use common::queue::{CompleteOutcome, Counter, Queue, Stage};
use common::records::{PredictionRecord, TaggedRecord};
use common::redis_conn::RedisUrl;
use common::status;
use common::worker::{WorkerConfig, WorkerError};
use serde_json::json;
use testkit::{fake_judge, samples, RedisServer};
use tokio_util::sync::CancellationToken;
use worker_judge::fake::{FakeConfig, FakeServer, Fault};
use worker_judge::openai::{ClientConfig, OpenAiClient};
use worker_judge::{JudgeError, JudgeProcessor};

/// Submit the BoolQ sample rows and answer them as an infer worker would: rows with an even
/// index say the right answer, odd ones the wrong one.
async fn job_with_predictions(queue: &Queue, mode: JudgeMode, shard: u64) -> JobId {
    job_with_predictions_for(queue, "fake-model", mode, shard).await
}

/// The same under another model name (another job over the same rows).
async fn job_with_predictions_for(
    queue: &Queue,
    model: &str,
    mode: JudgeMode,
    shard: u64,
) -> JobId {
    let rows = load_split(
        common::dataset_spec::builtin("boolq").expect("built in"),
        &DatasetSource::File {
            path: samples("boolq.jsonl"),
        },
        None,
    )
    .await
    .unwrap();
    let spec = JobSpec::for_rows(
        model,
        common::dataset_spec::builtin("boolq").expect("built in"),
        "test",
        "samples",
        &rows,
        128,
        PromptMode::Raw,
    );
    let judge = JudgeSettings {
        model: "gpt-4o-2024-08-06".into(),
        mode,
        budget_micro_usd: None,
    };
    queue.submit(&spec, &judge, &rows, shard, 5).await.unwrap();
    let id = spec.id();
    while let Some(lease) = queue
        .claim(&id, Stage::Infer, "fake-infer", Duration::from_secs(30))
        .await
        .unwrap()
    {
        let mut out = Vec::new();
        for r in &rows[lease.start as usize..lease.end as usize] {
            let truth = r.correct_answer.as_bool().unwrap();
            let says = if r.index % 2 == 0 { truth } else { !truth };
            let p = PredictionRecord {
                prompt_tokens: 10,
                completion_tokens: 5,
                ..testkit::prediction(
                    r,
                    format!("{}. The passage says so.", if says { "Yes" } else { "No" }),
                )
            };
            out.push((r.index, serde_json::to_string(&p).unwrap()));
        }
        let counters = [(Counter::InferRows, lease.rows() as i64)].into();
        assert_eq!(
            queue.complete(&lease, &counters, &out).await.unwrap(),
            CompleteOutcome::Stored
        );
    }
    id
}

/// A Redis of the test's own, a queue on it, and the fake judge with default settings.
async fn redis_and_fake_judge() -> (RedisServer, Queue, FakeServer) {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let fake = fake_judge::start(FakeConfig::default()).await;
    (redis, queue, fake)
}

fn config() -> WorkerConfig {
    let mut c = WorkerConfig::new(Stage::Judge);
    c.exit_when_done = true;
    c.lease = Duration::from_secs(5);
    c.idle_poll = Duration::from_millis(50);
    c.retry_base = Duration::from_millis(50);
    c.retry_max = Duration::from_millis(200);
    c.drain_grace = Duration::from_secs(2);
    c
}

fn client(base: &str, key: Option<&str>) -> OpenAiClient {
    let mut cfg = ClientConfig::new(base, key.map(common::config::Secret::new), "");
    cfg.backoff_base = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(100);
    cfg.request_timeout = Duration::from_secs(2);
    cfg.max_retries = 4;
    OpenAiClient::new(cfg).unwrap()
}

async fn run_judge(queue: &Queue, processor: JudgeProcessor) -> Result<(), JudgeError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        worker_judge::run(queue.clone(), processor, config(), CancellationToken::new()),
    )
    .await
    .expect("judge worker finished in time")
    .map(|_| ())
}

async fn tagged(queue: &Queue, id: &JobId) -> Vec<TaggedRecord> {
    queue
        .tagged(id, 0, 8)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.expect("every row tagged"))
        .collect()
}

#[tokio::test]
async fn llm_mode_judges_and_tags_every_row_like_the_seed() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let fake = fake_judge::start(FakeConfig {
        api_key: Some("sk-test-123".into()),
        latency: Duration::from_millis(20),
        ..FakeConfig::default()
    })
    .await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 3).await;
    let p = JudgeProcessor::new(
        Some(client(&fake.base_url(), Some("sk-test-123"))),
        50,
        None,
        None,
        0,
    );
    run_judge(&queue, p).await.unwrap();
    let rows = tagged(&queue, &id).await;
    for (i, t) in rows.iter().enumerate() {
        let v = t.judge_response.as_ref().expect("judged");
        assert_eq!(t.correct, i % 2 == 0, "row {i}: {v:?}");
        let token = if t.correct { "<CN_READ>" } else { "<UN_READ>" };
        assert_eq!(t.confidence_token, token);
        assert_eq!(t.tagged_response, format!("{} {token}", t.response));
        assert_eq!(t.judged_by, "llm");
        assert_eq!(v.correct_answer, t.correct_answer);
    }
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_judged, st.rows_correct, st.judge.llm_calls),
        (8, 4, 8)
    );
    assert!(st.judge.cost_usd > 0.0 && st.judge.prompt_tokens > 0);
    assert_eq!(st.accuracy, Some(0.5));
}

#[tokio::test]
async fn rules_mode_needs_no_network_and_hybrid_saves_calls() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let id = job_with_predictions(&queue, JudgeMode::Rules, 4).await;
    run_judge(&queue, JudgeProcessor::new(None, 4, None, None, 0))
        .await
        .unwrap();
    let rows = tagged(&queue, &id).await;
    assert!(rows.iter().all(|t| t.judged_by == "rules"));
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_correct, st.judge.rules_decided, st.judge.llm_calls),
        (4, 8, 0)
    );

    // Hybrid on the same answers: rules decide all 8; every 2nd row is audited by the LLM.
    let fake = fake_judge::start(FakeConfig::default()).await;
    // Same rows under another model name: another job.
    let id2 = job_with_predictions_for(&queue, "hybrid-model", JudgeMode::Hybrid, 8).await;
    run_judge(
        &queue,
        JudgeProcessor::new(Some(client(&fake.base_url(), None)), 4, None, None, 2),
    )
    .await
    .unwrap();
    let st = status::job_status(&queue, &id2).await.unwrap();
    assert_eq!(st.judge.rules_decided, 8);
    assert_eq!(
        st.judge.llm_calls, 4,
        "only the audited rows reached the LLM"
    );
    assert_eq!(st.judge.rules_llm_agree, 4);
    assert_eq!(st.judge.rules_llm_disagree, 0);
}

#[tokio::test]
async fn rate_limit_storms_5xx_garbage_and_hangs_are_ridden_out() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let fake = fake_judge::start(FakeConfig {
        rate_limit: Some(4),
        rate_window: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 2).await;
    fake_judge::set_fault(&fake, Fault::ServerError, 3).await;
    let p = JudgeProcessor::new(Some(client(&fake.base_url(), None)), 8, None, None, 0);
    let fake_addr = fake.addr;
    let injector = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let c = reqwest::Client::new();
        for (f, n) in [
            (Fault::RateLimit, 4u64),
            (Fault::Garbage, 2),
            (Fault::Hang, 1),
            (Fault::BadSchema, 1),
        ] {
            c.post(format!("http://{fake_addr}/admin/faults"))
                .json(&json!({"fault": f, "count": n}))
                .send()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    run_judge(&queue, p).await.unwrap();
    injector.await.unwrap();
    let rows = tagged(&queue, &id).await;
    assert!(rows.iter().all(|t| t.judge_response.is_some()), "{rows:?}");
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_judged, st.rows_correct, st.rows_judge_errors),
        (8, 4, 0)
    );
    let stats = fake_judge::stats(&fake).await;
    assert!(stats["rate_limited"].as_u64().unwrap() + stats["faults"].as_u64().unwrap() > 0);
}

/// Found by the chaos suite: a 200 with a body that is not JSON (a gateway's error page) was
/// an "unusable answer", so three in a row made the row a permanent judge error and a garbage
/// storm left healthy rows out of the tagged file. Now it is retried like a 5xx, and the
/// retries show in status.
#[tokio::test]
async fn a_garbage_storm_longer_than_the_content_retries_leaves_every_row_judged() {
    let (_redis, queue, fake) = redis_and_fake_judge().await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 8).await;
    // One request at a time: the first row meets 5 garbage bodies in a row (more than the 2
    // content retries, and more than the client's 4 retries), the next row the 6th.
    fake_judge::set_fault(&fake, Fault::Garbage, 6).await;
    run_judge(
        &queue,
        JudgeProcessor::new(Some(client(&fake.base_url(), None)), 1, None, None, 0),
    )
    .await
    .unwrap();
    let rows = tagged(&queue, &id).await;
    assert!(
        rows.iter().all(|t| t.judge_response.is_some()),
        "{:?}",
        rows.iter().map(|t| &t.judge_error).collect::<Vec<_>>()
    );
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_judged, st.rows_correct, st.rows_judge_errors),
        (8, 4, 0)
    );
    assert_eq!(fake_judge::stats(&fake).await["faults"], 6);
    assert_eq!(
        st.judge.call_retries + st.failures.judge.attempts_failed,
        2,
        "the retried call and the failed attempt show in status: {:?} {:?}",
        st.judge,
        st.failures
    );
}

#[tokio::test]
async fn refusals_become_row_errors_not_wrong_answers() {
    let (_redis, queue, fake) = redis_and_fake_judge().await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 8).await;
    fake_judge::set_fault(&fake, Fault::Refusal, 0).await;
    run_judge(
        &queue,
        JudgeProcessor::new(Some(client(&fake.base_url(), None)), 4, None, None, 0),
    )
    .await
    .unwrap();
    let rows = tagged(&queue, &id).await;
    assert!(rows.iter().all(|t| t.judge_response.is_none()));
    assert!(rows[0].judge_error.as_deref().unwrap().contains("refused"));
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_judged, st.rows_judge_errors, st.accuracy),
        (8, 8, None)
    );
}

#[tokio::test]
async fn spent_quota_stops_the_worker_and_releases_its_shards() {
    let (_redis, queue, fake) = redis_and_fake_judge().await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 4).await;
    fake_judge::set_fault(&fake, Fault::Quota, 0).await;
    let err = run_judge(
        &queue,
        JudgeProcessor::new(Some(client(&fake.base_url(), None)), 4, None, None, 0),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, JudgeError::Worker(WorkerError::Fatal(ref f)) if f.report().contains("insufficient_quota")),
        "{err}"
    );
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        st.shards.queued.judge, 2,
        "released, not failed: {:?} {:?}",
        st.shards, st.last_error
    );
    assert_eq!((st.shards.failed, st.rows_judged), (0, 0));
    let workers = status::workers(&queue).await.unwrap();
    assert!(workers
        .iter()
        .any(|w| w.info.state.contains("insufficient_quota")));

    // With quota back, another worker finishes the job.
    fake_judge::clear_faults(&fake).await;
    run_judge(
        &queue,
        JudgeProcessor::new(Some(client(&fake.base_url(), None)), 4, None, None, 0),
    )
    .await
    .unwrap();
    assert_eq!(
        status::job_status(&queue, &id).await.unwrap().rows_judged,
        8
    );
}

#[tokio::test]
async fn a_wrong_key_is_fatal_and_the_key_never_reaches_redis() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let fake = fake_judge::start(FakeConfig {
        api_key: Some("sk-right".into()),
        ..FakeConfig::default()
    })
    .await;
    let _id = job_with_predictions(&queue, JudgeMode::Llm, 4).await;
    let err = run_judge(
        &queue,
        JudgeProcessor::new(
            Some(client(&fake.base_url(), Some("sk-wrong-secret"))),
            4,
            None,
            None,
            0,
        ),
    )
    .await
    .unwrap_err();
    // What the user reads: the error with its causes (the worker stopped, because …).
    let shown = common::config::error_chain(&err);
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    // Scan every key and value in Redis for the key.
    let mut c = queue.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    for k in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&dump.unwrap_or_default()).to_string();
        assert!(
            !text.contains("sk-wrong-secret") && !k.contains("sk-wrong"),
            "secret in {k}"
        );
    }
}

fn batch_client(base: &str) -> worker_judge::batch::BatchClient {
    worker_judge::batch::BatchClient::new(base, None, Duration::from_millis(50)).unwrap()
}

#[tokio::test]
async fn batch_mode_judges_through_the_batch_api_and_resumes_after_a_restart() {
    let redis = RedisServer::start().unwrap();
    let queue = Queue::connect(&RedisUrl::new(redis.url())).await.unwrap();
    let fake = fake_judge::start(FakeConfig {
        batch_delay: Duration::from_millis(1500),
        ..FakeConfig::default()
    })
    .await;
    let id = job_with_predictions(&queue, JudgeMode::Batch, 4).await;

    // A first worker submits the batches, then is stopped while they run.
    let stop = CancellationToken::new();
    let mut cfg = config();
    cfg.exit_when_done = false;
    cfg.drain_grace = Duration::from_millis(100);
    let first = tokio::spawn(worker_judge::run(
        queue.clone(),
        JudgeProcessor::new(None, 4, None, None, 0).with_batch(batch_client(&fake.base_url())),
        cfg,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    first.await.unwrap().unwrap();
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(
        (st.rows_judged, st.shards.queued.judge),
        (0, 2),
        "released, not judged"
    );

    // A second worker resumes the same batches instead of paying again.
    run_judge(
        &queue,
        JudgeProcessor::new(None, 4, None, None, 0).with_batch(batch_client(&fake.base_url())),
    )
    .await
    .unwrap();
    let rows = tagged(&queue, &id).await;
    assert!(rows
        .iter()
        .all(|t| t.judged_by == "batch" && t.judge_response.is_some()));
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!((st.rows_judged, st.rows_correct), (8, 4));
    let stats = fake_judge::stats(&fake).await;
    assert_eq!(
        stats["batches_created"], 2,
        "one batch per shard, none paid twice"
    );
    assert!(
        st.judge.paid_usd > 0.0 && (st.judge.paid_usd - st.judge.cost_usd).abs() < 1e-9,
        "each batch's price added once: {:?}",
        st.judge
    );
}

#[tokio::test]
async fn a_batch_price_is_added_once_however_often_it_is_recorded() {
    let (_redis, queue, _fake) = redis_and_fake_judge().await;
    let id = job_with_predictions(&queue, JudgeMode::Batch, 4).await;
    let ledger = worker_judge::ledger::Ledger::new(queue.clone(), &id, true);
    // A worker that died after downloading a batch's results records it again on resume.
    ledger.record_batch("batch_a", 500).await;
    ledger.record_batch("batch_a", 500).await;
    ledger.record_batch("batch_b", 300).await;
    let st = status::job_status(&queue, &id).await.unwrap();
    assert!((st.judge.paid_usd - 800e-6).abs() < 1e-12, "{:?}", st.judge);
}

#[tokio::test]
async fn a_retried_shard_does_not_pay_twice_for_rows_already_judged() {
    let (_redis, queue, fake) = redis_and_fake_judge().await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 8).await;
    // No retries per request: the one 500 fails its row, so the shard attempt fails after
    // the other 7 rows were judged (and paid for).
    fake_judge::set_fault(&fake, Fault::ServerError, 1).await;
    let mut cfg = ClientConfig::new(fake.base_url(), None, "");
    cfg.backoff_base = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(20);
    cfg.max_retries = 0;
    let client = OpenAiClient::new(cfg).unwrap();
    run_judge(&queue, JudgeProcessor::new(Some(client), 1, None, None, 0))
        .await
        .unwrap();
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.rows_judged, 8);
    assert!(st.last_error.is_some(), "the first attempt failed");
    let stats = fake_judge::stats(&fake).await;
    assert_eq!(stats["ok"], 8, "each row paid for once: {stats}");
    assert_eq!(st.judge.llm_calls, 8);
    assert!(
        (st.judge.paid_usd - st.judge.cost_usd).abs() < 1e-9,
        "the money paid is the stored verdicts' cost: {:?}",
        st.judge
    );
}

/// `conftag requeue JOB --failed --stage judge --judge-budget-usd` as a request.
fn set_budget(micro_usd: u64) -> common::queue::RequeueRequest {
    common::queue::RequeueRequest {
        selection: common::queue::RequeueSelection::Failed,
        target: Some(Stage::Judge),
        force: false,
        judge: Some(JudgeSettings {
            model: "gpt-4o-2024-08-06".into(),
            mode: JudgeMode::Llm,
            budget_micro_usd: Some(micro_usd),
        }),
    }
}

#[tokio::test]
async fn a_spent_judge_budget_pauses_the_job_until_it_is_raised() {
    let (_redis, queue, fake) = redis_and_fake_judge().await;
    let id = job_with_predictions(&queue, JudgeMode::Llm, 2).await;
    // A budget smaller than one shard's cost: the first shard is judged, then judging pauses.
    queue.requeue(&id, &set_budget(100)).await.unwrap();
    let one_shard_at_a_time = |c: &mut WorkerConfig| c.max_inflight_rows = 2;
    let mut cfg = config();
    one_shard_at_a_time(&mut cfg);
    let p = JudgeProcessor::new(Some(client(&fake.base_url(), None)), 4, None, None, 0);
    worker_judge::run(queue.clone(), p, cfg.clone(), CancellationToken::new())
        .await
        .unwrap();
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.rows_judged, 2, "one shard, then the pause");
    assert!(
        st.judge.paused.as_deref().unwrap().contains("budget"),
        "{:?}",
        st.judge.paused
    );
    assert_eq!(
        (st.shards.queued.judge, st.shards.failed),
        (3, 0),
        "paused, not failed"
    );

    // Raising the budget resumes judging.
    queue
        .requeue(&id, &set_budget(1_000_000_000))
        .await
        .unwrap();
    let p = JudgeProcessor::new(Some(client(&fake.base_url(), None)), 4, None, None, 0);
    worker_judge::run(queue.clone(), p, cfg, CancellationToken::new())
        .await
        .unwrap();
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!((st.rows_judged, st.judge.paused.clone()), (8, None));
}

#[tokio::test]
async fn the_budget_stops_paid_calls_row_by_row_inside_a_shard() {
    let (_redis, queue, fake) = redis_and_fake_judge().await;
    // All 8 rows in one shard, so a check per shard could not stop anything inside it.
    let id = job_with_predictions(&queue, JudgeMode::Llm, 8).await;
    // A budget below one call's price, one call in flight: the first call is paid, then
    // every other row of the shard stops before calling.
    queue.requeue(&id, &set_budget(1)).await.unwrap();
    let p = JudgeProcessor::new(Some(client(&fake.base_url(), None)), 1, None, None, 0);
    run_judge(&queue, p).await.unwrap();
    let stats = fake_judge::stats(&fake).await;
    assert_eq!(stats["ok"], 1, "one paid call, then the budget: {stats}");
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!(st.rows_judged, 0, "the shard waits, nothing committed");
    assert!(
        st.judge.paid_usd > 0.0 && st.judge.cost_usd == 0.0,
        "{:?}",
        st.judge
    );
    assert!(st.judge.paused.as_deref().unwrap().contains("budget"));
    assert_eq!((st.shards.queued.judge, st.shards.failed), (1, 0));

    // A raised budget finishes the shard, reusing the verdict already paid for.
    queue
        .requeue(&id, &set_budget(1_000_000_000))
        .await
        .unwrap();
    let p = JudgeProcessor::new(Some(client(&fake.base_url(), None)), 1, None, None, 0);
    run_judge(&queue, p).await.unwrap();
    let stats = fake_judge::stats(&fake).await;
    assert_eq!(stats["ok"], 8, "each row paid for once: {stats}");
    let st = status::job_status(&queue, &id).await.unwrap();
    assert_eq!((st.rows_judged, st.judge.paused.clone()), (8, None));
    assert!(
        (st.judge.paid_usd - st.judge.cost_usd).abs() < 1e-9,
        "paid {} = committed {}",
        st.judge.paid_usd,
        st.judge.cost_usd
    );
}
