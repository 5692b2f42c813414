//! The fields every record carries, the record kinds, and the two records any tool may
//! write (`error`, `stats`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The schema version this build writes. Readers accept records whose `v` is at most this;
/// a newer `v` is rejected line by line so that a mixed-version fleet fails loudly, not wrongly.
pub const SCHEMA_VERSION: u32 = 1;

/// What a record is. Names are exact and lower case; any other name reads as [`Kind::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One node's metrics, from `ugro-probe`; scored samples carry a `score` object too.
    Sample,
    /// A circuit-breaker state change, from `ugro-breaker`.
    Transition,
    /// A fleet-wide observation from `ugro-breaker`'s fleet guard.
    Fleet,
    /// An alert notification, from `ugro-alert`.
    Alert,
    /// Periodic counters from a long-running tool.
    Stats,
    /// A problem a tool reports in-band (for example a node that could not be polled).
    Error,
    /// Time passing and nothing else: the shared run loop runs each stage's timers to its
    /// `ts` (see "Time" in ugro(7)). ugro-watch writes one every second.
    Tick,
    /// Any kind this build does not know (a typo such as `Sample`, or a site's own kind):
    /// rejected as a bad line by the shared run loop unless `--pass-unknown-kinds` is given,
    /// then passed through.
    #[serde(other)]
    Other,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sample => "sample",
            Kind::Transition => "transition",
            Kind::Fleet => "fleet",
            Kind::Alert => "alert",
            Kind::Stats => "stats",
            Kind::Error => "error",
            Kind::Tick => "tick",
            Kind::Other => "other",
        }
    }
}

/// The four fields every record starts with. Deserialising only these skips the rest of the
/// line cheaply, which is how pass-through tools stay fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Schema version.
    pub v: u32,
    /// Record kind.
    pub kind: Kind,
    /// When the record's observation was made.
    pub ts: Timestamp,
    /// The node the record is about (`*` or the cluster name for fleet-wide records).
    #[serde(borrow)]
    pub node: Cow<'a, str>,
}

/// Why a line is not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Not JSON, or a required field is missing or of the wrong type.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The record is from a newer schema than this build understands.
    #[error("schema version {found} is newer than this build's {SCHEMA_VERSION}")]
    FutureVersion {
        /// The `v` found.
        found: u32,
    },
    /// A node name that is empty or could be mistaken for an option or a path.
    #[error("invalid node name {0:?}: {1}")]
    BadNode(String, &'static str),
}

impl Header<'_> {
    /// Checks the version and the node name ([`check_header`]).
    pub fn validate(&self) -> Result<(), RecordError> {
        check_header(self.v, &self.node)
    }
}

/// The one header check every reader applies, whatever view it reads a line into: a schema
/// version this build understands, and a node name that is safe to use ([`validate_node`]).
pub fn check_header(v: u32, node: &str) -> Result<(), RecordError> {
    if v > SCHEMA_VERSION {
        return Err(RecordError::FutureVersion { found: v });
    }
    validate_node(node)
}

/// Parses and validates the header of one line.
pub fn parse_header(line: &str) -> Result<Header<'_>, RecordError> {
    let mut de = serde_json::Deserializer::from_str(line);
    let h = Header::deserialize(crate::view::unique::UniqueKeys(&mut de))?;
    de.end()?;
    h.validate()?;
    Ok(h)
}

/// Node names travel into labels, file names, ssh arguments and scontrol arguments, so they are
/// restricted to what a host name or a Slurm node name can be: letters, digits, `.`, `-`, `_`,
/// `:` and `@`, not starting with `-` or `.`, at most 253 bytes. `*` alone names the whole fleet.
pub fn validate_node(node: &str) -> Result<(), RecordError> {
    let bad = |why| Err(RecordError::BadNode(node.to_owned(), why));
    if node == "*" {
        return Ok(());
    }
    if node.is_empty() {
        return bad("empty");
    }
    if node.len() > 253 {
        return bad("longer than 253 bytes");
    }
    if node.starts_with('-') || node.starts_with('.') {
        return bad("starts with '-' or '.'");
    }
    if !node
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'@'))
    {
        return bad("only letters, digits and . - _ : @ are allowed");
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parses_and_ignores_other_fields() {
        let h = parse_header(
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00.000Z","node":"gpu-01","x":{"y":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(h.kind, Kind::Sample);
        assert_eq!(h.node, "gpu-01");
    }

    #[test]
    fn unknown_kind_is_other_not_an_error() {
        let h = parse_header(r#"{"v":1,"kind":"custom","ts":"2026-11-28T00:00:00Z","node":"n"}"#)
            .unwrap();
        assert_eq!(h.kind, Kind::Other);
    }

    #[test]
    fn a_repeated_member_is_refused() {
        for line in [
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"a","node":"b"}"#,
            r#"{"v":1,"kind":"sample","k\u0069nd":"tick","ts":"2026-11-28T00:00:00Z","node":"a"}"#,
        ] {
            let e = parse_header(line).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{line}: {e}");
        }
    }

    #[test]
    fn newer_schema_is_rejected() {
        let e = parse_header(r#"{"v":9,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#)
            .unwrap_err();
        assert!(matches!(e, RecordError::FutureVersion { found: 9 }));
    }

    #[test]
    fn hostile_node_names_are_rejected() {
        for n in ["$(touch /tmp/x);x", "-rf", "", "a b", "../etc", "x\ny"] {
            assert!(validate_node(n).is_err(), "{n:?} accepted");
        }
        for n in ["gpu-01", "node7.cluster.local", "a_b", "*", "10.0.0.1:22"] {
            assert!(validate_node(n).is_ok(), "{n:?} refused");
        }
    }
}
