//! `conftag-infer bench --through-queue`: the rows of a mix go through a real Redis and this
//! process's worker loop, with every row's own budget, and come out as the same work the bare
//! engine does with the same rows; the bench's job is purged afterwards.

mod support;

use std::process::Command;

use common::queue::Queue;
use common::redis_conn::RedisUrl;
use testkit::RedisServer;

use support::infer_bin;

/// Run `conftag-infer … bench` on the tiny model and return its `--jsonl` objects.
fn bench(redis: &str, dir: &std::path::Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let jsonl = dir.join(format!("bench-{}.jsonl", extra.len()));
    let out = Command::new(infer_bin())
        .args(["--redis-url", redis, "--weights"])
        .arg(dir.join("tiny"))
        .args(["--dtype", "f32", "--device", "cpu", "bench", "--mix"])
        .arg(dir.join("mix.json"))
        .args(["--in-flight", "1,3", "--rows", "5", "--jsonl"])
        .arg(&jsonl)
        .args(extra)
        .env("HF_HOME", dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| in flight |"), "{table}");
    std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_queue_does_the_bare_engines_work_and_leaves_no_job() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let tmp = tempfile::tempdir().unwrap();
    worker_infer::tiny_model::write_tiny_model(&tmp.path().join("tiny"), Default::default(), 7)
        .unwrap();
    // Budgets of 2..9 tokens: rows finish at different times, and a row's own budget (not
    // the job's, the largest) must bound it.
    std::fs::write(
        tmp.path().join("mix.json"),
        r#"{"rows": [{"prompt_tokens": 5, "max_new_tokens": 2},
                     {"prompt_tokens": 17, "max_new_tokens": 9},
                     {"prompt_tokens": 9, "max_new_tokens": 4}]}"#,
    )
    .unwrap();

    let bare = bench(&url, tmp.path(), &[]);
    let queued = bench(&url, tmp.path(), &["--through-queue", "--shard-size", "2"]);
    assert_eq!(bare.len(), 2);
    assert_eq!(queued.len(), 2);
    for (b, q) in bare.iter().zip(&queued) {
        assert_eq!(q["in_flight"], b["in_flight"]);
        assert_eq!(q["rows"], 5);
        // Greedy, the same prompts and budgets: the same tokens, whichever way they went.
        assert_eq!(q["output_tokens"], b["output_tokens"], "{b} vs {q}");
        let tokens = q["output_tokens"].as_u64().unwrap();
        // Five rows cycle the mix: budgets 2, 9, 4, 2, 9.
        assert!(tokens > 0 && tokens <= 26, "{q}");
    }

    let queue = Queue::connect(&RedisUrl::new(url.clone())).await.unwrap();
    assert!(queue.job_ids().await.unwrap().is_empty());
}
