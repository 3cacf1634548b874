//! `conftag bench fleet`: many simulated GPU workers against a Redis started for the run.
//!
//! Every figure before this came from 1–8 workers; a fleet of thousands stresses other
//! things: the idle fleet's polling, the burst of claims when work appears, renewals and
//! heartbeats, the result rows piling up until export. Each simulated worker is the real
//! worker runtime ([`run_worker_with_stats`]) with its own Redis connection, claiming,
//! renewing and heartbeating exactly as `conftag-infer` does; only the engine is replaced by a
//! "GPU" that sleeps a jittered time per shard and returns MATH-sized result rows.
//!
//! Per fleet size, on a fresh `redis-server` (AOF, `appendfsync everysec`) or a fresh
//! 3-master Redis Cluster, bounded in time and loopback only:
//! 1. idle: six empty jobs (the seed's 2 models × 3 datasets) and the whole fleet waiting for
//!    work — Redis CPU (as a share of one core, from `INFO cpu`), commands/s, claim latency;
//! 2. pick-up: a one-shard job submitted to the idle fleet, several times — the delay from the
//!    submit to the claim, both by the Redis clock;
//! 3. busy: six jobs with enough shards to keep every worker busy; after a warm-up of one
//!    shard time, the same figures at steady state plus `conftag status` latency and the
//!    shards completed per second;
//! 4. memory: Redis memory of the stored result rows (`MEMORY USAGE` of the result hashes)
//!    against their raw bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::job::{JobId, JobSpec, JudgeSettings, PromptMode};
use common::latency::LatencySnapshot;
use common::local_redis::{RedisCluster, RedisServer};
use common::queue::{Counter, Queue, ServerProbe, Stage};
use common::records::PredictionRecord;
use common::redis_conn::RedisUrl;
use common::status;
use common::synthetic::synthetic_rows;
use common::worker::{
    run_worker_with_stats, Failure, ShardContext, ShardOutput, ShardProcessor, WorkerConfig,
    WorkerStats,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::CommandError;

/// What `conftag bench fleet` runs.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Fleet sizes to run, each on a fresh server.
    pub workers: Vec<usize>,
    /// Length of the measured steady state of the busy phase.
    pub seconds: u64,
    /// Length of the measured idle phase.
    pub idle_seconds: u64,
    /// Mean time the simulated GPU takes per shard, and its jitter (± share).
    pub shard_time: Duration,
    pub jitter: f64,
    pub rows_per_shard: u64,
    /// Shards a worker holds at once (the one running and its look-ahead).
    pub held_shards: u64,
    /// Size range of one result row's JSON.
    pub row_bytes: (usize, usize),
    pub lease: Duration,
    /// The workers' idle poll (`None`: the runtime's default).
    pub idle_poll: Option<Duration>,
    /// Submits to the idle fleet whose pick-up delay is measured.
    pub pickups: usize,
    /// Run against a 3-master Redis Cluster instead of one server.
    pub cluster: bool,
    /// The idle behaviour before wake-ups (a fixed poll, no wake-up list), for comparison.
    pub poll_only: bool,
}

/// The simulated GPU: reads the shard's input rows (as `conftag-infer` does), sleeps a
/// jittered time per shard, returns rows from a pool of records
/// of realistic size, and counts their raw bytes in the job (`infer_result_bytes`).
struct SimGpu {
    model: String,
    shard_time: Duration,
    jitter: f64,
    records: Arc<Vec<(PredictionRecord, usize)>>,
}

/// The split of the one-shard jobs that measure pick-up: processed at once.
const PICKUP_SPLIT: &str = "pickup";

