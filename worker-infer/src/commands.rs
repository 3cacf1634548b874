//! What `conftag-infer` does with its command line: the worker (no subcommand) and the
//! tools beside it (self-check, bench, tiny-model, convert-gguf). `main.rs` only parses and
//! calls [`Cli::run_blocking`], like the other roles' `Cli::run`.

use std::path::Path;
use std::sync::Arc;

use common::queue::Queue;
use common::worker::REDIS_RETRY_MAX;

use crate::cli::{Cli, Command, EngineKind, InferArgs};
use crate::engine::{apply_self_check, MistralEngine};
use crate::openai_engine::OpenAiEngine;
use crate::Engine;

/// Load the embedded model or reach the external server; `min_seqs` raises the embedded
/// engine's scheduler size (the bench asks for its largest sweep point).
async fn open_engine(args: &InferArgs, min_seqs: usize) -> anyhow::Result<Engine> {
    Ok(match args.engine {
        EngineKind::Mistralrs => {
            let mut opts = args.engine_options();
            opts.max_num_seqs = opts.max_num_seqs.max(min_seqs);
            MistralEngine::load(&opts).await?.into()
        }
        EngineKind::Openai => {
            let mut opts = args.openai_options();
            opts.concurrency = opts.concurrency.max(min_seqs);
            OpenAiEngine::connect(opts).await?.into()
        }
    })
}

/// Sequences the engine must schedule at once for the command: the bench's largest sweep
/// point, the self-check's prompts. Tensor-parallel ranks build with the same value.
fn min_seqs(cli: &Cli) -> usize {
    match &cli.command {
        Some(Command::Bench { in_flight, .. }) => in_flight.iter().copied().max().unwrap_or(1),
        Some(Command::SelfCheck { prompts, .. }) => *prompts,
        _ => 1,
    }
}

impl Cli {
    /// Prepare the process (tensor-parallel environment, before any thread exists), start the
    /// async runtime and run the command.
    pub fn run_blocking(self) -> anyhow::Result<()> {
        let weights = self.worker.engine_options().weights;
        crate::tensor_parallel::prepare(self.worker.tensor_parallel_size, &weights)?;
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
        runtime.block_on(self.run())
    }

    /// Run the command (the worker when there is none).
    pub async fn run(self) -> anyhow::Result<()> {
        if crate::tensor_parallel::is_rank_child() {
            // A rank mistral.rs started with our argv: load this rank's slice and serve the
            // parent (the build does not return); no Redis, no metrics port, no queue.
            crate::tensor_parallel::die_with_parent();
            open_engine(&self.worker, min_seqs(&self))
                .await
                .map_err(|e| e.context("tensor-parallel rank"))?;
            return Ok(());
        }
        match &self.command {
            Some(Command::TinyModel {
                dir,
                seed,
                hidden,
                layers,
                heads,
                kv_heads,
            }) => tiny_model(dir, *seed, *hidden, *layers, *heads, *kv_heads),
            Some(Command::ConvertGguf { input, output, to }) => convert_gguf(input, output, *to),
            Some(Command::SelfCheck { .. }) => self_check(&self).await,
            Some(Command::Bench { .. }) => bench(&self).await,
            None => worker(&self).await,
        }
    }
}

fn tiny_model(
    dir: &Path,
    seed: u64,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
) -> anyhow::Result<()> {
    let (seed, hidden, layers, heads, kv_heads) = (&seed, &hidden, &layers, &heads, &kv_heads);
    let shape = crate::tiny_model::TinyShape {
        hidden: *hidden,
        intermediate: 2 * *hidden,
        layers: *layers,
        heads: *heads,
        kv_heads: *kv_heads,
        ..Default::default()
    };
    crate::tiny_model::write_tiny_model(dir, shape, *seed)?;
    println!("wrote the tiny model to {}", dir.display());
    Ok(())
}

