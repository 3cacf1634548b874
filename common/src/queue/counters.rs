//! Every counter a job hash holds, named once.
//!
//! Counters are what `conftag status` shows without reading rows: workers add to them when a
//! shard completes (`complete.lua` adds each of a shard's counters to the job and remembers it
//! on the shard, so that a requeue can take it back), and the scripts keep the shard and
//! failure counters themselves. A counter name is therefore shared by Rust and Lua; it is
//! spelled here, and a test checks that every name the scripts write is one of these.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::queue::Stage;

/// One counter of a job hash. The serialized name (snake case) is the hash field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Counter {
    /// Shards of the job (set by submit).
    ShardsTotal,
    /// Shards through both stages (the scripts).
    ShardsDone,
    /// Rows with a stored prediction (including rows whose generation failed).
    InferRows,
    /// Rows whose generation failed (their prediction carries the error).
    InferRowErrors,
    InferPromptTokens,
    InferCompletionTokens,
    /// Bytes of the prediction records stored (for the memory-per-row figure).
    InferResultBytes,
    /// Rows with a stored verdict (including rows the judge could not decide).
    JudgeRows,
    JudgeCorrect,
    /// Rows the judge could not decide (their tagged record carries the error).
    JudgeErrors,
    /// Paid judge calls behind the stored verdicts.
    JudgeLlmCalls,
    JudgePromptTokens,
    JudgeCompletionTokens,
    /// What the stored verdicts cost.
    JudgeCostMicroUsd,
    /// What the judge has been paid in all (live, never decreased; see the judge's ledger).
    JudgePaidMicroUsd,
    /// Failed judge calls that were retried before a row got its verdict.
    JudgeCallRetries,
    JudgeRulesDecided,
    JudgeRulesLlmAgree,
    JudgeRulesLlmDisagree,
    InferAttemptsFailed,
    InferLeasesExpired,
    InferLeasesLapsedUnstarted,
    JudgeAttemptsFailed,
    JudgeLeasesExpired,
    JudgeLeasesLapsedUnstarted,
}

impl Counter {
    /// Every counter, in declaration order.
    pub const ALL: [Counter; 25] = [
        Counter::ShardsTotal,
        Counter::ShardsDone,
        Counter::InferRows,
        Counter::InferRowErrors,
        Counter::InferPromptTokens,
        Counter::InferCompletionTokens,
        Counter::InferResultBytes,
        Counter::JudgeRows,
        Counter::JudgeCorrect,
        Counter::JudgeErrors,
        Counter::JudgeLlmCalls,
        Counter::JudgePromptTokens,
        Counter::JudgeCompletionTokens,
        Counter::JudgeCostMicroUsd,
        Counter::JudgePaidMicroUsd,
        Counter::JudgeCallRetries,
        Counter::JudgeRulesDecided,
        Counter::JudgeRulesLlmAgree,
        Counter::JudgeRulesLlmDisagree,
        Counter::InferAttemptsFailed,
        Counter::InferLeasesExpired,
        Counter::InferLeasesLapsedUnstarted,
        Counter::JudgeAttemptsFailed,
        Counter::JudgeLeasesExpired,
        Counter::JudgeLeasesLapsedUnstarted,
    ];

    /// The job-hash field.
    pub fn name(self) -> &'static str {
        match self {
            Counter::ShardsTotal => "shards_total",
            Counter::ShardsDone => "shards_done",
            Counter::InferRows => "infer_rows",
            Counter::InferRowErrors => "infer_row_errors",
            Counter::InferPromptTokens => "infer_prompt_tokens",
            Counter::InferCompletionTokens => "infer_completion_tokens",
            Counter::InferResultBytes => "infer_result_bytes",
            Counter::JudgeRows => "judge_rows",
            Counter::JudgeCorrect => "judge_correct",
            Counter::JudgeErrors => "judge_errors",
            Counter::JudgeLlmCalls => "judge_llm_calls",
            Counter::JudgePromptTokens => "judge_prompt_tokens",
            Counter::JudgeCompletionTokens => "judge_completion_tokens",
            Counter::JudgeCostMicroUsd => "judge_cost_micro_usd",
            Counter::JudgePaidMicroUsd => "judge_paid_micro_usd",
            Counter::JudgeCallRetries => "judge_call_retries",
            Counter::JudgeRulesDecided => "judge_rules_decided",
            Counter::JudgeRulesLlmAgree => "judge_rules_llm_agree",
            Counter::JudgeRulesLlmDisagree => "judge_rules_llm_disagree",
            Counter::InferAttemptsFailed => "infer_attempts_failed",
            Counter::InferLeasesExpired => "infer_leases_expired",
            Counter::InferLeasesLapsedUnstarted => "infer_leases_lapsed_unstarted",
            Counter::JudgeAttemptsFailed => "judge_attempts_failed",
            Counter::JudgeLeasesExpired => "judge_leases_expired",
            Counter::JudgeLeasesLapsedUnstarted => "judge_leases_lapsed_unstarted",
        }
    }

    /// The rows a completed shard of `stage` adds ([`Counter::InferRows`] or
    /// [`Counter::JudgeRows`]).
    pub fn rows(stage: Stage) -> Counter {
        match stage {
            Stage::Infer => Counter::InferRows,
            Stage::Judge => Counter::JudgeRows,
        }
    }

    /// The stage whose shards add to this counter on completion, if a shard's output may
    /// carry it (`complete.lua` refuses nothing; [`Queue::complete`](crate::Queue::complete)
    /// checks this in debug builds).
    pub fn shard_stage(self) -> Option<Stage> {
        use Counter::*;
        match self {
            InferRows
            | InferRowErrors
            | InferPromptTokens
            | InferCompletionTokens
            | InferResultBytes => Some(Stage::Infer),
            JudgeRows
            | JudgeCorrect
            | JudgeErrors
            | JudgeLlmCalls
            | JudgePromptTokens
            | JudgeCompletionTokens
            | JudgeCostMicroUsd
            | JudgeCallRetries
            | JudgeRulesDecided
            | JudgeRulesLlmAgree
            | JudgeRulesLlmDisagree => Some(Stage::Judge),
            _ => None,
        }
    }
}

