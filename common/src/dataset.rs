//! Dataset splits: where rows come from (the Hugging Face hub or a local file) and how a raw
//! row becomes an [`InputRow`] with its prompt, as its [`DatasetSpec`] says (MATH, MedQA and
//! BoolQ are built-in specs; see [`crate::dataset_spec`]).
//!
//! Every check names the file, the row (0-based index in the split, plus the line number for
//! JSONL) and the column, because a bad row found after submit would cost GPU time.
//!
//! Limits, decided here rather than discovered by a worker: a row may hold at most
//! [`MAX_ROW_BYTES`] of text (1 MiB; the seed's longest rows are a few KB, and a longer row
//! fits no model's context yet would be copied to Redis and to every worker that claims it),
//! text must be UTF-8 (a leading byte-order mark is accepted), and an empty file or a split
//! without rows is an error, not an empty job.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dataset_spec::{Checker, DatasetSpec};
use crate::job::PromptMode;
use crate::prompt;

#[derive(Clone, Copy, Debug)]
enum ColumnType {
    String,
    Bool,
    /// A number, or a string that parses as one.
    Number,
    /// A string, number or boolean.
    Scalar,
    /// Options: an object letter → text, or a list of texts.
    Options,
    /// A row id: a string or a number.
    Id,
}

impl ColumnType {
    fn matches(self, v: &Value) -> bool {
        match self {
            ColumnType::String => v.is_string(),
            ColumnType::Bool => v.is_boolean(),
            ColumnType::Number => {
                v.is_number()
                    || v.as_str()
                        .is_some_and(|s| s.trim().replace(',', "").parse::<f64>().is_ok())
            }
            ColumnType::Scalar => v.is_string() || v.is_number() || v.is_boolean(),
            ColumnType::Options => v.is_object() || v.is_array(),
            ColumnType::Id => v.is_string() || v.is_number(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            ColumnType::String => "a string",
            ColumnType::Bool => "a boolean",
            ColumnType::Number => "a number (or a string holding one)",
            ColumnType::Scalar => "a string, number or boolean",
            ColumnType::Options => "an object (struct) of letter → text, or a list",
            ColumnType::Id => "a string or a number",
        }
    }

    /// The type of the answer column under a checker.
    fn of_answer(checker: &Checker) -> Self {
        match checker {
            Checker::Boolean => ColumnType::Bool,
            Checker::Numeric { .. } => ColumnType::Number,
            Checker::None => ColumnType::Scalar,
            Checker::Choice | Checker::Exact | Checker::Normalized | Checker::BoxedMath => {
                ColumnType::String
            }
        }
    }
}

/// The columns every row of `spec` must have, in the order they are checked.
fn required_columns(spec: &DatasetSpec) -> Vec<(&str, ColumnType)> {
    let c = &spec.columns;
    let mut out = vec![
        (c.question.as_str(), ColumnType::String),
        (c.answer.as_str(), ColumnType::of_answer(&spec.answer)),
    ];
    if let Some(p) = &c.passage {
        out.push((p, ColumnType::String));
    }
    if let Some(o) = &c.options {
        out.push((o, ColumnType::Options));
    }
    if let Some(i) = &c.id {
        out.push((i, ColumnType::Id));
    }
    for e in &c.extra {
        out.push((e, ColumnType::String));
    }
    out
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One dataset row, ready for inference and judging. Stored in Redis at submit time so that
/// workers need no access to the dataset files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputRow {
    /// Position in the split; the row's key in every output file.
    pub index: u64,
    /// The question as the seed's prediction files show it (the spec's question column;
    /// MATH: the problem).
    pub question: String,
    /// The full completion prompt (seed format).
    pub prompt: String,
    /// The seed's `correct_answer`: the answer column with its JSON type (string, bool for
    /// BoolQ, number for a numeric spec).
    pub correct_answer: Value,
    /// Options, letter → text (MedQA's, or any spec's options column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    /// MedQA `answer_idx` (the correct letter), when the split has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_letter: Option<String>,
    /// The row's id column, when its spec names one (no built-in does: their digests and
    /// job ids are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// This row's new-token budget, when it is not the job's `max_tokens` (the engine
    /// bench's queue mode gives every row of the real-length mix its own budget). Absent
    /// for dataset rows, so their digests and job ids are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// Where a split's rows come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DatasetSource {
    /// A file of a hub dataset repo (the spec's `hub_file`: by default
    /// `data/{split}-00000-of-00001.parquet`).
    Hub {
        repo: String,
        split: String,
        file: String,
    },
    /// A local JSONL, JSON (array of objects) or parquet file with the spec's columns.
    File { path: PathBuf },
}

impl DatasetSource {
    /// The hub file of `split` of a spec with a hub repo.
    pub fn hub(spec: &DatasetSpec, split: &str) -> Option<Self> {
        spec.source.hub.as_ref().map(|repo| DatasetSource::Hub {
            repo: repo.clone(),
            split: split.to_owned(),
            file: spec.hub_file(split),
        })
    }

