#![doc = include_str!("../README.md")]

mod bench;
pub mod cli;
mod commands;
mod fleet;
pub mod monitor;
pub mod report;
pub mod view;

pub use commands::{run, CommandError};
