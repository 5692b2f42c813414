//! Record timestamps: RFC 3339, UTC, millisecond precision (`2026-11-28T16:54:11.123Z`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, rendered as RFC 3339 UTC with millisecond precision.
///
/// Integer milliseconds keep arithmetic exact and make replays of a recorded stream
/// deterministic; the string form is what people and `jq` see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Why a timestamp string was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid timestamp {value:?}: {cause} (want RFC 3339 UTC such as 2026-11-28T16:54:11.123Z)"
)]
pub struct TimestampError {
    value: String,
    cause: String,
}

impl Timestamp {
    /// The current wall-clock time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Converts, truncating below a millisecond.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// `self + d`, saturating.
    pub fn add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// `self - d`, saturating.
    pub fn sub(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// How long after `earlier` this is; zero when it is not later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Parses RFC 3339 in UTC (`Z` or `+00:00`), with or without fractional seconds.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let utc = s
            .strip_suffix("+00:00")
            .map(|head| format!("{head}Z"))
            .unwrap_or_else(|| s.to_owned());
        if !utc.ends_with('Z') && !utc.ends_with('z') {
            return Err(TimestampError {
                value: s.to_owned(),
                cause: "not UTC (needs a Z or +00:00 suffix)".into(),
            });
        }
        humantime::parse_rfc3339(&utc)
            .map(Self::from_system_time)
            .map_err(|e| TimestampError {
                value: s.to_owned(),
                cause: e.to_string(),
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 UTC timestamp")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_millisecond_precision() {
        let t = Timestamp::parse("2026-11-28T16:54:11.123Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-28T16:54:11.123Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn accepts_plus_zero_offset_and_whole_seconds() {
        let a = Timestamp::parse("2026-11-28T16:54:11+00:00").unwrap();
        let b = Timestamp::parse("2026-11-28T16:54:11.000Z").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_non_utc_offsets_and_garbage() {
        assert!(Timestamp::parse("2026-11-28T16:54:11+02:00").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
