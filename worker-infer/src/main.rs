use std::process::ExitCode;

use clap::Parser;
use worker_infer::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::config::init_tracing(cli.common.log_format);
    common::exit::report(cli.run_blocking())
}
