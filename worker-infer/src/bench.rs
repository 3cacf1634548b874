//! `conftag-infer bench`: bare engine throughput (no Redis), output tokens/s by requests in
//! flight, on prompts of an exact token length for word-level test tokenizers
//! (`w0 w1 …`, one token per word) or approximate otherwise; or, with `--mix`, prompts of the
//! token lengths of real seed prompts, each with its own budget (`deploy/gpu/real_mix.py`).
//!
//! With `--through-queue` the same rows go the way a job's rows go: submitted to Redis as a
//! job, claimed in shards by this process's worker runtime (the loop `conftag-infer` runs:
//! leases, look-ahead, results written back), so the difference from the bare engine is the
//! cost of the queue (shard tails, claims, writes) at the same engine settings.

use std::sync::Arc;
use std::time::Instant;

use common::dataset::InputRow;
use common::job::{JobSpec, JudgeSettings, PromptMode};
use common::queue::{Queue, SubmitOutcome};
use common::worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::backend::Engine;

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub in_flight: usize,
    pub rows: usize,
    pub seconds: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// Median time from a request's send to its answer (bare engine only: through the queue
    /// the unit is a shard).
    pub p50_latency_s: Option<f64>,
}

/// `n` prompts of `words` pseudo-random words each.
pub fn prompts(n: usize, words: usize, vocab: usize) -> Vec<String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            (0..words)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    format!("w{}", state % vocab as u64)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// One row of a benchmark mix: a prompt length (in words, one token each with the word-level
/// test tokenizer) and that row's new-token budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MixRow {
    #[serde(default)]
    pub dataset: String,
    pub prompt_tokens: usize,
    pub max_new_tokens: u32,
}

#[derive(Debug, serde::Deserialize)]
struct MixFile {
    rows: Vec<MixRow>,
}

/// Read a mix written by `deploy/gpu/real_mix.py` (`{"rows": [{"prompt_tokens",
/// "max_new_tokens"}, …]}`).
pub fn load_mix(path: &std::path::Path) -> Result<Vec<MixRow>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mix: MixFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if mix.rows.is_empty() {
        return Err(format!("{}: `rows` is empty", path.display()));
    }
    if let Some(i) = mix
        .rows
        .iter()
        .position(|r| r.prompt_tokens == 0 || r.max_new_tokens == 0)
    {
        return Err(format!(
            "{}: row {i}: prompt_tokens and max_new_tokens must be at least 1",
            path.display()
        ));
    }
    Ok(mix.rows)
}

