//! The `conftag` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use common::config::CommonArgs;
use common::job::{JudgeMode, DEFAULT_JUDGE_MODEL};

/// conftag: turn LLM answers into tagged training data through a Redis shard queue.
///
/// `submit` splits each model × dataset split into shards on Redis; `conftag-infer` workers
/// generate answers, `conftag-judge` workers judge and tag them; `status` watches, `requeue`
/// retries, `export` writes the seed pipeline's files.
#[derive(Debug, Parser)]
#[command(name = "conftag", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create jobs: one per model × dataset (idempotent: the same job again is a no-op).
    Submit(SubmitArgs),
    /// List the datasets `submit` knows: the built-ins and any --dataset-spec files (checked
    /// whole, as `submit` would). Needs no Redis.
    Datasets(DatasetsArgs),
    /// Show jobs and workers (counters only; fast on any size).
    Status(StatusArgs),
    /// Put shards back in a queue (failed, stuck, chosen, or all for re-judging).
    Requeue(RequeueArgs),
    /// Write the seed pipeline's prediction and tagged files for finished jobs.
    Export(ExportArgs),
    /// List workers with their last heartbeat and the shards they hold.
    Workers(WorkersArgs),
    /// Stop a job: queued shards leave the queue, workers drop its leased shards.
    Cancel(CancelArgs),
    /// Serve every job's progress as Prometheus gauges at --metrics-addr (rows done, shards
    /// by state, queue depth per stage, tokens/s, judge spend, live workers) until stopped.
    Monitor(MonitorArgs),
    /// Measure the queue with processors that do no work (writes to the given Redis: use a
    /// scratch server).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Shards/s and rows/s through both stages with W no-op workers per stage.
    Queue {
        /// Worker counts to try, per stage.
        #[arg(long, value_delimiter = ',', default_value = "1,8")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 2000)]
        shards: u64,
        #[arg(long, default_value_t = 32)]
        rows_per_shard: u64,
    },
    /// Thousands of simulated GPU workers (the real worker runtime, each with its own
    /// connection; a "GPU" that sleeps per shard and returns MATH-sized rows) against a
    /// `redis-server` or a 3-master Redis Cluster started for the run: Redis CPU, commands/s,
    /// claim latency, pick-up delay of an idle fleet, status latency, memory per stored row.
    /// Needs `redis-server` (and `redis-cli` for --cluster) on PATH; ignores --redis-url.
    Fleet {
        /// Fleet sizes to run, each on a fresh server.
        #[arg(long, value_delimiter = ',', default_value = "100,500,2000")]
        workers: Vec<usize>,
        /// Seconds of steady state measured while the fleet is busy.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Seconds measured while the fleet is idle.
        #[arg(long, default_value_t = 10)]
        idle_seconds: u64,
        /// Mean seconds the simulated GPU takes per shard.
        #[arg(long, default_value_t = 20.0)]
        shard_secs: f64,
        /// Jitter of the shard time (± this share of it).
        #[arg(long, default_value_t = 0.3)]
        jitter: f64,
        #[arg(long, default_value_t = 32)]
        rows_per_shard: u64,
        /// Shards each worker holds at once (running and look-ahead).
        #[arg(long, default_value_t = 2)]
        held_shards: u64,
        /// Smallest and largest result row, bytes of JSON (MATH answers: 1–3 KB).
        #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [1000, 3000])]
        row_bytes: Vec<usize>,
        /// Lease length in seconds (renewed every third of it), as `conftag-infer --lease-secs`.
        #[arg(long, default_value_t = 60)]
        lease_secs: u64,
        /// Workers' idle poll in ms [default: the worker runtime's].
        #[arg(long)]
        idle_poll_ms: Option<u64>,
        /// One-shard jobs submitted to the idle fleet to time their pick-up.
        #[arg(long, default_value_t = 5)]
        pickups: usize,
        /// Run against a 3-master Redis Cluster instead of one redis-server.
        #[arg(long)]
        cluster: bool,
        /// Idle workers poll at a fixed --idle-poll-ms without wake-ups or backoff (the
        /// behaviour before wake-ups), for comparison.
        #[arg(long)]
        poll_only: bool,
    },
    /// Latency of `conftag status` on one big job.
    Status {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 50)]
        shard_size: u64,
        #[arg(long, default_value_t = 50)]
        repeats: usize,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Model to run (hub id, e.g. Qwen/Qwen2.5-7B-Instruct, or the name given to
    /// `conftag-infer --model`). Repeat for several models.
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// Dataset(s): the built-ins math, medqa, boolq (or the name of a --dataset-spec). Repeat
    /// or comma-separate for several.
    #[arg(
        long = "dataset",
        value_delimiter = ',',
        required_unless_present = "dataset_specs"
    )]
    pub datasets: Vec<String>,
    /// A dataset spec file (TOML; see data/specs/README.md): its dataset is submitted as well.
    /// Repeat for several; mixes with --dataset. Every file is checked whole first.
    #[arg(long = "dataset-spec", value_name = "FILE")]
    pub dataset_specs: Vec<PathBuf>,
    /// Split to read (train, validation, test).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Read rows from a local file (.jsonl, .json or .parquet with the spec's columns) instead
    /// of the spec's source. With several datasets, give `DATASET=PATH` once per dataset.
    #[arg(long = "data")]
    pub data: Vec<String>,
    /// Use only the first N rows of each split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Rows per shard (the unit of leasing, retry and requeue).
    #[arg(long, default_value_t = 32)]
    pub shard_size: u64,
    /// Send prompts through the model's chat template instead of as raw completion text (the
    /// spec's `chat_template` when it has one).
    #[arg(long)]
    pub chat_template: bool,
    /// New-token budget per row [default: the spec's `max_tokens`; the seed's for the
    /// built-ins: math 512, medqa 256, boolq 128].
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Judge model for `llm`, `hybrid` and `batch` modes.
    #[arg(long, default_value = DEFAULT_JUDGE_MODEL)]
    pub judge_model: String,
    /// How rows are judged: llm (OpenAI-compatible API), rules (no network), hybrid, batch.
    #[arg(long, value_enum, default_value_t = JudgeMode::Llm)]
    pub judge_mode: JudgeMode,
    /// Pause judging of each job once its judge spend reaches this many USD (raise it with
    /// `conftag requeue JOB --stage judge --failed --judge-budget-usd N`).
    #[arg(long)]
    pub judge_budget_usd: Option<f64>,
    /// Attempts per shard and stage before it is marked failed.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Print the created jobs as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DatasetsArgs {
    /// A dataset spec file to check and list with the built-ins. Repeat for several.
    #[arg(long = "dataset-spec", value_name = "FILE")]
    pub dataset_specs: Vec<PathBuf>,
    /// Print a JSON document ({"datasets": [...]}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Jobs to show [default: all].
    pub jobs: Vec<String>,
    /// Refresh continuously with progress bars (Ctrl-C to stop).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Print one JSON document (schema 1: {"schema", "jobs": [...], "workers": [...]}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Seconds between reads of the counters.
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
}

