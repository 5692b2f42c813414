//! Loading YAML configuration files with errors that name the file, the line and the field.
//!
//! One loader for every tool, so the rules are the same everywhere:
//! - A UTF-8 byte-order mark at the start of the file is skipped (line numbers do not move).
//! - A document whose aliases would expand it far beyond its own size (a "billion laughs"
//!   alias bomb) is refused before anything is built from it: [`MAX_ALIAS_EXPANSION`].
//! - A number that is not finite (`.nan`, `.inf`, `-.inf`, `1e999`) is refused wherever it
//!   appears, naming its field and line.
//! - Duplicate keys in a mapping are refused by the YAML parser.
//! - An error found after parsing (a value out of range, an unknown receiver) names the line
//!   of the field it is about, found by walking the document along the field's path
//!   (`receivers[1].name`, `route.routes[0].receiver`), so list items get their own line.
//!   Range checks use [`Range`], which names the value and the range in the message.

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use ugro_types::{Exit, ToolError};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not match the schema.
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the parser could not tell).
        line: usize,
        /// Dotted path of the field, `.` for the document.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// 66 for a missing file, 78 otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Exit::NoInput
            }
            _ => Exit::Config,
        }
    }

    /// A semantic error found after parsing (a bad weight, an unknown receiver), located by
    /// looking the field's key up in the source text.
    pub fn invalid(path: &Path, text: &str, field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_owned(),
            line: locate_field(text, field),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl ToolError for ConfigError {
    fn exit(&self) -> Exit {
        ConfigError::exit(self)
    }
}

/// Reads and parses a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value = parse_yaml(path, &text)?;
    Ok((value, text))
}

/// The text without a leading UTF-8 byte-order mark (which editors on other systems write,
/// and which YAML parsers otherwise read as content).
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// How many values a document's aliases may add beyond what its text spells out. A document
/// without aliases has at most one value per byte; a real configuration that reuses an
/// anchored block a few times stays far below this, while an alias bomb of a few kilobytes
/// expands to billions of values (and, built, to gigabytes).
pub const MAX_ALIAS_EXPANSION: u64 = 100_000;

/// Parses YAML text that came from `path` (used in messages).
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let text = strip_bom(text);
    scan(path, text)?;
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        invalid_at(path, text, field, e.into_inner())
    })
}

fn invalid_at(path: &Path, text: &str, field: String, inner: serde_norway::Error) -> ConfigError {
    let line = inner
        .location()
        .map_or_else(|| locate_field(text, &field), |l| l.line());
    // serde_norway appends " at line L column C"; the line is already in front.
    let mut message = inner.to_string();
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    // ... and puts its own copy of the path in front; ours is already in the message.
    if let Some(rest) = message.strip_prefix(&format!("{field}: ")) {
        message = rest.to_owned();
    }
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        field,
        message,
    }
}

/// Walks the whole document once without building anything: refuses non-finite numbers and
/// documents that aliases expand beyond [`MAX_ALIAS_EXPANSION`] more values than their size.
fn scan(path: &Path, text: &str) -> Result<(), ConfigError> {
    let budget = Cell::new(text.len() as u64 + MAX_ALIAS_EXPANSION);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(
        serde_norway::Deserializer::from_str(text),
        &mut track,
    );
    match Scan(&budget).deserialize(de) {
        Ok(()) => Ok(()),
        Err(e) => {
            let field = track.path().to_string();
            Err(invalid_at(path, text, field, e))
        }
    }
}

/// One value of the pre-parse walk; counts itself against the shared budget.
#[derive(Clone, Copy)]
struct Scan<'b>(&'b Cell<u64>);

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let left = self.0.get();
        if left == 0 {
            return Err(de::Error::custom(format!(
                "the document's aliases expand it by more than {MAX_ALIAS_EXPANSION} values (an alias bomb?); refused"
            )));
        }
        self.0.set(left - 1);
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom(format!(
                "{v:?} is not a finite number; no setting takes one"
            )))
        }
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

