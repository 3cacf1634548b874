use std::process::ExitCode;

use clap::Parser;
use coordinator::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    match coordinator::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", common::config::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