    /// How a job shows where its rows came from: `hub:{repo}@{split}`, `file:{path}`.
    pub fn label(&self) -> String {
        match self {
            DatasetSource::File { path } => format!("file:{}", path.display()),
            DatasetSource::Hub { repo, split, .. } => format!("hub:{repo}@{split}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: not valid JSON ({source})")]
    JsonLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not a JSON array of row objects ({detail})")]
    JsonDocument { path: PathBuf, detail: String },
    #[error("{path}: {row_ref}: missing column `{column}` ({dataset} rows need {expected})")]
    MissingColumn {
        path: PathBuf,
        row_ref: String,
        column: String,
        dataset: String,
        expected: String,
    },
    #[error("{path}: {row_ref}: column `{column}` is {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        row_ref: String,
        column: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path}: not a readable parquet file ({source})")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: row {row}: cannot be read ({source})")]
    ParquetRow {
        path: PathBuf,
        row: usize,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: the split has no rows")]
    Empty { path: PathBuf },
    #[error("{path}: the file is empty (0 bytes)")]
    EmptyFile { path: PathBuf },
    #[error("{path}: is a directory, not a dataset file")]
    NotAFile { path: PathBuf },
    #[error(
        "{path}: line {line}: not valid UTF-8 (byte {byte} of the line); save the file as UTF-8"
    )]
    Utf8 {
        path: PathBuf,
        line: usize,
        byte: usize,
    },
    #[error("{path}: {row_ref}: the row holds {bytes} bytes of text (column `{column}` alone {column_bytes}); rows are limited to {limit} bytes (1 MiB)")]
    RowTooLarge {
        path: PathBuf,
        row_ref: String,
        bytes: usize,
        column: String,
        column_bytes: usize,
        limit: usize,
    },
    #[error("{path}: the reader failed unexpectedly ({detail}); the file is probably corrupt")]
    ReaderFailed { path: PathBuf, detail: String },
    #[error("{path}: unsupported file type (use .jsonl, .json or .parquet)")]
    UnsupportedFormat { path: PathBuf },
    #[error("cannot download split `{split}` of {repo} from {endpoint}: {detail}")]
    Hub {
        repo: String,
        split: String,
        endpoint: String,
        detail: String,
    },
}

/// Most text one row may hold (its columns' strings together), in bytes.
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// A raw row from a file, with what is needed to name it in errors.
struct RawRow {
    value: Value,
    /// "row 3 (line 4)" for JSONL, "row 3" otherwise.
    row_ref: String,
}

/// Load and validate every row of a split, building the raw-completion prompts.
pub async fn load_split(
    spec: &DatasetSpec,
    source: &DatasetSource,
    limit: Option<usize>,
) -> Result<Vec<InputRow>, DatasetError> {
    load_split_for(spec, source, limit, PromptMode::Raw).await
}

/// Load and validate every row of a split, building the prompts of `mode` (the spec's chat
/// template, when it has one, for chat jobs).
pub async fn load_split_for(
    spec: &DatasetSpec,
    source: &DatasetSource,
    limit: Option<usize>,
    mode: PromptMode,
) -> Result<Vec<InputRow>, DatasetError> {
    let path = match source {
        DatasetSource::File { path } => path.clone(),
        DatasetSource::Hub { repo, split, file } => {
            crate::dataset::hub::download_split(repo, split, file).await?
        }
    };
    let path_for_task = path.clone();
    let raw = tokio::task::spawn_blocking(move || read_raw_rows(&path_for_task, limit))
        .await
        .map_err(|e| DatasetError::ReaderFailed {
            path: path.clone(),
            detail: panic_text(e),
        })??;
    if raw.is_empty() {
        return Err(DatasetError::Empty { path });
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| build_row(spec, mode, &path, i as u64, r))
        .collect()
}

