//! A job is one (model, dataset, split) with its inference settings. Its id is derived from
//! the spec (and the rows' content), so submitting the same job twice is a no-op, and the
//! same id with other settings is a conflict the user must resolve.
//!
//! A job of a built-in dataset names it only (`"dataset":"math"`, as before dataset specs, so
//! its id and stored spec are unchanged); a job of any other dataset spec also carries the
//! whole spec and its digest, which enters the id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::InputRow;
use crate::dataset_spec::{self, DatasetSpec};

/// How prompts reach the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromptMode {
    /// The prompt as raw completion text (the seed's behaviour).
    #[default]
    Raw,
    /// The prompt as one user message through the model's chat template.
    Chat,
}

/// How rows are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum JudgeMode {
    /// An OpenAI-compatible chat model with strict JSON-schema output (the seed's way).
    #[default]
    Llm,
    /// Deterministic answer checkers; no network, no cost.
    Rules,
    /// Rules decide the rows they are sure of, the LLM the rest.
    Hybrid,
    /// The OpenAI Batch API.
    Batch,
}

impl JudgeMode {
    pub fn name(self) -> &'static str {
        match self {
            JudgeMode::Llm => "llm",
            JudgeMode::Rules => "rules",
            JudgeMode::Hybrid => "hybrid",
            JudgeMode::Batch => "batch",
        }
    }
}

/// Judge settings of a job. Kept apart from the spec: re-judging a finished job with another
/// judge changes them without changing the job's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeSettings {
    pub model: String,
    pub mode: JudgeMode,
    /// Judging of the job pauses once its judge spend reaches this (micro-USD). Every row
    /// checks it before calling, so the spend can pass it by the calls already in flight
    /// (whole shards in batch mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_micro_usd: Option<u64>,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            model: DEFAULT_JUDGE_MODEL.into(),
            mode: JudgeMode::Llm,
            budget_micro_usd: None,
        }
    }
}

pub const DEFAULT_JUDGE_MODEL: &str = "gpt-4o-2024-08-06";

/// What a job computes. Serialized canonically (field order fixed) into Redis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Model name the infer workers match on (a hub id, or any name given to `conftag-infer --model`).
    pub model: String,
    /// The dataset spec's name (`math`, `medqa`, `boolq` or a spec file's `name`).
    pub dataset: String,
    pub split: String,
    /// Where the rows came from (for people; the rows themselves are in Redis).
    pub source: String,
    pub rows: u64,
    pub max_tokens: u32,
    pub prompt_mode: PromptMode,
    /// SHA-256 of the input rows, so the same name over other data is another job.
    pub rows_digest: String,
    /// [`DatasetSpec::digest`] of a spec that is not a built-in (absent for built-ins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
    /// The whole spec of a dataset that is not a built-in, so workers need no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_spec: Option<Box<DatasetSpec>>,
}

#[derive(Debug, thiserror::Error)]
#[error("job of dataset `{0}`, which is neither built in ({builtins}) nor carried by the job; this worker is older than the job", builtins = dataset_spec::builtin_names())]
pub struct UnknownDataset(pub String);

impl JobSpec {
    /// The spec of `rows` of one split, with the digest of the rows (and of the dataset
    /// spec, with the spec itself, when it is not a built-in).
    pub fn for_rows(
        model: impl Into<String>,
        dataset: &DatasetSpec,
        split: impl Into<String>,
        source: impl Into<String>,
        rows: &[InputRow],
        max_tokens: u32,
        prompt_mode: PromptMode,
    ) -> Self {
        let custom = !dataset.is_builtin();
        Self {
            model: model.into(),
            dataset: dataset.name.clone(),
            split: split.into(),
            source: source.into(),
            rows: rows.len() as u64,
            max_tokens,
            prompt_mode,
            rows_digest: rows_digest(rows),
            spec_digest: custom.then(|| dataset.digest()),
            dataset_spec: custom.then(|| Box::new(dataset.clone())),
        }
    }

    /// The job's dataset spec: the one it carries, or the built-in of its name.
    pub fn dataset_spec(&self) -> Result<&DatasetSpec, UnknownDataset> {
        match &self.dataset_spec {
            Some(s) => Ok(s),
            None => dataset_spec::builtin(&self.dataset)
                .ok_or_else(|| UnknownDataset(self.dataset.clone())),
        }
    }

    /// The seed's file stem: `{model_short}_{dataset}_{split}`.
    pub fn stem(&self) -> String {
        format!(
            "{}_{}_{}",
            model_short(&self.model),
            sanitize(&self.dataset),
            sanitize(&self.split)
        )
    }

    /// `{stem}-{8 hex of the spec hash}`: readable and unique per spec identity.
    pub fn id(&self) -> JobId {
        let mut h = Sha256::new();
        let parts = [
            Some(self.model.as_str()),
            Some(self.dataset.as_str()),
            Some(self.split.as_str()),
            Some(self.rows_digest.as_str()),
            // Only specs that are not built in: built-in ids are what they always were.
            self.spec_digest.as_deref(),
        ];
        for part in parts.into_iter().flatten() {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let hash = hex::encode(h.finalize());
        JobId(format!("{}-{}", self.stem(), &hash[..8]))
    }

    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("spec serializes")
    }

    /// Field-by-field differences with another spec, for conflict messages.
    pub fn differences(&self, other: &JobSpec) -> Vec<String> {
        let a = serde_json::to_value(self).expect("spec serializes");
        let b = serde_json::to_value(other).expect("spec serializes");
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec![];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {} (existing) vs {v} (new)",
                    b.get(k).cloned().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Digest of the rows' content, in order.
pub fn rows_digest(rows: &[InputRow]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(serde_json::to_vec(r).expect("row serializes"));
        h.update([b'\n']);
    }
    hex::encode(h.finalize())
}

/// The seed's short model name: the part after the last `/`, lower-cased, without `-` and `.`.
pub fn model_short(model: &str) -> String {
    let tail = model.rsplit('/').next().unwrap_or(model);
    let short: String = tail
        .to_lowercase()
        .chars()
        .filter(|c| *c != '-' && *c != '.')
        .collect();
    sanitize(&short)
}

/// Keep names safe as file names and Redis hash tags: `[a-z0-9_]` and nothing that can
/// climb out of a directory.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A job id (`{stem}-{hash8}`), safe as a file name and inside a Redis hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(String);

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a job id (expected letters, digits, `_` and `-`, like qwen257binstruct_math_test-1a2b3c4d)")]
pub struct BadJobId(String);

impl JobId {
    pub fn parse(s: &str) -> Result<Self, BadJobId> {
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadJobId(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_short_matches_the_seed() {
        assert_eq!(
            model_short("meta-llama/Meta-Llama-3-8B-Instruct"),
            "metallama38binstruct"
        );
        assert_eq!(model_short("Qwen/Qwen2.5-7B-Instruct"), "qwen257binstruct");
        assert_eq!(model_short("../../etc/passwd"), "passwd");
    }

    #[test]
    fn job_ids_are_path_safe() {
        assert!(JobId::parse("a/../b").is_err());
        assert!(JobId::parse("x{y}").is_err());
        assert!(JobId::parse("qwen_math_test-0011aabb").is_ok());
    }
}
