//! `conftag monitor` against a real Redis: the gauges a Prometheus scrape sees follow the
//! job's counters as shards move, and the command refuses to start without an address.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::queue::{Queue, Stage};
use testkit::metrics::{metric_value, scrape_metrics};
use testkit::{free_port, samples, RedisServer, Submit};

struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Scrape until `check` accepts the text (the monitor refreshes on its own clock).
fn scrape_until(addr: std::net::SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = scrape_metrics(addr) {
            if check(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        }
        assert!(Instant::now() < deadline, "no /metrics at {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_gauges_follow_the_shards() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let submit = Submit::new("m", "boolq")
        .split("test")
        .shard_size(2)
        .data(samples("boolq.jsonl"));
    let out = Command::new(env!("CARGO_BIN_EXE_conftag"))
        .args(["--redis-url", &url])
        .args(submit.args())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _monitor = Monitor(
        Command::new(env!("CARGO_BIN_EXE_conftag"))
            .args(["--redis-url", &url, "--metrics-addr", &addr.to_string()])
            .args(["monitor", "--interval", "0.2"])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let boolq = [("dataset", "boolq"), ("model", "m")];
    let text = scrape_until(addr, "the job's rows", |t| {
        metric_value(t, "conftag_job_rows", &boolq) == Some(8.0)
    });
    let queued = [("dataset", "boolq"), ("state", "queued_infer")];
    assert_eq!(
        metric_value(&text, "conftag_job_shards", &queued),
        Some(4.0)
    );
    assert_eq!(
        metric_value(&text, "conftag_queue_depth", &[("stage", "infer")]),
        Some(4.0)
    );

    // A shard leased by a worker shows up at the next refresh.
    let queue = Queue::connect(&common::redis_conn::RedisUrl::new(url.clone()))
        .await
        .unwrap();
    let job = queue.job_ids().await.unwrap().remove(0);
    let lease = queue
        .claim(&job, Stage::Infer, "w1", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("a shard to lease");
    let leased = [("dataset", "boolq"), ("state", "leased_infer")];
    let text = scrape_until(addr, "the leased shard", |t| {
        metric_value(t, "conftag_job_shards", &leased) == Some(1.0)
    });
    assert_eq!(
        metric_value(&text, "conftag_job_shards", &queued),
        Some(3.0)
    );
    assert_eq!(metric_value(&text, "conftag_monitor_up", &[]), Some(1.0));
    drop(lease);
}

#[test]
fn monitor_without_an_address_names_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_conftag"))
        .args(["--redis-url", "redis://127.0.0.1:1", "monitor"])
        .env_remove("CONFTAG_METRICS_ADDR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-addr"), "{err}");
}
