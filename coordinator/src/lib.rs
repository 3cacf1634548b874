#![doc = include_str!("../README.md")]

mod bench;
pub mod cli;
mod commands;
mod view;

pub use commands::{run, CommandError};
