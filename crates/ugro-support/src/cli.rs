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

/// The environment variable that selects the log filter (`RUST_LOG` syntax, default `warn`).
pub const LOG_ENV: &str = "UGRO_LOG";
/// The environment variable that selects the log line format: `text` (default) or `json`.
pub const LOG_FORMAT_ENV: &str = "UGRO_LOG_FORMAT";

/// Sends `tracing` output to stderr (stdout carries data), each line tagged with `tool`. The
/// filter comes from `UGRO_LOG`, default `warn`. `UGRO_LOG_FORMAT=json` writes one JSON object
/// per event (`timestamp`, `level`, `tool`, `message`, fields), for journald and log shippers;
/// text lines are coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (no-color.org), so cron mail and journal files never get escape codes.
pub fn init_tracing(tool: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::format;
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let tool = tool.to_owned();
    let _ = if log_format_is_json() {
        let inner = format().json().flatten_event(true).with_current_span(false);
        builder
            .json()
            .event_format(Tagged {
                tool,
                json: true,
                inner: inner.with_target(false),
            })
            .try_init()
    } else {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let inner = format().with_target(false);
        builder
            .with_ansi(std::io::stderr().is_terminal() && !no_color)
            .event_format(Tagged {
                tool,
                json: false,
                inner,
            })
            .try_init()
    };
}

/// `UGRO_LOG_FORMAT`: `json`, or text for `text`, empty or unset. Any other value is reported
/// and read as text: a typo in a logging setting must not stop a health check.
fn log_format_is_json() -> bool {
    match std::env::var(LOG_FORMAT_ENV) {
        Ok(v) if v == "json" => true,
        Ok(v) if v.is_empty() || v == "text" => false,
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) => {
            let why = format!("unknown format {v:?} (text, json); writing text");
            eprintln_quiet(LOG_FORMAT_ENV, &why);
            false
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln_quiet(LOG_FORMAT_ENV, &"not UTF-8; writing text");
            false
        }
    }
}

/// An event format that names the tool: `tool: ` before a text line, a `tool` member first in
/// a JSON object. Several tools share one stderr in a pipeline (and one journal stream in a
/// unit), so an untagged line could come from any of them.
struct Tagged<F> {
    tool: String,
    json: bool,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Tagged<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if !self.json {
            write!(w, "{}: ", self.tool)?;
            return self.inner.format_event(ctx, w, event);
        }
        let mut line = String::new();
        let buf = tracing_subscriber::fmt::format::Writer::new(&mut line);
        self.inner.format_event(ctx, buf, event)?;
        let tool = serde_json::to_string(&self.tool).map_err(|_| std::fmt::Error)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(w, "{{\"tool\":{tool},{rest}"),
            None => w.write_str(&line),
        }
    }
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
    init_tracing(tool);
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

/// The flag every tool that reads records shares for kinds it does not know.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct KindsArg {
    /// Pass records of kinds this build does not know (a site's own kinds) through instead of
    /// rejecting them as bad lines. Without it a typo such as "Sample" or "sample " is a bad
    /// line (exit 65), never a sample that goes unscored and unalerted.
    #[arg(long)]
    pub pass_unknown_kinds: bool,
}

impl KindsArg {
    /// The run loop's options, with `strict` (`--strict`).
    pub fn options(self, strict: bool) -> ugro_types::stage::Options {
        ugro_types::stage::Options {
            strict,
            pass_unknown_kinds: self.pass_unknown_kinds,
        }
    }
}
