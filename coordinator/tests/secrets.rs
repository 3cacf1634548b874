//! The three secrets — the Redis password, `OPENAI_API_KEY` and `HF_TOKEN` — each distinctive,
//! used for real (Redis with `requirepass`, the fake judge and a loopback hub that refuse
//! requests without them) through a whole job: `conftag submit` from the hub, inference
//! results written as an infer worker would, a judge worker built from `conftag-judge`'s own
//! command line, `status`, `workers`, `export`. Everything is logged at `trace`: the `conftag`
//! processes' stdout and stderr are captured, and so is this process's tracing output (the
//! judge worker, the fake servers, reqwest, hyper, redis-rs through `log`). None of the three
//! may appear there, in the exported files, or in any Redis key or value.
//!
//! This file holds one test: it owns the process environment and the global subscriber.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::job::JobId;
use common::queue::{CompleteOutcome, Counter, Queue, Stage};
use common::records::PredictionRecord;
use common::redis_conn::RedisUrl;
use testkit::parquet::{write_parquet, ParquetValues};
use testkit::{fake_judge, RedisServer, Submit};
use tokio_util::sync::CancellationToken;
use worker_judge::fake::FakeConfig;

const REDIS_PASSWORD: &str = "rpw-Zq81xVt4Lk";
const OPENAI_KEY: &str = "sk-test-Hj27Qm5cRw90";
const HF_TOKEN: &str = "hf_Pt63NbYs18Ke";
const SECRETS: [&str; 3] = [REDIS_PASSWORD, OPENAI_KEY, HF_TOKEN];

/// Every secret found in `text`, for the assertion message.
fn leaks(text: &[u8]) -> Vec<&'static str> {
    let text = String::from_utf8_lossy(text);
    SECRETS.into_iter().filter(|s| text.contains(s)).collect()
}

/// A `Write` target for the global subscriber that keeps everything.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A hub that serves one parquet file to requests carrying `Bearer HF_TOKEN`, with the
/// headers `hf-hub` needs (see `common/tests/hub.rs`).
#[derive(Clone)]
struct Hub {
    parquet: Arc<Vec<u8>>,
    authorized: Arc<AtomicU64>,
}

async fn resolve(State(hub): State<Hub>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {HF_TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, "Invalid credentials").into_response();
    }
    hub.authorized.fetch_add(1, Ordering::Relaxed);
    let bytes = &hub.parquet;
    let len = bytes.len();
    let (a, b) = testkit::http::byte_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        len,
    );
    let mut out = HeaderMap::new();
    out.insert(
        header::ETAG,
        HeaderValue::from_static("\"secrets-test-etag\""),
    );
    out.insert(
        "x-repo-commit",
        HeaderValue::from_static("0123456789abcdef0123456789abcdef01234567"),
    );
    out.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")).unwrap(),
    );
    (StatusCode::PARTIAL_CONTENT, out, bytes[a..=b].to_vec()).into_response()
}

