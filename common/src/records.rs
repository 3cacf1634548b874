//! Row records as stored in Redis and exported: the prediction of a row (seed fields plus
//! token counts and errors) and the tagged row (seed fields plus provenance).
//!
//! The seed-format files carry exactly the seed's fields; everything else here is kept in
//! Redis and in the export's summary.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dataset_spec::DatasetSpec;

/// The output of inference for one row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    pub response: String,
    pub question: String,
    pub correct_answer: Value,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    /// `stop`, `length`, … as the engine reported it.
    #[serde(default)]
    pub finish_reason: String,
    /// Set when the row could not run (e.g. its prompt is longer than the context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The seed's `judge_response` object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeResponse {
    pub correct_answer: Value,
    pub model_answer: String,
    pub reasoning: String,
    /// `"yes"` or `"no"`.
    pub correct: String,
}

/// A judged and tagged row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaggedRecord {
    pub response: String,
    pub question: String,
    pub correct_answer: Value,
    /// `None` when the judge could not give a verdict (see `judge_error`): the row is not
    /// counted as wrong, and it is not written to the seed's tagged file.
    pub judge_response: Option<JudgeResponse>,
    pub correct: bool,
    pub confidence_token: String,
    pub tagged_response: String,
    /// Which path decided: `llm`, `rules`, `batch`.
    pub judged_by: String,
    pub judge_model: String,
    pub judge_prompt_sha: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_error: Option<String>,
}

/// The confidence token for a verdict on a row of `dataset` (its spec's domain).
pub fn confidence_token(dataset: &DatasetSpec, correct: bool) -> String {
    dataset.confidence_token(correct)
}

/// Provenance of a verdict.
#[derive(Clone, Debug)]
pub struct Provenance {
    pub judged_by: String,
    pub judge_model: String,
    pub judge_prompt_sha: String,
}

impl TaggedRecord {
    /// Tag a prediction with a verdict exactly as the seed did:
    /// `correct = (verdict == "yes")`, `tagged_response = response + " " + token`.
    pub fn tag(
        dataset: &DatasetSpec,
        prediction: &PredictionRecord,
        verdict: JudgeResponse,
        provenance: Provenance,
    ) -> Self {
        let correct = verdict.correct == "yes";
        let token = confidence_token(dataset, correct);
        Self {
            response: prediction.response.clone(),
            question: prediction.question.clone(),
            correct_answer: prediction.correct_answer.clone(),
            tagged_response: format!("{} {}", prediction.response, token),
            confidence_token: token,
            correct,
            judge_response: Some(verdict),
            judged_by: provenance.judged_by,
            judge_model: provenance.judge_model,
            judge_prompt_sha: provenance.judge_prompt_sha,
            judge_error: None,
        }
    }

    /// A row the judge could not decide, recorded with its error.
    pub fn unjudged(prediction: &PredictionRecord, error: String, provenance: Provenance) -> Self {
        Self {
            response: prediction.response.clone(),
            question: prediction.question.clone(),
            correct_answer: prediction.correct_answer.clone(),
            judge_response: None,
            correct: false,
            confidence_token: String::new(),
            tagged_response: String::new(),
            judged_by: provenance.judged_by,
            judge_model: provenance.judge_model,
            judge_prompt_sha: provenance.judge_prompt_sha,
            judge_error: Some(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagging_follows_the_seed() {
        let p = PredictionRecord {
            response: "The answer is 42.".into(),
            question: "What is 6 times 7?".into(),
            correct_answer: Value::String("42".into()),
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: "stop".into(),
            error: None,
        };
        let v = JudgeResponse {
            correct_answer: Value::String("42".into()),
            model_answer: "42".into(),
            reasoning: "same".into(),
            correct: "yes".into(),
        };
        let prov = Provenance {
            judged_by: "llm".into(),
            judge_model: "m".into(),
            judge_prompt_sha: "x".into(),
        };
        let b = |n| crate::dataset_spec::builtin(n).unwrap();
        let t = TaggedRecord::tag(b("math"), &p, v, prov);
        assert!(t.correct);
        assert_eq!(t.confidence_token, "<CN_MATH>");
        assert_eq!(t.tagged_response, "The answer is 42. <CN_MATH>");
        assert_eq!(confidence_token(b("boolq"), false), "<UN_READ>");
        assert_eq!(confidence_token(b("medqa"), true), "<CN_MED>");
    }
}

/// One row of a processed shard, as its processor produced it: a prediction (infer stage) or
/// a tagged record (judge stage). Typed until the shard completes, when the queue stores it
/// as JSON, so that no stage passes JSON strings to the next.
#[derive(Clone, Debug, PartialEq)]
pub enum ShardRecord {
    Prediction(PredictionRecord),
    /// Boxed: a tagged record is twice a prediction's size.
    Tagged(Box<TaggedRecord>),
}

impl ShardRecord {
    /// The stage whose shards produce this kind of record.
    pub fn stage(&self) -> crate::queue::Stage {
        match self {
            ShardRecord::Prediction(_) => crate::queue::Stage::Infer,
            ShardRecord::Tagged(_) => crate::queue::Stage::Judge,
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        match self {
            ShardRecord::Prediction(r) => serde_json::to_string(r),
            ShardRecord::Tagged(r) => serde_json::to_string(r),
        }
        .expect("records serialize")
    }
}

impl From<PredictionRecord> for ShardRecord {
    fn from(r: PredictionRecord) -> Self {
        ShardRecord::Prediction(r)
    }
}

impl From<TaggedRecord> for ShardRecord {
    fn from(r: TaggedRecord) -> Self {
        ShardRecord::Tagged(Box::new(r))
    }
}
