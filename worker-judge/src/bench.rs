//! `conftag-judge bench`: judge throughput against the local fake server, with a set latency
//! and optionally a rate limit, through the real worker, queue and HTTP client.

use std::time::{Duration, Instant};

use common::dataset::InputRow;
use common::job::{JobSpec, JudgeMode, JudgeSettings, PromptMode};
use common::queue::{Counter, Queue, QueueError, Stage};
use common::records::PredictionRecord;
use common::status;
use common::worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::fake::{FakeConfig, FakeServer, FakeStats};
use crate::openai::{ClientConfig, OpenAiClient};
use crate::JudgeProcessor;

#[derive(Debug, Clone)]
pub struct BenchCase {
    pub rows: u64,
    pub in_flight: usize,
    pub latency: Duration,
    pub rate_limit: Option<(u32, Duration)>,
}

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub seconds: f64,
    pub rows_per_s: f64,
    pub stats: FakeStats,
}

/// A job whose inference is already done (answers alternate right / wrong).
async fn judged_ready_job(queue: &Queue, rows_total: u64) -> Result<common::JobId, QueueError> {
    let rows: Vec<InputRow> = (0..rows_total)
        .map(|i| InputRow {
            index: i,
            question: format!("is statement {i} true"),
            prompt: String::new(),
            correct_answer: serde_json::Value::Bool(i % 2 == 0),
            options: None,
            answer_letter: None,
            id: None,
            max_tokens: None,
        })
        .collect();
    let model = format!("judge-bench-{}", uuid::Uuid::new_v4().simple());
    let spec = JobSpec::for_rows(
        model,
        common::dataset_spec::builtin("boolq").expect("built in"),
        "bench",
        "bench",
        &rows,
        1,
        PromptMode::Raw,
    );
    let judge = JudgeSettings {
        model: "gpt-4o-2024-08-06".into(),
        mode: JudgeMode::Llm,
        budget_micro_usd: None,
    };
    queue.submit(&spec, &judge, &rows, 25, 5).await?;
    let id = spec.id();
    while let Some(lease) = queue
        .claim(&id, Stage::Infer, "bench", Duration::from_secs(60))
        .await?
    {
        let out: Vec<(u64, String)> = (lease.start..lease.end)
            .map(|i| {
                let p = PredictionRecord {
                    response: if i % 3 == 0 { "No." } else { "Yes." }.into(),
                    question: format!("is statement {i} true"),
                    correct_answer: serde_json::Value::Bool(i % 2 == 0),
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    finish_reason: "stop".into(),
                    error: None,
                };
                (i, serde_json::to_string(&p).expect("serializes"))
            })
            .collect();
        let counters = [(Counter::InferRows, lease.rows() as i64)].into();
        queue.complete(&lease, &counters, &out).await?;
    }
    Ok(id)
}

pub async fn run_case(queue: &Queue, case: &BenchCase) -> anyhow::Result<BenchResult> {
    let (limit, window) = case.rate_limit.unwrap_or((0, Duration::from_secs(60)));
    let fake = FakeServer::start(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            latency: case.latency,
            rate_limit: case.rate_limit.map(|_| limit),
            rate_window: window,
            ..FakeConfig::default()
        },
    )
    .await?;
    let job = judged_ready_job(queue, case.rows).await?;
    let client = OpenAiClient::new(ClientConfig::new(fake.base_url(), None, ""))?;
    let processor = JudgeProcessor::new(Some(client), case.in_flight, None, None, 0);
    let mut cfg = WorkerConfig::new(Stage::Judge);
    cfg.exit_when_done = true;
    cfg.idle_poll = Duration::from_millis(20);
    cfg.max_inflight_rows = (case.in_flight as u64 * 2).max(50);
    let start = Instant::now();
    crate::run(queue.clone(), processor, cfg, CancellationToken::new()).await?;
    let seconds = start.elapsed().as_secs_f64();
    let st = status::job_status(queue, &job).await?;
    anyhow::ensure!(
        st.rows_judged == case.rows,
        "only {} rows judged",
        st.rows_judged
    );
    let stats: FakeStats = reqwest::get(format!("http://{}/admin/stats", fake.addr))
        .await?
        .json()
        .await?;
    queue.purge(&job).await?;
    Ok(BenchResult {
        seconds,
        rows_per_s: case.rows as f64 / seconds,
        stats,
    })
}

pub async fn run(
    queue: &Queue,
    rows: u64,
    latency_ms: u64,
    in_flight: usize,
    rate: Option<u32>,
    window_ms: u64,
) -> anyhow::Result<()> {
    let case = BenchCase {
        rows,
        in_flight,
        latency: Duration::from_millis(latency_ms),
        rate_limit: rate.map(|r| (r, Duration::from_millis(window_ms))),
    };
    let r = run_case(queue, &case).await?;
    let bound = match case.rate_limit {
        Some((n, w)) => (n as f64 / w.as_secs_f64())
            .min(in_flight as f64 / case.latency.as_secs_f64().max(1e-3)),
        None => in_flight as f64 / case.latency.as_secs_f64().max(1e-3),
    };
    println!("| rows | in flight | latency ms | rate limit | seconds | rows/s | bound rows/s | requests | 429s | 429 share |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {rows} | {in_flight} | {latency_ms} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1}% |",
        rate.map_or("none".into(), |r| format!("{r} per {window_ms} ms")),
        r.seconds,
        r.rows_per_s,
        bound,
        r.stats.requests,
        r.stats.rate_limited,
        100.0 * r.stats.rate_limited as f64 / r.stats.requests.max(1) as f64
    );
    Ok(())
}
