//! The worker runtime both worker kinds run: claim shards while there is capacity, renew
//! every held lease on a timer, hand results to the queue, and drain on shutdown.
//!
//! A worker holds several shards at once (up to `max_inflight_rows` unfinished rows) so that an engine
//! that batches sees a steady stream of rows across shard boundaries. Each shard runs in its
//! own task: process → complete (retried through Redis outages) → done. The main loop owns
//! the leases: it renews them, cancels a shard's work when its lease is lost or its job is
//! cancelled, and on shutdown stops claiming, waits `drain_grace` for in-flight shards, then
//! releases the rest without spending an attempt.
//!
//! A held shard is *started* ([`ShardContext::started`], `start.lua`) when its work really
//! begins: by the processor when its first row gets an engine slot, or by the runtime as
//! `process` is called for processors that do not mark it themselves
//! ([`ShardProcessor::marks_start`]). When a worker dies, only its started shards spend an
//! attempt; the look-ahead it held goes back to the queue for free.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backoff::backoff::Backoff;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

pub use crate::failure::Failure;
use crate::job::{JobId, JobSpec, JudgeSettings};
use crate::metrics as m;
use crate::queue::{
    CompleteOutcome, FailOutcome, Queue, QueueError, RenewOutcome, ShardLease, Stage, StartOutcome,
};
use crate::roofline::Roofline;
use crate::status::WorkerInfo;

/// How a worker behaves; durations are short in tests.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: String,
    pub stage: Stage,
    /// The model an infer worker serves (shown in `conftag workers`).
    pub model: Option<String>,
    /// Lease length; leases are renewed every third of it.
    pub lease: Duration,
    /// Pause after the first claim round that found nothing; it doubles (with jitter) while
    /// rounds keep finding nothing, up to `idle_poll_max` (and at most 10 × `idle_poll`).
    pub idle_poll: Duration,
    /// The longest idle pause: the fallback poll of an idle worker, which also reaps lapsed
    /// leases (inside `claim.lua`) when no other worker claims.
    pub idle_poll_max: Duration,
    /// While idle, wait on the stage's wake-up list (`BLPOP`, a connection of its own) instead
    /// of sleeping, so that a submit, an infer completion (for judges) or a requeue wakes the
    /// worker at once; the idle pause is then the wait's timeout. A worker that finds work
    /// after waiting wakes two more, so an idle fleet ramps up in a few round trips.
    pub wake_ups: bool,
    /// Unfinished rows held at once across shards: the worker claims another shard while its
    /// held shards have fewer rows still to do than this (rows a processor reported finished,
    /// [`ShardContext::row_finished`], no longer count), so it may hold up to one shard (less
    /// a row) more; and never shards of twice this many rows in all.
    pub max_inflight_rows: u64,
    /// Time in-flight shards get to finish after a shutdown signal.
    pub drain_grace: Duration,
    /// First retry delay after a failed attempt; doubles (with jitter) up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Exit once no accepted job has work left for (or before) this stage.
    pub exit_when_done: bool,
    /// Shown in the registry: `cpu` or the GPU's name (infer workers).
    pub device: Option<String>,
    /// The GPU's decode ceiling for the loaded model, published with the heartbeat.
    pub roofline: Option<Roofline>,
}

impl WorkerConfig {
    pub fn new(stage: Stage) -> Self {
        Self {
            id: default_worker_id(stage),
            stage,
            model: None,
            lease: Duration::from_secs(60),
            idle_poll: Duration::from_millis(500),
            idle_poll_max: Duration::from_secs(5),
            wake_ups: true,
            max_inflight_rows: 64,
            drain_grace: Duration::from_secs(30),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(120),
            exit_when_done: false,
            device: None,
            roofline: None,
        }
    }
}

impl WorkerConfig {
    /// The wake-up topic: infer workers wait per model (a submit names its model).
    fn wake_topic(&self) -> Option<&str> {
        match self.stage {
            Stage::Infer => self.model.as_deref(),
            Stage::Judge => None,
        }
    }

    /// The idle pause after `misses` claim rounds in a row found nothing (1 = the first),
    /// with ±20% jitter so that a fleet started together does not poll in step.
    fn idle_pause(&self, misses: u32) -> Duration {
        let max = self
            .idle_poll_max
            .min(self.idle_poll * 10)
            .max(self.idle_poll);
        let base = self
            .idle_poll
            .saturating_mul(1 << misses.saturating_sub(1).min(16))
            .min(max);
        base.mul_f64(0.8 + 0.4 * rand::random::<f64>())
    }
}

fn host_name() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into())
}

/// Publish this worker's registry entry (stamped with the Redis server's clock).
/// Output tokens per second over about the last minute, from a sample per heartbeat.
#[derive(Debug, Default)]
struct TokenRate {
    samples: VecDeque<(tokio::time::Instant, u64)>,
}

