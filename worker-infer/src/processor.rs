//! Inference of a shard: every row of every held shard queues for one of the engine's slots
//! (as many as the engine runs requests at once), so rows of all held shards share the batch.
//! The slots are taken here, in front of the engine, so the worker knows when a shard really
//! starts: the first of its rows to get a slot marks it started (`start.lua`). Rows still
//! waiting for a slot are look-ahead; if the worker dies, their shards go back to the queue
//! without spending an attempt.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::failure::Failure;
use common::job::{JobSpec, JudgeSettings};
use common::queue::{counters, Counter, CounterDeltas};
use common::records::PredictionRecord;
use common::worker::{ShardContext, ShardOutput, ShardProcessor};
use tokio::sync::Semaphore;

use crate::backend::Engine;

#[derive(Debug)]
pub struct InferProcessor {
    /// The model name jobs must carry to be served here.
    model: String,
    engine: Arc<Engine>,
    /// One permit per request the engine runs at once, taken before a row goes to the engine
    /// (whose own cap then never makes it wait) and held until its answer is back.
    slots: Semaphore,
}

impl InferProcessor {
    /// `engine` must have its final concurrency (after any self-check): it sizes the slots.
    pub fn new(model: impl Into<String>, engine: Arc<Engine>) -> Self {
        let slots = Semaphore::new(engine.concurrency().max(1));
        Self {
            model: model.into(),
            engine,
            slots,
        }
    }
}

impl ShardProcessor for InferProcessor {
    fn accepts(&self, spec: &JobSpec, _judge: &JudgeSettings) -> bool {
        spec.model == self.model
    }

    fn marks_start(&self) -> bool {
        true
    }

    async fn process(&self, ctx: ShardContext) -> Result<ShardOutput, Failure> {
        let lease = &ctx.lease;
        let rows = ctx
            .queue
            .input_rows(&lease.job, lease.start, lease.end)
            .await?;
        // Every row runs to its end even when one fails: mistral.rs 0.8.1 does not cancel a
        // sequence whose caller went away, so ending the attempt early would leave those rows
        // decoding beside the next shard's, past the engine's concurrency cap.
        let results = futures::future::join_all(rows.iter().map(|r| async {
            // Slots go first come, first served: the rows of the shard claimed first run
            // first, and a shard counts as started from its first row in the engine.
            let _slot = self.slots.acquire().await.expect("semaphore open");
            ctx.started().await;
            let generated = self
                .engine
                .generate(
                    &r.prompt,
                    ctx.spec.prompt_mode,
                    r.max_tokens.unwrap_or(ctx.spec.max_tokens),
                )
                .await;
            // Its slot frees now: the worker may claim more while the shard's other rows run.
            ctx.row_finished();
            match generated {
                Ok(g) => {
                    ctx.stats
                        .row_generated(g.prompt_tokens, g.completion_tokens);
                    Ok(Ok(g))
                }
                // A row failure is recorded on the row; any other fails the shard attempt.
                Err(e @ Failure::Row { .. }) => Ok(Err(e.report())),
                Err(e) => Err(e),
            }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Failure>>()?;
        let mut out = ShardOutput::default();
        let mut counters: CounterDeltas = BTreeMap::new();
        for (row, result) in rows.iter().zip(results) {
            let record = match result {
                Ok(g) => {
                    counters::add(
                        &mut counters,
                        Counter::InferPromptTokens,
                        g.prompt_tokens as i64,
                    );
                    counters::add(
                        &mut counters,
                        Counter::InferCompletionTokens,
                        g.completion_tokens as i64,
                    );
                    PredictionRecord {
                        response: g.text,
                        question: row.question.clone(),
                        correct_answer: row.correct_answer.clone(),
                        prompt_tokens: g.prompt_tokens,
                        completion_tokens: g.completion_tokens,
                        finish_reason: g.finish_reason,
                        error: None,
                    }
                }
                Err(msg) => {
                    counters::add(&mut counters, Counter::InferRowErrors, 1);
                    PredictionRecord {
                        response: String::new(),
                        question: row.question.clone(),
                        correct_answer: row.correct_answer.clone(),
                        prompt_tokens: 0,
                        completion_tokens: 0,
                        finish_reason: "error".into(),
                        error: Some(msg),
                    }
                }
            };
            out.rows.push((row.index, record.into()));
        }
        counters.insert(Counter::InferRows, rows.len() as i64);
        out.counters = counters;
        Ok(out)
    }
}
