//! The `conftag-judge` command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::config::{CommonArgs, Secret};
use common::job::JudgeMode;
use common::queue::{Queue, Stage};
use common::worker::{WorkerConfig, REDIS_RETRY_MAX};

use crate::fake::{FakeConfig, FakeServer};
use crate::openai::{ClientConfig, OpenAiClient, OPENAI_DEFAULT_BASE};
use crate::processor::{JudgeProcessor, Prices};

/// conftag-judge: judge finished inference shards and tag every row with a confidence token.
///
/// Takes every job whose judge mode it can serve. The judge model of each job comes from
/// `conftag submit --judge-model` (or a re-judge requeue). The API key is read from
/// OPENAI_API_KEY only.
#[derive(Debug, Parser)]
#[command(name = "conftag-judge", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub worker: JudgeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// What `conftag-judge` does with its arguments (tracing already set up). In the library so
    /// that tests can run the very same worker in a process of their own.
    pub async fn run(&self) -> anyhow::Result<()> {
        if let Some(Command::ServeFake(a)) = &self.command {
            let server = FakeServer::start(
                a.addr,
                FakeConfig {
                    latency: Duration::from_millis(a.latency_ms),
                    rate_limit: a.rate_limit,
                    rate_window: Duration::from_millis(a.rate_window_ms.max(1)),
                    api_key: a.require_key.clone(),
                    served_models: a.serve_models.clone(),
                    ..FakeConfig::default()
                },
            )
            .await?;
            tracing::info!(base_url = %server.base_url(), "fake OpenAI-compatible judge listening");
            let shutdown = common::worker::shutdown_on_signals();
            shutdown.cancelled().await;
            return Ok(());
        }
        if let Some(Command::Bench {
            rows,
            latency_ms,
            in_flight,
            rate_limit,
            window_ms,
        }) = &self.command
        {
            let queue = Queue::connect(&self.common.redis_url()).await?;
            return crate::bench::run(
                &queue,
                *rows,
                *latency_ms,
                *in_flight,
                *rate_limit,
                *window_ms,
            )
            .await;
        }
        let processor = self.worker.processor()?;
        self.common.serve_metrics()?;
        let queue = Queue::connect_waiting(&self.common.redis_url(), REDIS_RETRY_MAX).await?;
        let shutdown = common::worker::shutdown_on_signals();
        crate::run(queue, processor, self.worker.worker_config(), shutdown).await?;
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a local OpenAI-compatible judge (deterministic verdicts, rate limits, faults)
    /// for tests and demos.
    ServeFake(FakeArgs),
    /// Measure judge throughput against an in-process fake server (writes a scratch job to
    /// the given Redis and deletes it after).
    Bench {
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Milliseconds each judge answer takes.
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        /// Requests in flight.
        #[arg(long, default_value_t = 50)]
        in_flight: usize,
        /// Requests allowed per --window-ms (429 past it).
        #[arg(long)]
        rate_limit: Option<u32>,
        #[arg(long, default_value_t = 60_000)]
        window_ms: u64,
    },
}

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// OpenAI-compatible API base URL.
    #[arg(long, env = "OPENAI_BASE_URL", default_value = OPENAI_DEFAULT_BASE)]
    pub base_url: String,
    /// Only take jobs with this judge mode [default: any mode this worker can serve].
    #[arg(long, value_enum)]
    pub mode: Option<JudgeMode>,
    /// Judge requests in flight at once, across all shards held.
    #[arg(long, default_value_t = 50)]
    pub num_workers: usize,
    /// Seconds before one judge request is abandoned and retried.
    #[arg(long, default_value_t = 300)]
    pub request_timeout: u64,
    /// Retries of a failing judge request (5xx, 429, network) before the shard is retried later.
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// USD per million prompt tokens [default: the judge model's list price].
    #[arg(long)]
    pub price_input: Option<f64>,
    /// USD per million completion tokens [default: the judge model's list price].
    #[arg(long)]
    pub price_output: Option<f64>,
    /// In hybrid mode, also send every N-th rules-decided row to the LLM to measure
    /// agreement (0 = never).
    #[arg(long, default_value_t = 10)]
    pub audit_every: u64,
    /// Seconds between polls of a Batch API batch (`batch` jobs).
    #[arg(long, default_value_t = 30)]
    pub batch_poll_secs: u64,
    /// Rows held at once (across shards).
    #[arg(long, default_value_t = 256)]
    pub max_inflight_rows: u64,
    /// Lease length in seconds (renewed every third of it).
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// Seconds in-flight shards get to finish after SIGTERM before they are released.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Exit when no job has rows left to judge (for one-shot runs and demos).
    #[arg(long)]
    pub exit_when_done: bool,
    #[command(flatten)]
    pub idle: common::config::IdleArgs,
    /// Worker id [default: HOST-judge-PID-RANDOM].
    #[arg(long, env = "CONFTAG_WORKER_ID")]
    pub worker_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct FakeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub addr: SocketAddr,
    /// Milliseconds every answer takes.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Requests allowed per window (429 past it); unlimited when absent.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Rate-limit window in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub rate_window_ms: u64,
    /// Require this bearer key (read from the environment only).
    #[arg(long, env = "FAKE_OPENAI_REQUIRED_KEY", hide_env_values = true)]
    pub require_key: Option<String>,
    /// Also list these model names at /v1/models, so `conftag-infer --engine openai` can use
    /// the server's /v1/completions as a fake inference engine (repeatable).
    #[arg(long = "serve-model")]
    pub serve_models: Vec<String>,
}

