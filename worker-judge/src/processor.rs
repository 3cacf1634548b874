//! Judging a shard: every row of the shard is judged (rules, LLM, or both in hybrid mode)
//! with at most `num_workers` LLM calls in flight across all shards of the process, then
//! tagged exactly as the seed did.
//!
//! A shard is marked started (`ShardContext::started`) when its first row gets an LLM call
//! slot, when the rules judge it, or when its batch is submitted or resumed; shards whose
//! rows still wait for a slot are look-ahead that a dead worker gives back without spending
//! an attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::dataset::InputRow;
use common::dataset_spec::DatasetSpec;
use common::failure::{Failure, FailureKind};
use common::job::{JobSpec, JudgeMode, JudgeSettings};
use common::records::{JudgeResponse, PredictionRecord, Provenance, TaggedRecord};
use common::worker::{ShardContext, ShardOutput, ShardProcessor};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use common::queue::{counters, Counter, CounterDeltas};

use crate::batch::{BatchClient, BatchState};
use crate::ledger::Ledger;
use crate::openai::OpenAiClient;
use crate::prompt;
use crate::rules;

/// What every row of one shard is judged with.
struct JobJudging<'a> {
    /// The dataset spec of the job (the checker, the judge's view, the domain tag).
    dataset: &'a DatasetSpec,
    judge: &'a JudgeSettings,
    prices: Prices,
    ledger: &'a Ledger,
    /// The shard's context, to mark it started when its first call gets a slot.
    shard: &'a ShardContext,
}

/// Price of the judge model per million tokens, in USD.
#[derive(Debug, Clone, Copy)]
pub struct Prices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Prices {
    /// Known list prices; unknown models cost what gpt-4o costs until told otherwise.
    pub fn for_model(model: &str) -> Self {
        let (i, o) = match model {
            m if m.starts_with("gpt-4o-mini") => (0.15, 0.60),
            m if m.starts_with("gpt-4.1-mini") => (0.40, 1.60),
            m if m.starts_with("gpt-4.1") => (2.00, 8.00),
            _ => (2.50, 10.00),
        };
        Self {
            input_per_mtok: i,
            output_per_mtok: o,
        }
    }
    fn micro_usd(&self, prompt: u64, completion: u64) -> i64 {
        (prompt as f64 * self.input_per_mtok + completion as f64 * self.output_per_mtok).round()
            as i64
    }
}

#[derive(Debug)]
pub struct JudgeProcessor {
    client: Option<OpenAiClient>,
    in_flight: Arc<Semaphore>,
    /// Only take jobs judged in this mode.
    only_mode: Option<JudgeMode>,
    prices: Option<Prices>,
    /// In hybrid mode, every N-th row the rules decided is also sent to the LLM to measure
    /// agreement (0 = never).
    audit_every: u64,
    /// The Batch API, for `batch` jobs.
    batch: Option<BatchClient>,
}

impl JudgeProcessor {
    pub fn new(
        client: Option<OpenAiClient>,
        num_workers: usize,
        only_mode: Option<JudgeMode>,
        prices: Option<Prices>,
        audit_every: u64,
    ) -> Self {
        Self {
            client,
            in_flight: Arc::new(Semaphore::new(num_workers.max(1))),
            only_mode,
            prices,
            audit_every,
            batch: None,
        }
    }

    /// Also serve `batch` jobs through this Batch API client.
    pub fn with_batch(mut self, client: BatchClient) -> Self {
        self.batch = Some(client);
        self
    }
}

/// What judging one row produced.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct RowResult {
    tagged: Option<TaggedRecord>,
    counters: CounterDeltas,
}

impl RowResult {
    /// Whether the row paid for a judge call (each paid call counts one
    /// [`Counter::JudgeLlmCalls`]): only those verdicts are worth caching for a retry.
    fn paid_a_call(&self) -> bool {
        self.counters.contains_key(&Counter::JudgeLlmCalls)
    }
}

/// A row's paid-for verdict kept in `…:jcache` until its shard completes.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedVerdict {
    judge_model: String,
    mode: JudgeMode,
    row: RowResult,
}

impl CachedVerdict {
    fn entry(row: &RowResult, judge: &JudgeSettings) -> Option<String> {
        let copy = RowResult {
            tagged: row.tagged.clone(),
            counters: row.counters.clone(),
        };
        serde_json::to_string(&CachedVerdict {
            judge_model: judge.model.clone(),
            mode: judge.mode,
            row: copy,
        })
        .ok()
    }

    /// The cached row, if it was judged with the job's current judge settings.
    fn parse(text: &str, judge: &JudgeSettings) -> Option<RowResult> {
        let c: CachedVerdict = serde_json::from_str(text).ok()?;
        (c.judge_model == judge.model && c.mode == judge.mode).then_some(c.row)
    }
}