impl TokenRate {
    const WINDOW: Duration = Duration::from_secs(60);

    fn observe(&mut self, tokens: u64) -> Option<f64> {
        let now = tokio::time::Instant::now();
        self.samples.push_back((now, tokens));
        // Keep the newest sample that is at least a window old as the base.
        while self.samples.len() > 2 && now - self.samples[1].0 >= Self::WINDOW {
            self.samples.pop_front();
        }
        let (t0, n0) = *self.samples.front()?;
        let dt = (now - t0).as_secs_f64();
        (dt >= 1.0).then(|| tokens.saturating_sub(n0) as f64 / dt)
    }
}

/// What a heartbeat publishes besides the worker's state.
struct Beat<'a> {
    config: &'a WorkerConfig,
    started_ms: u64,
    stats: &'a WorkerStats,
}

impl Beat<'_> {
    async fn publish(
        &self,
        queue: &Queue,
        state: String,
        shards: Vec<String>,
        rate: &mut TokenRate,
    ) -> Result<(), QueueError> {
        let stats = self.stats;
        let rows = stats.rows_done.load(Ordering::Relaxed);
        let generated = stats.rows_generated.load(Ordering::Relaxed);
        let tokens = stats.completion_tokens.load(Ordering::Relaxed);
        let prompt = stats.prompt_tokens.load(Ordering::Relaxed);
        // A sequence holds its prompt and, on average over its decode, half its output.
        let context = if generated == 0 {
            0.0
        } else {
            (prompt as f64 + tokens as f64 / 2.0) / generated as f64
        };
        let info = WorkerInfo {
            id: self.config.id.clone(),
            host: host_name(),
            kind: self.config.stage.name().into(),
            model: self.config.model.clone(),
            state,
            shards,
            started_ms: self.started_ms,
            heartbeat_ms: queue.server_time_ms().await?,
            rows_done: rows,
            device: self.config.device.clone(),
            tokens_done: tokens,
            tokens_per_s: rate.observe(tokens),
            ceiling_tokens_per_s: self.config.roofline.map(|r| r.ceiling(context)),
        };
        queue.publish_worker(&info.id, &info).await
    }
}

/// `{host}-{stage}-{pid}-{4 random hex}`.
pub fn default_worker_id(stage: Stage) -> String {
    let host = host_name();
    let rand = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("{host}-{stage}-{}-{rand}", std::process::id())
}

/// Everything a processor gets for one shard.
#[derive(Debug, Clone)]
pub struct ShardContext {
    pub lease: ShardLease,
    pub spec: JobSpec,
    pub judge: JudgeSettings,
    pub queue: Queue,
    /// Cancelled when the lease is lost, the job is cancelled, or the drain deadline passes.
    pub cancel: CancellationToken,
    /// The worker's counters: an infer processor adds each row's tokens as it finishes
    /// ([`WorkerStats::row_generated`]), so the rate a worker publishes moves while its shards
    /// are still running.
    pub stats: Arc<WorkerStats>,
    /// Set once the shard is marked started (see [`ShardContext::started`]).
    start_mark: Arc<tokio::sync::OnceCell<()>>,
    /// Rows of this shard whose work is done (see [`ShardContext::row_finished`]).
    rows_finished: Arc<AtomicU64>,
    /// Wakes the worker loop to claim again when a row finishes.
    progress: Arc<tokio::sync::Notify>,
}

impl ShardContext {
    /// Mark the shard started (`start.lua`): call it right before the shard's first row goes
    /// to the engine (or its first paid call), not when the shard merely waits its turn. From
    /// then on, a lapse of this lease (the worker died or hung) spends an attempt; before, it
    /// puts the shard back for free. Only the first call reaches Redis; calls made while it is
    /// under way wait for it, later ones return at once. A failure to mark is logged and the
    /// work goes on (unmarked, a lapse costs the shard nothing); a lost lease is left to the
    /// renewals to notice.
    pub async fn started(&self) {
        self.start_mark
            .get_or_init(|| async {
                match self.queue.start(&self.lease).await {
                    Ok(StartOutcome::Started) => debug!("shard started"),
                    Ok(other) => debug!(?other, "start not recorded: lease already gone"),
                    Err(e) => warn!(error = %e, "cannot mark the shard started; working on"),
                }
            })
            .await;
    }

    /// Count one row of this shard as finished (its answer is back; call once per row). The
    /// worker's look-ahead counts only the unfinished rows of the shards it holds, so a shard
    /// that waits for its longest row does not keep its finished rows' engine slots empty
    /// (rows of a real mix end hundreds of tokens apart). Processors that never call it count
    /// whole shards.
    pub fn row_finished(&self) {
        self.rows_finished.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }
}

