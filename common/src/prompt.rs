//! The seed pipeline's prompts: a one-line instruction, a blank line, the row's fields, a
//! blank line and a cue. They are sent as raw completion text (no chat template) by default,
//! exactly like the seed; the text is conftag's own wording of the seed's structure.

use std::collections::BTreeMap;

pub const MATH_INSTRUCTION: &str =
    "Solve the following math problem. Show your work and give the final answer.";
pub const MEDQA_INSTRUCTION: &str =
    "Answer the following medical question by choosing the correct option.";
pub const BOOLQ_INSTRUCTION: &str = "Read the passage below and answer the question about it.";

pub fn math(problem: &str) -> String {
    format!("{MATH_INSTRUCTION}\n\nProblem: {problem}\n\nSolution:")
}

/// Options are listed in key order (A, B, C, D[, E]).
pub fn medqa(question: &str, options: &BTreeMap<String, String>) -> String {
    let mut out = format!("{MEDQA_INSTRUCTION}\n\nQuestion: {question}\nOptions:\n");
    for (letter, text) in options {
        out.push_str(&format!("{letter}: {text}\n"));
    }
    out.push_str("\nAnswer:");
    out
}

pub fn boolq(passage: &str, question: &str) -> String {
    format!(
        "{BOOLQ_INSTRUCTION}\n\nPassage: {passage}\nQuestion: {question}\n\nAnswer (yes or no):"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medqa_prompt_lists_options_in_key_order() {
        let opts: BTreeMap<_, _> = [("B", "two"), ("A", "one")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(
            medqa("Q?", &opts),
            format!("{MEDQA_INSTRUCTION}\n\nQuestion: Q?\nOptions:\nA: one\nB: two\n\nAnswer:")
        );
    }

    #[test]
    fn math_and_boolq_end_with_their_cue() {
        assert!(math("1+1").ends_with("\n\nProblem: 1+1\n\nSolution:"));
        assert!(boolq("p", "q").ends_with("Passage: p\nQuestion: q\n\nAnswer (yes or no):"));
    }
}