impl ShardProcessor for JudgeProcessor {
    fn accepts(&self, spec: &JobSpec, judge: &JudgeSettings) -> bool {
        if self.only_mode.is_some_and(|m| m != judge.mode) {
            return false;
        }
        // A job of a dataset this worker does not know (a built-in added after it was
        // built) is left to workers that do.
        if spec.dataset_spec().is_err() {
            return false;
        }
        match judge.mode {
            JudgeMode::Rules => true,
            JudgeMode::Llm | JudgeMode::Hybrid => self.client.is_some(),
            JudgeMode::Batch => self.batch.is_some(),
        }
    }

    fn marks_start(&self) -> bool {
        true
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        let lease = &ctx.lease;
        let inputs = ctx
            .queue
            .input_rows(&lease.job, lease.start, lease.end)
            .await?;
        let preds = ctx
            .queue
            .predictions(&lease.job, lease.start, lease.end)
            .await?;
        let prices = self
            .prices
            .unwrap_or_else(|| Prices::for_model(&ctx.judge.model));
        let ledger = Ledger::new(
            ctx.queue.clone(),
            &lease.job,
            ctx.judge.budget_micro_usd.is_some(),
        );
        if ctx.judge.mode != JudgeMode::Rules {
            ledger.check().await.map_err(Failure::for_the_shard)?;
        }
        // Rules judge at once and a batch is one job of the API's: the work starts now. LLM
        // rows start when the first of them gets a call slot (`call_llm`).
        if matches!(ctx.judge.mode, JudgeMode::Rules | JudgeMode::Batch) {
            ctx.started().await;
        }
        let dataset = ctx.spec.dataset_spec().map_err(|e| {
            Failure::fatal("the job's dataset cannot be judged here").with_source(e)
        })?;
        let job = JobJudging {
            dataset,
            judge: &ctx.judge,
            prices,
            ledger: &ledger,
            shard: &ctx,
        };
        if ctx.judge.mode == JudgeMode::Batch {
            return self.process_batch(&ctx, &inputs, &preds, &job).await;
        }
        // Verdicts paid for in an earlier attempt of this shard (one that failed on other
        // rows) are reused, so a retried shard never pays twice for a row.
        let cached = ctx
            .queue
            .cached_verdicts(&lease.job, lease.start, lease.end)
            .await?;
        let mut done: Vec<(u64, RowResult)> = Vec::new();
        let mut futs = FuturesUnordered::new();
        for ((input, pred), cached) in inputs.iter().zip(preds.iter()).zip(cached) {
            let Some(pred) = pred else {
                return Err(Failure::permanent(format!(
                    "row {} has no prediction although its shard passed inference",
                    input.index
                )));
            };
            if let Some(hit) = cached.and_then(|c| CachedVerdict::parse(&c, &ctx.judge)) {
                done.push((input.index, hit));
                continue;
            }
            let index = input.index;
            let fut = self.judge_row(&job, input, pred);
            futs.push(async move { (index, fut.await) });
        }
        let mut first_error: Option<Failure> = None;
        while let Some((index, r)) = futs.next().await {
            match r {
                Ok(row) => {
                    if row.paid_a_call() {
                        if let Some(entry) = CachedVerdict::entry(&row, &ctx.judge) {
                            // Best effort: without it a retry of the shard pays again.
                            if let Err(e) = ctx.queue.cache_verdict(&lease.job, index, &entry).await
                            {
                                tracing::debug!(error = %e, "verdict not cached");
                            }
                        }
                    }
                    done.push((index, row));
                }
                Err(e) => {
                    // Keep the worst: fatal, then a spent budget, then transient.
                    let rank = |e: &Failure| match e.kind() {
                        FailureKind::Fatal => 3,
                        FailureKind::Paused => 2,
                        _ => 1,
                    };
                    if first_error.as_ref().is_none_or(|f| rank(&e) > rank(f)) {
                        first_error = Some(e);
                    }
                }
            }
        }
        done.sort_by_key(|(i, _)| *i);
        let mut out = ShardOutput::default();
        let mut counters: CounterDeltas = BTreeMap::new();
        for (index, row) in done {
            for (k, v) in row.counters {
                counters::add(&mut counters, k, v);
            }
            if let Some(t) = row.tagged {
                out.rows.push((index, t.into()));
            }
        }
        // Row failures were recorded on their rows (`call_llm`); any other fails the attempt.
        if let Some(e) = first_error.filter(|e| e.kind() != FailureKind::Row) {
            return Err(e);
        }
        out.counters = counters;
        Ok(out)
    }
}