/// A processed shard: its records (row index, record) and the counters to add to the job.
#[derive(Debug, Clone, Default)]
pub struct ShardOutput {
    pub rows: Vec<(u64, crate::records::ShardRecord)>,
    pub counters: crate::queue::CounterDeltas,
}

/// What a worker kind does with a shard.
pub trait ShardProcessor: Send + Sync + 'static {
    /// Whether this worker takes shards of this job.
    fn accepts(&self, spec: &JobSpec, judge: &JudgeSettings) -> bool;
    /// Whether `process` calls [`ShardContext::started`] itself when the shard's work really
    /// begins (a row gets an engine slot). When false, the runtime marks every shard started
    /// as `process` is called, so a held shard counts as running from the moment its task
    /// starts.
    fn marks_start(&self) -> bool {
        false
    }
    fn process(
        &self,
        ctx: ShardContext,
    ) -> impl Future<Output = Result<ShardOutput, Failure>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A shard failed in a way no other shard can escape (credentials, quota): the worker
    /// released what it held and stopped. The failure, with its causes, is the source.
    #[error("worker stopped")]
    Fatal(#[source] Failure),
}

/// Counters a worker exposes (and the status registry shows).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub shards_done: AtomicU64,
    pub rows_done: AtomicU64,
    /// Rows generated and their tokens, counted per row as they finish (also in attempts
    /// that fail later: this is the work the engine did, for tok/s against the ceiling).
    pub rows_generated: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub stale_completions: AtomicU64,
    /// How long each claim call took (hits and misses), for `conftag bench fleet`.
    pub claim_latency: crate::latency::LatencyHistogram,
}

impl WorkerStats {
    /// One row generated with these token counts.
    pub fn row_generated(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.rows_generated.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion_tokens, Ordering::Relaxed);
    }
}

struct Held {
    lease: ShardLease,
    cancel: CancellationToken,
    rows_finished: Arc<AtomicU64>,
}

/// What a worker holds, for its look-ahead: the rows of its shards still to do, and all
/// their rows.
#[derive(Debug, Clone, Copy, Default)]
struct Holding {
    unfinished_rows: u64,
    rows: u64,
}

impl Holding {
    fn of<'a>(held: impl Iterator<Item = &'a Held>) -> Self {
        held.fold(Self::default(), |mut h, s| {
            let rows = s.lease.rows();
            h.rows += rows;
            h.unfinished_rows += rows.saturating_sub(s.rows_finished.load(Ordering::Relaxed));
            h
        })
    }

    /// Room for another shard: fewer unfinished rows than `max_inflight_rows`, and, so that a
    /// crash redoes at most about twice the look-ahead, fewer rows in all than twice that
    /// (shards whose finished rows wait for a slow one are kept until it ends).
    fn has_room(&self, max_inflight_rows: u64) -> bool {
        self.unfinished_rows < max_inflight_rows && self.rows < max_inflight_rows.saturating_mul(2)
    }

    fn add_shard(&mut self, rows: u64) {
        self.unfinished_rows += rows;
        self.rows += rows;
    }
}

enum TaskEnd {
    Completed,
    Stale,
    Failed,
    Released,
    Fatal(Failure),
}