#[derive(Debug, Args)]
pub struct RequeueArgs {
    /// The job.
    pub job: String,
    /// Stage to run again [default: the stage each shard is in].
    #[arg(long, value_enum)]
    pub stage: Option<StageArg>,
    /// Shards that used up their attempts.
    #[arg(long)]
    pub failed: bool,
    /// Leased shards whose lease lapsed (with --force: every leased shard).
    #[arg(long)]
    pub stuck: bool,
    /// Every shard (e.g. `--stage judge --all` re-judges a finished job).
    #[arg(long)]
    pub all: bool,
    /// Particular shard ids.
    #[arg(long = "shard")]
    pub shards: Vec<u64>,
    /// Also take back live leases and done shards.
    #[arg(long)]
    pub force: bool,
    /// New judge model for the re-judged shards.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// New judge mode for the re-judged shards.
    #[arg(long, value_enum)]
    pub judge_mode: Option<JudgeMode>,
    /// New judge budget in USD (also un-pauses a job paused by its budget).
    #[arg(long)]
    pub judge_budget_usd: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StageArg {
    Infer,
    Judge,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Jobs to export.
    #[arg(required_unless_present = "all")]
    pub jobs: Vec<String>,
    /// Export every job.
    #[arg(long)]
    pub all: bool,
    /// Output directory (gets inference/predictions/, eval/judged/, training/).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Export what is finished even if some shards are not done.
    #[arg(long)]
    pub partial: bool,
    /// Also write report/summary.md and report/accuracy.svg (accuracy per model × dataset,
    /// rows, tokens, judge spend, rules/LLM agreement).
    #[arg(long)]
    pub report: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    pub job: String,
    /// Also delete the job and all its rows and results from Redis.
    #[arg(long)]
    pub purge: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