fn convert_gguf(
    input: &Path,
    output: &Path,
    to: crate::gguf_convert::GgufTarget,
) -> anyhow::Result<()> {
    let to = &to;
    let r = crate::gguf_convert::convert(input, output, *to)?;
    println!(
        "wrote {} ({} tensors, {} converted, {:.1} MB)",
        output.display(),
        r.tensors,
        r.converted,
        r.bytes_written as f64 / 1e6
    );
    Ok(())
}

/// `self-check`: concurrent against one-at-a-time answers (with --top-logits, the engine's
/// own logits of both runs and a fresh prefill at each first difference).
async fn self_check(cli: &Cli) -> anyhow::Result<()> {
    let Some(Command::SelfCheck {
        prompts,
        new_tokens,
        word_prompts,
        top_logits,
        out,
    }) = &cli.command
    else {
        unreachable!("called for self-check")
    };
    let engine = open_engine(&cli.worker, min_seqs(cli)).await?;
    let ps: Vec<String> = if *word_prompts {
        (0..*prompts)
            .map(|i| {
                crate::bench::prompts(1 + i, 8 + (i * 37) % 193, 1000)
                    .pop()
                    .unwrap_or_default()
            })
            .collect()
    } else {
        crate::engine::self_check_prompts(*prompts)
    };
    if *top_logits > 0 {
        let Engine::Mistral(m) = &engine else {
            anyhow::bail!("--top-logits needs the embedded engine (--engine mistralrs)");
        };
        let (serial, concurrent) = m.self_check_logits(&ps, *new_tokens, *top_logits).await?;
        let report = crate::near_tie::analyse(&serial, &concurrent);
        println!("{}", report.summary());
        // Which run computed the first differing step right: prefill its shared
        // context afresh and see whose logits that step matches.
        let mut fresh = Vec::new();
        for d in &report.divergences {
            let (Some(s), Some(c)) = (
                serial[d.prompt].get(d.step),
                concurrent[d.prompt].get(d.step),
            ) else {
                continue;
            };
            let context: Vec<u32> = serial[d.prompt][..d.step].iter().map(|t| t.token).collect();
            let f = m
                .next_token_logits(&ps[d.prompt], &context, *top_logits)
                .await?;
            let (with_serial, with_concurrent) = (
                crate::near_tie::shared_tokens(&f, s),
                crate::near_tie::shared_tokens(&f, c),
            );
            println!(
                    "prompt {} token {}: a fresh prefill of the shared context shares {with_serial}/{} of its top logits with the one-at-a-time run, {with_concurrent}/{} with the batched run",
                    d.prompt, d.step, f.top.len(), f.top.len()
                );
            fresh.push(serde_json::json!({"prompt": d.prompt, "step": d.step, "shared_with_serial": with_serial, "shared_with_concurrent": with_concurrent, "fresh": f}));
        }
        if let Some(path) = out {
            let doc = serde_json::json!({"prompts": ps, "serial_logits": serial, "concurrent_logits": concurrent, "near_tie": report, "fresh_prefill": fresh});
            std::fs::write(path, serde_json::to_vec(&doc)?)?;
        }
        return Ok(());
    }
    let report = engine.self_check(&ps, *new_tokens).await?;
    println!("{}", report.summary());
    if let Some(path) = out {
        let doc = serde_json::json!({"prompts": ps, "serial": report.serial, "concurrent": report.concurrent});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(())
}

/// `bench`: output tokens/s by requests in flight, straight to the engine or through the queue.
async fn bench(cli: &Cli) -> anyhow::Result<()> {
    let Some(Command::Bench {
        in_flight,
        rows,
        prompt_words,
        new_tokens,
        mix,
        through_queue,
        shard_size,
        jsonl,
        profile,
    }) = &cli.command
    else {
        unreachable!("called for bench")
    };
    // Before the model loads (minutes), not after: a build without the profiler says so now.
    if profile.is_some() && !cfg!(feature = "profile") {
        anyhow::bail!("--profile needs a conftag-infer built with `--features profile`");
    }
    let mix = match mix {
        Some(path) => Some(crate::bench::load_mix(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    // Connect first: a wrong Redis URL should not cost a model load.
    let queue = match through_queue {
        true => Some(Queue::connect(&cli.common.redis_url()).await?),
        false => None,
    };
    let engine = Arc::new(open_engine(&cli.worker, min_seqs(cli)).await?);
    println!("{}", crate::bench::header());
    for &c in in_flight {
        let n = rows.unwrap_or(if c <= 1 { 4 } else { 2 * c });
        let profiler = match profile {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Some(crate::bench::Profile::start().map_err(anyhow::Error::msg)?)
            }
            None => None,
        };
        let work = match &mix {
            Some(mix) => crate::bench::mix_prompts(mix, n),
            None => crate::bench::equal_prompts(n, *prompt_words, *new_tokens),
        };
        let row = match &queue {
            Some(queue) => {
                let config = cli.worker.worker_config(c);
                crate::bench::run_through_queue(engine.clone(), c, work, queue, config, *shard_size)
                    .await?
            }
            None => crate::bench::run_rows(engine.clone(), c, work).await?,
        };
        if let Some(path) = jsonl {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{}", row.json())?;
        }
        if let (Some(p), Some(dir)) = (profiler, profile) {
            p.finish(&dir.join(format!("flame-{c}.svg")))
                .map_err(anyhow::Error::msg)?;
        }
        println!("{}", row.markdown());
    }
    Ok(())
}

/// The worker: connect, load the engine, optionally self-check, then take shards until
/// shutdown.
async fn worker(cli: &Cli) -> anyhow::Result<()> {
    // Connect first: a wrong Redis URL should not cost a model load.
    cli.common.serve_metrics()?;
    // A worker started while Redis is down waits for it (a bad URL still fails at once).
    let queue = Queue::connect_waiting(&cli.common.redis_url(), REDIS_RETRY_MAX).await?;
    let engine = open_engine(&cli.worker, min_seqs(cli)).await?;
    if cli.worker.self_check {
        let report = match &engine {
            Engine::Mistral(m) => {
                let opts = cli.worker.engine_options();
                apply_self_check(m, opts.concurrency.unwrap_or(opts.max_num_seqs)).await?
            }
            Engine::OpenAi(_) => {
                let report = engine
                    .self_check(&crate::engine::self_check_prompts(32), 24)
                    .await?;
                anyhow::ensure!(
                    report.passed(),
                    "self-check failed: the server at --engine-url gave {} of {} answers under concurrency that differ from its one-at-a-time answers; make its batching deterministic or pass --concurrency 1",
                    report.prompts - report.matching,
                    report.prompts
                );
                report
            }
        };
        println!("{}", report.summary());
    }
    let engine = Arc::new(engine);
    let shutdown = common::worker::shutdown_on_signals();
    let mut config = cli.worker.worker_config(engine.concurrency());
    if let Engine::Mistral(m) = engine.as_ref() {
        let opts = cli.worker.engine_options();
        let (on_gpu, gpu_name) = (m.on_gpu(), cli.worker.gpu_name.clone());
        let (batch, tp) = (engine.concurrency(), cli.worker.tensor_parallel_size);
        // nvidia-smi and the model's file headers: blocking, off the async threads.
        let (device, roofline) = tokio::task::spawn_blocking(move || {
            crate::model_shape::worker_device(
                &opts.weights,
                opts.dtype,
                on_gpu,
                gpu_name,
                batch,
                tp,
            )
        })
        .await?;
        match &roofline {
            Some(r) => {
                tracing::info!(%device, gpu = r.gpu.name, ceiling_at_empty_context = r.ceiling(0.0), "decode ceiling known")
            }
            None => tracing::info!(%device, "no decode ceiling for this device"),
        }
        config.device = Some(device);
        config.roofline = roofline;
    }
    crate::run(queue, engine, config, shutdown).await?;
    Ok(())
}