impl std::fmt::Display for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a shard adds to its job's counters when it completes.
pub type CounterDeltas = BTreeMap<Counter, i64>;

/// Add `value` to `counter` in `deltas`.
pub fn add(deltas: &mut CounterDeltas, counter: Counter, value: i64) {
    *deltas.entry(counter).or_default() += value;
}

/// The counters of one job as read from its hash (absent and negative read as 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterValues(BTreeMap<Counter, u64>);

impl CounterValues {
    /// Pick the counters out of a job hash's fields.
    pub fn from_fields(fields: &HashMap<String, String>) -> Self {
        Self(
            Counter::ALL
                .iter()
                .filter_map(|&c| {
                    let v = fields.get(c.name())?.parse::<i64>().ok()?;
                    Some((c, v.max(0) as u64))
                })
                .collect(),
        )
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0.get(&counter).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_are_the_hash_fields() {
        for c in Counter::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.name())
            );
            assert_eq!(
                serde_json::from_str::<Counter>(&format!("\"{}\"", c.name())).unwrap(),
                c
            );
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len(), "a counter is listed twice");
    }

    /// The scripts name counters as literals (`'shards_done'`) or as `stage .. '_suffix'`;
    /// each must be a [`Counter`], for both stages where the name is built from the stage.
    #[test]
    fn every_counter_the_scripts_write_is_declared() {
        // Every script in common/lua/, read at test time: a new script cannot be missed.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua");
        let scripts: Vec<String> = std::fs::read_dir(&dir)
            .expect("common/lua")
            .map(|e| e.expect("common/lua entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "lua"))
            .map(|p| std::fs::read_to_string(p).expect("a readable script"))
            .collect();
        assert!(scripts.len() >= 11, "found only {} scripts", scripts.len());
        let known: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        let mut seen = 0;
        for line in scripts.iter().flat_map(|s| s.lines()) {
            let Some(at) = line.find("'HINCRBY', JOB, ") else {
                continue;
            };
            let arg = &line[at + "'HINCRBY', JOB, ".len()..];
            let names: Vec<String> = if let Some(rest) = arg.strip_prefix("stage .. '") {
                let suffix = &rest[..rest.find('\'').unwrap()];
                ["infer", "judge"]
                    .iter()
                    .map(|s| format!("{s}{suffix}"))
                    .collect()
            } else if let Some(rest) = arg.strip_prefix('\'') {
                vec![rest[..rest.find('\'').unwrap()].to_owned()]
            } else {
                // A name from a variable: a shard's own counters (checked in Rust).
                continue;
            };
            for n in names {
                assert!(
                    known.contains(&n.as_str()),
                    "lua writes undeclared counter {n}"
                );
                seen += 1;
            }
        }
        assert!(seen >= 8, "the scan found only {seen} counter writes");
        let submit = include_str!("../../lua/submit.lua");
        assert!(submit.contains("'shards_total'"));
    }

    #[test]
    fn values_read_absent_and_negative_as_zero() {
        let fields: HashMap<String, String> = [
            ("infer_rows", "12"),
            ("judge_rows", "-3"),
            ("spec", "{}"),
            ("judge_correct", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let v = CounterValues::from_fields(&fields);
        assert_eq!(v.get(Counter::InferRows), 12);
        assert_eq!(v.get(Counter::JudgeRows), 0);
        assert_eq!(v.get(Counter::JudgeCorrect), 0);
        assert_eq!(v.get(Counter::ShardsDone), 0);
    }
}
