use std::process::ExitCode;

use clap::Parser;
use worker_judge::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    let result = cli.run().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", common::config::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