/// Run a worker until `shutdown` is cancelled (then drain) or, with `exit_when_done`, until
/// no work is left. Returns an error when the processor reported a fatal error.
pub async fn run_worker<P: ShardProcessor>(
    queue: Queue,
    processor: Arc<P>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<Arc<WorkerStats>, WorkerError> {
    run_worker_with_stats(queue, processor, config, shutdown, Arc::default()).await
}

/// [`run_worker`] that counts into `stats`, which the caller can read while the worker runs
/// (a fleet benchmark reads every worker's claim latency).
pub async fn run_worker_with_stats<P: ShardProcessor>(
    queue: Queue,
    processor: Arc<P>,
    config: WorkerConfig,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
) -> Result<Arc<WorkerStats>, WorkerError> {
    let span = tracing::info_span!("worker", worker.id = %config.id, stage = %config.stage);
    run_loop(queue, processor, config, shutdown, stats.clone())
        .instrument(span)
        .await?;
    Ok(stats)
}

async fn run_loop<P: ShardProcessor>(
    queue: Queue,
    processor: Arc<P>,
    config: WorkerConfig,
    shutdown: CancellationToken,
    stats: Arc<WorkerStats>,
) -> Result<(), WorkerError> {
    let started_ms = queue.server_time_ms().await.unwrap_or(0);
    let mut renew_tick = tokio::time::interval(config.lease / 3);
    renew_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (woke_tx, mut woke_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut w = WorkerLoop {
        wait_queue: queue.with_own_wait_connection(),
        queue,
        processor,
        config,
        stats,
        started_ms,
        tasks: JoinSet::new(),
        held: HashMap::new(),
        cache: JobCache::default(),
        found_nothing: true,
        draining: false,
        drain_deadline: tokio::time::Instant::now(),
        fatal: None,
        redis_backoff: redis_backoff(),
        next_claim: tokio::time::Instant::now(),
        misses: 0,
        woke_tx,
        waiter: None,
        waiting: false,
        rate: TokenRate::default(),
        progress: Arc::new(tokio::sync::Notify::new()),
    };
    info!(
        max_inflight_rows = w.config.max_inflight_rows,
        "worker started"
    );
    let progress = w.progress.clone();
    loop {
        let holding = Holding::of(w.held.values());
        let can_claim =
            !w.draining && w.fatal.is_none() && holding.has_room(w.config.max_inflight_rows);
        tokio::select! {
            // A row finished: the loop goes round and claims if the look-ahead has room.
            _ = progress.notified() => {}
            _ = shutdown.cancelled(), if !w.draining => w.begin_drain(),
            Some(joined) = w.tasks.join_next(), if !w.tasks.is_empty() => w.on_task_end(joined),
            _ = renew_tick.tick() => w.renew_and_beat().await,
            _ = tokio::time::sleep_until(w.drain_deadline), if w.draining && !w.held.is_empty() => {
                w.on_drain_deadline()
            }
            Some(woken) = woke_rx.recv(), if w.waiter.is_some() => w.on_wake(woken).await,
            _ = tokio::time::sleep_until(w.next_claim), if can_claim && !w.waiting => {
                if w.claim(holding).await == Flow::Exit {
                    break;
                }
            }
        }
        if w.draining && w.held.is_empty() {
            break;
        }
    }
    w.finish().await
}

/// Whether the loop goes on after a claim round.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// `exit_when_done` and nothing is left.
    Exit,
}

/// The state of one worker's loop; each branch of the loop's `select!` is one method.
struct WorkerLoop<P> {
    queue: Queue,
    /// Workers in one process may share a `Queue`; each waits on a connection of its own.
    wait_queue: Queue,
    processor: Arc<P>,
    config: WorkerConfig,
    stats: Arc<WorkerStats>,
    started_ms: u64,
    tasks: JoinSet<(String, TaskEnd)>,
    /// Shards held, keyed by lease token (the same shard can be held again, released by one
    /// task and re-claimed, before the first task has been joined).
    held: HashMap<String, Held>,
    cache: JobCache,
    /// The last claim round found nothing (the next one re-reads the job list).
    found_nothing: bool,
    draining: bool,
    drain_deadline: tokio::time::Instant,
    /// Why the worker stops claiming for good (credentials, quota).
    fatal: Option<Failure>,
    redis_backoff: backoff::ExponentialBackoff,
    next_claim: tokio::time::Instant,
    /// Claim rounds in a row that found nothing (sets the idle pause).
    misses: u32,
    /// The idle wait on the wake-up list runs in a task of its own and says on this channel
    /// how it ended (true: woken by a token). It is never cut short: a dropped `BLPOP` would
    /// stay pending on its connection, delay the next wait and swallow a token.
    woke_tx: tokio::sync::mpsc::UnboundedSender<bool>,
    waiter: Option<tokio::task::AbortHandle>,
    /// The loop waits for the idle wait before the next claim round; cleared when capacity
    /// frees or the wait ends.
    waiting: bool,
    rate: TokenRate,
    /// Notified by shard tasks as rows finish.
    progress: Arc<tokio::sync::Notify>,
}

impl<P: ShardProcessor> WorkerLoop<P> {
    /// Publish the heartbeat (fields borrowed one by one: the rate is updated as it goes).
    async fn publish(&mut self, state: String, shards: Vec<String>) -> Result<(), QueueError> {
        let beat = Beat {
            config: &self.config,
            started_ms: self.started_ms,
            stats: &self.stats,
        };
        beat.publish(&self.queue, state, shards, &mut self.rate)
            .await
    }

    /// Shutdown asked: no more claims, finish or release what is held within the grace.
    fn begin_drain(&mut self) {
        info!(shards = self.held.len(), grace = ?self.config.drain_grace, "shutdown: draining");
        self.draining = true;
        self.drain_deadline = tokio::time::Instant::now() + self.config.drain_grace;
    }

    /// A shard task ended: count it; a fatal end stops claims and cancels the others.
    fn on_task_end(&mut self, joined: Result<(String, TaskEnd), tokio::task::JoinError>) {
        let (key, end) = match joined {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "shard task panicked");
                return;
            }
        };
        if let Some(h) = self.held.remove(&key) {
            let stage = self.config.stage.name();
            ::metrics::gauge!(m::ROWS_IN_FLIGHT, "stage" => stage).decrement(h.lease.rows() as f64);
            match end {
                TaskEnd::Completed => {
                    self.stats.shards_done.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .rows_done
                        .fetch_add(h.lease.rows(), Ordering::Relaxed);
                    ::metrics::counter!(m::SHARDS_COMPLETED, "stage" => stage).increment(1);
                }
                TaskEnd::Stale => {
                    self.stats.stale_completions.fetch_add(1, Ordering::Relaxed);
                    ::metrics::counter!(m::SHARD_FAILURES, "stage" => stage, "reason" => "stale")
                        .increment(1);
                }
                TaskEnd::Fatal(failure) => {
                    warn!(error = %failure.report(), "fatal error: no more claims; draining");
                    self.fatal.get_or_insert(failure);
                    self.draining = true;
                    self.drain_deadline = tokio::time::Instant::now() + self.config.drain_grace;
                    for other in self.held.values() {
                        other.cancel.cancel();
                    }
                }
                TaskEnd::Failed | TaskEnd::Released => {}
            }
        }
        // Capacity freed: claim now rather than at the end of an idle wait.
        self.waiting = false;
        self.next_claim = tokio::time::Instant::now();
    }

    /// Renew every held lease (all at once: one slow or failing answer must not delay the
    /// rest; a lost lease cancels its shard), then publish the heartbeat.
    async fn renew_and_beat(&mut self) {
        let outcomes = futures::future::join_all(
            self.held
                .values()
                .map(|h| self.queue.renew(&h.lease, self.config.lease)),
        )
        .await;
        for (h, outcome) in self.held.values().zip(outcomes) {
            let renewed = |outcome: &'static str| {
                ::metrics::counter!(m::LEASE_RENEWALS, "stage" => self.config.stage.name(), "outcome" => outcome)
                    .increment(1)
            };
            match outcome {
                Ok(RenewOutcome::Renewed) => renewed("renewed"),
                Ok(outcome) => {
                    renewed("lost");
                    warn!(job = %h.lease.job, shard = h.lease.shard, ?outcome, "lease gone; abandoning shard");
                    h.cancel.cancel();
                }
                Err(e) => {
                    renewed("error");
                    warn!(job = %h.lease.job, shard = h.lease.shard, error = %e, "lease renewal failed; will retry")
                }
            }
        }
        let state = match (&self.fatal, self.draining) {
            (Some(f), _) => format!("stopped: {}", f.report()),
            (None, true) => "draining".into(),
            (None, false) => "running".into(),
        };
        let shards = self
            .held
            .values()
            .map(|h| format!("{}/{}", h.lease.job, h.lease.shard))
            .collect();
        if let Err(e) = self.publish(state, shards).await {
            debug!(error = %e, "heartbeat not published");
        }
    }

    /// The drain grace is over: cancel what is still running (tasks release their leases).
    fn on_drain_deadline(&mut self) {
        info!(
            shards = self.held.len(),
            "drain deadline: releasing unfinished shards"
        );
        for h in self.held.values() {
            h.cancel.cancel();
        }
        self.drain_deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    }

    /// The idle wait ended (`woken`: by a token).
    async fn on_wake(&mut self, woken: bool) {
        self.waiter = None;
        if self.waiting {
            self.waiting = false;
            self.next_claim = tokio::time::Instant::now();
        } else if woken {
            // Claiming already (capacity freed meanwhile): pass the token on.
            self.queue
                .wake(self.config.stage, self.config.wake_topic(), 1)
                .await;
        }
    }

    /// One claim round: start a task per new lease, then plan the next round (at once when
    /// something was found, after the idle pause — or a wake-up — when not).
    async fn claim(&mut self, holding: Holding) -> Flow {
        let round = claim_round(
            &self.queue,
            &self.processor,
            &self.config,
            &self.stats,
            &mut self.cache,
            holding,
            self.found_nothing,
        )
        .await;
        let (leases, idle) = match round {
            Ok(r) => r,
            Err(e) => {
                let wait = self
                    .redis_backoff
                    .next_backoff()
                    .unwrap_or(Duration::from_secs(5));
                warn!(error = %e, retry_in = ?wait, "cannot claim; Redis unreachable?");
                self.next_claim = tokio::time::Instant::now() + wait;
                return Flow::Continue;
            }
        };
        self.redis_backoff.reset();
        let got = !leases.is_empty();
        if got && self.found_nothing && self.config.wake_ups {
            // Work appeared while this worker waited: others may be waiting too. Two tokens:
            // the wake-up spreads through the idle fleet in a few round trips and stops where
            // claims come back empty.
            self.queue
                .wake(self.config.stage, self.config.wake_topic(), 2)
                .await;
        }
        self.found_nothing = !got;
        for (lease, spec, judge) in leases {
            self.start_shard(lease, spec, judge);
        }
        if idle && self.held.is_empty() && self.config.exit_when_done {
            info!("no work left; exiting");
            return Flow::Exit;
        }
        if got {
            self.misses = 0;
            self.next_claim = tokio::time::Instant::now();
        } else {
            self.misses = self.misses.saturating_add(1);
            let pause = self.config.idle_pause(self.misses);
            self.next_claim = tokio::time::Instant::now() + pause;
            if self.config.wake_ups {
                self.wait_for_work(pause);
            }
        }
        Flow::Continue
    }

    /// Run a leased shard in a task of its own.
    fn start_shard(&mut self, lease: ShardLease, spec: JobSpec, judge: JudgeSettings) {
        let key = lease.token.clone();
        let cancel = CancellationToken::new();
        let rows_finished = Arc::new(AtomicU64::new(0));
        self.held.insert(
            key.clone(),
            Held {
                lease: lease.clone(),
                cancel: cancel.clone(),
                rows_finished: rows_finished.clone(),
            },
        );
        let ctx = ShardContext {
            lease,
            spec,
            judge,
            queue: self.queue.clone(),
            cancel,
            stats: self.stats.clone(),
            start_mark: Arc::new(tokio::sync::OnceCell::new()),
            rows_finished,
            progress: self.progress.clone(),
        };
        let span = tracing::info_span!("shard", job = %ctx.lease.job, shard = ctx.lease.shard, attempt = ctx.lease.attempts + 1);
        self.tasks.spawn(
            run_shard(self.processor.clone(), ctx, self.config.clone(), key).instrument(span),
        );
    }

    /// Wait on the wake-up list for up to `pause` before the next claim round. One wait at a
    /// time; one still running from an earlier idle spell ends within its own (shorter or
    /// equal) pause.
    fn wait_for_work(&mut self, pause: Duration) {
        self.waiting = true;
        if self.waiter.is_some() {
            return;
        }
        let (q, tx, stage) = (
            self.wait_queue.clone(),
            self.woke_tx.clone(),
            self.config.stage,
        );
        let topic = self.config.wake_topic().map(str::to_owned);
        let wait = tokio::spawn(async move {
            let woken = match q.wait_for_work(stage, topic.as_deref(), pause).await {
                Ok(w) => w,
                Err(e) => {
                    // Claim at the usual pause; the claim reports Redis errors.
                    debug!(error = %e, "idle wait failed");
                    tokio::time::sleep(pause).await;
                    false
                }
            };
            let _ = tx.send(woken);
        });
        self.waiter = Some(wait.abort_handle());
    }

    /// The loop ended: leave a stopped worker in the registry (so `conftag status` shows
    /// why), or remove a cleanly stopped one.
    async fn finish(mut self) -> Result<(), WorkerError> {
        if let Some(w) = self.waiter.take() {
            w.abort();
        }
        match self.fatal.take() {
            Some(failure) => {
                let state = format!("stopped: {}", failure.report());
                let _ = self.publish(state, Vec::new()).await;
                Err(WorkerError::Fatal(failure))
            }
            None => {
                let _ = self.queue.forget_worker(&self.config.id).await;
                info!(
                    shards = self.stats.shards_done.load(Ordering::Relaxed),
                    rows = self.stats.rows_done.load(Ordering::Relaxed),
                    "worker stopped"
                );
                Ok(())
            }
        }
    }
}

