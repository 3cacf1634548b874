//! Deterministic answer checkers (`--mode rules`, and the sure half of `hybrid`): BoolQ
//! yes/no, MedQA option letter or text, MATH last `\boxed{}` with Hendrycks-style
//! normalisation and numeric equivalence. Each returns `None` when it is not sure.

use common::dataset::{Dataset, InputRow};
use serde_json::Value;

/// A rules verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    pub extracted: String,
    pub correct: bool,
    pub reasoning: String,
}

/// Judge a response; `None` when the rules cannot be sure.
pub fn judge(dataset: Dataset, row: &InputRow, response: &str) -> Option<RuleVerdict> {
    match dataset {
        Dataset::Boolq => boolq(response, row.correct_answer.as_bool()?),
        Dataset::Medqa => medqa(response, row),
        Dataset::Math => math(response, row.correct_answer.as_str()?),
    }
}

/// The verdict rules mode gives when the checkers are not sure: not correct, extracted 'None'.
pub fn undecided(dataset: Dataset) -> RuleVerdict {
    RuleVerdict {
        extracted: "None".into(),
        correct: false,
        reasoning: format!("rules: no clear final answer found for {dataset}"),
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

fn boolq(response: &str, truth: bool) -> Option<RuleVerdict> {
    // Raw completions ramble on after the answer: trust the first word, or else a first
    // sentence that says exactly one of yes / no.
    let first = words(response).next()?;
    let said = match first.as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => {
            let sentence = response.split(['.', '\n']).next().unwrap_or("");
            let ws: Vec<String> = words(sentence).collect();
            let yes = ws.iter().any(|w| w == "yes");
            let no = ws.iter().any(|w| w == "no");
            match (yes, no) {
                (true, false) => Some(true),
                (false, true) => Some(false),
                _ => None,
            }
        }
    }?;
    Some(RuleVerdict {
        extracted: if said { "yes" } else { "no" }.into(),
        correct: said == truth,
        reasoning: format!(
            "rules: the response answers {}, the correct answer is {}",
            if said { "yes" } else { "no" },
            if truth { "yes" } else { "no" }
        ),
    })
}

fn medqa(response: &str, row: &InputRow) -> Option<RuleVerdict> {
    let options = row.options.as_ref()?;
    let truth_text = row.correct_answer.as_str()?;
    let truth_letter = row.answer_letter.clone().or_else(|| {
        options
            .iter()
            .find(|(_, t)| t.trim().eq_ignore_ascii_case(truth_text.trim()))
            .map(|(l, _)| l.clone())
    })?;
    let head: String = response.trim_start().chars().take(200).collect();
    // A leading letter: "C", "C.", "(C)", "C: text", "Answer: C".
    let stripped = head
        .trim_start_matches(|c: char| c == '(' || c.is_whitespace())
        .trim_start_matches("Answer:")
        .trim_start_matches("answer:")
        .trim_start();
    let mut chars = stripped.chars();
    let letter = match (chars.next(), chars.next()) {
        (Some(l), next)
            if options.contains_key(&l.to_string())
                && next.is_none_or(|n| !n.is_alphanumeric()) =>
        {
            Some(l.to_string())
        }
        _ => None,
    };
    let letter = letter.or_else(|| {
        // An option's text at the start of the response.
        let lower = head.to_lowercase();
        let hits: Vec<&String> = options
            .iter()
            .filter(|(_, t)| lower.starts_with(&t.to_lowercase()))
            .map(|(l, _)| l)
            .collect();
        (hits.len() == 1).then(|| hits[0].clone())
    })?;
    Some(RuleVerdict {
        correct: letter == truth_letter,
        reasoning: format!(
            "rules: the response picks option {letter}, the correct option is {truth_letter} ({truth_text})"
        ),
        extracted: format!("{letter}: {}", options[&letter]),
    })
}

/// Contents of the last `\boxed{…}` (or `\fbox{…}`), braces matched.
pub fn last_boxed(text: &str) -> Option<String> {
    let idx = text.rfind("\\boxed").or_else(|| text.rfind("\\fbox"))?;
    let rest = &text[idx..];
    let open = rest.find('{')?;
    let mut depth = 0usize;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(rest[open + 1..open + i].to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

/// Hendrycks-style normalisation of a final answer.
pub fn normalize_math(answer: &str) -> String {
    let mut s = answer.trim().to_owned();
    for (from, to) in [
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\ ", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\%", ""),
        ("%", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\displaystyle", ""),
    ] {
        s = s.replace(from, to);
    }
    // Drop \text{...} units at the end (e.g. "5 \text{ cm}").
    if let Some(i) = s.find("\\text{") {
        if i > 0 {
            s.truncate(i);
        }
    }
    s = s.replace("\\text{", "").replace("\\mbox{", "");
    let mut s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    s = s.trim_end_matches('.').to_owned();
    if let Some(rest) = s.strip_prefix("x=").or_else(|| s.strip_prefix("y=")) {
        s = rest.to_owned();
    }
    // \frac12 → \frac{1}{2}; a/b stays as is.
    if s.starts_with("\\frac") && !s.starts_with("\\frac{") && s.len() == 7 {
        let d: Vec<char> = s.chars().collect();
        s = format!("\\frac{{{}}}{{{}}}", d[5], d[6]);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    s = s.replace("{}", "");
    if s.ends_with(".0")
        && s[..s.len() - 2]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '-')
    {
        s.truncate(s.len() - 2);
    }
    s
}

/// A number from `3`, `-2.5`, `1,000`, `\frac{3}{4}`, `3/4`, `-\frac{1}{2}`.
fn numeric(s: &str) -> Option<f64> {
    let s = s.replace(',', "");
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.as_str()),
    };
    let value = if let Some(f) = body.strip_prefix("\\frac{") {
        let (a, rest) = f.split_once("}{")?;
        let b = rest.strip_suffix('}')?;
        a.parse::<f64>().ok()? / b.parse::<f64>().ok()?
    } else if let Some((a, b)) = body.split_once('/') {
        a.parse::<f64>().ok()? / b.parse::<f64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn math(response: &str, solution: &str) -> Option<RuleVerdict> {
    let truth = normalize_math(&last_boxed(solution)?);
    let said_raw = last_boxed(response)?;
    let said = normalize_math(&said_raw);
    let correct = if said == truth {
        true
    } else {
        match (numeric(&said), numeric(&truth)) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            // Two different symbolic answers: not sure.
            _ => return None,
        }
    };
    Some(RuleVerdict {
        extracted: said_raw,
        correct,
        reasoning: format!(
            "rules: boxed answer `{said}` {} the reference `{truth}` after normalisation",
            if correct { "equals" } else { "differs from" }
        ),
    })
}

/// The seed's `correct_answer` value for the judge response (same JSON type as the row's).
pub fn correct_answer_value(row: &InputRow) -> Value {
    row.correct_answer.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(correct: Value) -> InputRow {
        InputRow {
            index: 0,
            question: "q".into(),
            prompt: String::new(),
            correct_answer: correct,
            options: None,
            answer_letter: None,
            max_tokens: None,
        }
    }

    #[test]
    fn boolq_reads_the_first_word_of_rambling_answers() {
        let r = row(Value::Bool(true));
        assert!(
            judge(
                Dataset::Boolq,
                &r,
                " Yes, because the passage says so. No doubt."
            )
            .unwrap()
            .correct
        );
        assert!(
            !judge(Dataset::Boolq, &r, "no.\nQuestion: is it? Answer: yes")
                .unwrap()
                .correct
        );
        assert!(judge(Dataset::Boolq, &r, "The passage is long, and so is this").is_none());
        assert!(judge(Dataset::Boolq, &r, "It says yes, then no.").is_none());
    }

    #[test]
    fn medqa_finds_letters_and_option_texts() {
        let mut r = row(Value::String("Iron".into()));
        let opts: BTreeMap<String, String> = [("A", "Zinc"), ("B", "Iron")]
            .into_iter()
            .map(|(a, b)| (a.into(), b.into()))
            .collect();
        r.options = Some(opts);
        assert!(
            judge(Dataset::Medqa, &r, " B: Iron\nQuestion: next")
                .unwrap()
                .correct
        );
        assert!(judge(Dataset::Medqa, &r, "(B)").unwrap().correct);
        assert!(!judge(Dataset::Medqa, &r, "A. Zinc").unwrap().correct);
        assert!(
            judge(Dataset::Medqa, &r, "Iron deficiency is likely")
                .unwrap()
                .correct
        );
        assert!(judge(Dataset::Medqa, &r, "Because of the diet").is_none());
    }

    #[test]
    fn math_compares_normalised_boxed_answers() {
        let sol = Value::String("so $x = \\boxed{\\dfrac{3}{4}}$.".into());
        let r = row(sol);
        assert!(
            judge(Dataset::Math, &r, "... \\boxed{\\frac34}")
                .unwrap()
                .correct
        );
        assert!(judge(Dataset::Math, &r, "\\boxed{0.75}").unwrap().correct);
        assert!(!judge(Dataset::Math, &r, "\\boxed{0.7}").unwrap().correct);
        assert!(judge(Dataset::Math, &r, "no box here").is_none());
        assert!(judge(Dataset::Math, &r, "\\boxed{\\sqrt{2}}").is_none());
        assert_eq!(normalize_math("25\\%"), "25");
        assert_eq!(normalize_math("540^\\circ"), "540");
        assert_eq!(last_boxed("\\boxed{a{b}c} and \\boxed{d}").unwrap(), "d");
    }
}
