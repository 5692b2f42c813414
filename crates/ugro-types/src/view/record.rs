//! Any record as the filters downstream of `ugro-score` read it, in one pass; and the bodies of
//! the breaker's records.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{ScoreView, Text};
use crate::record::{RecordError, check_header};
use crate::{Action, BreakerState, HealthState, Kind, Timestamp};

/// One line of any kind, as a filter downstream of ugro-score reads it: the header (checked),
/// the `score` object read as `S`, the `breaker` annotation read as `B`, and whether the node
/// was unreachable. Everything else is skipped without being built.
///
/// `S` and `B` choose how much is read: [`ScoreView`] and [`BreakerView`] by default (what
/// alerting and display need); a router that decides on state alone uses
/// `RecordView<'_, ScoreHead, IgnoredAny>`, which allocates nothing. (Rust applies the
/// defaults only where a type is written, so annotate the binding: `let rec: RecordView<'_> =
/// RecordView::parse(line)?`.)
///
/// ```
/// use ugro_types::view::{RecordView, ScoreHead};
/// use ugro_types::{HealthState, Kind};
/// let line = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"gpu-01","score":{"state":"critical","action":"reboot","reasons":[],"summary":"x"}}"#;
/// let rec: RecordView<'_> = RecordView::parse(line).unwrap();
/// assert_eq!(rec.kind, Kind::Sample);
/// assert_eq!(rec.score.unwrap().state, HealthState::Critical);
/// let head: RecordView<'_, ScoreHead, serde::de::IgnoredAny> = RecordView::parse(line).unwrap();
/// assert_eq!(head.score.unwrap().action, Some(ugro_types::Action::Reboot));
/// ```
///
/// [`ScoreHead`]: super::ScoreHead
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView<'a, S = ScoreView<'a>, B = BreakerView> {
    /// Schema version.
    pub v: u32,
    /// Record kind.
    pub kind: Kind,
    /// Record time.
    pub ts: Timestamp,
    /// Node.
    pub node: Cow<'a, str>,
    /// `score`, when present and not null.
    pub score: Option<S>,
    /// `breaker`, when present and not null.
    pub breaker: Option<B>,
    /// A `breaker` key is there, even as null: a stage that writes its own annotation
    /// replaces it rather than adding a second key.
    pub has_breaker: bool,
    /// `unreachable` is present and not null.
    pub unreachable: bool,
}

impl<'a, S: Deserialize<'a>, B: Deserialize<'a>> RecordView<'a, S, B> {
    /// Parses one line and checks its header. serde_json checks the whole line's grammar while
    /// skipping, through `IgnoredAny`, every field not read here.
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        let mut de = serde_json::Deserializer::from_str(line);
        let raw = de.deserialize_map(RawVisitor(PhantomData))?;
        de.end()?;
        let missing = |f| RecordError::Json(de::Error::missing_field(f));
        let rec = RecordView {
            v: raw.v.ok_or_else(|| missing("v"))?,
            kind: raw.kind.ok_or_else(|| missing("kind"))?,
            ts: raw.ts.ok_or_else(|| missing("ts"))?,
            node: raw.node.ok_or_else(|| missing("node"))?.0,
            score: raw.score,
            breaker: raw.breaker,
            has_breaker: raw.has_breaker,
            unreachable: raw.unreachable,
        };
        check_header(rec.v, &rec.node)?;
        Ok(rec)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    V,
    Kind,
    Ts,
    Node,
    Score,
    Unreachable,
    Breaker,
    #[serde(other)]
    Other,
}

struct Raw<'a, S, B> {
    v: Option<u32>,
    kind: Option<Kind>,
    ts: Option<Timestamp>,
    node: Option<Text<'a>>,
    score: Option<S>,
    breaker: Option<B>,
    has_breaker: bool,
    unreachable: bool,
}

struct RawVisitor<S, B>(PhantomData<(S, B)>);

