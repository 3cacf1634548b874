//! Exit codes, the same for every conftag binary, so that a script or a supervisor can tell a
//! mistake (fix the command, do not retry) from an outage (retry later) from a worker that
//! stopped itself (fix credentials or quota):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (the message says which) |
//! | 2 | bad usage, input or configuration: a flag, a file, a row or a field, a Redis URL or password that Redis refuses (clap's own errors are 2 too) |
//! | 3 | Redis unreachable (down, restarting, cut off) |
//! | 4 | a worker stopped on a fatal cause (bad credentials, spent quota) |
//!
//! The code is read off the error's source chain, so a binary only has to keep sources
//! (`#[source]`, `anyhow::Context`) for its errors to be classified.

use std::process::ExitCode;

use crate::dataset::DatasetError;
use crate::dataset_spec::SpecError;
use crate::queue::conn::ConnectError;
use crate::queue::QueueError;
use crate::worker::WorkerError;

/// What kind of failure ended a run; the discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitKind {
    Failure = 1,
    Usage = 2,
    Unreachable = 3,
    Stopped = 4,
}

/// A usage mistake the binary found itself (a flag that makes no sense with another):
/// exits 2. The message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The kind of the first cause in `e`'s chain that has one.
pub fn classify(e: &anyhow::Error) -> ExitKind {
    for cause in e.chain() {
        if cause.is::<UsageError>() || cause.is::<DatasetError>() || cause.is::<SpecError>() {
            return ExitKind::Usage;
        }
        if cause.is::<WorkerError>() {
            return ExitKind::Stopped;
        }
        // `QueueError::Connect` is transparent: its chain skips the `ConnectError`.
        let connect = match cause.downcast_ref::<QueueError>() {
            Some(QueueError::Connect(c)) => Some(c),
            Some(q) if q.is_transient() => return ExitKind::Unreachable,
            _ => cause.downcast_ref::<ConnectError>(),
        };
        if let Some(c) = connect {
            return if c.is_transient() {
                ExitKind::Unreachable
            } else {
                ExitKind::Usage
            };
        }
    }
    ExitKind::Failure
}

/// Print a failed run's error with its causes (never a secret: errors carry redacted URLs)
/// and turn the result into the documented exit code.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::config::error_chain(e.as_ref()));
            ExitCode::from(classify(&e) as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_decide_the_code() {
        let usage = anyhow::Error::new(UsageError("--x needs --y".into())).context("submit");
        assert_eq!(classify(&usage), ExitKind::Usage);
        let stopped = anyhow::Error::new(WorkerError::Fatal(crate::failure::Failure::fatal("401")));
        assert_eq!(classify(&stopped), ExitKind::Stopped);
        let bad_url = anyhow::Error::new(QueueError::Connect(ConnectError::BadUrl {
            url: "redis://…".into(),
            detail: "no host".into(),
        }));
        assert_eq!(classify(&bad_url), ExitKind::Usage);
        let down = anyhow::Error::new(QueueError::Connect(ConnectError::Unreachable {
            url: "redis://127.0.0.1:1".into(),
            detail: "refused".into(),
        }));
        assert_eq!(classify(&down), ExitKind::Unreachable);
        assert_eq!(classify(&anyhow::anyhow!("other")), ExitKind::Failure);
    }
}
