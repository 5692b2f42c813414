//! ugro-watch (being written).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ugro_types::Exit;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "ugro-watch", version, about = "ugro-watch")]
pub struct Cli {}

/// The clap command, for man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

impl ugro_types::cli::ToolError for Error {
    fn exit(&self) -> Exit {
        Exit::Software
    }
}

/// Runs the tool.
pub fn run(_cli: Cli) -> Result<ExitCode, Error> {
    Ok(Exit::Unavailable.into())
}
