//! The chaos suite: the whole pipeline under random faults, checked against a fault-free run
//! of the same jobs.
//!
//! Both runs use real parts only: `redis-server` with AOF, `conftag-infer` processes running
//! the tiny model in mistral.rs (`--device cpu --dtype f32`), judge worker processes talking
//! HTTP to the project's fake OpenAI-compatible server (in this process), and `conftag
//! submit` / `status` / `export` in-process. The reference run has no faults. In the chaos
//! run the workers reach Redis through a TCP proxy (`support::proxy`), and a driver with a
//! seeded RNG (`CONFTAG_CHAOS_SEED`, printed) does `CONFTAG_CHAOS_ROUNDS` rounds of: SIGKILL
//! and restart an infer worker, SIGKILL and restart a judge worker, then one of — restart
//! Redis (SIGKILL; AOF brings the data back), cut every worker off Redis for
//! `CONFTAG_CHAOS_OUTAGE_SECS` (proxy), switch the judge into 429 storms / 5xx / hangs /
//! garbage bodies and back, or replace a worker with one that reuses a live worker's
//! `--worker-id`. After each restart, outage and Redis restart the driver waits until every
//! worker publishes a heartbeat again, so a worker that dies or stays stuck instead of
//! reconnecting fails the test.
//!
//! Checked at the end: every job is done with nothing leased, queued or failed; the export is
//! byte-identical to the reference's (predictions, tagged rows, unjudged rows, training file:
//! the tiny model decodes greedily one request at a time on the CPU and the fake judge is
//! deterministic, so nothing may differ); the counters that count rows and tokens equal the
//! reference's (a row stored twice would add twice); every lease held by a killed worker shows
//! in `conftag status --json` as a lapsed lease or a failed attempt, and judge faults that
//! were served show as retried calls, failed attempts or lapsed leases; every worker drains
//! and exits 0 on SIGTERM. The summary line gives the figures.
//!
//! The judge workers are this test binary re-executed (`chaos __judge-worker ARGS…` runs
//! `worker_judge::cli::Cli::run`, the code behind `conftag-judge`), not the `conftag-judge`
//! binary found next to `conftag-infer`: cargo builds a package's own binaries for its
//! integration tests (hence `CARGO_BIN_EXE_conftag-infer`), but not another package's, so
//! `cargo test -p worker-infer --test chaos` would run a stale `conftag-judge` left from an
//! older build, or find none. Re-executing the test binary always runs the code under test.
//! That is why this target has `harness = false`: `main` dispatches between the two roles.
//!
//! Bounded by default (4 rounds, 5 s outages, 150 rows per dataset and round
//! (`CONFTAG_CHAOS_ROWS`) so that the work outlasts the rounds: a few minutes in a debug build
//! on two cores); `deploy/chaos/chaos.sh` runs the long version.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::job::JobId;
use common::keys::JobKeys;
use common::queue::{Queue, QueueError};
use common::redis_conn::RedisUrl;
use common::status::{self, JobState, StatusDocument};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use testkit::{fake_judge, samples, RedisServer, Submit};
use worker_judge::fake::{FakeConfig, FakeServer, Fault};

use support::proxy::RedisProxy;
use support::{conftag, infer_command};

/// First argument that makes this binary a judge worker.
const INFER_WORKERS: usize = 3;
const JUDGE_WORKERS: usize = 2;
const DATASETS: [&str; 3] = ["boolq", "math", "medqa"];
/// A job that shows no progress for this long is stuck (generous: retries back off up to
/// two minutes).
const STUCK_AFTER: Duration = Duration::from_secs(300);
/// How long a restarted or reconnecting worker may take to publish a heartbeat.
const HEARTBEAT_WITHIN: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(support::JUDGE_CHILD) {
        return support::judge_worker(&args[2..]);
    }
    testkit::harness::run_as_test("chaos", &args[1..], || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(chaos());
        "ok".into()
    })
}

#[derive(Debug)]
struct Settings {
    seed: u64,
    rounds: usize,
    outage: Duration,
    rows_per_dataset: usize,
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Self {
        let fresh_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        // The work must outlast the rounds for the faults to hit rows in flight: about 150
        // rows per dataset and round keep this machine busy through a round.
        let rounds = env_number("CONFTAG_CHAOS_ROUNDS", 4usize);
        Self {
            seed: env_number("CONFTAG_CHAOS_SEED", fresh_seed),
            rounds,
            outage: Duration::from_secs(env_number("CONFTAG_CHAOS_OUTAGE_SECS", 5u64)),
            rows_per_dataset: env_number("CONFTAG_CHAOS_ROWS", (150 * rounds).max(64)),
        }
    }
}

