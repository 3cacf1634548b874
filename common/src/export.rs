//! The seed pipeline's output files, written from Redis:
//! `DIR/inference/predictions/{stem}.json` and `DIR/eval/judged/{stem}_tagged.json`, each one
//! JSON object keyed by row index (as a string) in index order, plus conftag's combined
//! training file `DIR/training/combined.jsonl`.
//!
//! Files are byte-stable (same rows → same bytes) and written atomically (temp file in the
//! same directory + rename); an unfinished job is refused before anything is written.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::job::{JobId, JobSpec};
use crate::queue::{Queue, QueueError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("job {job} is not finished: {missing} of {total} shards are not done (shards {list}); wait, requeue them, or pass --partial")]
    Unfinished {
        job: JobId,
        missing: usize,
        total: u64,
        list: String,
    },
    #[error("jobs {a} and {b} would both write {stem}; export them to different directories")]
    StemClash { a: JobId, b: JobId, stem: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ExportedJob {
    pub job: JobId,
    pub dataset: String,
    /// The confidence-token domain of the job's dataset spec (empty if unknown here).
    pub domain: String,
    pub predictions: PathBuf,
    pub tagged: PathBuf,
    pub rows: u64,
    pub predicted: u64,
    pub tagged_rows: u64,
    pub unjudged: u64,
    pub correct: u64,
}

/// Everything read for one job, before any file is written.
struct JobExport {
    job: JobId,
    spec: JobSpec,
    predictions: Map<String, Value>,
    tagged: Map<String, Value>,
    unjudged: Map<String, Value>,
    training: Vec<String>,
    correct: u64,
}

fn shard_list(ids: &[u64]) -> String {
    let mut s: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
    if ids.len() > 20 {
        s.push(format!("… {} more", ids.len() - 20));
    }
    s.join(", ")
}

/// Export jobs to `out`. With `partial`, unfinished rows are left out instead of refusing.
pub async fn export_jobs(
    queue: &Queue,
    jobs: &[JobId],
    out: &Path,
    partial: bool,
) -> Result<Vec<ExportedJob>, ExportError> {
    let mut reads = Vec::new();
    for job in jobs {
        let (total, missing) = queue.unfinished_shards(job).await?;
        if !missing.is_empty() && !partial {
            return Err(ExportError::Unfinished {
                job: job.clone(),
                missing: missing.len(),
                total,
                list: shard_list(&missing),
            });
        }
        reads.push(read_job(queue, job).await?);
    }
    for (i, a) in reads.iter().enumerate() {
        for b in &reads[i + 1..] {
            if a.spec.stem() == b.spec.stem() {
                return Err(ExportError::StemClash {
                    a: a.job.clone(),
                    b: b.job.clone(),
                    stem: a.spec.stem(),
                });
            }
        }
    }
    let mut done = Vec::new();
    let mut training = String::new();
    for r in &reads {
        let stem = r.spec.stem();
        let predictions = out
            .join("inference/predictions")
            .join(format!("{stem}.json"));
        let tagged = out.join("eval/judged").join(format!("{stem}_tagged.json"));
        write_atomic(&predictions, &to_pretty(&r.predictions))?;
        write_atomic(&tagged, &to_pretty(&r.tagged))?;
        let unjudged_path = out
            .join("eval/judged")
            .join(format!("{stem}_unjudged.json"));
        if r.unjudged.is_empty() {
            remove_if_exists(&unjudged_path)?;
        } else {
            write_atomic(&unjudged_path, &to_pretty(&r.unjudged))?;
        }
        for line in &r.training {
            training.push_str(line);
            training.push('\n');
        }
        done.push(ExportedJob {
            job: r.job.clone(),
            dataset: r.spec.dataset.clone(),
            domain: r
                .spec
                .dataset_spec()
                .map(|d| d.domain.clone())
                .unwrap_or_default(),
            predictions,
            tagged,
            rows: r.spec.rows,
            predicted: r.predictions.len() as u64,
            tagged_rows: r.tagged.len() as u64,
            unjudged: r.unjudged.len() as u64,
            correct: r.correct,
        });
    }
    write_atomic(&out.join("training/combined.jsonl"), training.as_bytes())?;
    Ok(done)
}

async fn read_job(queue: &Queue, job: &JobId) -> Result<JobExport, QueueError> {
    let (spec, _) = queue
        .job_spec(job)
        .await?
        .ok_or_else(|| QueueError::NoSuchJob(job.clone()))?;
    let inputs = queue.input_rows(job, 0, spec.rows).await?;
    let preds = queue.predictions(job, 0, spec.rows).await?;
    let tagged = queue.tagged(job, 0, spec.rows).await?;
    let mut out = JobExport {
        job: job.clone(),
        spec: spec.clone(),
        predictions: Map::new(),
        tagged: Map::new(),
        unjudged: Map::new(),
        training: Vec::new(),
        correct: 0,
    };
    for ((input, pred), tag) in inputs.iter().zip(preds).zip(tagged) {
        let key = input.index.to_string();
        if let Some(p) = pred {
            out.predictions.insert(
                key.clone(),
                json!({
                    "response": p.response,
                    "question": p.question,
                    "correct_answer": p.correct_answer,
                }),
            );
        }
        let Some(t) = tag else { continue };
        match &t.judge_response {
            Some(verdict) => {
                out.correct += u64::from(t.correct);
                out.tagged.insert(
                    key.clone(),
                    json!({
                        "response": t.response,
                        "question": t.question,
                        "correct_answer": t.correct_answer,
                        "judge_response": verdict,
                        "correct": t.correct,
                        "confidence_token": t.confidence_token,
                        "tagged_response": t.tagged_response,
                    }),
                );
                let mut line = json!({
                    "prompt": input.prompt,
                    "completion": t.tagged_response,
                    "dataset": spec.dataset,
                    "model": spec.model,
                    "split": spec.split,
                    "index": input.index,
                    "correct": t.correct,
                });
                // The dataset's own row id, for specs that name an id column (no built-in
                // does, so their lines are unchanged).
                if let (Some(id), Some(obj)) = (&input.id, line.as_object_mut()) {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
                out.training
                    .push(serde_json::to_string(&line).expect("json serializes"));
            }
            None => {
                out.unjudged.insert(
                    key,
                    json!({
                        "response": t.response,
                        "question": t.question,
                        "judge_error": t.judge_error,
                    }),
                );
            }
        }
    }
    Ok(out)
}

fn to_pretty(map: &Map<String, Value>) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(map).expect("json serializes");
    v.push(b'\n');
    v
}

fn remove_if_exists(path: &Path) -> Result<(), ExportError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ExportError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Write `bytes` to `path` through a temp file in the same directory and a rename, so a
/// reader (or a crash) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let err = |source| ExportError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}
