//! Alerts the remediation controller raises (`crate::remedy`): NodeNeedsService and
//! QuarantineBudgetExhausted. They come from the controller's decisions, not from a record,
//! so they enter the store here and then follow the usual routing, grouping and delivery.

use std::collections::BTreeMap;

use ugro_types::{Timestamp, fingerprint};

use super::Engine;

/// One alert the controller wants firing or resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemedyAlert {
    /// `alertname`.
    pub name: &'static str,
    /// `node`, for a node's alert.
    pub node: Option<String>,
    /// `severity`.
    pub severity: &'static str,
    /// Firing (with these annotations) or resolved.
    pub firing: bool,
    /// summary, description, action.
    pub annotations: BTreeMap<String, String>,
}

impl Engine {
    /// Fires or resolves a controller alert at `now`; the next [`Engine::advance`] routes it.
    pub fn remedy_alert(&mut self, a: RemedyAlert, now: Timestamp) {
        let mut l = self.cfg.global.external_labels.clone();
        l.insert("alertname".into(), a.name.into());
        if let Some(n) = &a.node {
            l.insert("node".into(), n.clone());
        }
        l.insert("severity".into(), a.severity.into());
        let now = now.max(self.st.now);
        self.st.now = now;
        if a.firing {
            let mut ann = a.annotations;
            if let Some(base) = &self.cfg.global.runbook_url {
                ann.insert(
                    "runbook_url".into(),
                    crate::rules::runbook_url(base, a.name),
                );
            }
            self.fire(l, ann, now);
        } else {
            self.resolve(fingerprint(&l), now);
        }
    }
}