/// The longest a worker waits between tries to reach Redis (at start and while running).
pub const REDIS_RETRY_MAX: Duration = Duration::from_secs(5);

fn redis_backoff() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(200))
        .with_max_interval(REDIS_RETRY_MAX)
        .with_max_elapsed_time(None)
        .build()
}

/// Job ids and specs, re-read at most every [`JobCache::TTL`] (or when a round found
/// nothing), so a busy worker spends its Redis round trips on claims, not on discovery.
#[derive(Default)]
struct JobCache {
    ids: Vec<JobId>,
    ids_fetched: Option<tokio::time::Instant>,
    specs: HashMap<JobId, (Option<(JobSpec, JudgeSettings)>, tokio::time::Instant)>,
    paused: HashMap<JobId, (bool, tokio::time::Instant)>,
    /// Where the next round starts in the job list, so every job gets the first claim in turn.
    rotate: usize,
}

impl JobCache {
    const TTL: Duration = Duration::from_secs(1);

    fn fresh(t: Option<tokio::time::Instant>) -> bool {
        t.is_some_and(|t| t.elapsed() < Self::TTL)
    }

    async fn ids(&mut self, queue: &Queue, force: bool) -> Result<Vec<JobId>, QueueError> {
        if force || !Self::fresh(self.ids_fetched) {
            self.ids = queue.job_ids().await?;
            self.ids_fetched = Some(tokio::time::Instant::now());
        }
        Ok(self.ids.clone())
    }

