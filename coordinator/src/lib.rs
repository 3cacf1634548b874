#![doc = include_str!("../README.md")]

pub mod cli;
mod commands;
mod view;

pub use commands::{run, CommandError};