/// The line of a field given by its path as serde_path_to_error prints it (`weights.gpu`,
/// `receivers[1].name`, `[0].matchers[2].value`): the line of its key, or of the list item for
/// a path ending in an index. A field the file does not spell out (a default) gets the line of
/// its nearest ancestor that it does; 0 when not even that.
pub fn locate_field(text: &str, field: &str) -> usize {
    let text = strip_bom(text);
    let mut segs = segments(field);
    loop {
        if segs.is_empty() {
            return 0;
        }
        if let Some(line) = find(text, &segs) {
            return line;
        }
        segs.pop();
    }
}

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default().trim();
        if !key.is_empty() && key != "?" {
            out.push(Seg::Key(key.to_owned()));
        }
        for idx in pieces {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// The sentinel error the path walk stops with at its target, so that the YAML parser attaches
/// the target's position.
const HERE: &str = "\u{0}ugro-locate-here";

fn find(text: &str, segs: &[Seg]) -> Option<usize> {
    let de = serde_norway::Deserializer::from_str(text);
    match Find(segs).deserialize(de) {
        // The message carries the path in front (`a.b: …`).
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// The rest of the path to walk from the value at hand.
struct Find<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            // The target itself: stop here, so the parser attaches this value's position.
            return Err(de::Error::custom(HERE));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            return Ok(());
        };
        while let Some(hit) = map.next_key_seed(KeyIs(want, rest.is_empty()))? {
            if hit {
                return map.next_value_seed(Find(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Find(rest)).map(|_| ())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A mapping key compared with the wanted one; the last segment stops on the key itself (its
/// line is the field's line even when the value is a block below it).
struct KeyIs<'k>(&'k str, bool);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.0, self.1) {
            (true, true) => Err(E::custom(HERE)),
            (hit, _) => Ok(hit),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// A numeric setting's allowed range, checked after parsing. The message names the value and
/// the range; tools turn `Err((field, message))` into a [`ConfigError`] with
/// [`ConfigError::invalid`], which finds the field's line.
///
/// ```
/// use ugro_support::config::Range;
/// assert!(Range::new(0.0, 100.0).check("gpu.hw_throttle_deduction", 40.0).is_ok());
/// let (field, msg) = Range::new(0.0, 100.0).check("gpu.hw_throttle_deduction", -1e308).unwrap_err();
/// assert_eq!(field, "gpu.hw_throttle_deduction");
/// assert!(msg.contains("-1e308"), "{msg}");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Range<T> {
    lo: T,
    hi: T,
}

impl<T> Range<T> {
    /// `lo..=hi`.
    pub const fn new(lo: T, hi: T) -> Self {
        Range { lo, hi }
    }
}

/// A value [`Range`] can check: printed in messages the way the file spells it.
pub trait Bounded: PartialOrd + Copy {
    /// What the value must be, for messages ("a finite number ", or nothing).
    const NOUN: &'static str = "";
    /// Finite (always true for integers and durations).
    fn is_finite(self) -> bool {
        true
    }
    /// For messages.
    fn show(self) -> String;
}

impl Bounded for f64 {
    const NOUN: &'static str = "a finite number ";
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn show(self) -> String {
        // Debug keeps exponents short (`-1e308`, not 309 digits) and spells NaN and inf.
        format!("{self:?}")
    }
}

macro_rules! bounded_int {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            fn show(self) -> String {
                self.to_string()
            }
        }
    )*};
}
bounded_int!(u16, u32, u64, usize, i64);

impl Bounded for Duration {
    fn show(self) -> String {
        humantime::format_duration(self).to_string()
    }
}

impl<T: Bounded> Range<T> {
    /// `Ok` when `v` is finite and within the range; otherwise `(field, message)`.
    pub fn check(&self, field: &str, v: T) -> Result<(), (String, String)> {
        if v.is_finite() && v >= self.lo && v <= self.hi {
            return Ok(());
        }
        Err((
            field.to_owned(),
            format!(
                "{} is out of range: must be {}from {} to {}",
                v.show(),
                T::NOUN,
                self.lo.show(),
                self.hi.show()
            ),
        ))
    }
}

/// Runs range checks in order and stops at the first failure.
pub fn first_bad(
    checks: impl IntoIterator<Item = Result<(), (String, String)>>,
) -> Result<(), (String, String)> {
    checks.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        weights: Weights,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Weights {
        #[allow(dead_code)]
        gpu: f64,
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let e = parse_yaml::<Conf>(Path::new("s.yaml"), "weights:\n  gpu: lots\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("s.yaml:2: weights.gpu: "), "{msg}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let e =
            parse_yaml::<Conf>(Path::new("s.yaml"), "weights:\n  gpu: 1\n  gpus: 2\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("s.yaml:3:"), "{msg}");
        assert!(msg.contains("gpus"), "{msg}");
    }

    #[test]
    fn semantic_errors_locate_the_field() {
        let text = "weights:\n  gpu: 0.9\n  system: 0.3\n";
        assert_eq!(locate_field(text, "weights.system"), 3);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listy {
        #[allow(dead_code)]
        receivers: Vec<Named>,
        #[allow(dead_code)]
        #[serde(default)]
        route: Option<serde::de::IgnoredAny>,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Named {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn list_items_are_located_on_their_own_lines() {
        let text = "receivers:\n  - name: a\n  -\n    name: b c\n  - {name: d}\nroute:\n  receiver: a\n  routes:\n    - matchers: [x=\"1\"]\n      receiver: zz\n";
        assert_eq!(locate_field(text, "receivers[1].name"), 4);
        assert_eq!(locate_field(text, "receivers[2].name"), 5);
        assert_eq!(locate_field(text, "receivers[0]"), 2);
        assert_eq!(locate_field(text, "route.routes[0].receiver"), 10);
        // Not in the file: the nearest ancestor that is.
        assert_eq!(locate_field(text, "route.routes[0].group_wait"), 9);
        assert_eq!(locate_field(text, "route.group_by"), 6);
        assert_eq!(locate_field(text, "nothing.here"), 0);
        // A top-level list (the silences file).
        assert_eq!(locate_field("- a: 1\n- a: 2\n  b: 3\n", "[1].b"), 3);
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_lines_stay_put() {
        let text = "\u{feff}weights:\n  gpu: 1\n";
        parse_yaml::<Conf>(Path::new("s.yaml"), text).unwrap();
        let text = "\u{feff}receivers:\n  - name: a\nroute: {}\n";
        parse_yaml::<Listy>(Path::new("s.yaml"), text).unwrap();
        let e = parse_yaml::<Conf>(Path::new("s.yaml"), "\u{feff}weights:\n  gpu: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s.yaml:2: weights.gpu"), "{e}");
        assert_eq!(locate_field("\u{feff}a:\n  b: 1\n", "a.b"), 2);
    }

    #[test]
    fn non_finite_numbers_are_refused_by_field_and_line() {
        for v in [".nan", ".inf", "-.inf", "1e999"] {
            let text = format!("weights:\n  gpu: {v}\n");
            let e = parse_yaml::<Conf>(Path::new("s.yaml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("s.yaml:2: weights.gpu: "), "{v}: {e}");
            // serde_norway reads 1e999 as a string, which no number field takes either.
            assert!(
                e.contains("not a finite number") || e.contains("invalid type"),
                "{v}: {e}"
            );
            assert!(!e.contains("weights.gpu: weights.gpu"), "{e}");
        }
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_is_built() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text.push_str("receivers: *a9\n");
        let t = std::time::Instant::now();
        let e = parse_yaml::<Listy>(Path::new("s.yaml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("alias"), "{e}");
        // Generous: the walk stops after the budget, about 100 000 values.
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // A few aliases of an anchored block are fine.
        let ok = "route: &n {name: a}\nreceivers: [*n, *n]\n";
        assert!(parse_yaml::<Listy>(Path::new("s.yaml"), ok).is_ok());
    }

    #[test]
    fn ranges_name_the_value() {
        let r = Range::new(0.0, 1.0);
        for v in [f64::NAN, f64::INFINITY, -1e308, 1.5, -0.1] {
            let (f, m) = r.check("x.share", v).unwrap_err();
            assert_eq!(f, "x.share");
            assert!(m.contains(&format!("{v:?}")), "{m}");
            assert!(m.contains("from 0.0 to 1.0"), "{m}");
        }
        assert!(r.check("x", 0.0).is_ok() && r.check("x", 1.0).is_ok());
        let (_, m) = Range::new(1u32, 10).check("n", 0).unwrap_err();
        assert_eq!(m, "0 is out of range: must be from 1 to 10");
        let d = Range::new(Duration::from_secs(1), Duration::from_secs(60));
        let (_, m) = d.check("t", Duration::from_secs(3600)).unwrap_err();
        assert!(m.contains("1h") && m.contains("1m"), "{m}");
    }
}
