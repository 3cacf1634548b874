#![doc = include_str!("../README.md")]

pub mod backend;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod gguf_convert;
pub mod model_shape;
pub mod near_tie;
pub mod openai_engine;
pub mod processor;
pub mod reference;
pub mod tensor_parallel;
pub mod tiny_model;

use std::sync::Arc;

use common::queue::{Queue, QueueError};
use common::worker::{run_worker, WorkerConfig, WorkerError, WorkerStats};
use tokio_util::sync::CancellationToken;

pub use backend::Engine;
pub use engine::{EngineOptions, MistralEngine};
pub use processor::InferProcessor;

/// Why running an inference worker (or the bench's run through the queue) stopped. Loading
/// the engine fails earlier, with [`engine::EngineError`]; failures of rows and shards are
/// [`common::failure::Failure`]s that the worker runtime settles.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Run an inference worker with a loaded engine until shutdown (or, with `exit_when_done`,
/// until no rows are left for its model).
pub async fn run(
    queue: Queue,
    engine: Arc<Engine>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> Result<Arc<WorkerStats>, InferError> {
    let model = config.model.clone().unwrap_or_default();
    let processor = InferProcessor::new(model, engine);
    Ok(run_worker(queue, Arc::new(processor), config, shutdown).await?)
}