    /// Whether judging of the job is paused (budget spent).
    async fn paused(&mut self, queue: &Queue, id: &JobId) -> Result<bool, QueueError> {
        if let Some((p, at)) = self.paused.get(id) {
            if Self::fresh(Some(*at)) {
                return Ok(*p);
            }
        }
        let p = queue.judge_paused(id).await?.is_some();
        self.paused
            .insert(id.clone(), (p, tokio::time::Instant::now()));
        Ok(p)
    }

    /// Judge settings can change (re-judge), so specs expire too.
    async fn spec(
        &mut self,
        queue: &Queue,
        id: &JobId,
    ) -> Result<Option<(JobSpec, JudgeSettings)>, QueueError> {
        if let Some((spec, at)) = self.specs.get(id) {
            if Self::fresh(Some(*at)) {
                return Ok(spec.clone());
            }
        }
        let spec = queue.job_spec(id).await?;
        self.specs
            .insert(id.clone(), (spec.clone(), tokio::time::Instant::now()));
        Ok(spec)
    }
}

/// One pass over the jobs: claim while there is capacity. Returns the new leases and whether
/// no accepted job has work pending for this stage (for `exit_when_done`).
async fn claim_round<P: ShardProcessor>(
    queue: &Queue,
    processor: &Arc<P>,
    config: &WorkerConfig,
    stats: &WorkerStats,
    cache: &mut JobCache,
    mut holding: Holding,
    found_nothing_last_time: bool,
) -> Result<(Vec<(ShardLease, JobSpec, JudgeSettings)>, bool), QueueError> {
    let ids = cache.ids(queue, found_nothing_last_time).await?;
    let mut out = Vec::new();
    let mut pending_anywhere = false;
    if ids.is_empty() {
        return Ok((out, true));
    }
    cache.rotate = (cache.rotate + 1) % ids.len();
    for id in ids.iter().cycle().skip(cache.rotate).take(ids.len()) {
        let Some((spec, judge)) = cache.spec(queue, id).await? else {
            continue;
        };
        if !processor.accepts(&spec, &judge) {
            continue;
        }
        if config.stage == Stage::Judge && cache.paused(queue, id).await? {
            continue;
        }
        let mut claimed_here = false;
        while holding.has_room(config.max_inflight_rows) {
            let asked = tokio::time::Instant::now();
            let claimed = queue
                .claim(id, config.stage, &config.id, config.lease)
                .await?;
            stats.claim_latency.record(asked.elapsed());
            match claimed {
                Some(lease) => {
                    holding.add_shard(lease.rows());
                    let stage = config.stage.name();
                    ::metrics::counter!(m::SHARDS_CLAIMED, "stage" => stage).increment(1);
                    ::metrics::gauge!(m::ROWS_IN_FLIGHT, "stage" => stage)
                        .increment(lease.rows() as f64);
                    claimed_here = true;
                    out.push((lease, spec.clone(), judge.clone()));
                }
                None => break,
            }
        }
        if claimed_here
            || (config.exit_when_done && queue.has_pending_work(id, config.stage).await?)
        {
            pending_anywhere = true;
        }
    }
    Ok((out, !pending_anywhere))
}

