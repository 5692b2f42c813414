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
    // Inherent rather than `std::ops::Add`: it saturates instead of panicking on overflow.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// `self - d`, saturating.
    #[allow(clippy::should_implement_trait)]
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
        if let Some(t) = parse_canonical(s.as_bytes()) {
            return Ok(t);
        }
        // RFC 3339's time-secfrac is "." 1*DIGIT; humantime lets "00:00:00.Z" through.
        if let Some(i) = s.find('.')
            && !s[i + 1..].starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(TimestampError {
                value: s.to_owned(),
                cause: "a fraction of a second needs at least one digit after the '.'".into(),
            });
        }
        // RFC 3339 allows lower-case t and z; humantime does not.
        let upper = s.to_ascii_uppercase();
        let utc = upper
            .strip_suffix("+00:00")
            .map(|head| format!("{head}Z"))
            .unwrap_or_else(|| upper.clone());
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

/// The form every ugro tool writes (`YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`), parsed without
/// allocating: pass-through tools parse one timestamp per line. Anything else (or an
/// out-of-range field) falls back to humantime, which also produces the error message.
fn parse_canonical(b: &[u8]) -> Option<Timestamp> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (hour, min, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    // Before 1970 is refused as the humantime path refuses it, so both paths agree.
    if year < 1970
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let rest = &b[19..];
    let (frac, tail) = match rest.first() {
        Some(b'.') => {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            let mut ms = 0i64;
            for i in 0..3 {
                ms = ms * 10
                    + rest
                        .get(1 + i)
                        .filter(|_| i < digits)
                        .map_or(0, |c| i64::from(c - b'0'));
            }
            (ms, &rest[1 + digits..])
        }
        _ => (0, rest),
    };
    if tail != b"Z" && tail != b"z" {
        return None;
    }
    let days_in_month = [
        31,
        if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day > days_in_month[usize::try_from(month - 1).ok()?] {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp(
        ((days * 24 + hour) * 60 + min) * 60_000 + sec * 1000 + frac,
    ))
}

impl fmt::Display for Timestamp {
    /// Hinnant's civil_from_days rather than humantime, which panics before 1970: a value a
    /// tool computed (a saturating subtraction, say) must print, never abort the process.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
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

/// The one clock-skew check every tool applies to record times: a record stamped more than
/// `max` ahead of this host's clock is refused. Record time only moves forward in the tools
/// that keep timers and breakers on it, so one such record would make every later record of
/// its node out of order, and hold every timer and silence hostage until the real time caught
/// up. The clock is read only when a record is ahead of the last reading by more than `max`,
/// so the check costs a comparison per record. `max` of zero turns it off.
#[derive(Debug, Clone)]
pub struct SkewGuard {
    max: Duration,
    clock: fn() -> Timestamp,
    /// The clock's last reading.
    wall: Timestamp,
}

/// A record stamped too far ahead of this host's clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ts {ts} is {} ahead of this host's clock (max_clock_skew {})",
    humantime::format_duration(*.ahead),
    humantime::format_duration(*.max)
)]
pub struct SkewError {
    /// The record's time.
    pub ts: Timestamp,
    /// How far ahead it is, whole seconds.
    pub ahead: Duration,
    /// The allowed skew.
    pub max: Duration,
}

impl SkewGuard {
    /// A guard on the system clock.
    pub fn new(max: Duration) -> Self {
        SkewGuard {
            max,
            clock: Timestamp::now,
            wall: Timestamp(i64::MIN),
        }
    }

