#![doc = include_str!("../README.md")]

mod bench;
pub mod cli;
mod commands;
mod error;
mod fleet;
pub mod monitor;
pub mod report;
pub mod view;

pub use commands::run;
pub use error::CommandError;

impl cli::Cli {
    /// Run one `conftag` command.
    pub async fn run(self) -> anyhow::Result<()> {
        commands::run(self).await.map_err(CommandError::into_anyhow)
    }
}
