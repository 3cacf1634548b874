#![doc = include_str!("../README.md")]

pub mod config;
pub mod dataset;
pub mod dataset_spec;
pub mod export;
pub mod http;
pub mod job;
pub mod keys;
pub mod latency;
pub mod local_redis;
pub mod metrics;
pub mod prompt;
pub mod queue;
pub mod records;
pub mod redis_conn;
pub mod roofline;
pub mod status;
pub mod synthetic;
pub mod worker;

pub use dataset::{DatasetSource, InputRow};
pub use dataset_spec::DatasetSpec;
pub use job::{JobId, JobSpec, JudgeMode, JudgeSettings, PromptMode};
pub use queue::{Queue, QueueError, ShardLease, Stage};