    /// Replaces the clock (tests, a replayed or simulated clock).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.clock = clock;
        self.wall = Timestamp(i64::MIN);
        self
    }

    /// The allowed skew.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Refuses `ts` when it is more than the allowed skew ahead of the clock.
    pub fn check(&mut self, ts: Timestamp) -> Result<(), SkewError> {
        if self.max.is_zero() || ts <= self.wall.add(self.max) {
            return Ok(());
        }
        self.wall = (self.clock)();
        if ts <= self.wall.add(self.max) {
            return Ok(());
        }
        Err(SkewError {
            ts,
            ahead: Duration::from_secs(ts.since(self.wall).as_secs()),
            max: self.max,
        })
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
    fn a_dot_without_fraction_digits_is_refused() {
        for s in [
            "2026-11-28T00:00:00.Z",
            "2026-11-28T00:00:00.z",
            "2026-11-28T00:00:00.+00:00",
        ] {
            let e = Timestamp::parse(s).unwrap_err().to_string();
            assert!(e.contains("at least one digit"), "{s}: {e}");
        }
        assert!(Timestamp::parse("2026-11-28T00:00:00.5+00:00").is_ok());
    }

    #[test]
    fn accepts_plus_zero_offset_and_whole_seconds() {
        let a = Timestamp::parse("2026-11-28T16:54:11+00:00").unwrap();
        let b = Timestamp::parse("2026-11-28T16:54:11.000Z").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn fast_path_agrees_with_humantime() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999Z",
            "2026-11-28T16:54:11.1Z",
            "2026-11-28T16:54:11.123456789Z",
            "2100-03-01T00:00:00.000Z",
        ] {
            let slow = Timestamp::from_system_time(humantime::parse_rfc3339(s).unwrap());
            assert_eq!(parse_canonical(s.as_bytes()), Some(slow), "{s}");
        }
        assert_eq!(parse_canonical(b"2026-02-30T00:00:00Z"), None);
        assert!(Timestamp::parse("2026-02-30T00:00:00Z").is_err());
    }

    #[test]
    fn display_matches_humantime_and_never_panics() {
        for ms in [
            0i64,
            1,
            999,
            1_795_889_638_965,
            951_782_399_999,
            4_107_542_400_000,
        ] {
            let t = Timestamp(ms);
            assert_eq!(
                t.to_string(),
                humantime::format_rfc3339_millis(t.to_system_time()).to_string()
            );
        }
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::parse("1969-12-31T23:59:59Z").ok(), None);
    }

    #[test]
    fn lower_case_t_and_z_are_rfc_3339() {
        let a = Timestamp::parse("2026-11-28t16:37:13.000z").unwrap();
        assert_eq!(a, Timestamp::parse("2026-11-28T16:37:13.000Z").unwrap());
        assert_eq!(
            Timestamp::parse("2026-11-28t16:37:13+00:00")
                .unwrap()
                .to_string(),
            "2026-11-28T16:37:13.000Z"
        );
    }

    #[test]
    fn rejects_non_utc_offsets_and_garbage() {
        assert!(Timestamp::parse("2026-11-28T16:54:11+02:00").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
    }

    const NOON: Timestamp = Timestamp(1_795_867_200_000); // 2026-11-28T12:00:00Z

    #[test]
    fn skew_guard_refuses_a_record_too_far_ahead_and_names_both_durations() {
        let mut g = SkewGuard::new(Duration::from_secs(300)).with_clock(|| NOON);
        assert!(g.check(NOON.add(Duration::from_secs(300))).is_ok());
        let e = g.check(NOON.add(Duration::from_secs(3600))).unwrap_err();
        assert_eq!(e.ahead, Duration::from_secs(3600));
        assert_eq!(
            e.to_string(),
            "ts 2026-11-28T13:00:00.000Z is 1h ahead of this host's clock (max_clock_skew 5m)"
        );
    }

    #[test]
    fn skew_guard_accepts_past_records_and_is_off_at_zero() {
        let mut g = SkewGuard::new(Duration::from_secs(300)).with_clock(|| NOON);
        assert!(g.check(Timestamp(0)).is_ok());
        let mut off = SkewGuard::new(Duration::ZERO).with_clock(|| NOON);
        assert!(off.check(Timestamp(i64::MAX)).is_ok());
    }

    #[test]
    fn skew_guard_reads_the_clock_again_when_a_record_is_ahead_of_the_last_reading() {
        use std::sync::atomic::{AtomicI64, Ordering};
        static NOW: AtomicI64 = AtomicI64::new(1_795_867_200_000);
        let mut g = SkewGuard::new(Duration::from_secs(60))
            .with_clock(|| Timestamp(NOW.load(Ordering::SeqCst)));
        let later = NOON.add(Duration::from_secs(600));
        assert!(g.check(later).is_err());
        NOW.store(later.0, Ordering::SeqCst);
        assert!(g.check(later).is_ok(), "the host clock caught up");
    }
}