impl JudgeProcessor {
    /// One Batch API batch per shard, resumed by id after a restart (see `batch`).
    async fn process_batch(
        &self,
        ctx: &ShardContext,
        inputs: &[InputRow],
        preds: &[Option<PredictionRecord>],
        job: &JobJudging<'_>,
    ) -> Result<ShardOutput, Failure> {
        let prices = job.prices;
        let client = self
            .batch
            .as_ref()
            .ok_or_else(|| Failure::fatal("no Batch API configured"))?;
        let lease = &ctx.lease;
        let existing = ctx.queue.shard_batch(&lease.job, lease.shard).await?;
        let batch_id = match existing {
            Some(id) => {
                tracing::info!(batch = %id, "resuming the shard's batch");
                id
            }
            None => {
                let prompts: Vec<(u64, String)> = inputs
                    .iter()
                    .zip(preds)
                    .filter_map(|(i, p)| match p {
                        Some(p) if p.error.is_none() => {
                            Some((i.index, prompt::render(job.dataset, i, &p.response)))
                        }
                        _ => None,
                    })
                    .collect();
                let id = client
                    .start(&ctx.judge.model, &prompts)
                    .await
                    .map_err(Failure::for_the_shard)?;
                ctx.queue
                    .set_shard_batch(&lease.job, lease.shard, &id)
                    .await?;
                tracing::info!(batch = %id, rows = prompts.len(), "batch submitted");
                id
            }
        };
        let output_file = loop {
            match client
                .state(&batch_id)
                .await
                .map_err(Failure::for_the_shard)?
            {
                BatchState::Running => tokio::time::sleep(client.poll_every).await,
                BatchState::Completed { output_file } => break output_file,
                BatchState::Ended(msg) => {
                    ctx.queue.clear_shard_batch(&lease.job, lease.shard).await?;
                    return Err(Failure::transient(msg));
                }
            }
        };
        let mut results = match output_file {
            Some(f) => client.results(&f).await.map_err(Failure::for_the_shard)?,
            None => Default::default(),
        };
        // The Batch API costs half the synchronous price.
        let half = Prices {
            input_per_mtok: prices.input_per_mtok / 2.0,
            output_per_mtok: prices.output_per_mtok / 2.0,
        };
        let mut out = ShardOutput::default();
        let mut counters: CounterDeltas = BTreeMap::new();
        let mut paid = 0;
        let mut add = |k: Counter, v: i64| counters::add(&mut counters, k, v);
        let provenance = || Provenance {
            judged_by: "batch".into(),
            judge_model: ctx.judge.model.clone(),
            judge_prompt_sha: prompt::template_sha(),
        };
        for (input, pred) in inputs.iter().zip(preds) {
            let Some(pred) = pred else {
                return Err(Failure::permanent(format!(
                    "row {} has no prediction although its shard passed inference",
                    input.index
                )));
            };
            add(Counter::JudgeRows, 1);
            let record = if let Some(err) = &pred.error {
                add(Counter::JudgeErrors, 1);
                TaggedRecord::unjudged(
                    pred,
                    format!("inference failed for this row: {err}"),
                    provenance(),
                )
            } else {
                match results.remove(&input.index) {
                    Some(Ok(call)) => {
                        add(Counter::JudgeLlmCalls, 1);
                        add(Counter::JudgePromptTokens, call.prompt_tokens as i64);
                        add(
                            Counter::JudgeCompletionTokens,
                            call.completion_tokens as i64,
                        );
                        let cost = half.micro_usd(call.prompt_tokens, call.completion_tokens);
                        add(Counter::JudgeCostMicroUsd, cost);
                        paid += cost;
                        if call.verdict.correct == "yes" {
                            add(Counter::JudgeCorrect, 1);
                        }
                        let verdict = JudgeResponse {
                            correct_answer: input.correct_answer.clone(),
                            model_answer: call.verdict.extracted_final_answer,
                            reasoning: call.verdict.reasoning,
                            correct: call.verdict.correct,
                        };
                        TaggedRecord::tag(job.dataset, pred, verdict, provenance())
                    }
                    Some(Err(m)) => {
                        add(Counter::JudgeErrors, 1);
                        TaggedRecord::unjudged(pred, m, provenance())
                    }
                    None => {
                        add(Counter::JudgeErrors, 1);
                        TaggedRecord::unjudged(
                            pred,
                            format!("batch {batch_id} returned no result for this row"),
                            provenance(),
                        )
                    }
                }
            };
            out.rows.push((input.index, record.into()));
        }
        job.ledger.record_batch(&batch_id, paid).await;
        out.counters = counters;
        Ok(out)
    }

