//! Dataset specs: one TOML file says everything conftag needs to know about a dataset — where
//! its rows come from, which columns hold the question and the answer, the prompt, the
//! new-token budget, the confidence-token domain, the rule checker and how the correct
//! answer is shown to the judge — so a new domain needs a file, not code.
//!
//! MATH, MedQA and BoolQ are specs too (`data/specs/builtin/*.toml`, compiled in and parsed
//! by the same code). A job of a built-in dataset records only its name, as it always has,
//! so its id, its spec in Redis and its exports are those of the hard-wired datasets before
//! specs; a job of any other spec embeds the whole validated spec (workers need no file) and
//! its digest, which enters the job id: a changed spec is another job.
//!
//! TOML rather than YAML: the workspace already speaks it (Cargo), it has no implicit typing
//! (YAML reads `no` as false and `1.10` as a float), multi-line literal strings keep a prompt
//! byte for byte (no indentation rules, no escapes in `'''…'''`), and the parser reports
//! positions, so every error names the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

/// The hub file of a split when the spec does not say: the layout of the seed's datasets.
pub const DEFAULT_HUB_FILE: &str = "data/{split}-00000-of-00001.parquet";

/// A validated dataset spec. Serialized (JSON) into the job of a non-built-in dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// `--dataset NAME`, the file stem part and the job id part: `[a-z0-9_]`.
    pub name: String,
    /// Confidence-token domain: `<CN_{domain}>` / `<UN_{domain}>`; `[A-Z0-9_]`.
    pub domain: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub source: SpecSource,
    pub columns: Columns,
    pub prompt: PromptSpec,
    /// New-token budget of a row when `submit` is given no `--max-tokens`.
    pub max_tokens: u32,
    pub answer: Checker,
    pub judge: JudgeView,
}

/// Where a split's rows come from when `submit` is given no `--data`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecSource {
    /// Hub dataset repo (`owner/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The split's file in the repo, `{split}` replaced.
    #[serde(default = "default_hub_file")]
    pub hub_file: String,
    /// The splits there are; empty: any name is tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub splits: Vec<String>,
    /// Local files per split (resolved against the spec file's directory).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, PathBuf>,
}

fn default_hub_file() -> String {
    DEFAULT_HUB_FILE.to_owned()
}

/// Which column of a row plays which part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    pub question: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passage: Option<String>,
    /// Choices: an object letter → text (null values dropped) or a list (lettered A, B, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    /// The correct option's letter, used when a row has it (a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_letter: Option<String>,
    /// A row id (string or number), carried to the training file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// More string columns, usable in the prompt as `{column}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl Columns {
    /// The placeholder a template uses for each column it may show.
    fn prompt_fields(&self) -> Vec<&str> {
        let mut out = vec!["question"];
        if self.passage.is_some() {
            out.push("passage");
        }
        if self.options.is_some() {
            out.push("options");
        }
        out.extend(self.extra.iter().map(String::as_str));
        out
    }
}

/// The prompt of a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptSpec {
    /// Raw completion text (the seed's convention).
    pub template: Template,
    /// The user message for chat-template jobs; `template` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<Template>,
    /// Jobs of this dataset go through the model's chat template even without
    /// `--chat-template`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chat: bool,
}

/// The rule checker of the answer (and so the JSON type of the answer column).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "checker", rename_all = "snake_case")]
pub enum Checker {
    /// A JSON boolean; the response's first word (or first sentence) says yes or no.
    Boolean,
    /// The correct option's text (and letter, with `answer_letter`); the response's leading
    /// letter or option text.
    Choice,
    /// A number (or a string holding one); the response's `\boxed{}` or the one number of
    /// its first line, within `tolerance` (absolute) or `relative_tolerance`.
    Numeric {
        tolerance: f64,
        relative_tolerance: f64,
    },
    /// A string; equal to the response's first line (or `\boxed{}`), byte for byte.
    Exact,
    /// A string; equal after lower-casing, dropping punctuation, articles and extra spaces.
    Normalized,
    /// A solution with a `\boxed{}` answer; the response's last `\boxed{}`, normalised
    /// (Hendrycks) and compared numerically.
    BoxedMath,
    /// Any scalar; no rules: the LLM judge decides.
    None,
}

