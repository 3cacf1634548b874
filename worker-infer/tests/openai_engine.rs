//! `conftag-infer --engine openai`: the worker driving an external OpenAI-compatible server
//! (here the project's fake server on loopback, standing in for vLLM) over real HTTP, with a
//! real Redis: seed-faithful requests, token counts from `usage`, rows batched across shards,
//! 429s and 5xx retried, prompts past the server's context recorded as row errors, and clear
//! errors for a wrong URL, model or key.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::failure::FailureKind;
use common::job::PromptMode;
use common::queue::{Queue, Stage};
use common::redis_conn::RedisUrl;
use common::status;
use common::worker::WorkerConfig;
use testkit::{fake_judge, free_port, samples, RedisServer, Submit};
use tokio_util::sync::CancellationToken;
use worker_infer::openai_engine::{OpenAiEngine, OpenAiEngineOptions};
use worker_judge::fake::{fake_answer, FakeConfig, FakeServer};

const MODEL: &str = "Qwen/Qwen2.5-7B-Instruct";

async fn fake(max_context: usize) -> FakeServer {
    fake_judge::start(FakeConfig {
        served_models: vec![MODEL.into()],
        max_context,
        ..FakeConfig::default()
    })
    .await
}

fn options(server: &FakeServer) -> OpenAiEngineOptions {
    let mut o = OpenAiEngineOptions::new(server.base_url(), MODEL);
    o.concurrency = 8;
    o.backoff_base = Duration::from_millis(20);
    o
}

/// What the fake model answers for `prompt` when cut at `max_tokens` words.
fn expected(prompt: &str, max_tokens: usize) -> (String, &'static str) {
    let words: Vec<String> = fake_answer(prompt)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if words.len() > max_tokens {
        (words[..max_tokens].join(" "), "length")
    } else {
        (words.join(" "), "stop")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_through_an_external_server_with_rate_limits_and_context_errors() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    // A context of 50 words: the longer prompts (BoolQ passages, MedQA) do not fit, short
    // MATH problems do.
    let server = fake(50).await;
    let max_tokens = 6usize;
    let mut submit = Submit::new(MODEL, "boolq,medqa,math").split("test");
    for d in ["boolq", "medqa", "math"] {
        submit = submit.data(format!("{d}={}", samples(&format!("{d}.jsonl")).display()));
    }
    let submit = submit.shard_size(3).max_tokens(max_tokens as u64);
    let argv = [&["conftag", "--redis-url", &url], &submit.args()[..]].concat();
    coordinator::run(coordinator::cli::Cli::try_parse_from(argv).unwrap())
        .await
        .unwrap();

    // The first requests are rate limited (429 + retry-after): they are waited out, not lost.
    fake_judge::set_fault(&server, "rate_limit", 3).await;
    let engine = OpenAiEngine::connect(options(&server)).await.unwrap();
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    let mut cfg = WorkerConfig::new(Stage::Infer);
    cfg.model = Some(MODEL.into());
    cfg.exit_when_done = true;
    cfg.idle_poll = Duration::from_millis(50);
    cfg.max_inflight_rows = 32;
    worker_infer::run(
        queue.clone(),
        Arc::new(engine.into()),
        cfg,
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let doc = status::document(&queue, &[]).await.unwrap();
    let (mut ok_rows, mut error_rows) = (0, 0);
    for job in &doc.jobs {
        assert_eq!(job.rows_inferred, job.rows, "{}", job.id);
        assert_eq!(job.shards.failed, 0, "{}", job.id);
        let id = &job.id;
        let inputs = queue.input_rows(id, 0, job.rows).await.unwrap();
        let preds = queue.predictions(id, 0, job.rows).await.unwrap();
        for (input, pred) in inputs.iter().zip(preds) {
            let pred = pred.expect("every row has a prediction");
            let prompt_words = input.prompt.split_whitespace().count();
            if prompt_words + max_tokens > 50 {
                let err = pred.error.as_deref().expect("too long: a row error");
                assert!(err.contains("maximum context length"), "{err}");
                assert_eq!(pred.finish_reason, "error");
                error_rows += 1;
            } else {
                let (text, finish) = expected(&input.prompt, max_tokens);
                assert_eq!(pred.response, text, "row {} of {}", input.index, job.id);
                assert_eq!(pred.finish_reason, finish);
                assert_eq!(pred.prompt_tokens, prompt_words as u64);
                assert_eq!(
                    pred.completion_tokens,
                    text.split_whitespace().count() as u64
                );
                assert_eq!(pred.error, None);
                ok_rows += 1;
            }
        }
    }
    assert!(
        ok_rows > 0 && error_rows > 0,
        "{ok_rows} ok, {error_rows} errors"
    );
    let s = fake_judge::stats(&server).await;
    assert!(s["faults"].as_u64().unwrap() >= 3, "{s}");
    // Rows of several shards were at the server together (the batch stays full).
    assert!(s["max_completions_in_flight"].as_u64().unwrap() > 3, "{s}");
}

#[tokio::test]
async fn server_errors_are_retried_then_fail_the_attempt_and_chat_mode_works() {
    let server = fake(4096).await;
    let mut o = options(&server);
    o.max_retries = 2;
    let engine = OpenAiEngine::connect(o).await.unwrap();
    let prompt = common::prompt::boolq("The sky is blue.", "is the sky blue");

    fake_judge::set_fault(&server, "server_error", 2).await;
    let g = engine.generate(&prompt, PromptMode::Raw, 16).await.unwrap();
    assert_eq!(g.text, expected(&prompt, 16).0);

    fake_judge::set_fault(&server, "server_error", 0).await;
    let e = engine
        .generate(&prompt, PromptMode::Raw, 16)
        .await
        .unwrap_err();
    let m = e.report();
    assert!(
        e.kind() == FailureKind::Transient && m.contains("HTTP 500") && m.contains("3 attempts"),
        "{m}"
    );
    // The last attempt's failure is the cause, not a string in the message.
    assert!(std::error::Error::source(&e).is_some_and(|c| c.to_string().contains("HTTP 500")));
    fake_judge::set_fault(&server, "garbage", 1).await;
    fake_judge::clear_faults(&server).await;

    // Chat mode goes to /v1/chat/completions (the fake's judge): an answer comes back.
    let g = engine
        .generate("hello", PromptMode::Chat, 16)
        .await
        .unwrap();
    assert!(!g.text.is_empty());
}

#[tokio::test]
async fn a_wrong_url_model_or_key_is_a_clear_error_before_any_lease() {
    let server = fake(4096).await;
    let mut o = options(&server);
    o.model = "meta-llama/Meta-Llama-3-8B-Instruct".into();
    let e = OpenAiEngine::connect(o).await.unwrap_err().to_string();
    assert!(
        e.contains("does not serve `meta-llama/Meta-Llama-3-8B-Instruct`") && e.contains(MODEL),
        "{e}"
    );

    // Nobody listening: waited for (briefly here), then named with the URL.
    let nobody = format!("http://127.0.0.1:{}/v1", free_port());
    let mut o = OpenAiEngineOptions::new(nobody.clone(), MODEL);
    o.wait_ready = Duration::from_millis(800);
    o.backoff_base = Duration::from_millis(100);
    let e = OpenAiEngine::connect(o).await.unwrap_err().to_string();
    assert!(
        e.contains(&nobody) && e.contains("connection failed") && e.contains("waited"),
        "{e}"
    );

    let e = OpenAiEngine::connect(OpenAiEngineOptions::new("ftp://x/v1", MODEL))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("http(s) URL"), "{e}");

    let locked = fake_judge::start(FakeConfig {
        api_key: Some("sk-engine-secret-7731".into()),
        served_models: vec![MODEL.into()],
        ..FakeConfig::default()
    })
    .await;
    let e = OpenAiEngine::connect(OpenAiEngineOptions::new(locked.base_url(), MODEL))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    let mut keyed = OpenAiEngineOptions::new(locked.base_url(), MODEL);
    keyed.api_key = Some(common::config::Secret::new("sk-engine-secret-7731"));
    OpenAiEngine::connect(keyed).await.unwrap();
}

/// Workers and their server often start together (a vLLM pod loading its model for
/// minutes): the worker waits for the server instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_a_server_that_comes_up_later() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let mut o = OpenAiEngineOptions::new(url, MODEL);
    o.wait_ready = Duration::from_secs(60);
    o.backoff_base = Duration::from_millis(100);
    let waiting = tokio::spawn(OpenAiEngine::connect(o));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "gave up while the server was down");
    let server = FakeServer::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        FakeConfig {
            served_models: vec![MODEL.into()],
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let engine = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("connected once the server was up")
        .unwrap()
        .unwrap();
    assert_eq!(engine.model(), MODEL);
    drop(server);
}

