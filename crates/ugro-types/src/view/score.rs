//! The `score` object that `ugro-score` adds to a sample, as readers downstream see it.

use std::borrow::Cow;

use serde::Deserialize;

use crate::{Action, Component, HealthState, ReasonCode};

/// The parts of `score` a filter decides on: state and action only, nothing allocated. For a
/// reader that routes records (the breaker) rather than explains them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ScoreHead {
    /// Discrete state.
    pub state: HealthState,
    /// Recommended action; one outside this build's vocabulary (a newer ugro-score) reads as
    /// absent rather than rejecting the record.
    #[serde(default, deserialize_with = "super::lenient")]
    pub action: Option<Action>,
}

/// `score`, borrowed: what alerting and display read. Not read here: `components` and `gpus`
/// (use the owned [`crate::Score`] where those matter).
#[derive(Debug, Clone, Deserialize)]
pub struct ScoreView<'a> {
    /// Weighted total, 0–100; absent when the state is unknown.
    #[serde(default)]
    pub total: Option<f64>,
    /// Discrete state.
    pub state: HealthState,
    /// Recommended action, as written: kept as text so that an action from a newer vocabulary
    /// still reaches people ([`ScoreView::known_action`] for the typed one).
    #[serde(default, borrow)]
    pub action: Cow<'a, str>,
    /// Every deduction.
    #[serde(default, borrow, deserialize_with = "crate::limits::reasons")]
    pub reasons: Vec<ReasonView<'a>>,
    /// One line for people.
    #[serde(default, borrow)]
    pub summary: Cow<'a, str>,
}

impl ScoreView<'_> {
    /// The recommended action, when this build knows it.
    pub fn known_action(&self) -> Option<Action> {
        parse_action(&self.action)
    }

    /// Whether any reason has this code.
    pub fn has_reason(&self, code: &ReasonCode) -> bool {
        self.reasons.iter().any(|r| r.code == *code)
    }
}

/// One deduction, borrowed (its `deduction` is not read).
#[derive(Debug, Clone, Deserialize)]
pub struct ReasonView<'a> {
    /// The code; an unknown one is kept as [`ReasonCode::Other`].
    pub code: ReasonCode,
    /// The component it counts against; absent when missing or from a newer vocabulary.
    #[serde(default, deserialize_with = "super::lenient")]
    pub component: Option<Component>,
    /// GPU index, where it concerns one GPU.
    #[serde(default)]
    pub gpu: Option<u32>,
    /// Forces the state to critical.
    #[serde(default)]
    pub fatal: bool,
    /// A prediction from a trend, not a present fault.
    #[serde(default)]
    pub predicted: bool,
    /// The observed value (a trend's rate), when it is a number.
    #[serde(default, deserialize_with = "number")]
    pub value: Option<f64>,
    /// The limit it was compared with, when it is a number.
    #[serde(default, deserialize_with = "number")]
    pub threshold: Option<f64>,
    /// The span a rate or trend was measured over (humantime).
    #[serde(default, borrow)]
    pub window: Option<Cow<'a, str>>,
    /// What to do about it, as written (see [`ScoreView::action`]).
    #[serde(default, borrow)]
    pub action: Cow<'a, str>,
    /// For people.
    #[serde(default, borrow)]
    pub message: Cow<'a, str>,
}

impl ReasonView<'_> {
    /// The action, when this build knows it.
    pub fn known_action(&self) -> Option<Action> {
        parse_action(&self.action)
    }
}

/// A JSON number as `f64`; anything else (a string, a list: `value` is free-form) as `None`,
/// so an unusual value never rejects the record.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Num;
    impl<'de> serde::de::Visitor<'de> for Num {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any value")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Num)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(Num)
}

fn parse_action(s: &str) -> Option<Action> {
    use serde::de::value::{Error, StrDeserializer};
    Action::deserialize(StrDeserializer::<Error>::new(s)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_reads_numeric_value_and_threshold_and_takes_any_other_value_as_absent() {
        let s: ScoreView<'_> = serde_json::from_str(
            r#"{"state":"degraded","reasons":[
            {"code":"pcie_replay_rate","component":"gpu","gpu":1,"value":40.5,"threshold":31,"window":"5m","predicted":true,"deduction":25,"action":"hardware_inspection","message":"m"},
            {"code":"xid_warning","component":"gpu","value":"P2","threshold":[1,{"a":2}],"deduction":5,"action":"none","message":"m"}]}"#,
        )
        .unwrap();
        let r = &s.reasons[0];
        assert!(r.predicted);
        assert_eq!((r.value, r.threshold), (Some(40.5), Some(31.0)));
        assert_eq!(r.window.as_deref(), Some("5m"));
        let r = &s.reasons[1];
        assert_eq!(
            (r.value, r.threshold, r.window.as_deref()),
            (None, None, None)
        );
    }
}