/// `n` rows of `dataset`: the sample rows over and over, each question made unique so a row
/// stored under another row's index could not go unnoticed.
fn write_rows(dir: &Path, dataset: &str, n: usize) -> PathBuf {
    let text = std::fs::read_to_string(samples(&format!("{dataset}.jsonl"))).unwrap();
    let base: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let field = if dataset == "math" {
        "problem"
    } else {
        "question"
    };
    let mut out = String::new();
    for k in 0..n {
        let mut row = base[k % base.len()].clone();
        let q = row[field].as_str().unwrap().to_owned();
        row[field] = json!(format!("{q} (variant {k})"));
        out.push_str(&row.to_string());
        out.push('\n');
    }
    let path = dir.join(format!("{dataset}.jsonl"));
    std::fs::write(&path, out).unwrap();
    path
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Infer,
    Judge,
}

#[derive(Debug)]
struct Worker {
    kind: Kind,
    /// The id this worker slot restarts under.
    slot_id: String,
    /// The `--worker-id` of the running process (another slot's after a duplicate-id round).
    id: String,
    child: Child,
    log: PathBuf,
}

/// The worker processes of one run.
#[derive(Debug)]
struct Fleet {
    name: &'static str,
    redis_url: String,
    judge_url: String,
    model_dir: PathBuf,
    dir: PathBuf,
    workers: Vec<Worker>,
    spawned: usize,
}

impl Fleet {
    fn new(
        name: &'static str,
        redis_url: String,
        judge_url: String,
        model_dir: &Path,
        dir: &Path,
    ) -> Self {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        Self {
            name,
            redis_url,
            judge_url,
            model_dir: model_dir.to_owned(),
            dir: dir.to_owned(),
            workers: Vec::new(),
            spawned: 0,
        }
    }

    fn start(&mut self) {
        for n in 0..INFER_WORKERS {
            let id = format!("infer-{n}");
            self.spawn(Kind::Infer, &id, &id);
        }
        for n in 0..JUDGE_WORKERS {
            let id = format!("judge-{n}");
            self.spawn(Kind::Judge, &id, &id);
        }
    }