#[test]
fn the_cli_asks_for_the_engine_url() {
    let out = Command::new(env!("CARGO_BIN_EXE_conftag-infer"))
        .args(["--engine", "openai", "--model", MODEL])
        .env_remove("CONFTAG_ENGINE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--engine-url"), "{err}");
}

/// The `conftag-infer` process with `--engine openai` and `--metrics-addr`: the counters a
/// Prometheus scrape sees equal what the job's status says was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_process_serves_metrics_that_match_the_status() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let server = fake(4096).await;
    let submit = Submit::new(MODEL, "boolq")
        .split("test")
        .data(format!("boolq={}", samples("boolq.jsonl").display()))
        .shard_size(2);
    let argv = [&["conftag", "--redis-url", &url], &submit.args()[..]].concat();
    coordinator::run(coordinator::cli::Cli::try_parse_from(argv).unwrap())
        .await
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_conftag-infer"))
        .args(["--redis-url", &url, "--engine", "openai", "--engine-url"])
        .arg(server.base_url())
        .args(["--model", MODEL, "--metrics-addr", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let job = loop {
        let doc = status::document(&queue, &[]).await.unwrap();
        let job = doc.jobs[0].clone();
        if job.rows_inferred == job.rows {
            break job;
        }
        assert!(child.try_wait().unwrap().is_none(), "the worker exited");
        assert!(std::time::Instant::now() < deadline, "rows never inferred");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = testkit::metrics::scrape_metrics(addr).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let infer = [("stage", "infer")];
    let value = |name: &str| testkit::metrics::metric_value(&text, name, &infer);
    assert_eq!(
        value("conftag_infer_rows_total"),
        Some(job.rows as f64),
        "{text}"
    );
    assert_eq!(
        value("conftag_infer_completion_tokens_total"),
        Some(job.tokens_generated as f64)
    );
    assert_eq!(
        value("conftag_shards_completed_total"),
        Some(job.shards.total as f64)
    );
    assert_eq!(value("conftag_rows_in_flight"), Some(0.0));
}