impl<'de, S: Deserialize<'de>, B: Deserialize<'de>> Visitor<'de> for RawVisitor<S, B> {
    type Value = Raw<'de, S, B>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut map = super::unique::Unique::new(map);
        let mut raw = Raw {
            v: None,
            kind: None,
            ts: None,
            node: None,
            score: None,
            breaker: None,
            has_breaker: false,
            unreachable: false,
        };
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::V => raw.v = Some(map.next_value()?),
                Field::Kind => raw.kind = Some(map.next_value()?),
                Field::Ts => raw.ts = Some(map.next_value()?),
                Field::Node => raw.node = Some(map.next_value()?),
                Field::Score => raw.score = map.next_value()?,
                Field::Unreachable => {
                    raw.unreachable = map.next_value::<Option<IgnoredAny>>()?.is_some();
                }
                Field::Breaker => {
                    raw.breaker = map.next_value()?;
                    raw.has_breaker = true;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// The `breaker` annotation `ugro-breaker` adds to the records it passes (the owned form is
/// [`crate::BreakerAnnotation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BreakerView {
    /// The node's breaker state after this record.
    pub state: BreakerState,
    /// Consecutive failures counted so far (0 when absent).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the next trial is allowed (open states).
    #[serde(default)]
    pub next_trial_at: Option<Timestamp>,
}

/// The body of a `transition` record, borrowed (the owned form is [`crate::Transition`]).
/// Fields are optional here so that a reader keeps what a partial record does say.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransitionView<'a> {
    /// State before.
    #[serde(default)]
    pub from: Option<BreakerState>,
    /// State after.
    #[serde(default)]
    pub to: Option<BreakerState>,
    /// Why (`failure_threshold`, `trial_failed`, `operator_reset`…).
    #[serde(default, borrow)]
    pub reason: Option<Text<'a>>,
    /// Consecutive failures at the time of the change.
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// When the change took effect.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// When the next trial is due, for open states.
    #[serde(default)]
    pub next_trial_at: Option<Timestamp>,
    /// For people: "3 trips in 7 days".
    #[serde(default, borrow)]
    pub history: Option<Text<'a>>,
    /// The score state of the record that caused it.
    #[serde(default)]
    pub cause_state: Option<HealthState>,
    /// The recommended action of the record that caused it.
    #[serde(default)]
    pub cause_action: Option<Action>,
}

/// The body of a `fleet` record, borrowed (the owned form is [`crate::Fleet`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FleetView<'a> {
    /// `suspect_observer`.
    #[serde(default, borrow)]
    pub verdict: Option<Text<'a>>,
    /// Nodes that would have tripped within the window (at most [`crate::limits::MAX_ITEMS`]).
    #[serde(default, borrow, deserialize_with = "crate::limits::opt_items")]
    pub failing: Option<Vec<Text<'a>>>,
    /// How many were failing, when more than `failing` lists.
    #[serde(default)]
    pub failing_count: Option<u32>,
    /// Known nodes.
    #[serde(default)]
    pub known_nodes: Option<u32>,
    /// For people.
    #[serde(default, borrow)]
    pub message: Option<Text<'a>>,
}

/// What ugro-watch's `stats` records say about its own state: whether it can be written
/// (ugro-alert's WatcherStateUnwritable). Absent in other tools' stats.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WatcherStateView<'a> {
    /// The state directory or a state file cannot be written.
    #[serde(default)]
    pub state_unwritable: Option<bool>,
    /// The failure, for people.
    #[serde(default, borrow)]
    pub state_error: Option<Text<'a>>,
}

impl<'a> WatcherStateView<'a> {
    /// Reads the fields of a `stats` line whose header [`RecordView`] has already checked.
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        Ok(serde_json::from_str(line)?)
    }
}

impl<'a> TransitionView<'a> {
    /// Reads the body of a line whose header [`RecordView`] has already checked.
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        Ok(serde_json::from_str(line)?)
    }
}

impl<'a> FleetView<'a> {
    /// Reads the body of a line whose header [`RecordView`] has already checked.
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        Ok(serde_json::from_str(line)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ScoreHead;

    type Head<'a> = RecordView<'a, ScoreHead, IgnoredAny>;

    #[test]
    fn picks_out_score_and_flags_whatever_the_field_order() {
        let f = Head::parse(
            r#"{"score":{"total":12.5,"state":"critical","action":"reboot","reasons":[{"code":"x"}]},"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"gpu-01","gpu":{"devices":[{"index":0}]},"breaker":{"state":"closed"},"unreachable":null}"#,
        )
        .unwrap();
        assert_eq!(f.kind, Kind::Sample);
        assert_eq!(f.node, "gpu-01");
        assert_eq!(
            f.score,
            Some(ScoreHead {
                state: HealthState::Critical,
                action: Some(Action::Reboot)
            })
        );
        assert!(f.has_breaker);
        assert!(!f.unreachable, "null unreachable is not set");
    }

    #[test]
    fn a_null_breaker_key_still_counts_as_present() {
        let f: RecordView<'_> = RecordView::parse(
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","breaker":null}"#,
        )
        .unwrap();
        assert!(f.has_breaker);
        assert_eq!(f.breaker, None);
    }