/// Ten BoolQ rows as the hub's parquet.
fn boolq_parquet(dir: &Path) -> Vec<u8> {
    let p = dir.join("rows.parquet");
    let n = 10;
    write_parquet(
        &p,
        &[
            (
                "question",
                ParquetValues::Utf8(
                    (0..n)
                        .map(|i| format!("is {i} even").into_bytes())
                        .collect(),
                ),
            ),
            (
                "answer",
                ParquetValues::Bool((0..n).map(|i| i % 2 == 0).collect()),
            ),
            (
                "passage",
                ParquetValues::Utf8(
                    (0..n)
                        .map(|i| format!("The number {i} is what it is.").into_bytes())
                        .collect(),
                ),
            ),
        ],
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

/// Answer every infer shard of `job` as an infer worker would.
async fn infer_everything(queue: &Queue, job: &JobId) {
    let (spec, _) = queue.job_spec(job).await.unwrap().unwrap();
    let rows = queue.input_rows(job, 0, spec.rows).await.unwrap();
    while let Some(lease) = queue
        .claim(job, Stage::Infer, "secrets-infer", Duration::from_secs(30))
        .await
        .unwrap()
    {
        let out: Vec<(u64, String)> = rows[lease.start as usize..lease.end as usize]
            .iter()
            .map(|r| {
                let p = PredictionRecord {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    ..testkit::prediction(r, "Yes. The passage says so.")
                };
                (r.index, serde_json::to_string(&p).unwrap())
            })
            .collect();
        let counters = [(Counter::InferRows, lease.rows() as i64)].into();
        assert_eq!(
            queue.complete(&lease, &counters, &out).await.unwrap(),
            CompleteOutcome::Stored
        );
    }
}

/// Every key name and every value (by type) in the Redis, as bytes.
async fn dump_redis(url: &str) -> Vec<(String, Vec<u8>)> {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        let cmd = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).clone(),
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
            other => panic!("key {key} of type {other}: teach this test to read it"),
        };
        let value: redis::Value = cmd.query_async(&mut c).await.unwrap();
        let mut bytes = Vec::new();
        flatten(&value, &mut bytes);
        out.push((key, bytes));
    }
    // Connection names are visible to anyone with CLIENT LIST.
    let clients: redis::Value = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut bytes = Vec::new();
    flatten(&clients, &mut bytes);
    out.push(("(CLIENT LIST)".into(), bytes));
    out
}

