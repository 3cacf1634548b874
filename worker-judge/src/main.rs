use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use common::queue::Queue;
use worker_judge::cli::{Cli, Command};
use worker_judge::fake::{FakeConfig, FakeServer};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    let result: anyhow::Result<()> = async {
        if let Some(Command::ServeFake(a)) = &cli.command {
            let server = FakeServer::start(
                a.addr,
                FakeConfig {
                    latency: Duration::from_millis(a.latency_ms),
                    rate_limit: a.rate_limit,
                    rate_window: Duration::from_millis(a.rate_window_ms.max(1)),
                    api_key: a.require_key.clone(),
                    served_models: a.serve_models.clone(),
                    ..FakeConfig::default()
                },
            )
            .await?;
            tracing::info!(base_url = %server.base_url(), "fake OpenAI-compatible judge listening");
            let shutdown = common::worker::shutdown_on_signals();
            shutdown.cancelled().await;
            return Ok(());
        }
        if let Some(Command::Bench {
            rows,
            latency_ms,
            in_flight,
            rate_limit,
            window_ms,
        }) = &cli.command
        {
            let queue = Queue::connect(&cli.common.redis_url()).await?;
            return worker_judge::bench::run(
                &queue,
                *rows,
                *latency_ms,
                *in_flight,
                *rate_limit,
                *window_ms,
            )
            .await;
        }
        let processor = cli.worker.processor()?;
        cli.common.serve_metrics()?;
        let queue = Queue::connect(&cli.common.redis_url()).await?;
        let shutdown = common::worker::shutdown_on_signals();
        worker_judge::run(queue, processor, cli.worker.worker_config(), shutdown).await?;
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
