//! `--tensor-parallel-size N`: one worker spreading one model over N GPUs of its node with
//! mistral.rs's NCCL tensor parallelism (build with `--features "cuda nccl"`).
//!
//! How mistral.rs 0.8.1 does it shapes this module (read in its source, `mistralrs-core`
//! `distributed.rs` and `pipeline/normal.rs`): in an NCCL build it is on unless
//! `MISTRALRS_NO_NCCL=1`, its world size is `MISTRALRS_MN_LOCAL_WORLD_SIZE` or else every
//! visible GPU, and the model build re-executes the current binary, with the same arguments,
//! once per extra rank (`__MISTRALRS_DAEMON_INTERNAL` set in its environment); each child
//! loads its slice of the model and serves the parent over a local socket, never returning.
//! So:
//! - the default (N = 1) sets `MISTRALRS_NO_NCCL=1`, so a one-GPU worker on an 8-GPU node does
//!   not silently take all eight, and `CUDA_VISIBLE_DEVICES=0` when no card was chosen (an NCCL
//!   build with two GPUs visible failed every step at N = 1, see [`prepare`]);
//! - N > 1 sets the world size, and the parent and its rank children run the same argv: a
//!   child must only load the model ([`is_rank_child`]) and never touch Redis, the metrics
//!   port or the queue;
//! - all of this happens before any thread starts, since it sets environment variables.
//!
//! The ranks are CUDA ordinals 0..N-1 (choose the cards with `CUDA_VISIBLE_DEVICES`); N must
//! be a power of two; GGUF models have no tensor-parallel path in 0.8.1; mistral.rs uses a
//! fixed socket name, so run one tensor-parallel worker per node.

use std::path::Path;

/// Set by mistral.rs in the environment of the processes it starts for the other ranks.
pub const RANK_CHILD_ENV: &str = "__MISTRALRS_DAEMON_INTERNAL";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorParallelError {
    #[error("--tensor-parallel-size {0}: this conftag-infer was built without NCCL; rebuild with `--features \"cuda nccl\"` (docs/gpu.md), or run one worker per GPU (the default way to use several GPUs)")]
    NotBuilt(usize),
    #[error("--tensor-parallel-size {0}: must be a power of two (mistral.rs splits heads evenly)")]
    NotPowerOfTwo(usize),
    #[error("--tensor-parallel-size {size}: {weights} is a GGUF file, which mistral.rs 0.8.1 cannot split across GPUs; use safetensors weights (a directory or hub id)")]
    Gguf { size: usize, weights: String },
}

/// Whether this process is a rank child that mistral.rs started: it must only load the model.
pub fn is_rank_child() -> bool {
    std::env::var_os(RANK_CHILD_ENV).is_some()
}

/// In a rank child: get SIGKILL when the worker that started it dies. mistral.rs's rank
/// children spin in a loop forever once built, so without this every stopped or killed
/// tensor-parallel worker would leave N-1 processes holding GPUs.
pub fn die_with_parent() {
    use rustix::process::{set_parent_process_death_signal, Signal};
    if let Err(e) = set_parent_process_death_signal(Some(Signal::KILL)) {
        tracing::warn!(error = %e, "cannot tie this tensor-parallel rank to its parent's life");
    }
}

/// Check the request and set the environment mistral.rs reads. Call before any thread starts.
pub fn prepare(size: usize, weights: &str) -> Result<(), TensorParallelError> {
    let size = size.max(1);
    if size > 1 {
        if !cfg!(feature = "nccl") {
            return Err(TensorParallelError::NotBuilt(size));
        }
        if !size.is_power_of_two() {
            return Err(TensorParallelError::NotPowerOfTwo(size));
        }
        let path = Path::new(weights);
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Err(TensorParallelError::Gguf {
                size,
                weights: weights.to_owned(),
            });
        }
        std::env::set_var("MISTRALRS_MN_LOCAL_WORLD_SIZE", size.to_string());
        std::env::remove_var("MISTRALRS_NO_NCCL");
    } else if cfg!(feature = "nccl") && !is_rank_child() {
        std::env::set_var("MISTRALRS_NO_NCCL", "1");
        // Measured on two H100s: an NCCL build with both GPUs visible failed every decode
        // step (CUBLAS_STATUS_EXECUTION_FAILED) at size 1, MISTRALRS_NO_NCCL=1 and a
        // single-device map notwithstanding; with one GPU visible it ran. So a size-1 worker
        // that was not given a card takes the first.
        if std::env::var_os("CUDA_VISIBLE_DEVICES").is_none() {
            std::env::set_var("CUDA_VISIBLE_DEVICES", "0");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_above_one_need_an_nccl_build_and_a_power_of_two() {
        if cfg!(feature = "nccl") {
            assert_eq!(prepare(3, "m"), Err(TensorParallelError::NotPowerOfTwo(3)));
        } else {
            let e = prepare(2, "m").unwrap_err();
            assert_eq!(e, TensorParallelError::NotBuilt(2));
            assert!(e.to_string().contains("nccl"), "{e}");
        }
        assert_eq!(prepare(1, "m"), Ok(()));
    }
}
