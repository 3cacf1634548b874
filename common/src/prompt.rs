//! Prompt pieces shared by every dataset spec. The prompts themselves are the specs'
//! templates (`data/specs/`); the built-ins give the seed pipeline's structure — a one-line
//! instruction, a blank line, the row's fields, a blank line and a cue — sent as raw
//! completion text (no chat template) by default, exactly like the seed. The tests below keep
//! the built-ins' prompts byte for byte what the hard-wired code wrote.

use std::collections::BTreeMap;

/// The `{options}` placeholder: one `LETTER: text` line per option, in key order (A, B, C, …),
/// each ending in a newline.
pub fn options_block(options: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (letter, text) in options {
        out.push_str(&format!("{letter}: {text}\n"));
    }
    out
}

/// A BoolQ prompt (for tests and benchmarks that need one without a dataset file).
pub fn boolq(passage: &str, question: &str) -> String {
    let spec = crate::dataset_spec::builtin("boolq").expect("built-in");
    spec.prompt.template.render(|f| match f {
        "passage" => passage.into(),
        _ => question.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{load_split, DatasetSource};
    use crate::dataset_spec::builtin;

    // The seed's prompts as the hard-wired code built them before dataset specs.
    const MATH_INSTRUCTION: &str =
        "Solve the following math problem. Show your work and give the final answer.";
    const MEDQA_INSTRUCTION: &str =
        "Answer the following medical question by choosing the correct option.";
    const BOOLQ_INSTRUCTION: &str = "Read the passage below and answer the question about it.";

    fn seed_math(problem: &str) -> String {
        format!("{MATH_INSTRUCTION}\n\nProblem: {problem}\n\nSolution:")
    }

    fn seed_medqa(question: &str, options: &BTreeMap<String, String>) -> String {
        let mut out = format!("{MEDQA_INSTRUCTION}\n\nQuestion: {question}\nOptions:\n");
        for (letter, text) in options {
            out.push_str(&format!("{letter}: {text}\n"));
        }
        out.push_str("\nAnswer:");
        out
    }

    fn seed_boolq(passage: &str, question: &str) -> String {
        format!(
            "{BOOLQ_INSTRUCTION}\n\nPassage: {passage}\nQuestion: {question}\n\nAnswer (yes or no):"
        )
    }

    fn samples(name: &str) -> DatasetSource {
        DatasetSource::File {
            path: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../data/samples")
                .join(name),
        }
    }

    #[tokio::test]
    async fn builtin_specs_give_the_seed_prompts_byte_for_byte() {
        let rows = load_split(builtin("math").unwrap(), &samples("math.jsonl"), None)
            .await
            .unwrap();
        for r in &rows {
            assert_eq!(r.prompt, seed_math(&r.question));
        }
        let rows = load_split(builtin("medqa").unwrap(), &samples("medqa.jsonl"), None)
            .await
            .unwrap();
        for r in &rows {
            assert_eq!(
                r.prompt,
                seed_medqa(&r.question, r.options.as_ref().unwrap())
            );
        }
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/samples/boolq.jsonl"),
        )
        .unwrap();
        let rows = load_split(builtin("boolq").unwrap(), &samples("boolq.jsonl"), None)
            .await
            .unwrap();
        for (r, line) in rows.iter().zip(text.lines()) {
            let raw: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                r.prompt,
                seed_boolq(raw["passage"].as_str().unwrap(), &r.question)
            );
        }
        assert_eq!(boolq("p", "q"), seed_boolq("p", "q"));
        let opts: BTreeMap<_, _> = [("B", "two"), ("A", "one")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(options_block(&opts), "A: one\nB: two\n");
    }
}
