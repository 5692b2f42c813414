//! An `alert` record, borrowed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use super::Text;
use crate::record::{RecordError, check_header};
use crate::{AlertStatus, Kind, Timestamp};

/// An alert record as `ugro-alert` writes it (the owned form is [`crate::Alert`]), with
/// Alertmanager's field names on the wire.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlertView<'a> {
    /// Schema version.
    pub v: u32,
    /// [`Kind::Alert`] for an alert record.
    pub kind: Kind,
    /// When this notification was produced.
    pub ts: Timestamp,
    /// The node label, or `*` for fleet alerts.
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    /// Alertmanager fingerprint of `labels`.
    #[serde(borrow)]
    pub fingerprint: Cow<'a, str>,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Identity (`alertname`, `node`, `severity`, `gpu`…).
    #[serde(default, borrow)]
    pub labels: BTreeMap<Text<'a>, Text<'a>>,
    /// Summary, description, action, runbook URL.
    #[serde(default, borrow)]
    pub annotations: BTreeMap<Text<'a>, Text<'a>>,
    /// When the condition began.
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    /// When it ended (resolved), or when it will be considered ended (firing).
    #[serde(rename = "endsAt", default)]
    pub ends_at: Option<Timestamp>,
    /// A link back to the source.
    #[serde(rename = "generatorURL", default, borrow)]
    pub generator_url: Option<Text<'a>>,
    /// The routing-tree receiver this notification was for.
    #[serde(default, borrow)]
    pub receiver: Option<Text<'a>>,
    /// The group key.
    #[serde(rename = "groupKey", default, borrow)]
    pub group_key: Option<Text<'a>>,
}

impl<'a> AlertView<'a> {
    /// Parses one line and checks its header.
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        let a: AlertView<'a> = serde_json::from_str(line)?;
        check_header(a.v, &a.node)?;
        Ok(a)
    }

    /// A label's value.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(|t| &**t)
    }

    /// The `alertname` label.
    pub fn alertname(&self) -> Option<&str> {
        self.label("alertname")
    }
}
