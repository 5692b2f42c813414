//! Alert records, in Alertmanager's shape and with its fingerprint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Kind, Timestamp};

/// Label name → value, sorted by name (the order Alertmanager hashes them in).
pub type LabelSet = BTreeMap<String, String>;

/// Whether an alert is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// The condition holds.
    Firing,
    /// The condition cleared.
    Resolved,
}

impl AlertStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Severity, the `severity` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational: recoveries, breaker transitions.
    Info,
    /// Degraded.
    Warning,
    /// Critical.
    Critical,
}

impl Severity {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert notification as `ugro-alert` writes it to stdout. The Alertmanager fields keep
/// Alertmanager's names (`startsAt`, `generatorURL`) so the same `jq` filters work on both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Schema version.
    pub v: u32,
    /// Always [`Kind::Alert`].
    pub kind: Kind,
    /// When this notification was produced.
    pub ts: Timestamp,
    /// The node label, or `*` for fleet alerts.
    pub node: String,
    /// Alertmanager fingerprint of `labels` (16 hex digits).
    pub fingerprint: String,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Identity.
    pub labels: LabelSet,
    /// Summary, description, recommended action, runbook URL.
    pub annotations: BTreeMap<String, String>,
    /// When the condition began.
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    /// When it ended (resolved), or when it will be considered ended if not re-sent (firing).
    #[serde(rename = "endsAt", default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// A link back to the source.
    #[serde(
        rename = "generatorURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub generator_url: Option<String>,
    /// The routing-tree receiver this notification was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<String>,
    /// The group key (group_by label values).
    #[serde(rename = "groupKey", default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
}

// Alertmanager's fingerprint is prometheus/common's model.LabelSet.Fingerprint: FNV-1a 64 over
// name, 0xff, value, 0xff for each label in name order.
const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 0xff;

fn fnv_add(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The fingerprint Alertmanager computes for a label set.
pub fn fingerprint(labels: &LabelSet) -> u64 {
    labels.iter().fold(FNV_OFFSET, |h, (k, v)| {
        let h = fnv_add(h, k.as_bytes());
        let h = fnv_add(h, &[SEPARATOR]);
        let h = fnv_add(h, v.as_bytes());
        fnv_add(h, &[SEPARATOR])
    })
}

/// The fingerprint as Alertmanager prints it: 16 lower-case hex digits.
pub fn fingerprint_hex(labels: &LabelSet) -> String {
    format!("{:016x}", fingerprint(labels))
}

impl Alert {
    /// A new alert record; the fingerprint is computed from `labels`.
    pub fn new(ts: Timestamp, status: AlertStatus, labels: LabelSet, starts_at: Timestamp) -> Self {
        let node = labels.get("node").cloned().unwrap_or_else(|| "*".into());
        Alert {
            v: crate::SCHEMA_VERSION,
            kind: Kind::Alert,
            ts,
            node,
            fingerprint: fingerprint_hex(&labels),
            status,
            labels,
            annotations: BTreeMap::new(),
            starts_at,
            ends_at: None,
            generator_url: None,
            receiver: None,
            group_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> LabelSet {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn empty_label_set_hashes_to_the_fnv_offset() {
        assert_eq!(fingerprint(&LabelSet::new()), FNV_OFFSET);
    }

    #[test]
    fn fingerprint_matches_prometheus_common_reference_values() {
        // Values from prometheus/common model/signature_test.go (TestLabelsToSignature).
        assert_eq!(
            fingerprint(&ls(&[
                ("name", "garland, briggs"),
                ("fear", "love is not enough")
            ])),
            5_799_056_148_416_392_346
        );
    }

    #[test]
    fn fingerprint_is_independent_of_insertion_order() {
        let a = ls(&[("alertname", "X"), ("node", "n1")]);
        let b = ls(&[("node", "n1"), ("alertname", "X")]);
        assert_eq!(fingerprint_hex(&a), fingerprint_hex(&b));
        assert_eq!(fingerprint_hex(&a).len(), 16);
    }
}
