//! The one failure type of a row, a call or a shard attempt, sorted by what the caller should
//! do about it (record it on the row, retry later, fail the shard, stop the worker, pause the
//! job, let go of the shard).
//!
//! It exists so that every layer (the OpenAI-compatible client, the engines, the judge, the
//! worker runtime) speaks the same language instead of translating between parallel enums, and
//! so that the cause of a failure travels as a [`source`](std::error::Error::source) instead of
//! being flattened into a string: `Display` is the short context only, [`Failure::report`]
//! (like `anyhow`'s `{:#}`) shows the whole chain where it is recorded (on a row, in the shard's
//! last error, in the worker's stopped state).

use std::error::Error as StdError;
use std::time::Duration;

use crate::queue::QueueError;

/// Any error as the cause of a failure.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a row, a call or a shard attempt did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// This row cannot be done (rejected input, refusal, unusable answers): recorded on the row;
    /// retrying the shard will not help. Reaching the worker runtime, it fails the attempt like
    /// a transient failure.
    #[error("{context}")]
    Row {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Worth another attempt: after the usual backoff, and after at least `retry_after` when
    /// the server asked for it (a rate limit's `retry-after`).
    #[error("{context}")]
    Transient {
        context: String,
        retry_after: Option<Duration>,
        #[source]
        source: Option<BoxError>,
    },
    /// Retrying cannot help: the shard fails now.
    #[error("{context}")]
    Permanent {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// This worker cannot go on (bad credentials, quota spent, a server that does not speak
    /// the API): the shard is released untouched and the worker stops.
    #[error("{context}")]
    Fatal {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The job must wait (its judge budget is spent): the shard is released untouched and the
    /// job's judging paused until an operator changes its judge settings.
    #[error("{context}")]
    Paused {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The work was cancelled (lease lost, job cancelled, drain deadline): the shard is
    /// released without spending an attempt.
    #[error("{context}")]
    Cancelled {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Redis could not be read or written.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What kind of failure, without its text (metrics labels, ranking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    Row,
    Transient,
    Permanent,
    Fatal,
    Paused,
    Cancelled,
    Queue,
}

impl Failure {
    pub fn row(context: impl Into<String>) -> Self {
        Self::Row {
            context: context.into(),
            source: None,
        }
    }

    pub fn transient(context: impl Into<String>) -> Self {
        Self::Transient {
            context: context.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Transient, to be retried after at least `retry_after` when it is known.
    pub fn transient_after(context: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::Transient {
            context: context.into(),
            retry_after,
            source: None,
        }
    }

    pub fn permanent(context: impl Into<String>) -> Self {
        Self::Permanent {
            context: context.into(),
            source: None,
        }
    }

    pub fn fatal(context: impl Into<String>) -> Self {
        Self::Fatal {
            context: context.into(),
            source: None,
        }
    }

    pub fn paused(context: impl Into<String>) -> Self {
        Self::Paused {
            context: context.into(),
            source: None,
        }
    }

    pub fn cancelled() -> Self {
        Self::Cancelled {
            context: "cancelled".into(),
            source: None,
        }
    }

    /// The same failure, caused by `source` (kept as [`std::error::Error::source`]). A queue
    /// failure keeps its own cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        if let Some(slot) = self.source_slot() {
            *slot = Some(source.into());
        }
        self
    }

    fn source_slot(&mut self) -> Option<&mut Option<BoxError>> {
        match self {
            Self::Row { source, .. }
            | Self::Transient { source, .. }
            | Self::Permanent { source, .. }
            | Self::Fatal { source, .. }
            | Self::Paused { source, .. }
            | Self::Cancelled { source, .. } => Some(source),
            Self::Queue(_) => None,
        }
    }

    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Row { .. } => FailureKind::Row,
            Self::Transient { .. } => FailureKind::Transient,
            Self::Permanent { .. } => FailureKind::Permanent,
            Self::Fatal { .. } => FailureKind::Fatal,
            Self::Paused { .. } => FailureKind::Paused,
            Self::Cancelled { .. } => FailureKind::Cancelled,
            Self::Queue(_) => FailureKind::Queue,
        }
    }

    /// The least wait the failure asks for before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A failure of one row that fails the whole shard attempt instead (a call whose row is
    /// not the unit: a batch upload, a spend check): a row failure becomes transient, others
    /// stay what they are.
    pub fn for_the_shard(self) -> Self {
        match self {
            Self::Row { context, source } => Self::Transient {
                context,
                retry_after: None,
                source,
            },
            other => other,
        }
    }

    /// The failure with its whole cause chain on one line, `context: cause: cause`, as
    /// recorded on rows and shards. Causes that print their own cause in their message (errors
    /// of other crates do) are not repeated.
    pub fn report(&self) -> String {
        chain(self, ": ")
    }
}

/// `e` and its sources joined by `separator`, skipping a cause whose text is already shown
/// (some errors, like `redis command failed: {0}`, print their source in their own message).
pub fn chain(e: &(dyn StdError + 'static), separator: &str) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(separator);
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_a_source_and_the_report_shows_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let f = Failure::transient("judge API request failed: connection failed").with_source(io);
        assert_eq!(f.to_string(), "judge API request failed: connection failed");
        assert_eq!(
            f.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        let outer =
            Failure::transient_after("gave up after 3 attempts", Some(Duration::from_secs(2)))
                .with_source(f);
        assert_eq!(
            outer.report(),
            "gave up after 3 attempts: judge API request failed: connection failed: refused"
        );
        assert_eq!(outer.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(outer.kind(), FailureKind::Transient);
    }

    #[test]
    fn a_row_failure_fails_the_shard_as_transient() {
        let f = Failure::row("batch API rejected the request").for_the_shard();
        assert_eq!(f.kind(), FailureKind::Transient);
        assert_eq!(
            Failure::fatal("x").for_the_shard().kind(),
            FailureKind::Fatal
        );
    }
}
