#![doc = include_str!("../README.md")]

pub mod config;
pub mod dataset;
pub mod dataset_spec;
pub mod exit;
pub mod export;
pub mod failure;
pub mod job;
pub mod keys;
pub mod latency;
pub mod local_redis;
pub mod metrics;
pub mod openai;
pub mod prompt;
pub mod queue;
/// Connections to Redis (URLs, TLS, single server or Cluster): part of the queue, the only
/// module that talks to Redis; re-exported under its old path.
pub use queue::conn as redis_conn;
pub mod records;
pub mod roofline;
pub mod status;
pub mod synthetic;
pub mod worker;

pub use dataset::{DatasetSource, InputRow};
pub use dataset_spec::DatasetSpec;
pub use job::{JobId, JobSpec, JudgeMode, JudgeSettings, PromptMode};
pub use queue::{Queue, QueueError, ShardLease, Stage};