impl ShardProcessor for SimGpu {
    fn accepts(&self, spec: &JobSpec, _: &JudgeSettings) -> bool {
        spec.model == self.model
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        let l = &ctx.lease;
        // The real infer processor reads its shard's input rows first.
        ctx.queue.input_rows(&l.job, l.start, l.end).await?;
        if ctx.spec.split != PICKUP_SPLIT {
            // The lease token is a random uuid: its first 32 bits are a uniform draw.
            let u = u32::from_str_radix(&l.token[..8], 16).unwrap_or(0) as f64 / u32::MAX as f64;
            let factor = 1.0 + self.jitter * (2.0 * u - 1.0);
            tokio::time::sleep(self.shard_time.mul_f64(factor.max(0.0))).await;
        }
        let mut out = ShardOutput::default();
        let mut bytes = 0i64;
        out.rows = (l.start..l.end)
            .map(|i| {
                let (r, len) = &self.records[(i as usize * 7919) % self.records.len()];
                bytes += *len as i64;
                (i, r.clone().into())
            })
            .collect();
        out.counters.insert(Counter::InferRows, l.rows() as i64);
        out.counters.insert(Counter::InferResultBytes, bytes);
        Ok(out)
    }
}

/// `len` bytes of words drawn with `next`.
fn text(len: usize, next: &mut dyn FnMut() -> u64) -> String {
    const WORDS: &[&str] = &[
        "the",
        "answer",
        "is",
        "let",
        "x",
        "be",
        "then",
        "we",
        "have",
        "so",
        "\\frac{1}{2}",
        "=",
        "+",
        "-",
        "\\cdot",
        "sqrt",
        "therefore",
        "equation",
        "solve",
        "for",
        "both",
        "sides",
        "by",
        "2",
        "3",
        "7",
        "11",
        "substitute",
        "into",
        "gives",
        "\\boxed{42}",
        "triangle",
        "angle",
        "area",
        "of",
        "circle",
        "radius",
        "probability",
        "integer",
        "sum",
        "product",
        "factor",
        "prime",
        "divide",
        "remainder",
        "step",
        "first",
        "next",
    ];
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s.truncate(len);
    s
}

/// `n` prediction records whose JSON is `min..=max` bytes long, text made of words (so that
/// they compress like real answers, not like random bytes or one repeated letter).
/// Each with its JSON length (what Redis stores).
fn record_pool(n: usize, (min, max): (usize, usize)) -> Vec<(PredictionRecord, usize)> {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|i| {
            let target = min + (next() as usize % (max - min + 1).max(1));
            let mut rec = PredictionRecord {
                response: String::new(),
                question: text(160, &mut next),
                correct_answer: serde_json::Value::String(text(240, &mut next)),
                prompt_tokens: 120 + i as u64 % 50,
                completion_tokens: 300 + i as u64 % 200,
                finish_reason: "length".into(),
                error: None,
            };
            let base = serde_json::to_string(&rec).expect("serializes").len();
            rec.response = text(target.saturating_sub(base), &mut next);
            let len = serde_json::to_string(&rec).expect("serializes").len();
            (rec, len)
        })
        .collect()
}

/// The server(s) of one run, stopped when dropped.
enum Target {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Target {
    fn start(cluster: bool) -> Result<Self, CommandError> {
        let io = |e: std::io::Error| CommandError::Usage(format!("cannot start Redis: {e}"));
        Ok(if cluster {
            Target::Cluster(RedisCluster::start(3).map_err(io)?)
        } else {
            Target::Single(RedisServer::start_everysec().map_err(io)?)
        })
    }

    fn url(&self) -> String {
        match self {
            Target::Single(s) => s.url(),
            Target::Cluster(c) => c.url(),
        }
    }

    fn ports(&self) -> Vec<u16> {
        match self {
            Target::Single(s) => vec![s.port()],
            Target::Cluster(c) => c.ports().to_vec(),
        }
    }
}

/// `INFO` figures of every node, summed.
#[derive(Debug, Clone, Default)]
struct NodeStats {
    cpu_s: f64,
    /// Each node's CPU seconds (the busiest saturates first).
    node_cpu_s: Vec<f64>,
    commands: u64,
    clients: u64,
}

async fn node_stats(nodes: &[ServerProbe]) -> Result<NodeStats, CommandError> {
    let mut out = NodeStats::default();
    for node in nodes {
        let info = node.info().await?;
        out.cpu_s += info.cpu_s;
        out.node_cpu_s.push(info.cpu_s);
        out.commands += info.commands;
        out.clients += info.clients;
    }
    Ok(out)
}

/// CPU seconds this process used so far (user + system), from `/proc/self/stat`.
fn own_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15: indexes 11 and 12 here; 100 ticks per second.
    (ticks(11) + ticks(12)) / 100.0
}

