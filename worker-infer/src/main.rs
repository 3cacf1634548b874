use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use common::queue::Queue;
use common::worker::REDIS_RETRY_MAX;
use worker_infer::cli::{Cli, Command};
use worker_infer::engine::{apply_self_check, MistralEngine};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    let result: anyhow::Result<()> = async {
        if let Some(Command::TinyModel { dir, seed, hidden, layers, heads, kv_heads }) = &cli.command {
            let shape = worker_infer::tiny_model::TinyShape {
                hidden: *hidden,
                intermediate: 2 * *hidden,
                layers: *layers,
                heads: *heads,
                kv_heads: *kv_heads,
                ..Default::default()
            };
            worker_infer::tiny_model::write_tiny_model(dir, shape, *seed)?;
            println!("wrote the tiny model to {}", dir.display());
            return Ok(());
        }
        if let Some(Command::SelfCheck { prompts, new_tokens, word_prompts, out }) = &cli.command {
            let engine = MistralEngine::load(&cli.worker.engine_options()).await?;
            let ps: Vec<String> = if *word_prompts {
                (0..*prompts)
                    .map(|i| worker_infer::bench::prompts(1 + i, 8 + (i * 37) % 193, 1000).pop().unwrap_or_default())
                    .collect()
            } else {
                worker_infer::engine::self_check_prompts(*prompts)
            };
            let report = engine.self_check(&ps, *new_tokens).await?;
            println!(
                "self-check: {}/{} concurrent answers equal one-at-a-time answers",
                report.matching, report.prompts
            );
            if let Some(path) = out {
                let doc = serde_json::json!({"prompts": ps, "serial": report.serial, "concurrent": report.concurrent});
                std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
            }
            return Ok(());
        }
        if let Some(Command::Bench { in_flight, rows, prompt_words, new_tokens }) = &cli.command {
            let mut opts = cli.worker.engine_options();
            opts.max_num_seqs = opts.max_num_seqs.max(in_flight.iter().copied().max().unwrap_or(1));
            let engine = Arc::new(MistralEngine::load(&opts).await?);
            println!("{}", worker_infer::bench::header());
            for &c in in_flight {
                let n = rows.unwrap_or(c.clamp(16, 64));
                let row = worker_infer::bench::run(engine.clone(), c, n, *prompt_words, *new_tokens).await?;
                println!("{}", row.markdown());
            }
            return Ok(());
        }
        // Connect first: a wrong Redis URL should not cost a model load.
        // A worker started while Redis is down waits for it (a bad URL still fails at once).
        let queue = Queue::connect_waiting(&cli.common.redis_url(), REDIS_RETRY_MAX).await?;
        let opts = cli.worker.engine_options();
        let engine = Arc::new(MistralEngine::load(&opts).await?);
        if cli.worker.self_check {
            let wanted = opts.concurrency.unwrap_or(opts.max_num_seqs);
            let report = apply_self_check(&engine, wanted).await?;
            println!(
                "self-check: {}/{} concurrent answers equal one-at-a-time answers",
                report.matching, report.prompts
            );
        }
        let shutdown = common::worker::shutdown_on_signals();
        let config = cli.worker.worker_config(engine.concurrency());
        worker_infer::run(queue, engine, config, shutdown).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", common::config::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
