#![doc = include_str!("../SCHEMA.md")]
//!
//! # Crate layout
//!
//! [`record`] holds the common header, [`sample`], [`score`], [`breaker`], [`alert`] and
//! [`misc`] the record kinds, [`io`] the line reader and record writer, [`exit`] the status
//! table, [`cli`] the binary edge, [`config`] YAML loading and [`state`] state files.

pub mod alert;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod exit;
pub mod io;
pub mod misc;
pub mod record;
pub mod sample;
pub mod score;
pub mod stage;
pub mod state;
pub mod time;

pub use alert::{Alert, AlertStatus, LabelSet, Severity, fingerprint, fingerprint_hex};
pub use breaker::{BreakerAnnotation, BreakerState, Fleet, Transition};
pub use exit::{Exit, PluginStatus};
pub use misc::{ErrorRecord, Stats};
pub use record::{Header, Kind, RecordError, SCHEMA_VERSION, parse_header, validate_node};
pub use sample::*;
pub use score::{Action, Component, Components, GpuScore, HealthState, Reason, Score};
pub use time::Timestamp;

/// The markdown this crate's documentation and `ugro(7)` are made from.
pub const SCHEMA_DOC: &str = include_str!("../SCHEMA.md");
