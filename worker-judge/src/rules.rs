//! Deterministic answer checkers (`--mode rules`, and the sure half of `hybrid`), one per
//! dataset spec's `answer.checker`: boolean yes/no (BoolQ), choice letter or text (MedQA),
//! last `\boxed{}` with Hendrycks-style normalisation and numeric equivalence (MATH), a
//! number within a tolerance, and exact or normalised strings. Each returns `None` when it is
//! not sure; the `none` checker is never sure (the LLM judge decides).

use common::dataset::InputRow;
use common::dataset_spec::{Checker, DatasetSpec};
use serde_json::Value;

/// A rules verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    pub extracted: String,
    pub correct: bool,
    pub reasoning: String,
}

/// Judge a response with the checker of its dataset's spec; `None` when it cannot be sure.
pub fn judge(dataset: &DatasetSpec, row: &InputRow, response: &str) -> Option<RuleVerdict> {
    match &dataset.answer {
        Checker::Boolean => boolq(response, row.correct_answer.as_bool()?),
        Checker::Choice => medqa(response, row),
        Checker::BoxedMath => math(response, row.correct_answer.as_str()?),
        Checker::Numeric {
            tolerance,
            relative_tolerance,
        } => number(
            response,
            &row.correct_answer,
            *tolerance,
            *relative_tolerance,
        ),
        Checker::Exact => text(response, row.correct_answer.as_str()?, false),
        Checker::Normalized => text(response, row.correct_answer.as_str()?, true),
        Checker::None => None,
    }
}

/// The verdict rules mode gives when the checkers are not sure: not correct, extracted 'None'.
pub fn undecided(dataset: &DatasetSpec) -> RuleVerdict {
    RuleVerdict {
        extracted: "None".into(),
        correct: false,
        reasoning: format!("rules: no clear final answer found for {}", dataset.name),
    }
}

/// The answer a short-answer response gives: its last `\boxed{}`, else its first non-empty
/// line without an `Answer:` label.
fn short_answer(response: &str) -> Option<String> {
    if let Some(b) = last_boxed(response) {
        return Some(b.trim().to_owned());
    }
    let line = response.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = ["Answer:", "answer:", "ANSWER:"]
        .iter()
        .find_map(|p| line.strip_prefix(p))
        .unwrap_or(line)
        .trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// Lower-case, without punctuation, articles and repeated spaces (SQuAD's normalisation).
fn normalize_text(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exact or normalised string match of the response's short answer.
fn text(response: &str, truth: &str, normalize: bool) -> Option<RuleVerdict> {
    let said = short_answer(response)?;
    let correct = if normalize {
        normalize_text(&said) == normalize_text(truth)
    } else {
        said == truth.trim()
    };
    Some(RuleVerdict {
        reasoning: format!(
            "rules: the answer `{said}` {} the correct answer `{}`{}",
            if correct { "equals" } else { "differs from" },
            truth.trim(),
            if normalize {
                " after normalisation"
            } else {
                ""
            }
        ),
        extracted: said,
        correct,
    })
}

/// The numbers written in a text: `-3`, `2.5`, `1,000`, `.5`.
fn numbers_in(text: &str) -> Vec<f64> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts =
            b[i].is_ascii_digit() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts || (i > 0 && (b[i - 1].is_ascii_alphabetic() || b[i - 1] == b'_')) {
            i += 1;
            continue;
        }
        let neg = i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
        let mut j = i;
        let mut digits = String::new();
        while j < b.len() {
            let c = b[j];
            if c.is_ascii_digit() {
                digits.push(c as char);
            } else if c == b','
                && b.len() >= j + 4
                && b[j + 1..j + 4].iter().all(u8::is_ascii_digit)
                && b.get(j + 4).is_none_or(|d| !d.is_ascii_digit())
            {
                // a thousands separator
            } else if c == b'.'
                && !digits.contains('.')
                && b.get(j + 1).is_some_and(u8::is_ascii_digit)
            {
                digits.push('.');
            } else {
                break;
            }
            j += 1;
        }
        if let Ok(v) = digits.parse::<f64>() {
            out.push(if neg { -v } else { v });
        }
        i = j.max(i + 1);
    }
    out
}

/// A number from the correct answer: a JSON number or a string holding one.
fn truth_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim().replace(',', "");
            t.parse::<f64>()
                .ok()
                .or_else(|| numeric(&normalize_math(&t)))
        }
        _ => None,
    }
}