/// Figures of one measured window.
#[derive(Debug, Clone, Default)]
struct Window {
    secs: f64,
    redis_cores: f64,
    busiest_node_cores: f64,
    bench_cores: f64,
    commands_per_s: f64,
    claims: u64,
    claim_p50_ms: Option<f64>,
    claim_p99_ms: Option<f64>,
    clients: u64,
}

struct Mark {
    at: Instant,
    node: NodeStats,
    own_cpu: f64,
    claims: LatencySnapshot,
}

async fn mark(nodes: &[ServerProbe], stats: &[Arc<WorkerStats>]) -> Result<Mark, CommandError> {
    let mut claims = LatencySnapshot::default();
    for s in stats {
        claims.add(&s.claim_latency.snapshot());
    }
    Ok(Mark {
        at: Instant::now(),
        node: node_stats(nodes).await?,
        own_cpu: own_cpu_s(),
        claims,
    })
}

fn window(a: &Mark, b: &Mark) -> Window {
    let secs = (b.at - a.at).as_secs_f64().max(1e-9);
    let claims = b.claims.since(&a.claims);
    let ms = |q: f64| claims.quantile(q).map(|d| d.as_secs_f64() * 1e3);
    Window {
        secs,
        redis_cores: (b.node.cpu_s - a.node.cpu_s) / secs,
        busiest_node_cores: a
            .node
            .node_cpu_s
            .iter()
            .zip(&b.node.node_cpu_s)
            .map(|(x, y)| (y - x) / secs)
            .fold(0.0, f64::max),
        bench_cores: (b.own_cpu - a.own_cpu) / secs,
        commands_per_s: b.node.commands.saturating_sub(a.node.commands) as f64 / secs,
        claims: claims.count(),
        claim_p50_ms: ms(0.5),
        claim_p99_ms: ms(0.99),
        clients: b.node.clients,
    }
}

/// Everything measured for one fleet size.
#[derive(Debug, Clone, Default)]
struct FleetRun {
    workers: usize,
    connect_secs: f64,
    idle: Window,
    pickup_ms: Vec<f64>,
    /// Seconds from submitting the busy jobs until every worker held its shards.
    ramp_secs: f64,
    busy: Window,
    shards_per_s: f64,
    status_ms: Vec<f64>,
    rows_stored: u64,
    raw_bytes: u64,
    result_memory: u64,
}

const MODELS: [&str; 2] = ["fleet-model-a", "fleet-model-b"];
const DATASETS: [&str; 3] = ["math", "medqa", "boolq"];

async fn submit(
    queue: &Queue,
    model: &str,
    dataset: &str,
    split: &str,
    rows: u64,
    shard_size: u64,
) -> Result<JobId, CommandError> {
    let r = synthetic_rows(rows);
    let dataset = common::dataset_spec::builtin(dataset).expect("a built-in dataset");
    let spec = JobSpec::for_rows(model, dataset, split, "bench", &r, 512, PromptMode::Raw);
    queue
        .submit(&spec, &JudgeSettings::default(), &r, shard_size, 3)
        .await?;
    Ok(spec.id())
}

fn ms_quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