impl JudgeArgs {
    pub fn worker_config(&self) -> WorkerConfig {
        let mut c = WorkerConfig::new(Stage::Judge);
        if let Some(id) = &self.worker_id {
            c.id = id.clone();
        }
        c.max_inflight_rows = self.max_inflight_rows.max(1);
        c.lease = Duration::from_secs(self.lease_secs.max(3));
        c.drain_grace = Duration::from_secs(self.drain_secs);
        c.exit_when_done = self.exit_when_done;
        self.idle.apply(&mut c);
        c
    }

    /// The processor; the LLM client only when a mode that needs it may be served.
    pub fn processor(&self) -> Result<JudgeProcessor, crate::openai::ClientError> {
        let key = Secret::from_env("OPENAI_API_KEY");
        let wants_llm = !matches!(self.mode, Some(JudgeMode::Rules));
        let batch = if wants_llm && (key.is_some() || !self.base_url.contains("api.openai.com")) {
            crate::batch::BatchClient::new(
                &self.base_url,
                key.clone(),
                Duration::from_secs(self.batch_poll_secs.max(1)),
            )
            .ok()
        } else {
            None
        };
        let client = if wants_llm {
            let mut cfg = ClientConfig::new(&self.base_url, key, "");
            cfg.request_timeout = Duration::from_secs(self.request_timeout.max(1));
            cfg.max_retries = self.max_retries;
            match OpenAiClient::new(cfg) {
                Ok(c) => Some(c),
                // Without a key a worker of no fixed mode still serves rules jobs.
                Err(crate::openai::ClientError::MissingKey(url)) if self.mode.is_none() => {
                    tracing::warn!("OPENAI_API_KEY is not set: this worker judges only `rules` jobs (judge API {url})");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let prices = match (self.price_input, self.price_output) {
            (Some(i), Some(o)) => Some(Prices {
                input_per_mtok: i,
                output_per_mtok: o,
            }),
            _ => None,
        };
        let processor = JudgeProcessor::new(
            client,
            self.num_workers,
            self.mode,
            prices,
            self.audit_every,
        );
        Ok(match batch {
            Some(b) => processor.with_batch(b),
            None => processor,
        })
    }
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
