use std::process::ExitCode;

use clap::Parser;
use coordinator::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    common::exit::report(cli.run().await)
}