async fn run_one(opts: &FleetOptions, n: usize) -> Result<FleetRun, CommandError> {
    let target = Target::start(opts.cluster)?;
    let url = RedisUrl::new(target.url());
    let admin = Queue::connect(&url).await?;
    let mut nodes = Vec::new();
    for p in target.ports() {
        let node_url = RedisUrl::new(format!("redis://127.0.0.1:{p}"));
        nodes.push(ServerProbe::connect(&node_url).await?);
    }
    let mut run = FleetRun {
        workers: n,
        ..FleetRun::default()
    };

    // The idle fleet's jobs: the seed's six, with nothing (left) to do.
    let mut idle_jobs = Vec::new();
    for model in MODELS {
        for dataset in DATASETS {
            idle_jobs.push(submit(&admin, model, dataset, "idle", 0, 32).await?);
        }
    }

    let records = Arc::new(record_pool(512, opts.row_bytes));
    let processors: Vec<Arc<SimGpu>> = MODELS
        .iter()
        .map(|m| {
            Arc::new(SimGpu {
                model: m.to_string(),
                shard_time: opts.shard_time,
                jitter: opts.jitter,
                records: records.clone(),
            })
        })
        .collect();

    // Connect every worker (its own connection), a few at a time.
    let t = Instant::now();
    let queues: Vec<Queue> = futures::stream::iter(0..n)
        .map(|_| Queue::connect(&url))
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<Queue>, _>>()?;
    run.connect_secs = t.elapsed().as_secs_f64();
    let shutdown = CancellationToken::new();
    let mut stats = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for (i, q) in queues.into_iter().enumerate() {
        let mut cfg = WorkerConfig::new(Stage::Infer);
        cfg.id = format!("fleet-{i}");
        cfg.model = Some(MODELS[i % 2].into());
        cfg.lease = opts.lease;
        if let Some(p) = opts.idle_poll {
            cfg.idle_poll = p;
        }
        if opts.poll_only {
            cfg.wake_ups = false;
            cfg.idle_poll_max = cfg.idle_poll;
        }
        cfg.max_inflight_rows = opts.rows_per_shard * opts.held_shards.saturating_sub(1) + 1;
        cfg.drain_grace = Duration::from_secs(1);
        let s = Arc::new(WorkerStats::default());
        stats.push(s.clone());
        handles.push(tokio::spawn(run_worker_with_stats(
            q,
            processors[i % 2].clone(),
            cfg,
            shutdown.child_token(),
            s,
        )));
    }

    // 1. Idle, once the idle pauses have backed off to their longest (0.5 + 1 + 2 + 4 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let a = mark(&nodes, &stats).await?;
    tokio::time::sleep(Duration::from_secs(opts.idle_seconds)).await;
    let b = mark(&nodes, &stats).await?;
    run.idle = window(&a, &b);

    // 2. Pick-up by the idle fleet.
    for k in 0..opts.pickups {
        let job = submit(&admin, MODELS[k % 2], "math", PICKUP_SPLIT, 1, 1).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(delay) = admin.pickup_delay_ms(&job, 0).await? {
                run.pickup_ms.push(delay as f64);
                break;
            }
            if Instant::now() > deadline {
                return Err(CommandError::Usage(format!(
                    "{n} workers: a submitted shard was not claimed within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Wait until it is through (it takes no time), then remove it.
        while admin.counter(&job, Counter::InferRows).await? < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        admin.purge(&job).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for job in &idle_jobs {
        admin.purge(job).await?;
    }

    // 3. Busy: enough shards that no worker runs dry before the window ends.
    let rounds = (opts.seconds as f64 + 2.0 * opts.shard_time.as_secs_f64())
        / (opts.shard_time.as_secs_f64() * (1.0 - opts.jitter).max(0.1));
    let shards_total = (n as f64 * opts.held_shards as f64 * (rounds + 1.0)).ceil() as u64;
    let per_job = shards_total.div_ceil(6);
    let mut busy_jobs = Vec::new();
    let t = Instant::now();
    for model in MODELS {
        for dataset in DATASETS {
            busy_jobs.push(
                submit(
                    &admin,
                    model,
                    dataset,
                    "busy",
                    per_job * opts.rows_per_shard,
                    opts.rows_per_shard,
                )
                .await?,
            );
        }
    }
    // Ramp: until every worker holds its shards.
    let want_leased = (n as u64) * opts.held_shards;
    loop {
        let mut leased = 0;
        for job in &busy_jobs {
            leased += admin.leased_count(job, Stage::Infer).await?;
        }
        if leased >= want_leased || t.elapsed() > opts.shard_time * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.ramp_secs = t.elapsed().as_secs_f64();
    // Steady state: the first wave's completions (spread by the jitter) are behind us.
    let warm = opts
        .shard_time
        .mul_f64(1.0 + opts.jitter)
        .saturating_sub(t.elapsed());
    tokio::time::sleep(warm).await;
    let done_at = |jobs: Vec<JobId>| {
        let admin = admin.clone();
        async move {
            let mut sum = 0;
            for job in &jobs {
                sum += admin.counter(job, Counter::InferRows).await?;
            }
            Ok::<u64, CommandError>(sum)
        }
    };
    let rows_a = done_at(busy_jobs.clone()).await?;
    let a = mark(&nodes, &stats).await?;
    let end = Instant::now() + Duration::from_secs(opts.seconds);
    while Instant::now() < end {
        let t = Instant::now();
        status::document(&admin, &[]).await?;
        run.status_ms.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let b = mark(&nodes, &stats).await?;
    let rows_b = done_at(busy_jobs.clone()).await?;
    run.busy = window(&a, &b);
    run.shards_per_s = (rows_b - rows_a) as f64 / opts.rows_per_shard as f64 / run.busy.secs;

    // 4. Memory of the stored rows.
    for job in &busy_jobs {
        run.rows_stored += admin.counter(job, Counter::InferRows).await?;
        run.raw_bytes += admin.counter(job, Counter::InferResultBytes).await?;
        run.result_memory += admin.predictions_memory(job).await?.unwrap_or(0);
    }
    shutdown.cancel();
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
    }
    drop(target);
    Ok(run)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into())
}

/// Run the fleet benchmark and print its tables (Markdown).
pub async fn fleet_bench(opts: &FleetOptions) -> Result<(), CommandError> {
    let target = if opts.cluster {
        "3-master Redis Cluster"
    } else {
        "one redis-server"
    };
    println!(
        "target: {target} (AOF, appendfsync everysec), loopback; shard: {} rows, {:.1} s ± {:.0}% per shard, {} held per worker; rows {}–{} B; lease {} s; idle poll {}{}",
        opts.rows_per_shard,
        opts.shard_time.as_secs_f64(),
        opts.jitter * 100.0,
        opts.held_shards,
        opts.row_bytes.0,
        opts.row_bytes.1,
        opts.lease.as_secs(),
        opts.idle_poll
            .map(|p| format!("{} ms", p.as_millis()))
            .unwrap_or_else(|| "default".into()),
        if opts.poll_only {
            ", poll only (no wake-ups, no idle backoff)"
        } else {
            ", wake-ups and idle backoff"
        },
    );
    println!();
    let mut runs = Vec::new();
    for &n in &opts.workers {
        let r = run_one(opts, n).await?;
        eprintln!("{n} workers done: {r:?}");
        runs.push(r);
    }
    println!("| workers | phase | Redis CPU (cores) | busiest node | bench process CPU | commands/s | claims/s | claim p50 ms | claim p99 ms | shards done/s | status p50 / max ms | clients |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        for (phase, w) in [("idle", &r.idle), ("busy", &r.busy)] {
            let status = if phase == "busy" {
                format!(
                    "{:.1} / {:.1}",
                    ms_quantile(&r.status_ms, 0.5),
                    ms_quantile(&r.status_ms, 1.0)
                )
            } else {
                "–".into()
            };
            let shards = if phase == "busy" {
                format!("{:.1}", r.shards_per_s)
            } else {
                "–".into()
            };
            println!(
                "| {} | {phase} | {:.3} | {:.3} | {:.2} | {:.0} | {:.0} | {} | {} | {shards} | {status} | {} |",
                r.workers,
                w.redis_cores,
                w.busiest_node_cores,
                w.bench_cores,
                w.commands_per_s,
                w.claims as f64 / w.secs,
                opt_ms(w.claim_p50_ms),
                opt_ms(w.claim_p99_ms),
                w.clients,
            );
        }
    }
    println!();
    println!("| workers | connect s | pick-up by the idle fleet p50 / max ms (n) | ramp to all shards held s | rows stored | raw bytes/row | Redis bytes/row (result hash) | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let rows = r.rows_stored.max(1) as f64;
        println!(
            "| {} | {:.1} | {:.1} / {:.1} ({}) | {:.1} | {} | {:.0} | {:.0} | {:.2} |",
            r.workers,
            r.connect_secs,
            ms_quantile(&r.pickup_ms, 0.5),
            ms_quantile(&r.pickup_ms, 1.0),
            r.pickup_ms.len(),
            r.ramp_secs,
            r.rows_stored,
            r.raw_bytes as f64 / rows,
            r.result_memory as f64 / rows,
            r.result_memory as f64 / r.raw_bytes.max(1) as f64,
        );
    }
    Ok(())
}
