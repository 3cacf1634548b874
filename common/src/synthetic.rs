//! Made-up input rows for `conftag bench` (queue, status, fleet), where only the number and
//! size of rows matter, not their content. The test suites use them too (through
//! `conftag-testkit`).

use crate::dataset::InputRow;

/// `n` made-up BoolQ-shaped rows (answer `true` on even indices).
pub fn synthetic_rows(n: u64) -> Vec<InputRow> {
    (0..n)
        .map(|i| InputRow {
            index: i,
            question: format!("question {i}"),
            prompt: format!("Read the passage and answer. Passage: text {i}. Question: q{i}?"),
            correct_answer: serde_json::Value::Bool(i % 2 == 0),
            options: None,
            answer_letter: None,
            id: None,
            max_tokens: None,
        })
        .collect()
}
