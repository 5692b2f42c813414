//! The binary edge shared by every tool: argument parsing with the usage status, tracing to
//! stderr, and turning a library error into a message and an exit status.

use std::fmt::Display;
use std::process::ExitCode;

use clap::Parser;

use ugro_types::{Exit, ToolError};

/// Parses the command line; help and version print and succeed, anything else is a usage
/// error (status 64, not clap's default 2, so one table holds for every tool).
pub fn parse_args<C: Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            Exit::Usage.into()
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Sends `tracing` output to stderr (stdout carries data). The filter comes from `UGRO_LOG`
/// (`RUST_LOG` syntax), default `warn`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("UGRO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Everything a tool's `main` does: parse, set up tracing, run, report.
pub fn main<C, E, F>(tool: &str, run: F) -> ExitCode
where
    C: Parser,
    E: ToolError,
    F: FnOnce(C) -> Result<ExitCode, E>,
{
    let cli = match parse_args::<C>() {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(e) => report(tool, &e),
    }
}

/// Prints `tool: error: cause: cause…` on stderr and returns the error's status.
pub fn report<E: ToolError>(tool: &str, e: &E) -> ExitCode {
    let exit = e.exit();
    if exit != Exit::Ok {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            let s_text = s.to_string();
            if !msg.contains(&s_text) {
                msg.push_str(": ");
                msg.push_str(&s_text);
            }
            src = s.source();
        }
        eprintln_quiet(tool, &msg);
    }
    exit.into()
}

fn eprintln_quiet(tool: &str, msg: &dyn Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{tool}: {msg}");
}

/// A clap value parser for humantime durations (`5m`, `30s`, `1h 30m`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))
}
