//! The whole pipeline on one machine: a real Redis, `conftag submit` of the sample rows,
//! `conftag-infer` processes running the tiny model in mistral.rs (one killed with SIGKILL
//! mid-run), a judge worker against the fake OpenAI-compatible server over HTTP, and
//! `conftag export` writing the seed's files.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::queue::Queue;
use common::redis_conn::RedisUrl;
use common::status;
use testkit::{fake_judge, samples, RedisServer, Submit};
use worker_judge::fake::FakeConfig;
use worker_judge::openai::{ClientConfig, OpenAiClient};

use support::{conftag, infer_command};

fn infer_worker(redis: &str, model_dir: &Path, hf_home: &Path, id: &str) -> Child {
    infer_command(redis, model_dir, hf_home, id)
        .args([
            "--lease-secs",
            "3",
            "--max-inflight-rows",
            "4",
            "--exit-when-done",
        ])
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_infer_with_a_kill_judge_and_export() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    worker_infer::tiny_model::write_tiny_model(&model_dir, Default::default(), 7).unwrap();

    let boolq = format!("boolq={}", samples("boolq.jsonl").display());
    let medqa = format!("medqa={}", samples("medqa.jsonl").display());
    let submit = Submit::new("tiny", "boolq,medqa")
        .split("test")
        .data(&boolq)
        .data(&medqa)
        .shard_size(2)
        .max_tokens(24);
    conftag(&url, &submit.args()).await.unwrap();
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    let jobs = queue.job_ids().await.unwrap();
    assert_eq!(jobs.len(), 2);

    // Export before anything ran: refused, nothing written.
    let out = tmp.path().join("out");
    let err = conftag(&url, &["export", "--all", "--out", out.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not finished"), "{err}");
    assert!(!out.exists());

    // One infer worker is killed with SIGKILL once it holds a lease; a second one finishes.
    let mut first = infer_worker(&url, &model_dir, tmp.path(), "infer-1");
    let start = Instant::now();
    loop {
        let doc = status::document(&queue, &[]).await.unwrap();
        if doc.jobs.iter().any(|j| j.shards.leased.infer > 0) {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "first worker exited early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "first worker never leased"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = infer_worker(&url, &model_dir, tmp.path(), "infer-2");
    assert!(second.wait().unwrap().success());

    // Judge against the fake OpenAI-compatible server over HTTP.
    let fake = fake_judge::start(FakeConfig::default()).await;
    let client = OpenAiClient::new(ClientConfig::new(fake.base_url(), None, "")).unwrap();
    support::judge_all(&queue, Some(client)).await;

    let doc = status::document(&queue, &[]).await.unwrap();
    for j in &doc.jobs {
        assert_eq!(j.rows_inferred, j.rows, "{}", j.id);
        assert_eq!(j.rows_judged, j.rows, "{}", j.id);
        assert!(j.tokens_generated > 0);
        assert_eq!(j.shards.done, j.shards.total);
    }

    conftag(&url, &["export", "--all", "--out", out.to_str().unwrap()])
        .await
        .unwrap();
    let pred: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("inference/predictions/tiny_boolq_test.json")).unwrap(),
    )
    .unwrap();
    let obj = pred.as_object().unwrap();
    assert_eq!(
        obj.keys().cloned().collect::<Vec<_>>(),
        (0..8).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        obj["0"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["response", "question", "correct_answer"]
    );
    assert!(obj["1"]["correct_answer"].is_boolean());
    let tagged: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("eval/judged/tiny_medqa_test_tagged.json")).unwrap(),
    )
    .unwrap();
    let row = tagged["0"].as_object().unwrap();
    assert_eq!(
        row.keys().collect::<Vec<_>>(),
        vec![
            "response",
            "question",
            "correct_answer",
            "judge_response",
            "correct",
            "confidence_token",
            "tagged_response"
        ]
    );
    let token = row["confidence_token"].as_str().unwrap();
    assert!(token == "<CN_MED>" || token == "<UN_MED>");
    assert_eq!(
        row["tagged_response"].as_str().unwrap(),
        format!("{} {token}", row["response"].as_str().unwrap())
    );

    // The report: one summary row per job with the status's numbers, and a chart.
    conftag(
        &url,
        &[
            "export",
            "--all",
            "--report",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let summary = std::fs::read_to_string(out.join("report/summary.md")).unwrap();
    for j in &doc.jobs {
        let line = summary
            .lines()
            .find(|l| l.starts_with(&format!("| tiny | {} | test |", j.dataset)))
            .unwrap_or_else(|| panic!("no row for {} in\n{summary}", j.dataset));
        assert!(
            line.contains(&format!(
                "| {} | {} | {} |",
                j.rows, j.rows_judged, j.rows_correct
            )),
            "{line}"
        );
    }
    let svg = std::fs::read_to_string(out.join("report/accuracy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("boolq") && svg.contains("medqa"));
    assert!(svg.contains("Judged accuracy per model and dataset"));

    // Re-export is byte-identical.
    let before = std::fs::read(out.join("eval/judged/tiny_medqa_test_tagged.json")).unwrap();
    conftag(&url, &["export", "--all", "--out", out.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(
        before,
        std::fs::read(out.join("eval/judged/tiny_medqa_test_tagged.json")).unwrap()
    );
}

/// A running infer worker publishes its output tokens/s and, for a known GPU, the decode
/// ceiling of its model there; `conftag status` shows both. (The GPU is named by flag: this
/// machine has none, which is also why the ceiling is not compared with the rate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_an_infer_workers_rate_against_its_gpu_ceiling() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    let shape = worker_infer::tiny_model::TinyShape::default();
    worker_infer::tiny_model::write_tiny_model(&model_dir, shape, 7).unwrap();
    let boolq = format!("boolq={}", samples("boolq.jsonl").display());
    let submit = Submit::new("tiny", "boolq")
        .split("test")
        .data(&boolq)
        .shard_size(1)
        .max_tokens(16);
    conftag(&url, &submit.args()).await.unwrap();
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    let gpu = "NVIDIA H100 80GB HBM3";
    let mut worker = infer_command(&url, &model_dir, tmp.path(), "infer-roofline")
        .args([
            "--lease-secs",
            "3",
            "--max-inflight-rows",
            "1",
            "--gpu-name",
            gpu,
        ])
        .spawn()
        .unwrap();

    let start = Instant::now();
    let info = loop {
        let doc = status::document(&queue, &[]).await.unwrap();
        let w = doc.workers.iter().find(|w| w.info.id == "infer-roofline");
        if let Some(w) = w.filter(|w| w.info.tokens_done > 0 && w.info.tokens_per_s.is_some()) {
            break w.info.clone();
        }
        assert!(worker.try_wait().unwrap().is_none(), "the worker exited");
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no rate published: {:?}",
            doc.workers
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    worker.kill().unwrap();
    worker.wait().unwrap();

    assert_eq!(info.device.as_deref(), Some(gpu));
    let model = worker_infer::model_shape::model_shape(model_dir.to_str().unwrap(), 4).unwrap();
    let h100 = common::roofline::gpu_spec(gpu).unwrap();
    // f32 weights, one request at a time on the CPU; the context is what the rows held.
    let ceiling = info
        .ceiling_tokens_per_s
        .expect("a ceiling for a known GPU");
    let bounds = (
        common::roofline::decode_ceiling(&h100, &model, 1, 10_000.0),
        common::roofline::decode_ceiling(&h100, &model, 1, 0.0),
    );
    assert!(
        bounds.0 <= ceiling && ceiling <= bounds.1,
        "{ceiling} outside {bounds:?}"
    );
    let doc = status::document(&queue, &[]).await.unwrap();
    let text = coordinator::view::status_text(&doc);
    assert!(
        text.contains("infer-roofline") && text.contains("ceiling") && text.contains(gpu),
        "{text}"
    );
}

/// A dataset added by a spec file alone (`data/specs/numqa.toml`: other columns, an id, an
/// extra prompt column, numeric answers) goes through the same pipeline: the spec's own rows,
/// the tiny model, the LLM judge (the fake server), then a rules re-judge with its numeric
/// checker, and an export whose tokens carry its domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_spec_file_runs_end_to_end() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    worker_infer::tiny_model::write_tiny_model(&model_dir, Default::default(), 7).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/specs/numqa.toml");
    let submit = Submit::model("tiny")
        .dataset_spec(&spec)
        .split("test")
        .shard_size(4);
    conftag(&url, &submit.args()).await.unwrap();
    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    let jobs = queue.job_ids().await.unwrap();
    assert_eq!(jobs.len(), 1);
    let job = jobs[0].clone();
    assert!(job.as_str().starts_with("tiny_numqa_test-"), "{job}");

    let mut worker = infer_worker(&url, &model_dir, tmp.path(), "infer-numqa");
    assert!(worker.wait().unwrap().success());
    let fake = fake_judge::start(FakeConfig::default()).await;
    let client = OpenAiClient::new(ClientConfig::new(fake.base_url(), None, "")).unwrap();
    support::judge_all(&queue, Some(client)).await;

    let doc = status::document(&queue, &[]).await.unwrap();
    let j = &doc.jobs[0];
    assert_eq!((j.dataset.as_str(), j.domain.as_str()), ("numqa", "NUM"));
    assert_eq!((j.rows, j.rows_inferred, j.rows_judged), (10, 10, 10));
    assert!(j.spec_digest.is_some());

    let out = tmp.path().join("out");
    conftag(
        &url,
        &[
            "export",
            "--all",
            "--report",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(p)).unwrap()).unwrap()
    };
    let pred = read("inference/predictions/tiny_numqa_test.json");
    assert_eq!(pred.as_object().unwrap().len(), 10);
    assert_eq!(pred["0"]["question"], "How many legs does a spider have?");
    assert_eq!(pred["0"]["correct_answer"], 8);
    let tagged = read("eval/judged/tiny_numqa_test_tagged.json");
    for (_, row) in tagged.as_object().unwrap() {
        let token = row["confidence_token"].as_str().unwrap();
        assert!(token == "<CN_NUM>" || token == "<UN_NUM>", "{token}");
        assert!(row["tagged_response"].as_str().unwrap().ends_with(token));
    }
    let training = std::fs::read_to_string(out.join("training/combined.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(training.lines().next().unwrap()).unwrap();
    assert_eq!(first["dataset"], "numqa");
    assert_eq!(first["id"], "nq-001");
    assert!(first["prompt"].as_str().unwrap().contains("Unit: legs"));
    let summary = std::fs::read_to_string(out.join("report/summary.md")).unwrap();
    let line = summary
        .lines()
        .find(|l| l.starts_with("| tiny | numqa | test | 10 | 10 |"))
        .unwrap_or_else(|| panic!("no numqa row in\n{summary}"));
    assert!(line.ends_with("| NUM |"), "{line}");

    // Re-judged by its rules (the numeric checker), without the API.
    conftag(
        &url,
        &[
            "requeue",
            job.as_str(),
            "--stage",
            "judge",
            "--all",
            "--judge-mode",
            "rules",
        ],
    )
    .await
    .unwrap();
    support::judge_all(&queue, None).await;
    conftag(&url, &["export", "--all", "--out", out.to_str().unwrap()])
        .await
        .unwrap();
    let tagged = read("eval/judged/tiny_numqa_test_tagged.json");
    assert_eq!(tagged.as_object().unwrap().len(), 10);
    for (_, row) in tagged.as_object().unwrap() {
        let reasoning = row["judge_response"]["reasoning"].as_str().unwrap();
        assert!(reasoning.starts_with("rules: "), "{reasoning}");
    }
}
