//! What each receiver is sent: the Alertmanager webhook v4 payload, Slack messages,
//! Alertmanager's /api/v2/alerts body and the environment of exec receivers.

use serde_json::{Value, json};
use ugro_types::{Alert, AlertStatus, LabelSet};

use crate::engine::Notification;

/// Alertmanager's zero time, used as `endsAt` of firing alerts in webhook payloads.
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn common<'a>(
    maps: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
) -> LabelSet {
    let mut it = maps;
    let Some(first) = it.next() else {
        return LabelSet::new();
    };
    let mut c = first.clone();
    for m in it {
        c.retain(|k, v| m.get(k) == Some(v));
    }
    c
}

/// The Alertmanager webhook v4 payload.
pub fn webhook_payload(n: &Notification, external_url: &str, max_alerts: usize) -> Value {
    let total = n.alerts.len();
    let keep = if max_alerts == 0 {
        total
    } else {
        max_alerts.min(total)
    };
    let alerts: Vec<Value> = n.alerts[..keep]
        .iter()
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": a.starts_at.to_string(),
                "endsAt": a.ends_at.map_or_else(|| ZERO_TIME.to_owned(), |t| t.to_string()),
                "generatorURL": a.generator_url.clone().unwrap_or_default(),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": total - keep,
        "status": n.status().as_str(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(n.alerts.iter().map(|a| &a.labels)),
        "commonAnnotations": common(n.alerts.iter().map(|a| &a.annotations)),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// A Slack incoming-webhook message.
pub fn slack_payload(n: &Notification, channel: Option<&str>) -> Value {
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    let name = n
        .group_labels
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| n.group_key.clone());
    let head = if firing > 0 {
        format!("[FIRING:{firing}] {name}")
    } else {
        format!("[RESOLVED] {name}")
    };
    let mut lines = Vec::new();
    for a in n.alerts.iter().take(20) {
        let s = a.annotations.get("summary").map_or("", String::as_str);
        let act = a.annotations.get("action").map_or("none", String::as_str);
        lines.push(format!(
            "• {} {s} (action: {act})",
            if a.status == AlertStatus::Firing {
                "🔥"
            } else {
                "✅"
            }
        ));
    }
    if n.alerts.len() > 20 {
        lines.push(format!("… and {} more", n.alerts.len() - 20));
    }
    let text = format!("{head}\n{}", lines.join("\n"));
    let mut v = json!({
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head}},
            {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}},
        ],
    });
    if let (Some(c), Some(o)) = (channel, v.as_object_mut()) {
        o.insert("channel".into(), Value::String(c.to_owned()));
    }
    v
}

/// Alertmanager's POST /api/v2/alerts body.
pub fn am_payload(alerts: &[Alert]) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": a.starts_at.to_string(),
                    "endsAt": a.ends_at.map(|t| t.to_string()),
                    "generatorURL": a.generator_url.clone().unwrap_or_default(),
                })
            })
            .collect(),
    )
}

/// The `UGRO_ALERT_*` environment of an exec receiver.
pub fn exec_env(n: &Notification) -> Vec<(String, String)> {
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    let mut nodes: Vec<&str> = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("node").map(String::as_str))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut names: Vec<&str> = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("alertname").map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    vec![
        ("UGRO_ALERT_ID".into(), n.id.clone()),
        ("UGRO_ALERT_RECEIVER".into(), n.receiver.clone()),
        ("UGRO_ALERT_GROUP_KEY".into(), n.group_key.clone()),
        ("UGRO_ALERT_STATUS".into(), n.status().as_str().into()),
        ("UGRO_ALERT_COUNT".into(), n.alerts.len().to_string()),
        ("UGRO_ALERT_FIRING".into(), firing.to_string()),
        (
            "UGRO_ALERT_RESOLVED".into(),
            (n.alerts.len() - firing).to_string(),
        ),
        ("UGRO_ALERT_NODES".into(), nodes.join(",")),
        ("UGRO_ALERT_ALERTNAMES".into(), names.join(",")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(statuses: &[AlertStatus]) -> Notification {
        let alerts = statuses
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let labels: LabelSet = [
                    ("alertname".to_owned(), "NodeCritical".to_owned()),
                    ("node".to_owned(), format!("n{i}")),
                ]
                .into();
                let mut a = Alert::new(
                    ugro_types::Timestamp(0),
                    *st,
                    labels,
                    ugro_types::Timestamp(0),
                );
                a.annotations
                    .insert("summary".into(), format!("n{i} is critical"));
                a
            })
            .collect();
        Notification {
            id: "x".into(),
            receiver: "r".into(),
            group_key: "{}:{alertname=\"NodeCritical\"}".into(),
            group_labels: [("alertname".to_owned(), "NodeCritical".to_owned())].into(),
            alerts,
            ts: ugro_types::Timestamp(0),
        }
    }

    #[test]
    fn webhook_payload_truncates_and_computes_common_labels() {
        let n = notification(&[
            AlertStatus::Firing,
            AlertStatus::Resolved,
            AlertStatus::Firing,
        ]);
        let v = webhook_payload(&n, "http://x", 2);
        assert_eq!(v["version"], "4");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["commonLabels"],
            serde_json::json!({"alertname": "NodeCritical"})
        );
        assert_eq!(v["commonAnnotations"], serde_json::json!({}));
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
    }

    #[test]
    fn slack_message_counts_firing_alerts_and_names_the_group() {
        let v = slack_payload(
            &notification(&[AlertStatus::Firing, AlertStatus::Resolved]),
            Some("#gpu"),
        );
        let text = v["text"].as_str().unwrap();
        assert!(text.starts_with("[FIRING:1] NodeCritical"), "{text}");
        assert!(text.contains("n1 is critical"));
        assert_eq!(v["channel"], "#gpu");
        let v = slack_payload(&notification(&[AlertStatus::Resolved]), None);
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .starts_with("[RESOLVED] NodeCritical")
        );
        assert!(v.get("channel").is_none());
    }
}