fn flatten(v: &redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => out.extend_from_slice(b),
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => {
            out.extend_from_slice(s.as_bytes())
        }
        redis::Value::Array(items)
        | redis::Value::Set(items)
        | redis::Value::Push { data: items, .. } => {
            for i in items {
                out.push(b'\n');
                flatten(i, out);
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                out.push(b'\n');
                flatten(k, out);
                out.push(b'=');
                flatten(v, out);
            }
        }
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_logs_output_status_files_or_redis() {
    let logs = Capture::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test binary installs the only subscriber");

    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_with(true, Some(REDIS_PASSWORD)).unwrap();
    let url = redis.url();
    assert!(url.contains(REDIS_PASSWORD));

    let hub = Hub {
        parquet: Arc::new(boolq_parquet(dir.path())),
        authorized: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/datasets/{owner}/{name}/resolve/{rev}/{*path}",
            axum::routing::get(resolve),
        )
        .with_state(hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let judge = fake_judge::start(FakeConfig {
        api_key: Some(OPENAI_KEY.into()),
        ..FakeConfig::default()
    })
    .await;

    // This process's environment, for the judge worker built from its command line.
    let hf_home = dir.path().join("hf-home");
    std::env::set_var("REDIS_URL", &url);
    std::env::set_var("OPENAI_API_KEY", OPENAI_KEY);
    std::env::set_var("HF_TOKEN", HF_TOKEN);
    std::env::set_var("HF_ENDPOINT", format!("http://{hub_addr}"));
    std::env::set_var("HF_HOME", &hf_home);
    std::env::set_var("RUST_LOG", "trace");

    let mut outputs: Vec<(String, Output)> = Vec::new();
    let hub_url = format!("http://{hub_addr}");
    let conftag = |args: &[&str]| -> Output {
        let out = tokio::task::block_in_place(|| {
            Command::new(env!("CARGO_BIN_EXE_conftag"))
                .args(args)
                .env("REDIS_URL", &url)
                .env("RUST_LOG", "trace")
                .env("OPENAI_API_KEY", OPENAI_KEY)
                .env("HF_TOKEN", HF_TOKEN)
                .env("HF_ENDPOINT", &hub_url)
                .env("HF_HOME", &hf_home)
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "conftag {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    // Submit from the hub (the token is needed: the hub refuses requests without it).
    let from_hub = Submit::new("org/Secret-Test-1B", "boolq")
        .split("test")
        .shard_size(3);
    let o = conftag(&from_hub.clone().judge_mode("llm").json().args());
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let job = JobId::parse(created["jobs"][0]["id"].as_str().unwrap()).unwrap();
    assert_eq!(created["jobs"][0]["rows"], 10);
    assert!(hub.authorized.load(Ordering::Relaxed) > 0, "HF_TOKEN used");
    outputs.push(("submit".into(), o));
    outputs.push((
        "submit (json logs, again)".into(),
        conftag(&[&["--log-format", "json"], &from_hub.args()[..]].concat()),
    ));

    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    infer_everything(&queue, &job).await;

    // The judge worker as `conftag-judge` builds it, from its command line and environment.
    let cli = <worker_judge::cli::Cli as clap::Parser>::try_parse_from([
        "conftag-judge",
        "--base-url",
        &judge.base_url(),
        "--exit-when-done",
        "--lease-secs",
        "5",
    ])
    .unwrap();
    let processor = cli.worker.processor().unwrap();
    let judge_queue = Queue::connect(&cli.common.redis_url()).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(120),
        worker_judge::run(
            judge_queue,
            processor,
            cli.worker.worker_config(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the judge finishes")
    .unwrap();

    let o = conftag(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["jobs"][0]["state"], "done", "{doc}");
    outputs.push(("status --json".into(), o));
    outputs.push(("status".into(), conftag(&["status"])));
    outputs.push(("workers --json".into(), conftag(&["workers", "--json"])));
    let out_dir = dir.path().join("out");
    outputs.push((
        "export".into(),
        conftag(&["export", "--all", "--out", out_dir.to_str().unwrap()]),
    ));

    // The checks can fail: a planted secret is found where the real ones are looked for.
    assert_eq!(
        leaks(format!("x{OPENAI_KEY}x").as_bytes()),
        vec![OPENAI_KEY]
    );

    for (what, o) in &outputs {
        for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            assert!(
                leaks(bytes).is_empty(),
                "conftag {what}: {stream} holds {:?}:\n{}",
                leaks(bytes),
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let submit_log = String::from_utf8_lossy(&outputs[0].1.stderr).into_owned();
    assert!(
        submit_log.contains("TRACE") || submit_log.contains("DEBUG"),
        "conftag logged at trace: {submit_log}"
    );

    let mut files = 0;
    for entry in testkit::files_under(&out_dir) {
        files += 1;
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            leaks(&bytes).is_empty(),
            "{} holds {:?}",
            entry.display(),
            leaks(&bytes)
        );
    }
    assert!(files >= 3, "export wrote its files");

    // The scan can fail: a secret planted in a stream entry and a zset member is found.
    {
        let mut c = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::pipe()
            .cmd("XADD")
            .arg("planted:s")
            .arg("*")
            .arg("f")
            .arg(format!("<{HF_TOKEN}>"))
            .ignore()
            .cmd("ZADD")
            .arg("planted:z")
            .arg(1)
            .arg(format!("<{OPENAI_KEY}>"))
            .ignore()
            .query_async(&mut c)
            .await
            .unwrap();
        let mut planted: Vec<String> = dump_redis(&url)
            .await
            .into_iter()
            .filter(|(_, v)| !leaks(v).is_empty())
            .map(|(k, _)| k)
            .collect();
        planted.sort();
        assert_eq!(planted, ["planted:s", "planted:z"]);
        let _: () = redis::cmd("DEL")
            .arg("planted:s")
            .arg("planted:z")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let dump = dump_redis(&url).await;
    assert!(dump.len() > 5, "the job's keys are there to scan");
    for (key, value) in &dump {
        assert!(leaks(key.as_bytes()).is_empty(), "key name {key}");
        assert!(
            leaks(value).is_empty(),
            "{key} holds {:?}: {}",
            leaks(value),
            String::from_utf8_lossy(value)
        );
    }

    let captured = logs.0.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&captured);
    assert!(
        text.contains("TRACE") && text.lines().count() > 50,
        "the in-process logs were captured at trace ({} lines)",
        text.lines().count()
    );
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| !leaks(l.as_bytes()).is_empty())
        .take(5)
        .collect();
    assert!(bad.is_empty(), "in-process logs leak:\n{}", bad.join("\n"));
}
