//! One table of exit statuses for every ugro tool (BSD `sysexits.h` values), plus the
//! Monitoring Plugins codes that check modes use.

use std::process::ExitCode;

/// Exit statuses shared by all tools. The numbers are `sysexits.h`'s, so shell scripts and
/// supervisors that already understand them need nothing new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Exit {
    /// Everything went through.
    Ok = 0,
    /// The command line was wrong.
    Usage = 64,
    /// At least one input line was rejected (the good ones still went through).
    DataErr = 65,
    /// An input file does not exist or cannot be opened.
    NoInput = 66,
    /// A program or library the tool needs is not available.
    Unavailable = 69,
    /// A bug: an internal invariant did not hold.
    Software = 70,
    /// Reading or writing failed.
    IoErr = 74,
    /// A temporary failure: trying again later may succeed.
    TempFail = 75,
    /// A configuration file or flag value is invalid.
    Config = 78,
}

impl Exit {
    /// Every status, in numeric order (the EXIT STATUS table of each man page).
    pub const ALL: [Exit; 9] = [
        Exit::Ok,
        Exit::Usage,
        Exit::DataErr,
        Exit::NoInput,
        Exit::Unavailable,
        Exit::Software,
        Exit::IoErr,
        Exit::TempFail,
        Exit::Config,
    ];

    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the status means, in one sentence (the man pages print this table).
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "Everything went through.",
            Exit::Usage => "The command line was wrong.",
            Exit::DataErr => {
                "At least one input line was rejected (the good ones still went through)."
            }
            Exit::NoInput => "An input file does not exist or cannot be opened.",
            Exit::Unavailable => "A program or library the tool needs is not available.",
            Exit::Software => "A bug: an internal invariant did not hold.",
            Exit::IoErr => "Reading or writing failed.",
            Exit::TempFail => "A temporary failure: trying again later may succeed.",
            Exit::Config => "A configuration file or flag value is invalid.",
        }
    }
}

/// An error that knows its exit status. Every tool library's error type implements it, so one
/// `main` (`ugro_support::cli::main`) turns any of them into a message and a status.
pub trait ToolError: std::error::Error {
    /// The exit status for this error. [`Exit::Ok`] means "stop quietly" (closed stdout).
    fn exit(&self) -> Exit;
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e.code())
    }
}

/// Monitoring Plugins (Nagios) statuses used by `--format nagios` and check modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum PluginStatus {
    /// OK.
    Ok = 0,
    /// WARNING.
    Warning = 1,
    /// CRITICAL.
    Critical = 2,
    /// UNKNOWN.
    Unknown = 3,
}

impl PluginStatus {
    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The word the guidelines put first in the status line.
    pub fn label(self) -> &'static str {
        match self {
            PluginStatus::Ok => "OK",
            PluginStatus::Warning => "WARNING",
            PluginStatus::Critical => "CRITICAL",
            PluginStatus::Unknown => "UNKNOWN",
        }
    }
}

impl From<PluginStatus> for ExitCode {
    fn from(s: PluginStatus) -> Self {
        ExitCode::from(s.code())
    }
}