/// What a panicked reader task said.
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}

fn read_raw_rows(path: &Path, limit: Option<usize>) -> Result<Vec<RawRow>, DatasetError> {
    let meta = std::fs::metadata(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_dir() {
        return Err(DatasetError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.len() == 0 {
        return Err(DatasetError::EmptyFile {
            path: path.to_owned(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let limit = limit.unwrap_or(usize::MAX);
    match ext.as_str() {
        "jsonl" | "ndjson" => read_jsonl(path, limit),
        "json" => read_json_array(path, limit),
        "parquet" => read_parquet(path, limit),
        _ => Err(DatasetError::UnsupportedFormat {
            path: path.to_owned(),
        }),
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| DatasetError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(bytes)
}

/// The bytes without a leading UTF-8 byte-order mark (editors on Windows write one).
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Check that `bytes` (starting at line `first_line`) are UTF-8, naming the line and byte.
fn check_utf8(path: &Path, bytes: &[u8], first_line: usize) -> Result<(), DatasetError> {
    if let Err(e) = std::str::from_utf8(bytes) {
        let at = e.valid_up_to();
        let before = &bytes[..at];
        let line = first_line + before.iter().filter(|b| **b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        return Err(DatasetError::Utf8 {
            path: path.to_owned(),
            line,
            byte: at - line_start + 1,
        });
    }
    Ok(())
}

fn read_jsonl(path: &Path, limit: usize) -> Result<Vec<RawRow>, DatasetError> {
    let bytes = read_all(path)?;
    let mut rows = Vec::new();
    for (line_no, line) in strip_bom(&bytes).split(|b| *b == b'\n').enumerate() {
        if rows.len() >= limit {
            break;
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        check_utf8(path, line, line_no + 1)?;
        let value: Value =
            serde_json::from_slice(line).map_err(|source| DatasetError::JsonLine {
                path: path.to_owned(),
                line: line_no + 1,
                source,
            })?;
        rows.push(RawRow {
            value,
            row_ref: format!("row {} (line {})", rows.len(), line_no + 1),
        });
    }
    Ok(rows)
}

fn read_json_array(path: &Path, limit: usize) -> Result<Vec<RawRow>, DatasetError> {
    let bytes = read_all(path)?;
    let bytes = strip_bom(&bytes);
    check_utf8(path, bytes, 1)?;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| DatasetError::JsonDocument {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let Value::Array(items) = value else {
        return Err(DatasetError::JsonDocument {
            path: path.to_owned(),
            detail: format!("the top level is {}", json_type_name(&value)),
        });
    };
    Ok(items
        .into_iter()
        .take(limit)
        .enumerate()
        .map(|(i, value)| RawRow {
            value,
            row_ref: format!("row {i}"),
        })
        .collect())
}

fn read_parquet(path: &Path, limit: usize) -> Result<Vec<RawRow>, DatasetError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let parquet_err = |source| DatasetError::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(parquet_err)?;
    let mut rows = Vec::new();
    for (i, row) in reader.get_row_iter(None).map_err(parquet_err)?.enumerate() {
        if i >= limit {
            break;
        }
        let row = row.map_err(|source| DatasetError::ParquetRow {
            path: path.to_owned(),
            row: i,
            source,
        })?;
        rows.push(RawRow {
            value: row.to_json_value(),
            row_ref: format!("row {i}"),
        });
    }
    Ok(rows)
}

fn build_row(
    spec: &DatasetSpec,
    mode: PromptMode,
    path: &Path,
    index: u64,
    raw: RawRow,
) -> Result<InputRow, DatasetError> {
    let Value::Object(obj) = &raw.value else {
        return Err(DatasetError::WrongType {
            path: path.to_owned(),
            row_ref: raw.row_ref,
            column: "(row)".into(),
            found: json_type_name(&raw.value),
            expected: "an object",
        });
    };
    let required = required_columns(spec);
    let expected = required
        .iter()
        .map(|(c, _)| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    for (column, ty) in &required {
        let Some(v) = obj.get(*column) else {
            return Err(DatasetError::MissingColumn {
                path: path.to_owned(),
                row_ref: raw.row_ref,
                column: (*column).to_owned(),
                dataset: spec.name.clone(),
                expected,
            });
        };
        if !ty.matches(v) {
            return Err(DatasetError::WrongType {
                path: path.to_owned(),
                row_ref: raw.row_ref,
                column: (*column).into(),
                found: json_type_name(v),
                expected: ty.name(),
            });
        }
    }
    let answer_letter_column = spec.columns.answer_letter.as_deref();
    check_row_size(&required, answer_letter_column, path, &raw.row_ref, obj)?;
    let s = |c: &str| obj[c].as_str().unwrap_or_default().to_owned();
    let cols = &spec.columns;
    let options = match &cols.options {
        Some(c) => Some(options(path, &raw.row_ref, c, &obj[c.as_str()])?),
        None => None,
    };
    let question = s(&cols.question);
    let template = match (mode, &spec.prompt.chat_template) {
        (PromptMode::Chat, Some(t)) => t,
        _ => &spec.prompt.template,
    };
    let prompt = template.render(|field| match field {
        "question" => question.as_str().into(),
        "options" => prompt::options_block(options.as_ref().expect("checked by the spec")).into(),
        "passage" => s(cols.passage.as_deref().expect("checked by the spec")).into(),
        extra => s(extra).into(),
    });
    Ok(InputRow {
        index,
        prompt,
        question,
        correct_answer: obj[cols.answer.as_str()].clone(),
        answer_letter: answer_letter_column
            .and_then(|c| obj.get(c))
            .and_then(Value::as_str)
            .map(str::to_owned),
        options,
        id: cols.id.as_deref().map(|c| match &obj[c] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        max_tokens: None,
    })
}

/// Bytes of text in a JSON value (strings and object keys).
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
        _ => 0,
    }
}

/// Refuse a row whose used columns hold more than [`MAX_ROW_BYTES`], naming the largest.
fn check_row_size(
    required: &[(&str, ColumnType)],
    answer_letter: Option<&str>,
    path: &Path,
    row_ref: &str,
    obj: &Map<String, Value>,
) -> Result<(), DatasetError> {
    let mut columns: Vec<(&str, usize)> = required
        .iter()
        .map(|(c, _)| (*c, text_bytes(&obj[*c])))
        .collect();
    if let Some(c) = answer_letter {
        if let Some(v) = obj.get(c) {
            columns.push((c, text_bytes(v)));
        }
    }
    let bytes: usize = columns.iter().map(|(_, n)| n).sum();
    if bytes <= MAX_ROW_BYTES {
        return Ok(());
    }
    let (column, column_bytes) = columns
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .expect("every dataset has columns");
    Err(DatasetError::RowTooLarge {
        path: path.to_owned(),
        row_ref: row_ref.to_owned(),
        bytes,
        column: column.to_owned(),
        column_bytes,
        limit: MAX_ROW_BYTES,
    })
}

/// Options: a struct letter → text, where letters with a null value (4-option rows stored in
/// a 5-letter struct) are dropped, or a list of texts, lettered A, B, C, ….
fn options(
    path: &Path,
    row_ref: &str,
    column: &str,
    value: &Value,
) -> Result<BTreeMap<String, String>, DatasetError> {
    let entries: Vec<(String, &Value)> = match value {
        Value::Object(obj) => obj.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) if items.len() <= 26 => items
            .iter()
            .enumerate()
            .map(|(i, v)| (char::from(b'A' + i as u8).to_string(), v))
            .collect(),
        _ => {
            return Err(DatasetError::WrongType {
                path: path.to_owned(),
                row_ref: row_ref.to_owned(),
                column: column.to_owned(),
                found: "a list of more than 26 options",
                expected: "at most 26 options (A-Z)",
            })
        }
    };
    let mut out = BTreeMap::new();
    for (letter, text) in entries {
        match text {
            Value::Null => {}
            Value::String(t) => {
                out.insert(letter, t.clone());
            }
            other => {
                return Err(DatasetError::WrongType {
                    path: path.to_owned(),
                    row_ref: row_ref.to_owned(),
                    column: format!("{column}.{letter}"),
                    found: json_type_name(other),
                    expected: "a string",
                })
            }
        }
    }
    if out.is_empty() {
        return Err(DatasetError::WrongType {
            path: path.to_owned(),
            row_ref: row_ref.to_owned(),
            column: column.to_owned(),
            found: "an empty object",
            expected: "at least one option",
        });
    }
    Ok(out)
}

pub mod hub {
    //! Downloads a split's parquet file from the Hugging Face hub (or any server that speaks
    //! its download protocol: `HF_ENDPOINT`), through the `hf-hub` crate and its cache.

    use super::DatasetError;
    use std::path::PathBuf;

    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    /// The hub cache: `$HF_HOME/hub`, else `~/.cache/huggingface/hub` (as the hub's own
    /// tools and mistral.rs use it).
    pub fn cache_dir() -> PathBuf {
        match std::env::var_os("HF_HOME") {
            Some(home) => PathBuf::from(home).join("hub"),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
                .unwrap_or_else(|| std::env::temp_dir().join("conftag-hf-hub")),
        }
    }

    /// The hub endpoint in use (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub fn endpoint() -> String {
        std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
    }

    /// Fetch a split's file (`data/{split}-00000-of-00001.parquet` for the seed's datasets)
    /// of a dataset repo into the hub cache (`HF_HOME`), with `HF_TOKEN` for private or gated
    /// repos.
    pub async fn download_split(
        repo: &str,
        split: &str,
        file: &str,
    ) -> Result<PathBuf, DatasetError> {
        use hf_hub::api::tokio::ApiBuilder;
        use hf_hub::{Repo, RepoType};
        let err = |detail: String| DatasetError::Hub {
            repo: repo.to_owned(),
            split: split.to_owned(),
            endpoint: endpoint(),
            detail,
        };
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        let api = ApiBuilder::from_cache(hf_hub::Cache::new(cache_dir()))
            .with_endpoint(endpoint().trim_end_matches('/').to_owned())
            .with_progress(false)
            .with_token(token)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let repo_handle = api.repo(Repo::with_revision(
            repo.to_owned(),
            RepoType::Dataset,
            "main".to_owned(),
        ));
        match tokio::time::timeout(std::time::Duration::from_secs(600), repo_handle.get(file)).await
        {
            Ok(Ok(path)) => Ok(path),
            Ok(Err(e)) => Err(err(format!("{file}: {}", error_chain(&e)))),
            Err(_) => Err(err(format!("{file}: no answer within 600 s"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str) -> &'static DatasetSpec {
        crate::dataset_spec::builtin(name).unwrap()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn jsonl_rows_become_prompts_with_typed_answers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "b.jsonl",
            "{\"question\":\"is it\",\"answer\":true,\"passage\":\"it is\"}\n\n{\"question\":\"q2\",\"answer\":false,\"passage\":\"p2\"}\n",
        );
        let rows = load_split(builtin("boolq"), &DatasetSource::File { path: p }, None)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].index, 1);
        assert_eq!(rows[0].correct_answer, Value::Bool(true));
        assert!(rows[0].prompt.contains("Passage: it is"));
    }

    #[tokio::test]
    async fn bad_rows_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "m.jsonl",
            "{\"problem\":\"x\",\"solution\":\"y\"}\n{\"problem\":\"x\"\n",
        );
        let e = load_split(
            builtin("math"),
            &DatasetSource::File { path: p.clone() },
            None,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("m.jsonl") && e.contains("line 2"), "{e}");

        let p = write(
            dir.path(),
            "m2.jsonl",
            "{\"problem\":\"x\",\"solution\":3}\n",
        );
        let e = load_split(builtin("math"), &DatasetSource::File { path: p }, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`solution`") && e.contains("a number") && e.contains("row 0"),
            "{e}"
        );

        let p = write(
            dir.path(),
            "q.json",
            "[{\"question\":\"x\",\"answer\":\"y\"}]",
        );
        let e = load_split(builtin("medqa"), &DatasetSource::File { path: p }, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing column `options`"), "{e}");

        let p = write(dir.path(), "e.jsonl", "\n");
        let e = load_split(builtin("boolq"), &DatasetSource::File { path: p }, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rows"), "{e}");

        let p = write(dir.path(), "bad.parquet", "PAR1 not really");
        let e = load_split(builtin("boolq"), &DatasetSource::File { path: p }, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.parquet") && e.contains("parquet"), "{e}");
    }
}
