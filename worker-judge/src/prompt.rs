//! The judge prompt and its structured-output schema. The structure follows the seed
//! pipeline (question, response, extracted answer, correct answer, reasoning that only
//! compares, yes/no verdict); the wording is conftag's own.

use common::dataset::InputRow;
use common::dataset_spec::DatasetSpec;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TEMPLATE: &str = "\
Decide whether the response below answers the question correctly, given the correct answer.

[question]: {question}

[response]: {response}

Fill in the following fields.

extracted_final_answer: the final answer stated in the [response], copied exactly. Write 'None' if the response gives no final answer.

[correct_answer]: {correct_answer}

reasoning: explain whether extracted_final_answer agrees with [correct_answer]. Only compare the two answers and point out any meaningful difference between them; do not solve the problem again, do not discuss its background, and do not argue for an answer other than [correct_answer].

correct: 'yes' if extracted_final_answer matches [correct_answer], or for numerical answers lies within a small margin of it; 'no' otherwise, including when the extracted answer is ambiguous, not equivalent, or missing.";

/// SHA-256 of the template (first 12 hex), kept with every verdict as provenance.
pub fn template_sha() -> String {
    hex::encode(Sha256::digest(TEMPLATE.as_bytes()))[..12].to_owned()
}

/// The question as the judge sees it: with its options when the spec says so (MedQA).
fn question_text(dataset: &DatasetSpec, row: &InputRow) -> String {
    match (dataset.judge.show_options, &row.options) {
        (true, Some(options)) => {
            let mut q = row.question.clone();
            q.push_str("\nOptions:");
            for (letter, text) in options {
                q.push_str(&format!("\n{letter}: {text}"));
            }
            q
        }
        _ => row.question.clone(),
    }
}

/// The correct answer as the seed printed it: strings as-is, BoolQ's boolean as `True`/`False`.
pub fn correct_answer_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// The `[correct_answer]` line as the spec's `judge.correct_answer` shows it (`{answer}` by
/// default).
fn correct_answer_line(dataset: &DatasetSpec, row: &InputRow) -> String {
    dataset.judge.correct_answer.render(|field| match field {
        "answer_letter" => row.answer_letter.clone().unwrap_or_default().into(),
        _ => correct_answer_text(&row.correct_answer).into(),
    })
}

pub fn render(dataset: &DatasetSpec, row: &InputRow, response: &str) -> String {
    TEMPLATE
        .replace("{question}", &question_text(dataset, row))
        .replace("{correct_answer}", &correct_answer_line(dataset, row))
        .replacen("{response}", response, 1)
}

/// Pull the three fields back out of a rendered prompt (the fake server judges from them).
pub fn parse_rendered(prompt: &str) -> Option<(String, String, String)> {
    let q_start = prompt.find("[question]: ")? + "[question]: ".len();
    let r_marker = "\n\n[response]: ";
    let r_pos = prompt[q_start..].find(r_marker)? + q_start;
    let question = prompt[q_start..r_pos].to_owned();
    let r_start = r_pos + r_marker.len();
    let tail_marker = "\n\nFill in the following fields.";
    let r_end = prompt.rfind(tail_marker)?;
    let response = prompt.get(r_start..r_end)?.to_owned();
    let c_marker = "[correct_answer]: ";
    let c_start = prompt.rfind(c_marker)? + c_marker.len();
    let c_end = prompt[c_start..].find("\n\nreasoning:")? + c_start;
    Some((question, response, prompt[c_start..c_end].to_owned()))
}

/// The strict JSON schema of a verdict (`response_format`).
pub fn response_format() -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "judge_verdict",
            "strict": true,
            "schema": {
                "type": "object",
                "properties": {
                    "extracted_final_answer": {"type": "string"},
                    "reasoning": {"type": "string"},
                    "correct": {"type": "string", "enum": ["yes", "no"]},
                    "strict": {"type": "boolean", "enum": [true]}
                },
                "required": ["extracted_final_answer", "reasoning", "correct", "strict"],
                "additionalProperties": false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_prompts_parse_back() {
        let row = InputRow {
            index: 0,
            question: "Is it?".into(),
            prompt: String::new(),
            correct_answer: Value::Bool(false),
            options: None,
            answer_letter: None,
            id: None,
            max_tokens: None,
        };
        let spec = |n| common::dataset_spec::builtin(n).unwrap();
        let p = render(spec("boolq"), &row, "No.\n\n[question]: tricky");
        let (q, r, c) = parse_rendered(&p).unwrap();
        assert_eq!(q, "Is it?");
        assert_eq!(r, "No.\n\n[question]: tricky");
        assert_eq!(c, "False");
        assert_eq!(template_sha().len(), 12);
    }

    #[test]
    fn specs_choose_the_options_and_the_answer_line() {
        let mut row = InputRow {
            index: 0,
            question: "Which?".into(),
            prompt: String::new(),
            correct_answer: Value::String("Iron".into()),
            options: Some(
                [("A", "Zinc"), ("B", "Iron")]
                    .into_iter()
                    .map(|(a, b)| (a.into(), b.into()))
                    .collect(),
            ),
            answer_letter: Some("B".into()),
            id: None,
            max_tokens: None,
        };
        let medqa = common::dataset_spec::builtin("medqa").unwrap();
        let (q, _, c) = parse_rendered(&render(medqa, &row, "B")).unwrap();
        assert_eq!(q, "Which?\nOptions:\nA: Zinc\nB: Iron");
        assert_eq!(c, "Iron");
        let mut custom = medqa.clone();
        custom.judge.show_options = false;
        custom.judge.correct_answer =
            common::dataset_spec::Template::parse("{answer_letter} ({answer})").unwrap();
        let (q, _, c) = parse_rendered(&render(&custom, &row, "B")).unwrap();
        assert_eq!((q.as_str(), c.as_str()), ("Which?", "B (Iron)"));
        row.correct_answer = serde_json::json!(2.5);
        assert_eq!(correct_answer_text(&row.correct_answer), "2.5");
    }
}