/// `n` rows of the mix (cycled when the mix is shorter) as word prompts and budgets.
pub fn mix_prompts(mix: &[MixRow], n: usize) -> Vec<(String, u32)> {
    let longest = mix.iter().map(|r| r.prompt_tokens).max().unwrap_or(1);
    let words = prompts(1, longest, 1000).pop().unwrap_or_default();
    let words: Vec<&str> = words.split(' ').collect();
    (0..n)
        .map(|i| {
            let r = &mix[i % mix.len()];
            // Rows share no prefix beyond their first word (prefix caching is off anyway).
            let start = (i * 7) % words.len().max(1);
            let prompt = (0..r.prompt_tokens)
                .map(|j| words[(start + j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ");
            (prompt, r.max_new_tokens)
        })
        .collect()
}

/// `rows` prompts of `prompt_words` words, each with `new_tokens` to generate.
pub fn equal_prompts(rows: usize, prompt_words: usize, new_tokens: u32) -> Vec<(String, u32)> {
    prompts(rows, prompt_words, 1000)
        .into_iter()
        .map(|p| (p, new_tokens))
        .collect()
}

/// Generate every (prompt, budget) with at most `in_flight` requests out at once.
pub async fn run_rows(
    engine: Arc<Engine>,
    in_flight: usize,
    work: Vec<(String, u32)>,
) -> Result<BenchRow, common::failure::Failure> {
    if let Engine::Mistral(m) = engine.as_ref() {
        m.set_concurrency(in_flight).await;
    }
    let rows = work.len();
    // The engine caps what runs at once too; this cap makes the sweep the same for an
    // external server, whose own batch is whatever arrives.
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let start = Instant::now();
    let tasks = work.into_iter().map(|(p, new_tokens)| {
        let e = engine.clone();
        let slots = slots.clone();
        async move {
            let _slot = slots.acquire_owned().await.expect("semaphore open");
            let t = Instant::now();
            let g = e.generate(&p, PromptMode::Raw, new_tokens).await?;
            Ok::<_, common::failure::Failure>((g, t.elapsed().as_secs_f64()))
        }
    });
    let results = futures::future::join_all(tasks).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let (mut pt, mut ot) = (0, 0);
    for r in results {
        let (g, l) = r?;
        pt += g.prompt_tokens;
        ot += g.completion_tokens;
        latencies.push(l);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(BenchRow {
        in_flight,
        rows,
        seconds,
        prompt_tokens: pt,
        output_tokens: ot,
        p50_latency_s: latencies.get(latencies.len() / 2).copied(),
    })
}

/// Submit `work` (prompt, budget) as one job to `queue` and infer it with this process's
/// worker runtime and `in_flight` engine slots: `config` is the worker's own (its look-ahead,
/// lease, id), with the model set to a name only this job carries. Timed from the submit to
/// the worker's exit when no rows are left (which includes up to one idle poll, 0.5 s); the
/// job is purged afterwards, so a scratch Redis stays clean.
pub async fn run_through_queue(
    engine: Arc<Engine>,
    in_flight: usize,
    work: Vec<(String, u32)>,
    queue: &Queue,
    mut config: WorkerConfig,
    shard_size: u64,
) -> Result<BenchRow, crate::InferError> {
    if let Engine::Mistral(m) = engine.as_ref() {
        m.set_concurrency(in_flight).await;
    }
    let model = format!("conftag-bench-{}", uuid::Uuid::new_v4().simple());
    let rows: Vec<InputRow> = work
        .into_iter()
        .enumerate()
        .map(|(i, (prompt, budget))| InputRow {
            index: i as u64,
            question: format!("bench row {i}"),
            prompt,
            correct_answer: serde_json::Value::Null,
            options: None,
            answer_letter: None,
            id: None,
            max_tokens: Some(budget),
        })
        .collect();
    let max_tokens = rows.iter().filter_map(|r| r.max_tokens).max().unwrap_or(1);
    let spec = JobSpec::for_rows(
        model.clone(),
        common::dataset_spec::builtin("math").expect("a built-in dataset"),
        format!("bench-{in_flight}"),
        "conftag-infer bench --through-queue",
        &rows,
        max_tokens,
        PromptMode::Raw,
    );
    config.model = Some(model);
    config.exit_when_done = true;
    let start = Instant::now();
    let outcome = queue
        .submit(&spec, &JudgeSettings::default(), &rows, shard_size, 3)
        .await?;
    debug_assert!(matches!(outcome, SubmitOutcome::Created { .. }));
    let stats = crate::run(queue.clone(), engine, config, CancellationToken::new()).await?;
    let seconds = start.elapsed().as_secs_f64();
    queue.purge(&spec.id()).await?;
    Ok(BenchRow {
        in_flight,
        rows: rows.len(),
        seconds,
        prompt_tokens: stats
            .prompt_tokens
            .load(std::sync::atomic::Ordering::Relaxed),
        output_tokens: stats
            .completion_tokens
            .load(std::sync::atomic::Ordering::Relaxed),
        p50_latency_s: None,
    })
}

pub fn header() -> &'static str {
    "| in flight | rows | seconds | output tok/s | prompt tok/s | p50 latency s | ms per decode step |\n|---|---|---|---|---|---|---|"
}

/// A sampling profiler over the whole process while a bench setting runs.
#[allow(missing_debug_implementations)] // pprof's guard has no Debug
pub struct Profile {
    #[cfg(feature = "profile")]
    guard: pprof::ProfilerGuard<'static>,
}

impl Profile {
    pub fn start() -> Result<Self, String> {
        #[cfg(feature = "profile")]
        {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(499)
                // Exact library names: a bare "libc" also matched libcuda, libcudart and
                // libcublas, hiding every sample spent in the CUDA driver and copies.
                .blocklist(&["libc.so", "libgcc_s", "libpthread", "vdso"])
                .build()
                .map_err(|e| format!("cannot start the profiler: {e}"))?;
            Ok(Self { guard })
        }
        #[cfg(not(feature = "profile"))]
        Err("--profile needs a conftag-infer built with `--features profile`".into())
    }

    /// Write the flamegraph SVG.
    pub fn finish(self, path: &std::path::Path) -> Result<(), String> {
        #[cfg(feature = "profile")]
        {
            let report = self
                .guard
                .report()
                .build()
                .map_err(|e| format!("profile report: {e}"))?;
            let file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            report
                .flamegraph(file)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        #[cfg(not(feature = "profile"))]
        {
            let _ = path;
            Err("--profile needs a conftag-infer built with `--features profile`".into())
        }
    }
}

impl BenchRow {
    /// Decode step time implied by the throughput when every request in flight is decoding:
    /// each step yields one token per running sequence.
    pub fn step_ms(&self) -> f64 {
        let running = self.in_flight.min(self.rows) as f64;
        1000.0 * running * self.seconds / self.output_tokens.max(1) as f64
    }

    /// One JSON object for `--jsonl` (the device scripts add date, card, shape and engine).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "in_flight": self.in_flight,
            "rows": self.rows,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "out_tok_s": (self.output_tokens as f64 / self.seconds * 10.0).round() / 10.0,
            "output_tokens": self.output_tokens,
            "step_ms": (self.step_ms() * 10.0).round() / 10.0,
        })
    }

    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} |",
            self.in_flight,
            self.rows,
            self.seconds,
            self.output_tokens as f64 / self.seconds,
            self.prompt_tokens as f64 / self.seconds,
            self.p50_latency_s
                .map_or_else(|| "–".to_owned(), |l| format!("{l:.2}")),
            self.step_ms()
        )
    }
}
