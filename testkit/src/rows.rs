//! Rows and jobs the tests share: the sample files of `data/samples/` and jobs of made-up
//! rows submitted straight to the queue.

use std::path::{Path, PathBuf};
use std::process::Output;

use common::dataset::InputRow;
use common::job::{JobId, JobSpec, JudgeSettings, PromptMode};
use common::queue::{Queue, RequeueRequest, RequeueSelection};
use common::records::PredictionRecord;

/// A file of `data/samples/` (the rows the README's commands and the CLI tests use).
pub fn samples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/samples")
        .join(name)
}

/// [`samples`] as a command-line argument.
pub fn samples_arg(name: &str) -> String {
    samples(name).display().to_string()
}

/// Every file under `dir`, recursively, sorted (panics if a directory cannot be read).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for e in entries {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A process's stdout then stderr, as text.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A BoolQ job of [`synthetic_rows`](common::synthetic::synthetic_rows), submitted straight
/// to the queue with the default judge settings.
#[derive(Debug, Clone)]
pub struct SyntheticJob<'a> {
    pub model: &'a str,
    pub split: &'a str,
    pub rows: u64,
    pub shard_size: u64,
    pub max_attempts: u32,
}

impl Default for SyntheticJob<'_> {
    fn default() -> Self {
        Self {
            model: "m",
            split: "test",
            rows: 8,
            shard_size: 4,
            max_attempts: 5,
        }
    }
}

/// Submit `job`; returns its spec (whose [`id`](JobSpec::id) names the job). Panics if the
/// queue refuses it.
pub async fn submit_synthetic(queue: &Queue, job: SyntheticJob<'_>) -> JobSpec {
    let rows = common::synthetic::synthetic_rows(job.rows);
    let spec = JobSpec::for_rows(
        job.model,
        common::dataset_spec::builtin("boolq").expect("boolq is built in"),
        job.split,
        "test",
        &rows,
        8,
        PromptMode::Raw,
    );
    queue
        .submit(
            &spec,
            &JudgeSettings::default(),
            &rows,
            job.shard_size,
            job.max_attempts,
        )
        .await
        .expect("submit a synthetic job");
    spec
}

/// [`submit_synthetic`], returning only the job's id.
pub async fn submit_synthetic_id(queue: &Queue, job: SyntheticJob<'_>) -> JobId {
    submit_synthetic(queue, job).await.id()
}

/// An inference result for `row` as an infer worker stores it: `response`, one prompt and
/// one completion token, finished by `stop` (override fields with `..prediction(…)`).
pub fn prediction(row: &InputRow, response: impl Into<String>) -> PredictionRecord {
    PredictionRecord {
        response: response.into(),
        question: row.question.clone(),
        correct_answer: row.correct_answer.clone(),
        prompt_tokens: 1,
        completion_tokens: 1,
        finish_reason: "stop".into(),
        error: None,
    }
}

/// What `conftag requeue JOB --failed` asks: failed shards back to their stage's queue.
pub fn requeue_failed() -> RequeueRequest {
    RequeueRequest {
        selection: RequeueSelection::Failed,
        target: None,
        force: false,
        judge: None,
    }
}