/// Process one shard and settle its lease: complete, fail (with backoff), or release.
async fn run_shard<P: ShardProcessor>(
    processor: Arc<P>,
    ctx: ShardContext,
    config: WorkerConfig,
    key: String,
) -> (String, TaskEnd) {
    let queue = ctx.queue.clone();
    let lease = ctx.lease.clone();
    let cancel = ctx.cancel.clone();
    debug!(rows = lease.rows(), "processing");
    let marks_start = processor.marks_start();
    let work = async move {
        if !marks_start {
            ctx.started().await;
        }
        processor.process(ctx).await
    };
    let result = tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Err(Failure::cancelled()),
    };
    let stage = config.stage.name();
    let failed = |reason: &'static str| {
        ::metrics::counter!(m::SHARD_FAILURES, "stage" => stage, "reason" => reason).increment(1)
    };
    let end = match result {
        Ok(output) => {
            let end = complete_with_retry(&queue, &lease, &output, &cancel).await;
            if matches!(end, TaskEnd::Completed) {
                for (name, value) in &output.counters {
                    if *value > 0 {
                        ::metrics::counter!(m::shard_counter_name(name.name()), "stage" => stage)
                            .increment(*value as u64);
                    }
                }
            }
            end
        }
        Err(Failure::Cancelled { .. }) => {
            failed("released");
            release_quietly(&queue, &lease, &config).await;
            TaskEnd::Released
        }
        Err(e @ Failure::Fatal { .. }) => {
            failed("fatal");
            release_quietly(&queue, &lease, &config).await;
            TaskEnd::Fatal(e)
        }
        Err(e @ Failure::Paused { .. }) => {
            let msg = e.report();
            failed("paused");
            warn!(reason = %msg, "judging of the job paused");
            if let Err(e) = queue.pause_judging(&lease.job, &msg).await {
                warn!(error = %e, "cannot record the pause");
            }
            release_quietly(&queue, &lease, &config).await;
            TaskEnd::Released
        }
        Err(e) => {
            let permanent = matches!(e, Failure::Permanent { .. });
            failed(match (&e, e.retry_after()) {
                (Failure::Permanent { .. }, _) => "permanent",
                (_, Some(_)) => "retry_after",
                _ => "transient",
            });
            let mut delay = retry_delay(&config, lease.attempts);
            if let Some(at_least) = e.retry_after() {
                delay = delay.max(at_least);
            }
            let msg = e.report();
            match queue.fail(&lease, &msg, delay, permanent).await {
                Ok(FailOutcome::Retrying) => {
                    warn!(error = %msg, retry_in = ?delay, "shard attempt failed; will retry")
                }
                Ok(FailOutcome::Failed) => warn!(error = %msg, "shard failed for good"),
                Ok(other) => debug!(?other, "failure not recorded: lease already gone"),
                Err(qe) => warn!(error = %qe, "cannot record failure; the lease will lapse"),
            }
            TaskEnd::Failed
        }
    };
    (key, end)
}

