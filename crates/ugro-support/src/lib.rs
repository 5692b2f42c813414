//! The plumbing every ugro binary shares that is not part of the line contract: the binary edge
//! ([`cli`]: argument parsing with the usage status, tracing to stderr, error reporting), YAML
//! configuration files with errors that name the file, line and field ([`config`]), and state
//! files that survive between runs ([`state`]: versioned, locked, written atomically, in a
//! private directory), and `--output` files replaced whole for other readers ([`output`]),
//! the operator journal beside a state file ([`journal`]) and argv templates ([`template`]).
//!
//! The contract itself (record types, views, the line reader and writer, exit statuses, the
//! stage runner) is in `ugro-types`, which tools that only read or write records can use alone.

pub mod cli;
pub mod config;
pub mod journal;
pub mod output;
pub mod state;
pub mod template;
