//! conftag's test fixtures, in one dev-only crate (issue #14: no fixture in a production
//! crate). Every workspace member lists it under `[dev-dependencies]` only, so nothing here
//! reaches a binary.
//!
//! - [`redis`]: real `redis-server` processes with the test presets (`appendfsync always`,
//!   kill and restart on the same data directory), on top of the product's launcher
//!   [`common::local_redis`] (which `conftag bench fleet` uses);
//! - [`samples`], [`synthetic_rows`], [`submit_synthetic`]: shared rows and jobs;
//! - [`Submit`]: the `conftag submit …` argv the CLI tests build;
//! - [`wait`]: polling until a condition or a job status holds, with a deadline;
//! - [`harness`]: libtest's arguments for `harness = false` targets that re-execute
//!   themselves in another role (see [`test_worker`]);
//! - [`metrics`], [`parquet`], [`http`]: scraping `/metrics`, writing parquet files,
//!   HTTP ranges for stand-in servers;
//! - `fake_judge` (feature `fake-judge`): the fake OpenAI-compatible server on a free port,
//!   its stats and faults.

#[cfg(feature = "fake-judge")]
pub mod fake_judge;
pub mod harness;
pub mod http;
pub mod metrics;
pub mod parquet;
pub mod redis;
pub mod rows;
pub mod submit;
pub mod test_worker;
pub mod wait;

pub use common::synthetic::synthetic_rows;
pub use redis::{free_port, RedisCluster, RedisServer, ServerTls};
pub use rows::{
    files_under, output_text, prediction, requeue_failed, samples, samples_arg, submit_synthetic,
    SyntheticJob,
};
pub use submit::Submit;