    async fn call_llm(
        &self,
        job: &JobJudging<'_>,
        input: &InputRow,
        pred: &PredictionRecord,
        counters: &mut CounterDeltas,
    ) -> Result<Result<JudgeResponse, String>, Failure> {
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| Failure::fatal("no judge API configured"))?;
        let _permit = self.in_flight.acquire().await.expect("semaphore open");
        job.shard.started().await;
        // Checked with the permit held, right before paying: the overshoot past the budget
        // is at most the calls already in flight.
        job.ledger.check().await?;
        let (dataset, judge, prices) = (job.dataset, job.judge, job.prices);
        let rendered = prompt::render(dataset, input, &pred.response);
        match client.judge(&judge.model, &rendered).await {
            Ok(call) => {
                let cost = prices.micro_usd(call.prompt_tokens, call.completion_tokens);
                for (counter, value) in [
                    (Counter::JudgeLlmCalls, 1),
                    (Counter::JudgePromptTokens, call.prompt_tokens as i64),
                    (
                        Counter::JudgeCompletionTokens,
                        call.completion_tokens as i64,
                    ),
                    (Counter::JudgeCostMicroUsd, cost),
                    (Counter::JudgeCallRetries, i64::from(call.retries)),
                ] {
                    if value != 0 {
                        counters::add(counters, counter, value);
                    }
                }
                job.ledger.record(cost).await;
                Ok(Ok(JudgeResponse {
                    correct_answer: input.correct_answer.clone(),
                    model_answer: call.verdict.extracted_final_answer,
                    reasoning: call.verdict.reasoning,
                    correct: call.verdict.correct,
                }))
            }
            Err(e @ Failure::Row { .. }) => {
                counters::add(counters, Counter::JudgeLlmCalls, 1);
                Ok(Err(e.report()))
            }
            Err(e) => Err(e),
        }
    }

    async fn judge_row(
        &self,
        job: &JobJudging<'_>,
        input: &InputRow,
        pred: &PredictionRecord,
    ) -> Result<RowResult, Failure> {
        let (dataset, judge) = (job.dataset, job.judge);
        let mut result = RowResult::default();
        result.counters.insert(Counter::JudgeRows, 1);
        let provenance = |by: &str| Provenance {
            judged_by: by.to_owned(),
            judge_model: if by == "rules" {
                "rules".to_owned()
            } else {
                judge.model.clone()
            },
            judge_prompt_sha: prompt::template_sha(),
        };
        if let Some(err) = &pred.error {
            result.counters.insert(Counter::JudgeErrors, 1);
            result.tagged = Some(TaggedRecord::unjudged(
                pred,
                format!("inference failed for this row: {err}"),
                provenance("none"),
            ));
            return Ok(result);
        }
        let rules_verdict = || {
            rules::judge(dataset, input, &pred.response).map(|v| JudgeResponse {
                correct_answer: input.correct_answer.clone(),
                model_answer: v.extracted,
                reasoning: v.reasoning,
                correct: if v.correct { "yes" } else { "no" }.into(),
            })
        };
        let (verdict, by) = match judge.mode {
            JudgeMode::Rules => {
                let v = rules_verdict().unwrap_or_else(|| {
                    let u = rules::undecided(dataset);
                    JudgeResponse {
                        correct_answer: input.correct_answer.clone(),
                        model_answer: u.extracted,
                        reasoning: u.reasoning,
                        correct: "no".into(),
                    }
                });
                result.counters.insert(Counter::JudgeRulesDecided, 1);
                (Ok(v), "rules")
            }
            JudgeMode::Hybrid => match rules_verdict() {
                Some(v) => {
                    result.counters.insert(Counter::JudgeRulesDecided, 1);
                    if self.audit_every > 0 && input.index.is_multiple_of(self.audit_every) {
                        let llm = self
                            .call_llm(job, input, pred, &mut result.counters)
                            .await?;
                        if let Ok(l) = llm {
                            let key = if l.correct == v.correct {
                                Counter::JudgeRulesLlmAgree
                            } else {
                                Counter::JudgeRulesLlmDisagree
                            };
                            result.counters.insert(key, 1);
                        }
                    }
                    (Ok(v), "rules")
                }
                None => (
                    self.call_llm(job, input, pred, &mut result.counters)
                        .await?,
                    "llm",
                ),
            },
            JudgeMode::Llm | JudgeMode::Batch => (
                self.call_llm(job, input, pred, &mut result.counters)
                    .await?,
                "llm",
            ),
        };
        match verdict {
            Ok(v) => {
                if v.correct == "yes" {
                    result.counters.insert(Counter::JudgeCorrect, 1);
                }
                result.tagged = Some(TaggedRecord::tag(dataset, pred, v, provenance(by)));
            }
            Err(msg) => {
                result.counters.insert(Counter::JudgeErrors, 1);
                result.tagged = Some(TaggedRecord::unjudged(pred, msg, provenance(by)));
            }
        }
        Ok(result)
    }
}
