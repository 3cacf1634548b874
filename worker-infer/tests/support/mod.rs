//! Helpers shared by this crate's pipeline tests (`e2e`, `chaos`): the sample rows, `conftag`
//! commands run in-process, `conftag-infer` processes on the tiny model, and a TCP proxy that
//! can cut workers off from Redis.

// Each test target compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

/// A file of `data/samples/`.
pub fn samples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/samples")
        .join(name)
}

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
