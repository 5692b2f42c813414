//! One borrowed pass over an input line that picks out only what the breaker decides on: the
//! header, `score.state`, `score.action`, whether `unreachable` is set and whether `breaker` is
//! already there. Everything else is skipped without being built, which is what keeps the
//! breaker near `cat` speed on samples of several kilobytes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use ugro_types::{Action, HealthState, Kind, SCHEMA_VERSION, Timestamp, validate_node};

/// The parts of `score` the breaker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ScoreHead {
    /// Discrete state.
    pub state: HealthState,
    /// Recommended action; one outside this build's vocabulary (a newer ugro-score) reads as
    /// absent rather than rejecting the record, since the breaker never decides on it.
    #[serde(default, deserialize_with = "lenient_action")]
    pub action: Option<Action>,
}

fn lenient_action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Action>, D::Error> {
    let v: Option<Cow<'de, str>> = Option::deserialize(d)?;
    Ok(v.and_then(|s| {
        serde::Deserialize::deserialize(de::value::StrDeserializer::<de::value::Error>::new(&s))
            .ok()
    }))
}

/// What the breaker needs from one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Fast<'a> {
    /// Record kind.
    pub kind: Kind,
    /// Record time.
    pub ts: Timestamp,
    /// Node.
    pub node: Cow<'a, str>,
    /// `score`, if present.
    pub score: Option<ScoreHead>,
    /// `unreachable` is present and not null.
    pub unreachable: bool,
    /// A top-level `breaker` field is already present (it will be replaced).
    pub has_breaker: bool,
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

#[derive(Default)]
struct Raw<'a> {
    v: Option<u32>,
    kind: Option<Kind>,
    ts: Option<Timestamp>,
    node: Option<Cow<'a, str>>,
    score: Option<ScoreHead>,
    unreachable: bool,
    has_breaker: bool,
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut raw = Raw::default();
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::V => raw.v = Some(map.next_value()?),
                Field::Kind => raw.kind = Some(map.next_value()?),
                Field::Ts => raw.ts = Some(map.next_value()?),
                Field::Node => raw.node = Some(map.next_value::<BorrowedStr<'de>>()?.0),
                Field::Score => raw.score = map.next_value()?,
                Field::Unreachable => {
                    raw.unreachable = map.next_value::<Option<IgnoredAny>>()?.is_some();
                }
                Field::Breaker => {
                    map.next_value::<IgnoredAny>()?;
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

struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

fn finish(raw: Raw<'_>) -> Result<Fast<'_>, String> {
    let v = raw.v.ok_or("missing field `v`")?;
    if v > SCHEMA_VERSION {
        return Err(format!(
            "schema version {v} is newer than this build's {SCHEMA_VERSION}"
        ));
    }
    let kind = raw.kind.ok_or("missing field `kind`")?;
    let ts = raw.ts.ok_or("missing field `ts`")?;
    let node = raw.node.ok_or("missing field `node`")?;
    validate_node(&node).map_err(|e| e.to_string())?;
    Ok(Fast {
        kind,
        ts,
        node,
        score: raw.score,
        unreachable: raw.unreachable,
        has_breaker: raw.has_breaker,
    })
}

/// Parses and validates one line (schema version, node name). serde_json checks the whole
/// line's grammar while skipping, through `IgnoredAny`, every field not read here. (A
/// hand-written skipper was measured slower than serde_json's `IgnoredAny`.)
pub fn parse(line: &str) -> Result<Fast<'_>, String> {
    let mut de = serde_json::Deserializer::from_str(line);
    let raw = (&mut de)
        .deserialize_map(RawVisitor)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| e.to_string())?;
    finish(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_out_score_and_flags_whatever_the_field_order() {
        let f = parse(
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
    fn refuses_bad_headers() {
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
            let e = parse(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn an_action_from_a_newer_vocabulary_keeps_the_record() {
        let f = parse(
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n1","score":{"state":"critical","action":"replace_nvlink_bridge"}}"#,
        )
        .unwrap();
        assert_eq!(
            f.score,
            Some(ScoreHead {
                state: HealthState::Critical,
                action: None
            })
        );
    }

    #[test]
    fn escaped_node_names_are_decoded() {
        let f = parse(r#"{"v":1,"kind":"x","ts":"2026-11-28T00:00:00Z","node":"gpu\u002d01"}"#)
            .unwrap();
        assert_eq!(f.node, "gpu-01");
        assert_eq!(f.kind, Kind::Other);
    }
}