async fn release_quietly(queue: &Queue, lease: &ShardLease, config: &WorkerConfig) {
    match queue.release(lease).await {
        Ok(true) => {
            info!("shard released");
            if config.wake_ups {
                queue.wake(lease.stage, config.wake_topic(), 1).await;
            }
        }
        Ok(false) => debug!("nothing to release: lease already gone"),
        Err(e) => warn!(error = %e, "release failed; the lease will lapse"),
    }
}

/// Store results, retrying through Redis outages for as long as the shard is not cancelled.
/// The results are in memory only, so giving up early would waste the work.
async fn complete_with_retry(
    queue: &Queue,
    lease: &ShardLease,
    output: &ShardOutput,
    cancel: &CancellationToken,
) -> TaskEnd {
    let mut backoff = redis_backoff();
    debug_assert!(output.rows.iter().all(|(_, r)| r.stage() == lease.stage));
    let rows: Vec<(u64, String)> = output.rows.iter().map(|(i, r)| (*i, r.to_json())).collect();
    loop {
        match queue.complete(lease, &output.counters, &rows).await {
            Ok(CompleteOutcome::Stored) => {
                info!(rows = output.rows.len(), "shard completed");
                return TaskEnd::Completed;
            }
            Ok(CompleteOutcome::Stale) => {
                warn!("completion refused: the lease was taken over (fencing token stale)");
                return TaskEnd::Stale;
            }
            Ok(CompleteOutcome::Cancelled) => {
                info!("job cancelled; results dropped");
                return TaskEnd::Released;
            }
            Err(e) => {
                let wait = backoff.next_backoff().unwrap_or(Duration::from_secs(5));
                warn!(error = %e, retry_in = ?wait, "cannot store results yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return TaskEnd::Released,
                }
            }
        }
    }
}

/// Exponential backoff with jitter for the `attempts`-th retry (0-based).
pub fn retry_delay(config: &WorkerConfig, attempts: u32) -> Duration {
    let mut b = backoff::ExponentialBackoffBuilder::new()
        .with_initial_interval(config.retry_base)
        .with_max_interval(config.retry_max)
        .with_randomization_factor(0.5)
        .with_multiplier(2.0)
        .with_max_elapsed_time(None)
        .build();
    let mut d = config.retry_base;
    for _ in 0..=attempts.min(30) {
        d = b.next_backoff().unwrap_or(config.retry_max);
    }
    d
}

/// A token cancelled on the first SIGTERM / Ctrl-C; a second signal exits at once (130).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_signal().await;
        info!("signal received: draining (send it again to exit now)");
        t.cancel();
        wait_signal().await;
        warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Holding;

    #[test]
    fn look_ahead_counts_unfinished_rows_and_caps_all_held_rows_at_twice_it() {
        // Look-ahead 4: room while fewer than 4 rows are unfinished...
        let h = |unfinished_rows, rows| Holding {
            unfinished_rows,
            rows,
        };
        assert!(h(3, 3).has_room(4));
        assert!(!h(4, 4).has_room(4));
        // ...finished rows of held shards do not count...
        assert!(h(1, 7).has_room(4));
        // ...but never 8 rows held in all: a crash redoes at most twice the look-ahead.
        assert!(!h(1, 8).has_room(4));
        let mut g = h(0, 0);
        g.add_shard(4);
        assert_eq!((g.unfinished_rows, g.rows), (4, 4));
    }
}
