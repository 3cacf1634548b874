#![doc = include_str!("../README.md")]

pub mod batch;
pub mod bench;
pub mod cli;
pub mod fake;
pub mod ledger;
pub mod openai;
pub mod processor;
pub mod prompt;
pub mod rules;

use std::sync::Arc;

use common::queue::{Queue, Stage};
use common::worker::{run_worker, WorkerConfig, WorkerError, WorkerStats};
use tokio_util::sync::CancellationToken;

pub use processor::JudgeProcessor;

/// Why a judge worker stopped. (Building its client fails earlier, with
/// [`openai::ClientError`]; failures of rows and calls are [`common::failure::Failure`]s that
/// the worker runtime settles.)
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Run a judge worker until shutdown (or, with `exit_when_done`, until no work is left).
pub async fn run(
    queue: Queue,
    processor: JudgeProcessor,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<Arc<WorkerStats>, JudgeError> {
    debug_assert_eq!(config.stage, Stage::Judge);
    Ok(run_worker(queue, Arc::new(processor), config, shutdown).await?)
}