    fn spawn(&mut self, kind: Kind, slot_id: &str, id: &str) {
        self.spawned += 1;
        let log = self
            .dir
            .join("logs")
            .join(format!("{:03}-{slot_id}-as-{id}.log", self.spawned));
        let mut cmd = match kind {
            Kind::Infer => {
                let mut c = infer_command(&self.redis_url, &self.model_dir, &self.dir, id);
                c.args([
                    "--lease-secs",
                    "3",
                    "--max-inflight-rows",
                    "8",
                    "--drain-secs",
                    "10",
                ]);
                c
            }
            Kind::Judge => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.arg(support::JUDGE_CHILD)
                    .args([
                        "--redis-url",
                        &self.redis_url,
                        "--base-url",
                        &self.judge_url,
                    ])
                    .args([
                        "--num-workers",
                        "8",
                        "--request-timeout",
                        "2",
                        "--max-retries",
                        "4",
                        "--lease-secs",
                        "3",
                        "--max-inflight-rows",
                        "16",
                        "--drain-secs",
                        "10",
                        "--worker-id",
                        id,
                    ])
                    .env("RUST_LOG", "warn")
                    .env_remove("OPENAI_API_KEY")
                    .env_remove("REDIS_URL");
                c
            }
        };
        let file = File::create(&log).unwrap();
        cmd.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = cmd.spawn().unwrap();
        self.workers.push(Worker {
            kind,
            slot_id: slot_id.to_owned(),
            id: id.to_owned(),
            child,
            log,
        });
    }

    /// Every worker process is still running; a worker that exited on its own fails the test.
    fn check_alive(&mut self) {
        for w in &mut self.workers {
            if let Some(status) = w.child.try_wait().unwrap() {
                panic!(
                    "{} run: worker {} ({:?}) exited on its own with {status}; its log:\n{}",
                    self.name,
                    w.id,
                    w.kind,
                    log_tail(&w.log, 40)
                );
            }
        }
    }

    fn indices(&self, kind: Kind) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i].kind == kind)
            .collect()
    }

    /// SIGKILL a worker and wait for it.
    fn kill(&mut self, index: usize) -> Worker {
        let mut w = self.workers.remove(index);
        w.child.kill().unwrap();
        w.child.wait().unwrap();
        w
    }

    fn runs_id(&self, id: &str) -> bool {
        self.workers.iter().any(|w| w.id == id)
    }

    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.workers.iter().map(|w| w.id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// SIGTERM every worker: each drains and exits 0.
    async fn stop(&mut self) {
        for w in &self.workers {
            Command::new("kill")
                .args(["-TERM", &w.child.id().to_string()])
                .status()
                .unwrap();
        }
        let start = Instant::now();
        for w in &mut self.workers {
            loop {
                if let Some(status) = w.child.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "{} run: worker {} exited with {status} after SIGTERM; its log:\n{}",
                        self.name,
                        w.id,
                        log_tail(&w.log, 40)
                    );
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{} run: worker {} did not exit within 2 minutes of SIGTERM",
                    self.name,
                    w.id
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.workers.clear();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- {} run: log of worker {} ({:?}, slot {}):\n{}",
                    self.name,
                    w.id,
                    w.kind,
                    w.slot_id,
                    log_tail(&w.log, 15)
                );
            }
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Retry a Redis read through restarts and reconnects (the driver's own connection goes
/// down with Redis too).
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{what}: Redis did not answer the test for 2 minutes: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A lease: job, stage, shard, fencing token.
type Lease = (String, String, u64, String);

/// Leases whose shard hash names `worker` as holder.
async fn leases_of(queue: &Queue, jobs: &[JobId], worker: &str) -> Result<Vec<Lease>, QueueError> {
    let mut c = queue.conn();
    let mut out = Vec::new();
    for job in jobs {
        let keys = JobKeys::new(job);
        for stage in ["infer", "judge"] {
            let ids: Vec<u64> = redis::cmd("ZRANGE")
                .arg(keys.leased(stage))
                .arg(0)
                .arg(-1)
                .query_async(&mut c)
                .await?;
            for id in ids {
                let (holder, token): (Option<String>, Option<String>) = redis::cmd("HMGET")
                    .arg(keys.shard(id))
                    .arg("worker")
                    .arg("token")
                    .query_async(&mut c)
                    .await?;
                if holder.as_deref() == Some(worker) {
                    out.push((
                        job.to_string(),
                        stage.to_owned(),
                        id,
                        token.unwrap_or_default(),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Whether the lease's token completed its shard (the recent-events window names it).
async fn completed(queue: &Queue, lease: &Lease) -> Result<bool, QueueError> {
    let job = JobId::parse(&lease.0).expect("job id");
    let mut c = queue.conn();
    let (_, found): (u64, Vec<String>) = redis::cmd("ZSCAN")
        .arg(JobKeys::new(&job).events())
        .arg(0)
        .arg("MATCH")
        .arg(format!("{}|*", lease.3))
        .arg("COUNT")
        .arg(100_000)
        .query_async(&mut c)
        .await?;
    Ok(!found.is_empty())
}

/// Shard states of a job other than `done`.
async fn shards_not_done(queue: &Queue, job: &JobId) -> Result<Vec<(u64, String)>, QueueError> {
    let keys = JobKeys::new(job);
    let mut c = queue.conn();
    let total: u64 = redis::cmd("HGET")
        .arg(keys.job())
        .arg("shards_total")
        .query_async(&mut c)
        .await?;
    let mut out = Vec::new();
    for n in 0..total {
        let state: Option<String> = redis::cmd("HGET")
            .arg(keys.shard(n))
            .arg("state")
            .query_async(&mut c)
            .await?;
        let state = state.unwrap_or_default();
        if state != "done" {
            out.push((n, state));
        }
    }
    Ok(out)
}

fn progress(doc: &StatusDocument) -> (u64, u64, u64) {
    doc.jobs.iter().fold((0, 0, 0), |(r, i, j), s| {
        (r + s.rows, i + s.rows_inferred, j + s.rows_judged)
    })
}

/// Wait until every job is done, failing when one fails, a worker exits, or nothing moves
/// for [`STUCK_AFTER`].
async fn wait_done(queue: &Queue, fleet: &mut Fleet) -> StatusDocument {
    let mut last = (0, 0, 0);
    let mut moved = Instant::now();
    loop {
        fleet.check_alive();
        if let Ok(doc) = status::document(queue, &[]).await {
            if !doc.jobs.is_empty() && doc.jobs.iter().all(|j| j.state == JobState::Done) {
                return doc;
            }
            for j in &doc.jobs {
                assert!(
                    j.shards.failed == 0,
                    "{} run: job {} has failed shards: {:?}",
                    fleet.name,
                    j.id,
                    j.failed_shards
                );
            }
            let now = (
                progress(&doc).1,
                progress(&doc).2,
                doc.jobs.iter().map(|j| j.shards.done).sum(),
            );
            if now != last {
                last = now;
                moved = Instant::now();
            }
            assert!(
                moved.elapsed() < STUCK_AFTER,
                "{} run: no progress for {STUCK_AFTER:?}: {}",
                fleet.name,
                serde_json::to_string_pretty(&doc).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Submit the three jobs (one per dataset) of both runs.
async fn submit(url: &str, data: &[(String, PathBuf)]) {
    // The default --max-attempts (5): a kill or an outage spends an attempt only of the
    // shards being processed (the look-ahead a killed worker held comes back for free), and
    // a shard is retried across fault episodes; no shard may fail here. Dead-lettering is
    // tested in common/tests/queue.rs and tests/preemption.rs.
    let mut submit = Submit::new("tiny", &DATASETS.join(","))
        .split("test")
        .shard_size(4)
        .max_tokens(16);
    for (d, path) in data {
        submit = submit.data(format!("{d}={}", path.display()));
    }
    conftag(url, &submit.args()).await.unwrap();
}

async fn export(url: &str, out: &Path) {
    conftag(url, &["export", "--all", "--out", out.to_str().unwrap()])
        .await
        .unwrap();
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    testkit::files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).expect("under dir").to_owned())
        .collect()
}

/// Row keys of an exported JSON object file (empty when the file is absent).
fn row_keys(path: &Path) -> Vec<String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes)
            .unwrap()
            .keys()
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The first row whose exported value differs, for the failure message.
fn first_difference(a: &Path, b: &Path) -> String {
    let read = |p: &Path| -> Option<serde_json::Map<String, Value>> {
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    };
    match (read(a), read(b)) {
        (Some(x), Some(y)) => {
            for (k, v) in &x {
                if y.get(k) != Some(v) {
                    return format!("row {k}: reference {v} vs chaos {:?}", y.get(k));
                }
            }
            for k in y.keys() {
                if !x.contains_key(k) {
                    return format!("row {k} only in the chaos export");
                }
            }
            "same rows, different bytes".into()
        }
        _ => "not JSON objects".into(),
    }
}

/// The counters of `conftag status --json` that count rows, tokens and calls: a row stored
/// twice (or lost) changes them, faults that were ridden out must not.
const MUST_EQUAL: [&str; 17] = [
    "/state",
    "/rows",
    "/rows_inferred",
    "/rows_infer_errors",
    "/rows_judged",
    "/rows_correct",
    "/rows_judge_errors",
    "/prompt_tokens",
    "/tokens_generated",
    "/shards/total",
    "/shards/done",
    "/shards/failed",
    "/judge/prompt_tokens",
    "/judge/completion_tokens",
    "/judge/cost_usd",
    "/judge/llm_calls",
    "/accuracy",
];

fn job_json<'a>(doc: &'a Value, job: &str) -> &'a Value {
    doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job)
        .unwrap_or_else(|| panic!("job {job} missing from the status document"))
}

fn sum_u64(doc: &Value, pointer: &str) -> u64 {
    doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.pointer(pointer).and_then(Value::as_u64).unwrap_or(0))
        .sum()
}

/// The one-of faults after each round's kills.
#[derive(Clone, Copy, Debug)]
enum Extra {
    RestartRedis,
    Outage,
    JudgeFaults,
    DuplicateId,
}

#[derive(Debug, Default)]
struct Figures {
    infer_kills: u32,
    judge_kills: u32,
    redis_restarts: u32,
    outages: u32,
    outage: Duration,
    judge_fault_switches: u32,
    duplicate_ids: u32,
    /// Rounds that ended with rows still to judge (faults hit work in flight).
    rounds_with_work: u32,
    /// Leases killed workers held that did not complete: each must come back through the
    /// reaper (a lapsed lease) or a failed attempt.
    dead_leases: HashSet<Lease>,
    /// Leases read at a kill, checked against the events at the end of the round (a
    /// completion the dead worker sent just before the kill may still land).
    pending_dead: Vec<Lease>,
}

struct Driver<'a> {
    settings: &'a Settings,
    rng: StdRng,
    queue: Queue,
    redis: Arc<Mutex<RedisServer>>,
    proxy: &'a RedisProxy,
    fake: &'a FakeServer,
    fleet: Fleet,
    jobs: Vec<JobId>,
    figures: Figures,
}

impl Driver<'_> {
    async fn pause(&mut self) {
        let ms = self.rng.random_range(500..2500);
        self.sleep_watching(Duration::from_millis(ms)).await;
    }

    /// Sleep, checking every worker is alive.
    async fn sleep_watching(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.fleet.check_alive();
            tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
        }
    }

    async fn redis_now(&self) -> u64 {
        let q = self.queue.clone();
        retrying("server time", || {
            let q = q.clone();
            async move { q.server_time_ms().await }
        })
        .await
    }

    /// Wait until each of `ids` published a heartbeat at or after `since_ms` (Redis clock),
    /// `started` = from a process started after it.
    async fn wait_heartbeats(&mut self, ids: &[String], since_ms: u64, started: bool, what: &str) {
        let start = Instant::now();
        loop {
            self.fleet.check_alive();
            if let Ok(ws) = status::workers(&self.queue).await {
                let fresh = |id: &String| {
                    ws.iter().any(|w| {
                        &w.info.id == id
                            && w.info.heartbeat_ms >= since_ms
                            && (!started || w.info.started_ms >= since_ms)
                    })
                };
                if ids.iter().all(fresh) {
                    return;
                }
            }
            assert!(
                start.elapsed() < HEARTBEAT_WITHIN,
                "after {what}: workers {ids:?} published no heartbeat within {HEARTBEAT_WITHIN:?} (alive but not reconnected?)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL worker `index`, note the leases it held, and start `id` in its slot.
    async fn kill_and_replace(&mut self, index: usize, id: Option<String>) {
        let dead = self.fleet.kill(index);
        match dead.kind {
            Kind::Infer => self.figures.infer_kills += 1,
            Kind::Judge => self.figures.judge_kills += 1,
        }
        // With its id still running elsewhere, its leases cannot be told from the twin's.
        if !self.fleet.runs_id(&dead.id) {
            let (q, jobs, worker) = (self.queue.clone(), self.jobs.clone(), dead.id.clone());
            let held = retrying("leases of a killed worker", || {
                let (q, jobs, worker) = (q.clone(), jobs.clone(), worker.clone());
                async move { leases_of(&q, &jobs, &worker).await }
            })
            .await;
            self.figures.pending_dead.extend(held);
        }
        let id = id.unwrap_or_else(|| dead.slot_id.clone());
        let since = self.redis_now().await;
        self.fleet.spawn(dead.kind, &dead.slot_id, &id);
        self.wait_heartbeats(&[id], since, true, "a restart").await;
    }

    async fn kill_random(&mut self, kind: Kind) {
        let index = *self.fleet.indices(kind).choose(&mut self.rng).unwrap();
        self.kill_and_replace(index, None).await;
    }

    async fn all_reconnect(&mut self, what: &str) {
        let since = self.redis_now().await;
        let ids = self.fleet.ids();
        self.wait_heartbeats(&ids, since, false, what).await;
    }

    async fn set_fault(&self, fault: Option<Fault>) {
        match fault {
            Some(f) => fake_judge::set_fault(self.fake, f, 0).await,
            None => fake_judge::clear_faults(self.fake).await,
        }
    }

    async fn extra(&mut self, extra: Extra) -> String {
        match extra {
            Extra::RestartRedis => {
                let r = self.redis.clone();
                tokio::task::spawn_blocking(move || r.lock().unwrap().kill())
                    .await
                    .unwrap();
                let down = Duration::from_millis(self.rng.random_range(300..2000));
                self.sleep_watching(down).await;
                let r = self.redis.clone();
                tokio::task::spawn_blocking(move || r.lock().unwrap().restart())
                    .await
                    .unwrap()
                    .expect("redis-server restarts");
                self.figures.redis_restarts += 1;
                self.all_reconnect("a Redis restart").await;
                format!("Redis killed and restarted after {down:?}")
            }
            Extra::Outage => {
                let length = self.settings.outage;
                let end = Instant::now() + length;
                self.proxy.outage(length);
                // A worker (re)started while Redis is unreachable must wait for it, not exit.
                let into = self.rng.random_range(0..length.as_millis() as u64 / 2);
                self.sleep_watching(Duration::from_millis(into)).await;
                let kind = if self.rng.random_bool(0.5) {
                    Kind::Infer
                } else {
                    Kind::Judge
                };
                self.kill_random(kind).await;
                self.sleep_watching(end.saturating_duration_since(Instant::now()))
                    .await;
                self.figures.outages += 1;
                self.figures.outage += length;
                self.all_reconnect("an outage").await;
                format!("Redis unreachable for {length:?}, a {kind:?} worker restarted in it")
            }
            Extra::JudgeFaults => {
                let mut done = Vec::new();
                for _ in 0..self.rng.random_range(1..=2) {
                    let fault = *[
                        Fault::RateLimit,
                        Fault::ServerError,
                        Fault::Hang,
                        Fault::Garbage,
                    ]
                    .choose(&mut self.rng)
                    .unwrap();
                    let length = Duration::from_millis(self.rng.random_range(2000..5000));
                    self.set_fault(Some(fault)).await;
                    self.sleep_watching(length).await;
                    self.set_fault(None).await;
                    self.figures.judge_fault_switches += 1;
                    done.push(format!("{fault:?} for {length:?}"));
                    // Let requests hung by the fault time out on live workers.
                    self.sleep_watching(Duration::from_secs(3)).await;
                }
                format!("judge faults: {}", done.join(", "))
            }
            Extra::DuplicateId => {
                let kind = if self.rng.random_bool(0.5) {
                    Kind::Infer
                } else {
                    Kind::Judge
                };
                let mut pair = self.fleet.indices(kind);
                pair.shuffle(&mut self.rng);
                let (donor, victim) = (pair[0], pair[1]);
                let id = self.fleet.workers[donor].id.clone();
                self.kill_and_replace(victim, Some(id.clone())).await;
                self.figures.duplicate_ids += 1;
                format!("a second {kind:?} worker runs as {id}")
            }
        }
    }

    /// Drop noted leases whose completion landed after the kill; the rest are dead.
    async fn settle_dead_leases(&mut self) {
        for lease in std::mem::take(&mut self.figures.pending_dead) {
            let q = self.queue.clone();
            let l = lease.clone();
            let done = retrying("events", || {
                let (q, l) = (q.clone(), l.clone());
                async move { completed(&q, &l).await }
            })
            .await;
            if !done {
                self.figures.dead_leases.insert(lease);
            }
        }
    }

    async fn run(&mut self) {
        let all = [
            Extra::RestartRedis,
            Extra::Outage,
            Extra::JudgeFaults,
            Extra::DuplicateId,
        ];
        let mut extras: Vec<Extra> = (0..self.settings.rounds)
            .map(|r| all[r % all.len()])
            .collect();
        extras.shuffle(&mut self.rng);
        for (round, extra) in extras.into_iter().enumerate() {
            self.pause().await;
            self.kill_random(Kind::Infer).await;
            self.pause().await;
            self.kill_random(Kind::Judge).await;
            self.pause().await;
            let what = self.extra(extra).await;
            self.settle_dead_leases().await;
            let (rows, inferred, judged) = match status::document(&self.queue, &[]).await {
                Ok(doc) => progress(&doc),
                Err(_) => (0, 0, 0),
            };
            if judged < rows {
                self.figures.rounds_with_work += 1;
            }
            println!(
                "chaos: round {}/{}: killed an infer and a judge worker; {what}; rows inferred {inferred}/{rows}, judged {judged}/{rows}",
                round + 1,
                self.settings.rounds
            );
        }
        self.set_fault(None).await;
    }
}

async fn chaos() {
    let settings = Settings::from_env();
    println!(
        "chaos: seed {} (CONFTAG_CHAOS_SEED replays it), {} rounds (CONFTAG_CHAOS_ROUNDS), outages of {:?} (CONFTAG_CHAOS_OUTAGE_SECS), {} rows per dataset (CONFTAG_CHAOS_ROWS)",
        settings.seed, settings.rounds, settings.outage, settings.rows_per_dataset
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    worker_infer::tiny_model::write_tiny_model(&model_dir, Default::default(), 7).unwrap();
    let data: Vec<(String, PathBuf)> = DATASETS
        .iter()
        .map(|d| {
            (
                d.to_string(),
                write_rows(tmp.path(), d, settings.rows_per_dataset),
            )
        })
        .collect();
    let fake_config = FakeConfig {
        latency: Duration::from_millis(20),
        ..FakeConfig::default()
    };

    // The reference: the same jobs, no faults, its own Redis and judge server.
    let ref_redis = RedisServer::start().unwrap();
    let ref_fake = fake_judge::start(fake_config.clone()).await;
    let ref_queue = Queue::connect(&RedisUrl::new(ref_redis.url()))
        .await
        .unwrap();
    submit(&ref_redis.url(), &data).await;
    let mut ref_fleet = Fleet::new(
        "reference",
        ref_redis.url(),
        ref_fake.base_url(),
        &model_dir,
        &tmp.path().join("reference"),
    );
    ref_fleet.start();
    let ref_doc = wait_done(&ref_queue, &mut ref_fleet).await;
    let ref_out = tmp.path().join("reference/out");
    export(&ref_redis.url(), &ref_out).await;
    ref_fleet.stop().await;
    let reference_secs = started.elapsed().as_secs_f64();
    println!("chaos: reference run done in {reference_secs:.0} s");

    // The chaos run.
    let redis = RedisServer::start().unwrap();
    let direct = redis.url();
    let proxy = RedisProxy::start(redis.port()).await.unwrap();
    let fake = fake_judge::start(fake_config).await;
    let queue = Queue::connect(&RedisUrl::new(direct.clone()))
        .await
        .unwrap();
    submit(&direct, &data).await;
    let jobs = queue.job_ids().await.unwrap();
    assert_eq!(jobs.len(), DATASETS.len());
    let mut fleet = Fleet::new(
        "chaos",
        proxy.url(),
        fake.base_url(),
        &model_dir,
        &tmp.path().join("chaos"),
    );
    fleet.start();
    let mut driver = Driver {
        settings: &settings,
        rng: StdRng::seed_from_u64(settings.seed),
        queue: queue.clone(),
        redis: Arc::new(Mutex::new(redis)),
        proxy: &proxy,
        fake: &fake,
        fleet,
        jobs,
        figures: Figures::default(),
    };
    driver.run().await;
    let doc = wait_done(&driver.queue, &mut driver.fleet).await;
    driver.settle_dead_leases().await;
    let out = tmp.path().join("chaos/out");
    export(&direct, &out).await;
    let fault_stats = fake_judge::stats(&fake).await;

    // What the status document says, as `conftag status --json` prints it.
    let doc_json = serde_json::to_value(&doc).unwrap();
    let ref_json = serde_json::to_value(&ref_doc).unwrap();

    // Rows lost or doubled, counted before anything is asserted so the summary always shows.
    let mut rows_checked = 0u64;
    let mut rows_lost = 0u64;
    let mut rows_doubled = 0u64;
    for job in &doc.jobs {
        let j = job_json(&doc_json, job.id.as_str());
        let rows = j["rows"].as_u64().unwrap();
        rows_checked += rows;
        for counter in ["/rows_inferred", "/rows_judged"] {
            let n = j.pointer(counter).and_then(Value::as_u64).unwrap();
            rows_doubled += n.saturating_sub(rows);
            rows_lost += rows.saturating_sub(n);
        }
    }
    for rel in files_under(&ref_out) {
        if rel.extension().is_some_and(|e| e == "json") {
            let want: HashSet<String> = row_keys(&ref_out.join(&rel)).into_iter().collect();
            let have: HashSet<String> = row_keys(&out.join(&rel)).into_iter().collect();
            rows_lost += want.difference(&have).count() as u64;
        }
    }
    let f = &driver.figures;
    let served_faults =
        fault_stats["faults"].as_u64().unwrap() + fault_stats["rate_limited"].as_u64().unwrap();
    let counts = proxy.counts();
    println!(
        "chaos summary: seed={} rounds={} rounds_with_work={} infer_kills={} judge_kills={} duplicate_ids={} redis_restarts={} outages={} outage_secs={} judge_fault_switches={} judge_faults_served={} connections_cut={} connections_refused={} leases_killed={} leases_expired={} attempts_failed={} judge_call_retries={} rows_checked={} rows_lost={} rows_doubled={} reference_secs={:.0} total_secs={:.0}",
        settings.seed,
        settings.rounds,
        f.rounds_with_work,
        f.infer_kills,
        f.judge_kills,
        f.duplicate_ids,
        f.redis_restarts,
        f.outages,
        f.outage.as_secs(),
        f.judge_fault_switches,
        served_faults,
        counts.cut,
        counts.refused,
        f.dead_leases.len(),
        sum_u64(&doc_json, "/failures/infer/leases_expired")
            + sum_u64(&doc_json, "/failures/judge/leases_expired"),
        sum_u64(&doc_json, "/failures/infer/attempts_failed")
            + sum_u64(&doc_json, "/failures/judge/attempts_failed"),
        sum_u64(&doc_json, "/judge/call_retries"),
        rows_checked,
        rows_lost,
        rows_doubled,
        reference_secs,
        started.elapsed().as_secs_f64(),
    );

    // Every job done, nothing leased, queued or failed; every shard's own state says done.
    for job in &doc.jobs {
        let j = job_json(&doc_json, job.id.as_str());
        for p in [
            "/shards/leased/infer",
            "/shards/leased/judge",
            "/shards/queued/infer",
            "/shards/queued/judge",
            "/shards/failed",
        ] {
            assert_eq!(j.pointer(p), Some(&json!(0)), "job {}: {p}", job.id);
        }
        let q = driver.queue.clone();
        let id = job.id.clone();
        let left = retrying("shard states", || {
            let (q, id) = (q.clone(), id.clone());
            async move { shards_not_done(&q, &id).await }
        })
        .await;
        assert!(left.is_empty(), "job {}: shards not done: {left:?}", job.id);
    }
    assert_eq!((rows_lost, rows_doubled), (0, 0), "rows lost, rows doubled");

    // The counters that count rows, tokens and judge calls equal the reference's.
    for job in &ref_doc.jobs {
        let want = job_json(&ref_json, job.id.as_str());
        let have = job_json(&doc_json, job.id.as_str());
        for p in MUST_EQUAL {
            assert_eq!(
                have.pointer(p),
                want.pointer(p),
                "job {} ({}): {p} differs from the fault-free run",
                job.id,
                job.dataset
            );
        }
    }

    // The export is byte-identical to the reference's.
    let files = files_under(&ref_out);
    assert_eq!(files, files_under(&out), "the exports hold different files");
    assert!(files.len() >= 2 * DATASETS.len());
    for rel in &files {
        let (a, b) = (ref_out.join(rel), out.join(rel));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{} differs from the fault-free run: {}",
            rel.display(),
            first_difference(&a, &b)
        );
    }

    // Every failure shows in the status document: each lease a killed worker held came back
    // as a lapsed lease or a failed attempt of its job and stage.
    let mut dead: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (job, stage, _, _) in &f.dead_leases {
        *dead.entry((job.clone(), stage.clone())).or_default() += 1;
    }
    for ((job, stage), n) in &dead {
        let j = job_json(&doc_json, job);
        let shown = j["failures"][stage.as_str()]["leases_expired"]
            .as_u64()
            .unwrap()
            + j["failures"][stage.as_str()]["attempts_failed"]
                .as_u64()
                .unwrap();
        assert!(
            shown >= *n,
            "job {job}: {n} {stage} lease(s) of killed workers, but status shows {shown} lapsed leases + failed attempts"
        );
    }
    // Judge faults that were served show as retried calls, failed attempts or lapsed leases.
    if served_faults > 0 {
        let shown = sum_u64(&doc_json, "/judge/call_retries")
            + sum_u64(&doc_json, "/failures/judge/attempts_failed")
            + sum_u64(&doc_json, "/failures/judge/leases_expired");
        assert!(
            shown > 0,
            "the judge server served {served_faults} faults, none shows in status"
        );
    }
    // Every worker drains and exits 0.
    driver.fleet.stop().await;
}