    #[test]
    fn refuses_bad_headers_naming_the_cause() {
        for (line, want) in [
            (
                r#"{"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#,
                "`v`",
            ),
            (
                r#"{"v":2,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#,
                "newer",
            ),
            (
                r#"{"v":1,"kind":"sample","ts":"noon","node":"n"}"#,
                "timestamp",
            ),
            (
                r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"-rf"}"#,
                "node",
            ),
            (r#"[1,2]"#, "JSON object"),
            (r#"{"v":1} x"#, "trailing"),
        ] {
            let e = Head::parse(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
            let e = RecordView::<'_, ScoreView<'_>>::parse(line)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn a_repeated_member_rejects_the_record_whichever_member_it_is() {
        for dup in [
            r#""score":{"state":"healthy"}"#,
            r#""x":1"#,
            r#""node":"b""#,
        ] {
            let line = format!(
                r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n",{dup},"score":{{"state":"critical"}},{dup}}}"#
            );
            let e = Head::parse(&line).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{line}: {e}");
        }
    }

    #[test]
    fn an_action_from_a_newer_vocabulary_keeps_the_record() {
        let line = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n1","score":{"state":"critical","action":"replace_nvlink_bridge"}}"#;
        let f = Head::parse(line).unwrap();
        assert_eq!(
            f.score,
            Some(ScoreHead {
                state: HealthState::Critical,
                action: None
            })
        );
        let full: RecordView<'_> = RecordView::parse(line).unwrap();
        let score = full.score.unwrap();
        assert_eq!(score.action, "replace_nvlink_bridge");
        assert_eq!(score.known_action(), None);
    }

    #[test]
    fn escaped_node_names_are_decoded() {
        let f =
            Head::parse(r#"{"v":1,"kind":"x","ts":"2026-11-28T00:00:00Z","node":"gpu\u002d01"}"#)
                .unwrap();
        assert_eq!(f.node, "gpu-01");
        assert_eq!(f.kind, Kind::Other);
    }

    #[test]
    fn the_node_borrows_from_the_line() {
        let f = Head::parse(r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#)
            .unwrap();
        assert!(matches!(f.node, Cow::Borrowed("n")));
    }

    #[test]
    fn a_transition_record_reads_as_header_then_body() {
        let t = crate::Transition {
            v: 1,
            kind: Kind::Transition,
            ts: Timestamp(1_795_824_000_000),
            node: "gpu-07".into(),
            from: BreakerState::Closed,
            to: BreakerState::Open,
            reason: "failure_threshold".into(),
            consecutive_failures: 3,
            at: Timestamp(1_795_824_000_000),
            next_trial_at: Some(Timestamp(1_795_824_060_000)),
            open_for_ms: Some(60_000),
            trips_in_window: Some(2),
            trip_window: Some("7days".into()),
            history: Some("2 trips in 7 days".into()),
            cause_state: Some(HealthState::Critical),
            cause_action: Some(Action::ResetGpu),
        };
        let line = serde_json::to_string(&t).unwrap();
        let rec: RecordView<'_> = RecordView::parse(&line).unwrap();
        assert_eq!((rec.kind, &*rec.node, rec.ts), (t.kind, "gpu-07", t.ts));
        let body = TransitionView::parse(&line).unwrap();
        assert_eq!(body.from, Some(t.from));
        assert_eq!(body.to, Some(t.to));
        assert_eq!(body.reason.as_deref(), Some("failure_threshold"));
        assert_eq!(body.consecutive_failures, Some(3));
        assert_eq!(body.at, Some(t.at));
        assert_eq!(body.next_trial_at, t.next_trial_at);
        assert_eq!(body.history.as_deref(), t.history.as_deref());
        assert_eq!(body.cause_state, t.cause_state);
        assert_eq!(body.cause_action, t.cause_action);
    }

    #[test]
    fn a_fleet_record_reads_its_failing_nodes() {
        let f = crate::Fleet {
            v: 1,
            kind: Kind::Fleet,
            ts: Timestamp(1_795_824_000_000),
            node: "*".into(),
            verdict: "suspect_observer".into(),
            failing: vec!["gpu-01".into(), "gpu-02".into()],
            failing_count: Some(5000),
            known_nodes: 10,
            threshold: 0.2,
            window: "5m".into(),
            message: "observer suspect".into(),
        };
        let line = serde_json::to_string(&f).unwrap();
        let body = FleetView::parse(&line).unwrap();
        assert_eq!(body.verdict.as_deref(), Some("suspect_observer"));
        let failing: Vec<&str> = body.failing.iter().flatten().map(|t| &**t).collect();
        assert_eq!(failing, ["gpu-01", "gpu-02"]);
        assert_eq!(body.failing_count, Some(5000));
        assert_eq!(body.known_nodes, Some(10));
        assert_eq!(body.message.as_deref(), Some("observer suspect"));
    }
}
