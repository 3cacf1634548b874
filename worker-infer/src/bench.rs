//! `conftag-infer bench`: bare engine throughput (no Redis), output tokens/s by requests in
//! flight, on prompts of an exact token length for word-level test tokenizers
//! (`w0 w1 …`, one token per word) or approximate otherwise.

use std::sync::Arc;
use std::time::Instant;

use common::job::PromptMode;

use crate::engine::{GenerateError, MistralEngine};

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub in_flight: usize,
    pub rows: usize,
    pub seconds: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub p50_latency_s: f64,
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

pub async fn run(
    engine: Arc<MistralEngine>,
    in_flight: usize,
    rows: usize,
    prompt_words: usize,
    new_tokens: u32,
) -> Result<BenchRow, GenerateError> {
    engine.set_concurrency(in_flight).await;
    let ps = prompts(rows, prompt_words, 1000);
    let start = Instant::now();
    let tasks = ps.into_iter().map(|p| {
        let e = engine.clone();
        async move {
            let t = Instant::now();
            let g = e.generate(&p, PromptMode::Raw, new_tokens).await?;
            Ok::<_, GenerateError>((g, t.elapsed().as_secs_f64()))
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
        p50_latency_s: latencies[latencies.len() / 2],
    })
}

pub fn header() -> &'static str {
    "| in flight | rows | seconds | output tok/s | prompt tok/s | p50 latency s |\n|---|---|---|---|---|---|"
}

impl BenchRow {
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            self.in_flight,
            self.rows,
            self.seconds,
            self.output_tokens as f64 / self.seconds,
            self.prompt_tokens as f64 / self.seconds,
            self.p50_latency_s
        )
    }
}