pub const CHECKERS: &str = "boolean, choice, numeric, exact, normalized, boxed_math, none";

impl Checker {
    pub fn name(&self) -> &'static str {
        match self {
            Checker::Boolean => "boolean",
            Checker::Choice => "choice",
            Checker::Numeric { .. } => "numeric",
            Checker::Exact => "exact",
            Checker::Normalized => "normalized",
            Checker::BoxedMath => "boxed_math",
            Checker::None => "none",
        }
    }
}

/// How a row is shown to the judge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeView {
    /// List the options under the question.
    pub show_options: bool,
    /// The `[correct_answer]` line: `{answer}` (strings as they are, booleans `True` /
    /// `False`, numbers as written) and `{answer_letter}`.
    pub correct_answer: Template,
}

/// A text with `{field}` placeholders; `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest.find('}').ok_or_else(|| {
                        format!(
                            "`{{` at byte {i} is never closed (write `{{{{` for a literal brace)"
                        )
                    })?;
                    let name = &rest[..end];
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(format!(
                            "`{{{name}}}` is not a placeholder (write `{{{{` and `}}}}` for literal braces)"
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Field(name.to_owned()));
                    // Past the name and its `}`.
                    chars.nth(name.chars().count());
                }
                '}' => {
                    return Err(format!(
                        "`}}` at byte {i} closes nothing (write `}}}}` for a literal brace)"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// The placeholders, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with each placeholder replaced by `value(name)`, inserted verbatim.
    pub fn render<'a>(&self, value: impl Fn(&str) -> std::borrow::Cow<'a, str>) -> String {
        let mut out = String::with_capacity(self.text.len() * 2);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&value(f)),
            }
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Template::parse(&s)
    }
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.text
    }
}

impl DatasetSpec {
    /// SHA-256 (hex) of everything that shapes the outputs: the spec without its description
    /// and source (the rows have their own digest). Comments and layout do not count.
    pub fn digest(&self) -> String {
        let v = serde_json::to_value(self).expect("spec serializes");
        // Filtered, not removed: removing from an order-preserving map moves other keys.
        let kept: serde_json::Map<String, serde_json::Value> = v
            .as_object()
            .expect("a spec is an object")
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "description" | "source"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        hex::encode(Sha256::digest(
            serde_json::to_string(&kept).expect("json serializes"),
        ))
    }

    /// Whether this is one of the built-in datasets, unchanged.
    pub fn is_builtin(&self) -> bool {
        builtin(&self.name).is_some_and(|b| b.digest() == self.digest())
    }

    /// `<CN_{domain}>` or `<UN_{domain}>`.
    pub fn confidence_token(&self, correct: bool) -> String {
        format!("<{}_{}>", if correct { "CN" } else { "UN" }, self.domain)
    }

    /// The hub file of `split`.
    pub fn hub_file(&self, split: &str) -> String {
        self.source.hub_file.replace("{split}", split)
    }
}

/// Where a spec came from, for messages and `conftag datasets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecOrigin {
    BuiltIn,
    File(PathBuf),
}

impl std::fmt::Display for SpecOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecOrigin::BuiltIn => f.write_str("built-in"),
            SpecOrigin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One thing wrong with a spec, where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
    /// Dotted key (`columns.passage`), or empty for the file as a whole.
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read dataset spec {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<SpecProblem>,
    },
}

fn render_problems(path: &Path, problems: &[SpecProblem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| {
            let at = match p.line {
                Some(l) => format!("{}:{l}", path.display()),
                None => path.display().to_string(),
            };
            if p.key.is_empty() {
                format!("{at}: {}", p.message)
            } else {
                format!("{at}: `{}`: {}", p.key, p.message)
            }
        })
        .collect();
    if lines.len() == 1 {
        format!("invalid dataset spec {}", lines[0])
    } else {
        format!(
            "invalid dataset spec {} ({} problems):\n  {}",
            path.display(),
            lines.len(),
            lines.join("\n  ")
        )
    }
}

/// A spec with where it came from and the lines of its identity keys.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub spec: DatasetSpec,
    pub origin: SpecOrigin,
    name_line: Option<usize>,
    domain_line: Option<usize>,
}

