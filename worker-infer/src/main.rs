use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use common::queue::Queue;
use worker_infer::cli::{Cli, Command};
use worker_infer::engine::{apply_self_check, MistralEngine};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    let result: anyhow::Result<()> = async {
        if let Some(Command::TinyModel { dir, seed }) = &cli.command {
            worker_infer::tiny_model::write_tiny_model(dir, Default::default(), *seed)?;
            println!("wrote the tiny model to {}", dir.display());
            return Ok(());
        }
        // Connect first: a wrong Redis URL should not cost a model load.
        let queue = Queue::connect(&cli.common.redis_url()).await?;
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
        worker_infer::run(queue, engine, cli.worker.worker_config(), shutdown).await?;
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
