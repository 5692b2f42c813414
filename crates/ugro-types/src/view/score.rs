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

/// One deduction, borrowed (its `deduction`, `value` and `threshold` are not read).
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

fn parse_action(s: &str) -> Option<Action> {
    use serde::de::value::{Error, StrDeserializer};
    Action::deserialize(StrDeserializer::<Error>::new(s)).ok()
}