// ---- the file form ------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Spanned<String>,
    domain: Spanned<String>,
    #[serde(default)]
    description: String,
    max_tokens: Spanned<i64>,
    #[serde(default)]
    source: SourceFile,
    columns: ColumnsFile,
    prompt: PromptFile,
    answer: AnswerFile,
    #[serde(default)]
    judge: JudgeFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    hub: Option<Spanned<String>>,
    hub_file: Option<Spanned<String>>,
    #[serde(default)]
    splits: Vec<String>,
    #[serde(default)]
    files: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnsFile {
    question: Spanned<String>,
    answer: Spanned<String>,
    passage: Option<Spanned<String>>,
    options: Option<Spanned<String>>,
    answer_letter: Option<Spanned<String>>,
    id: Option<Spanned<String>>,
    #[serde(default)]
    extra: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    template: Spanned<String>,
    chat_template: Option<Spanned<String>>,
    #[serde(default)]
    chat: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerFile {
    checker: Spanned<String>,
    tolerance: Option<Spanned<f64>>,
    relative_tolerance: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JudgeFile {
    show_options: Option<Spanned<bool>>,
    correct_answer: Option<Spanned<String>>,
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The dotted key written on the line of `offset`, with the table it is in.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_owned();
    }
    if line.starts_with('#') {
        return table.unwrap_or_default();
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .unwrap_or_default();
    match (table, key.is_empty()) {
        (Some(t), false) => format!("{t}.{key}"),
        (Some(t), true) => t,
        (None, _) => key,
    }
}

/// Collects problems with their lines while a spec is checked.
struct Checks<'a> {
    text: &'a str,
    problems: Vec<SpecProblem>,
}

impl Checks<'_> {
    fn at<T>(&mut self, key: &str, value: &Spanned<T>, message: impl Into<String>) {
        let line = Some(line_of(self.text, value.span().start));
        self.problems.push(SpecProblem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// A template checked against the placeholders it may use.
    fn template(
        &mut self,
        key: &str,
        value: &Spanned<String>,
        allowed: &[&str],
        unset: &[(&str, &str)],
    ) -> Option<Template> {
        let t = match Template::parse(value.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                self.at(key, value, e);
                return None;
            }
        };
        let mut ok = true;
        for f in t.fields() {
            if allowed.contains(&f) {
                continue;
            }
            ok = false;
            if let Some((_, why)) = unset.iter().find(|(name, _)| *name == f) {
                self.at(key, value, format!("placeholder `{{{f}}}` {why}"));
            } else {
                self.at(
                    key,
                    value,
                    format!(
                        "unknown placeholder `{{{f}}}` (this template knows {})",
                        allowed
                            .iter()
                            .map(|a| format!("`{{{a}}}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        ok.then_some(t)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parse and check a spec's text. `path` names it in errors; local source files are
/// resolved against `base_dir`.
pub fn parse_spec(text: &str, path: &Path, base_dir: &Path) -> Result<LoadedSpec, SpecError> {
    let invalid = |problems| SpecError::Invalid {
        path: path.to_owned(),
        problems,
    };
    let file: SpecFile = toml::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => (Some(line_of(text, span.start)), key_at(text, span.start)),
            None => (None, String::new()),
        };
        invalid(vec![SpecProblem {
            line,
            key,
            message: e.message().trim().to_owned(),
        }])
    })?;
    let mut c = Checks {
        text,
        problems: Vec::new(),
    };

    if !valid_name(file.name.get_ref()) {
        c.at(
            "name",
            &file.name,
            format!(
                "`{}` is not a dataset name (1-40 of a-z, 0-9 and `_`: it becomes part of file names and job ids)",
                file.name.get_ref()
            ),
        );
    }
    if !valid_domain(file.domain.get_ref()) {
        c.at(
            "domain",
            &file.domain,
            format!(
                "`{}` is not a domain tag (1-32 of A-Z, 0-9 and `_`, as in <CN_MATH>)",
                file.domain.get_ref()
            ),
        );
    }
    let max_tokens = *file.max_tokens.get_ref();
    if !(1..=i64::from(u32::MAX)).contains(&max_tokens) {
        c.at(
            "max_tokens",
            &file.max_tokens,
            format!("{max_tokens} is not a token budget (at least 1)"),
        );
    }

    // Columns: non-empty names, each column in one part only.
    let col = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().clone());
    let cf = &file.columns;
    let mut named: Vec<(String, &Spanned<String>)> = vec![
        ("columns.question".into(), &cf.question),
        ("columns.answer".into(), &cf.answer),
    ];
    for (k, v) in [
        ("passage", &cf.passage),
        ("options", &cf.options),
        ("answer_letter", &cf.answer_letter),
        ("id", &cf.id),
    ] {
        if let Some(v) = v {
            named.push((format!("columns.{k}"), v));
        }
    }
    for v in &cf.extra {
        named.push(("columns.extra".into(), v));
    }
    let reserved = [
        "question",
        "passage",
        "options",
        "answer",
        "answer_letter",
        "id",
    ];
    for v in &cf.extra {
        let name = v.get_ref();
        if reserved.contains(&name.as_str()) {
            c.at(
                "columns.extra",
                v,
                format!(
                    "`{name}` is the name of a column part; map it with `{name} = \"…\"` instead"
                ),
            );
        } else if !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            c.at(
                "columns.extra",
                v,
                format!("`{name}`: extra columns are used as `{{{name}}}` placeholders, so their names are letters, digits, `_` and `-`"),
            );
        }
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, v) in &named {
        let name = v.get_ref().as_str();
        if name.trim().is_empty() {
            c.at(key, v, "a column name must not be empty");
        } else if let Some(first) = seen.insert(name, key) {
            c.at(
                key,
                v,
                format!("column `{name}` is already used as `{first}`"),
            );
        }
    }
    let columns = Columns {
        question: cf.question.get_ref().clone(),
        answer: cf.answer.get_ref().clone(),
        passage: col(&cf.passage),
        options: col(&cf.options),
        answer_letter: col(&cf.answer_letter),
        id: col(&cf.id),
        extra: cf.extra.iter().map(|s| s.get_ref().clone()).collect(),
    };

    // Prompt templates: placeholders only for columns the spec maps.
    let allowed = columns.prompt_fields();
    let unset = [
        (
            "passage",
            "has no column: add `passage = \"COLUMN\"` to [columns]",
        ),
        (
            "options",
            "has no column: add `options = \"COLUMN\"` to [columns]",
        ),
        ("answer", "would show the model the correct answer"),
        ("answer_letter", "would show the model the correct answer"),
    ];
    let template = c.template("prompt.template", &file.prompt.template, &allowed, &unset);
    let chat_template = file
        .prompt
        .chat_template
        .as_ref()
        .map(|t| c.template("prompt.chat_template", t, &allowed, &unset));

    // The checker and the parts it needs.
    let checker_name = file.answer.checker.get_ref().as_str();
    let tol = |v: &Option<Spanned<f64>>, default: f64, key: &str, c: &mut Checks| match v {
        Some(s) if !(s.get_ref().is_finite() && *s.get_ref() >= 0.0) => {
            c.at(
                key,
                s,
                format!("{} is not a tolerance (a number ≥ 0)", s.get_ref()),
            );
            default
        }
        Some(s) => *s.get_ref(),
        None => default,
    };
    let checker = match checker_name {
        "boolean" => Some(Checker::Boolean),
        "choice" => Some(Checker::Choice),
        "numeric" => Some(Checker::Numeric {
            tolerance: tol(&file.answer.tolerance, 0.0, "answer.tolerance", &mut c),
            relative_tolerance: tol(
                &file.answer.relative_tolerance,
                1e-6,
                "answer.relative_tolerance",
                &mut c,
            ),
        }),
        "exact" => Some(Checker::Exact),
        "normalized" | "normalised" => Some(Checker::Normalized),
        "boxed_math" => Some(Checker::BoxedMath),
        "none" => Some(Checker::None),
        other => {
            c.at(
                "answer.checker",
                &file.answer.checker,
                format!("unknown checker `{other}` (known: {CHECKERS})"),
            );
            None
        }
    };
    if let Some(ch) = &checker {
        if !matches!(ch, Checker::Numeric { .. }) {
            for (k, v) in [
                ("answer.tolerance", &file.answer.tolerance),
                ("answer.relative_tolerance", &file.answer.relative_tolerance),
            ] {
                if let Some(v) = v {
                    c.at(
                        k,
                        v,
                        format!(
                            "only the numeric checker has a tolerance, not `{}`",
                            ch.name()
                        ),
                    );
                }
            }
        }
        if matches!(ch, Checker::Choice) && columns.options.is_none() {
            c.at(
                "answer.checker",
                &file.answer.checker,
                "the choice checker needs the options: add `options = \"COLUMN\"` to [columns]",
            );
        }
    }

    // How the judge sees the row.
    let show_options = file.judge.show_options.as_ref();
    if let Some(s) = show_options.filter(|s| *s.get_ref() && columns.options.is_none()) {
        c.at(
            "judge.show_options",
            s,
            "there are no options to show: add `options = \"COLUMN\"` to [columns]",
        );
    }
    let mut judge_fields = vec!["answer"];
    if columns.answer_letter.is_some() {
        judge_fields.push("answer_letter");
    }
    let correct_answer = match &file.judge.correct_answer {
        Some(t) => c.template(
            "judge.correct_answer",
            t,
            &judge_fields,
            &[(
                "answer_letter",
                "has no column: add `answer_letter = \"COLUMN\"` to [columns]",
            )],
        ),
        None => Some(Template::parse("{answer}").expect("valid template")),
    };

    // Local files, resolved against the spec's directory.
    let mut files = BTreeMap::new();
    for (split, p) in &file.source.files {
        let resolved = base_dir.join(p.get_ref());
        if p.get_ref().trim().is_empty() {
            c.at(&format!("source.files.{split}"), p, "empty path");
        }
        files.insert(split.clone(), resolved);
    }
    if let Some(h) = &file.source.hub {
        if h.get_ref().split('/').filter(|s| !s.is_empty()).count() != 2 {
            c.at(
                "source.hub",
                h,
                format!("`{}` is not a hub repo (owner/name)", h.get_ref()),
            );
        }
    }
    if let Some(h) = &file.source.hub_file {
        if !h.get_ref().contains("{split}") {
            c.at(
                "source.hub_file",
                h,
                "the hub file must contain `{split}` (e.g. data/{split}-00000-of-00001.parquet)",
            );
        }
    }

    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        return Err(invalid(c.problems));
    }
    let spec = DatasetSpec {
        name: file.name.get_ref().clone(),
        domain: file.domain.get_ref().clone(),
        description: file.description.trim().to_owned(),
        source: SpecSource {
            hub: file.source.hub.as_ref().map(|h| h.get_ref().clone()),
            hub_file: file
                .source
                .hub_file
                .as_ref()
                .map_or_else(default_hub_file, |h| h.get_ref().clone()),
            splits: file.source.splits.clone(),
            files,
        },
        columns,
        prompt: PromptSpec {
            template: template.expect("checked"),
            chat_template: chat_template.map(|t| t.expect("checked")),
            chat: file.prompt.chat,
        },
        max_tokens: max_tokens as u32,
        answer: checker.expect("checked"),
        judge: JudgeView {
            show_options: show_options.is_some_and(|s| *s.get_ref()),
            correct_answer: correct_answer.expect("checked"),
        },
    };
    Ok(LoadedSpec {
        spec,
        origin: SpecOrigin::File(path.to_owned()),
        name_line: Some(line_of(text, file.name.span().start)),
        domain_line: Some(line_of(text, file.domain.span().start)),
    })
}

/// Read and check a spec file.
pub fn load_spec_file(path: &Path) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_owned(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parse_spec(&text, path, base)
}

// ---- built-ins -----------------------------------------------------------------------------

/// The built-in specs' files, as shipped in `data/specs/builtin/`.
const BUILTIN_FILES: [(&str, &str); 3] = [
    (
        "data/specs/builtin/math.toml",
        include_str!("../../data/specs/builtin/math.toml"),
    ),
    (
        "data/specs/builtin/medqa.toml",
        include_str!("../../data/specs/builtin/medqa.toml"),
    ),
    (
        "data/specs/builtin/boolq.toml",
        include_str!("../../data/specs/builtin/boolq.toml"),
    ),
];

/// MATH, MedQA and BoolQ, in that order.
pub fn builtins() -> &'static [DatasetSpec] {
    static SPECS: OnceLock<Vec<DatasetSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        BUILTIN_FILES
            .iter()
            .map(
                |(path, text)| match parse_spec(text, Path::new(path), Path::new(".")) {
                    Ok(l) => l.spec,
                    Err(e) => panic!("a built-in dataset spec is invalid (a build defect): {e}"),
                },
            )
            .collect()
    })
}

