//! `stats` and `error` records.

use serde::{Deserialize, Serialize};

use crate::{Kind, Timestamp};

/// An in-band error: something a tool could not do for one node or one line, reported as a
/// record so that a downstream stage (or a log collector) sees it next to the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Schema version.
    pub v: u32,
    /// Always [`Kind::Error`].
    pub kind: Kind,
    /// When.
    pub ts: Timestamp,
    /// The node concerned, `*` when none.
    pub node: String,
    /// The tool that reports it.
    pub tool: String,
    /// Input line number, where it is about a line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// What went wrong.
    pub cause: String,
}

/// Counters from a long-running tool. Fields beyond the header are tool-specific and
/// documented in that tool's man page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Schema version.
    pub v: u32,
    /// Always [`Kind::Stats`].
    pub kind: Kind,
    /// When.
    pub ts: Timestamp,
    /// The reporting host or `*`.
    pub node: String,
    /// The tool.
    pub tool: String,
    /// Counters.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}
