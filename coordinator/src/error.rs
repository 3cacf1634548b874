//! The one error type of `conftag`'s commands. It lives apart from the commands so that the
//! modules the commands use (views, benches) can return it without importing the commands.

use common::dataset::DatasetError;
use common::dataset_spec::SpecError;
use common::export::ExportError;
use common::queue::QueueError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// A flag or argument that does not make sense; the message names it.
    #[error("{0}")]
    Usage(String),
}

impl CommandError {
    /// As an `anyhow` error whose chain keeps the cause for the exit code: a usage mistake
    /// exits 2 ([`common::exit`]).
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            CommandError::Usage(m) => anyhow::Error::new(common::exit::UsageError(m)),
            other => anyhow::Error::new(other),
        }
    }
}
