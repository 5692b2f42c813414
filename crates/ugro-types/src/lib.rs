#![doc = include_str!("../SCHEMA.md")]
//!
//! # Crate layout
//!
//! [`record`] holds the common header, the record kinds and the `error` and `stats` records;
//! [`sample`], [`score`], [`breaker`] and [`alert`] the owned record types that tools write;
//! [`reason`] the reason codes scores carry;
//! [`view`] the typed, borrowed views readers parse lines into; [`io`] the line reader and
//! record writer, [`stage`] the filter runner they share, [`exit`]
//! the status table and [`time`] timestamps. The CLI edge, YAML configuration and state files
//! are not part of the contract: they live in `ugro-support`.

pub mod alert;
pub mod breaker;
pub mod exit;
pub mod io;
pub mod limits;
pub mod reason;
pub mod record;
pub mod sample;
pub mod score;
pub mod stage;
pub mod time;
pub mod view;

pub use alert::{Alert, AlertStatus, LabelSet, Severity, fingerprint, fingerprint_hex};
pub use breaker::{BreakerAnnotation, BreakerState, Fleet, Transition};
pub use exit::{Exit, PluginStatus, ToolError};
pub use reason::{ReasonCode, ReasonFamily};
pub use record::{
    ErrorRecord, Header, Kind, RecordError, SCHEMA_VERSION, Stats, check_header, parse_header,
    validate_node,
};
pub use sample::*;
pub use score::{Action, Component, Components, GpuScore, HealthState, Reason, Score};
pub use time::{SkewError, SkewGuard, Timestamp};

/// The markdown this crate's documentation and `ugro(7)` are made from.
pub const SCHEMA_DOC: &str = include_str!("../SCHEMA.md");
