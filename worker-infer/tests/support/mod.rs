//! Helpers shared by this crate's pipeline tests (`e2e`, `chaos`, `demo`): `conftag`
//! commands run in-process, `conftag-infer` processes on the tiny model, and a TCP proxy that
//! can cut workers off from Redis.

// Each test target compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

/// Run one `conftag` command in-process against `redis`.
pub async fn conftag(redis: &str, args: &[&str]) -> Result<(), coordinator::CommandError> {
    let mut argv = vec!["conftag", "--redis-url", redis];
    argv.extend_from_slice(args);
    coordinator::run(coordinator::cli::Cli::try_parse_from(argv).unwrap()).await
}

/// The `conftag-infer` to run: the one cargo built for this test, or `CONFTAG_INFER_BIN`
/// (a release build, an installed binary, or a copy kept safe from other builds sharing the
/// target directory).
pub fn infer_bin() -> PathBuf {
    std::env::var_os("CONFTAG_INFER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conftag-infer")))
}

/// A `conftag-infer` command serving the tiny model (`--model tiny`) on the CPU in f32, as
/// worker `id`; callers add lease, capacity and exit flags and spawn it.
pub fn infer_command(redis: &str, model_dir: &Path, hf_home: &Path, id: &str) -> Command {
    let mut cmd = Command::new(infer_bin());
    cmd.args(["--redis-url", redis, "--model", "tiny", "--weights"])
        .arg(model_dir)
        .args(["--dtype", "f32", "--device", "cpu", "--worker-id", id])
        .env("HF_HOME", hf_home)
        .env("RUST_LOG", "warn");
    cmd
}

/// First argument that makes a harness-less test binary act as `conftag-judge` instead.
pub const JUDGE_CHILD: &str = "__judge-worker";
/// First argument that makes a harness-less test binary act as `conftag` instead.
pub const CONFTAG_CHILD: &str = "__conftag";

/// The judge worker role: exactly what `conftag-judge ARGS…` runs. Cargo builds a package's
/// own binaries for its integration tests, not another package's, so a test that needs a
/// judge process re-executes itself in this role instead of trusting a `conftag-judge` left
/// in the target directory by an older build.
pub fn judge_worker(args: &[String]) -> std::process::ExitCode {
    let argv = std::iter::once("conftag-judge".to_owned()).chain(args.iter().cloned());
    let cli = worker_judge::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    common::config::init_tracing(cli.common.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    common::exit::report(runtime.block_on(cli.run()))
}

/// The `conftag` role, for the same reason.
pub fn conftag_command(args: &[String]) -> std::process::ExitCode {
    let argv = std::iter::once("conftag".to_owned()).chain(args.iter().cloned());
    let cli = coordinator::cli::Cli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    common::config::init_tracing(cli.common.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    common::exit::report(runtime.block_on(cli.run()))
}

/// Judge every inferred shard in-process (the code behind `conftag-judge`) until no job has
/// rows left to judge: by rules without a client, else through `client`.
pub async fn judge_all(
    queue: &common::queue::Queue,
    client: Option<worker_judge::openai::OpenAiClient>,
) {
    let processor = worker_judge::JudgeProcessor::new(client, 16, None, None, 0);
    let mut cfg = common::worker::WorkerConfig::new(common::queue::Stage::Judge);
    cfg.exit_when_done = true;
    cfg.idle_poll = std::time::Duration::from_millis(50);
    worker_judge::run(
        queue.clone(),
        processor,
        cfg,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
}