/// The response's `\boxed{}` number, or the one number of its first non-empty line, against
/// the correct number within `max(tolerance, relative_tolerance × |truth|)`.
fn number(response: &str, truth: &Value, tolerance: f64, relative: f64) -> Option<RuleVerdict> {
    let truth = truth_number(truth)?;
    let (extracted, said) = match last_boxed(response) {
        Some(b) => {
            let n = numeric(&normalize_math(&b))?;
            (b, n)
        }
        None => {
            let line = response.lines().map(str::trim).find(|l| !l.is_empty())?;
            let mut nums = numbers_in(line);
            nums.dedup();
            match nums.as_slice() {
                [one] => (line.to_owned(), *one),
                // No number, or several: not sure which one is the answer.
                _ => return None,
            }
        }
    };
    let margin = tolerance.max(relative * truth.abs());
    let correct = (said - truth).abs() <= margin;
    Some(RuleVerdict {
        reasoning: format!(
            "rules: the response's number {said} {} the correct {truth} (tolerance {margin})",
            if correct { "is within" } else { "is outside" }
        ),
        extracted,
        correct,
    })
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
    let truth_letter = row
        .answer_letter
        .clone()
        .or_else(|| {
            options
                .iter()
                .find(|(_, t)| t.trim().eq_ignore_ascii_case(truth_text.trim()))
                .map(|(l, _)| l.clone())
        })
        // A spec whose answer column holds the letter itself.
        .or_else(|| {
            options
                .contains_key(truth_text.trim())
                .then(|| truth_text.trim().to_owned())
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

    fn spec(name: &str) -> &'static DatasetSpec {
        common::dataset_spec::builtin(name).unwrap()
    }

    fn with_checker(checker: Checker) -> DatasetSpec {
        let mut s = spec("boolq").clone();
        s.answer = checker;
        s
    }

    fn row(correct: Value) -> InputRow {
        InputRow {
            index: 0,
            question: "q".into(),
            prompt: String::new(),
            correct_answer: correct,
            options: None,
            answer_letter: None,
            id: None,
            max_tokens: None,
        }
    }

    #[test]
    fn boolq_reads_the_first_word_of_rambling_answers() {
        let r = row(Value::Bool(true));
        assert!(
            judge(
                spec("boolq"),
                &r,
                " Yes, because the passage says so. No doubt."
            )
            .unwrap()
            .correct
        );
        assert!(
            !judge(spec("boolq"), &r, "no.\nQuestion: is it? Answer: yes")
                .unwrap()
                .correct
        );
        assert!(judge(spec("boolq"), &r, "The passage is long, and so is this").is_none());
        assert!(judge(spec("boolq"), &r, "It says yes, then no.").is_none());
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
            judge(spec("medqa"), &r, " B: Iron\nQuestion: next")
                .unwrap()
                .correct
        );
        assert!(judge(spec("medqa"), &r, "(B)").unwrap().correct);
        assert!(!judge(spec("medqa"), &r, "A. Zinc").unwrap().correct);
        assert!(
            judge(spec("medqa"), &r, "Iron deficiency is likely")
                .unwrap()
                .correct
        );
        assert!(judge(spec("medqa"), &r, "Because of the diet").is_none());
    }

    #[test]
    fn math_compares_normalised_boxed_answers() {
        let sol = Value::String("so $x = \\boxed{\\dfrac{3}{4}}$.".into());
        let r = row(sol);
        assert!(
            judge(spec("math"), &r, "... \\boxed{\\frac34}")
                .unwrap()
                .correct
        );
        assert!(judge(spec("math"), &r, "\\boxed{0.75}").unwrap().correct);
        assert!(!judge(spec("math"), &r, "\\boxed{0.7}").unwrap().correct);
        assert!(judge(spec("math"), &r, "no box here").is_none());
        assert!(judge(spec("math"), &r, "\\boxed{\\sqrt{2}}").is_none());
        assert_eq!(normalize_math("25\\%"), "25");
        assert_eq!(normalize_math("540^\\circ"), "540");
        assert_eq!(last_boxed("\\boxed{a{b}c} and \\boxed{d}").unwrap(), "d");
    }

    #[test]
    fn numbers_are_read_from_the_first_line_or_the_box() {
        let s = with_checker(Checker::Numeric {
            tolerance: 0.5,
            relative_tolerance: 0.0,
        });
        let r = row(serde_json::json!(8));
        assert!(
            judge(&s, &r, " 8 legs.\nQuestion: next 12")
                .unwrap()
                .correct
        );
        assert!(judge(&s, &r, "8.4").unwrap().correct);
        assert!(!judge(&s, &r, "Answer: 6").unwrap().correct);
        assert!(judge(&s, &r, "so \\boxed{8}").unwrap().correct);
        assert!(judge(&s, &r, "between 6 and 8").is_none());
        assert!(judge(&s, &r, "many").is_none());
        let r = row(Value::String("1,000".into()));
        assert!(judge(&s, &r, "1,000 metres").unwrap().correct);
        assert!(!judge(&s, &r, "-1000").unwrap().correct);
        assert_eq!(
            numbers_in("x2 is -3.5, then 4,500 and .5"),
            vec![-3.5, 4500.0, 0.5]
        );
    }

    #[test]
    fn strings_match_exactly_or_normalised() {
        let r = row(Value::String("The Pacific Ocean".into()));
        let exact = with_checker(Checker::Exact);
        let norm = with_checker(Checker::Normalized);
        assert!(
            judge(&exact, &r, "The Pacific Ocean\nmore")
                .unwrap()
                .correct
        );
        assert!(!judge(&exact, &r, "pacific ocean").unwrap().correct);
        assert!(judge(&norm, &r, "Answer: pacific  ocean.").unwrap().correct);
        assert!(!judge(&norm, &r, "Atlantic").unwrap().correct);
        assert!(judge(&norm, &r, "   ").is_none());
        assert!(judge(&with_checker(Checker::None), &r, "The Pacific Ocean").is_none());
    }
}