/// The built-in spec of that name.
pub fn builtin(name: &str) -> Option<&'static DatasetSpec> {
    builtins().iter().find(|s| s.name == name)
}

/// The names of the built-in datasets, comma-separated, for messages.
pub fn builtin_names() -> String {
    builtins()
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The built-in specs and the spec files given, checked together: names and domains unique
/// and none taking a built-in's (a file identical to a built-in is that built-in).
#[derive(Clone, Debug)]
pub struct SpecCatalog {
    specs: Vec<LoadedSpec>,
    /// The datasets of the files given, in order (a built-in's name for a copy of it).
    given: Vec<String>,
}

impl SpecCatalog {
    /// The built-ins plus `files`, each file read and checked whole; nothing is returned
    /// unless every file is valid.
    pub fn with_files(files: &[PathBuf]) -> Result<Self, SpecError> {
        let mut specs: Vec<LoadedSpec> = builtins()
            .iter()
            .map(|s| LoadedSpec {
                spec: s.clone(),
                origin: SpecOrigin::BuiltIn,
                name_line: None,
                domain_line: None,
            })
            .collect();
        let mut given: Vec<String> = Vec::new();
        for path in files {
            let loaded = load_spec_file(path)?;
            if !given.contains(&loaded.spec.name) {
                given.push(loaded.spec.name.clone());
            }
            if loaded.spec.is_builtin() {
                // A copy of a built-in (perhaps with its own source) is that built-in.
                if let Some(b) = specs.iter_mut().find(|s| s.spec.name == loaded.spec.name) {
                    *b = loaded;
                }
                continue;
            }
            if specs
                .iter()
                .any(|s| s.origin == loaded.origin && s.spec == loaded.spec)
            {
                continue;
            }
            let mut problems = Vec::new();
            for other in &specs {
                let whose = match &other.origin {
                    SpecOrigin::BuiltIn => format!("the built-in dataset `{}`", other.spec.name),
                    SpecOrigin::File(p) => format!("{} (`{}`)", p.display(), other.spec.name),
                };
                if other.spec.name == loaded.spec.name {
                    problems.push(SpecProblem {
                        line: loaded.name_line,
                        key: "name".into(),
                        message: format!(
                            "`{}` is already the name of {whose}; choose another name",
                            loaded.spec.name
                        ),
                    });
                }
                if other.spec.domain == loaded.spec.domain {
                    problems.push(SpecProblem {
                        line: loaded.domain_line,
                        key: "domain".into(),
                        message: format!(
                            "the tag <CN_{0}>/<UN_{0}> is already {whose}'s; a router could not tell the domains apart",
                            loaded.spec.domain
                        ),
                    });
                }
            }
            if !problems.is_empty() {
                return Err(SpecError::Invalid {
                    path: path.clone(),
                    problems,
                });
            }
            specs.push(loaded);
        }
        Ok(Self { specs, given })
    }

    pub fn get(&self, name: &str) -> Option<&LoadedSpec> {
        self.specs.iter().find(|s| s.spec.name == name)
    }

    /// Built-ins first, then the files in the order given.
    pub fn all(&self) -> &[LoadedSpec] {
        &self.specs
    }

    /// The datasets of the files given, in order (a file identical to a built-in gives the
    /// built-in).
    pub fn given(&self) -> impl Iterator<Item = &LoadedSpec> {
        self.given.iter().filter_map(|n| self.get(n))
    }

    pub fn names(&self) -> String {
        self.specs
            .iter()
            .map(|s| s.spec.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatasetSpec, String> {
        parse_spec(text, Path::new("s.toml"), Path::new("/base"))
            .map(|l| l.spec)
            .map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
name = "numqa"
domain = "NUM"
max_tokens = 32

[columns]
question = "q"
answer = "a"

[prompt]
template = '''
Q: {question}
A:'''

[answer]
checker = "numeric"
tolerance = 0.5
"#;

    #[test]
    fn a_small_spec_parses_with_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.prompt.template.as_str(), "Q: {question}\nA:");
        assert_eq!(
            s.answer,
            Checker::Numeric {
                tolerance: 0.5,
                relative_tolerance: 1e-6
            }
        );
        assert_eq!(s.judge.correct_answer.as_str(), "{answer}");
        assert_eq!(s.source.hub_file, DEFAULT_HUB_FILE);
        assert_eq!(s.confidence_token(false), "<UN_NUM>");
        // The JSON form (as stored in a job) reads back to the same spec and digest.
        let back: DatasetSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.digest(), s.digest());
        // Comments and the description do not change the digest; the prompt does.
        let commented = GOOD.replace(
            "max_tokens = 32",
            "max_tokens = 32 # short\ndescription = \"x\"",
        );
        assert_eq!(parse(&commented).unwrap().digest(), s.digest());
        let other = GOOD.replace("A:'''", "Answer:'''");
        assert_ne!(parse(&other).unwrap().digest(), s.digest());
    }

    #[test]
    fn templates_escape_braces_and_refuse_stray_ones() {
        let t = Template::parse("\\boxed{{}} {question}!").unwrap();
        assert_eq!(t.fields().collect::<Vec<_>>(), vec!["question"]);
        assert_eq!(t.render(|_| "Q".into()), "\\boxed{} Q!");
        assert!(Template::parse("a { b").is_err());
        assert!(Template::parse("a } b").is_err());
        assert!(Template::parse("{a b}").is_err());
    }

    #[test]
    fn bad_specs_name_the_file_line_and_key() {
        let e = parse(&GOOD.replace("[answer]", "[answer]\nchekcer = 1")).unwrap_err();
        assert!(e.contains("s.toml:16") && e.contains("chekcer"), "{e}");

        let e = parse(&GOOD.replace("\"numeric\"", "\"regex\"")).unwrap_err();
        assert!(
            e.contains("s.toml:16: `answer.checker`: unknown checker `regex`"),
            "{e}"
        );

        let e = parse(&GOOD.replace("Q: {question}", "P: {passage}\nQ: {question}")).unwrap_err();
        assert!(
            e.contains("`prompt.template`: placeholder `{passage}` has no column"),
            "{e}"
        );

        let e = parse(&GOOD.replace("Q: {question}", "Q: {qestion}")).unwrap_err();
        assert!(e.contains("unknown placeholder `{qestion}`"), "{e}");

        let e = parse(&GOOD.replace("question = \"q\"", "questoin = \"q\"")).unwrap_err();
        assert!(e.contains("s.toml:7") && e.contains("questoin"), "{e}");

        let e = parse(&GOOD.replace("max_tokens = 32", "max_tokens = \"32\"")).unwrap_err();
        assert!(e.contains("s.toml:4: `max_tokens`"), "{e}");

        // Several problems are reported together.
        let e = parse(
            &GOOD
                .replace("\"NUM\"", "\"num\"")
                .replace("\"numeric\"", "\"choice\""),
        )
        .unwrap_err();
        assert!(
            e.contains("3 problems") && e.contains("`domain`") && e.contains("needs the options"),
            "{e}"
        );
    }

    #[test]
    fn builtins_parse_and_are_recognised() {
        let names: Vec<_> = builtins().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["math", "medqa", "boolq"]);
        for s in builtins() {
            assert!(s.is_builtin());
        }
        let domains: Vec<_> = builtins().iter().map(|s| s.domain.as_str()).collect();
        assert_eq!(domains, vec!["MATH", "MED", "READ"]);
        let budgets: Vec<_> = builtins().iter().map(|s| s.max_tokens).collect();
        assert_eq!(budgets, vec![512, 256, 128]);
        assert_eq!(
            builtin("boolq").unwrap().source.hub.as_deref(),
            Some("huyxdang/boolq-split")
        );
        assert_eq!(
            builtin("math").unwrap().hub_file("test"),
            "data/test-00000-of-00001.parquet"
        );
    }
}
