//! Alertmanager label matchers: `name="value"`, `name!=value`, `name=~regex`, `name!~regex`,
//! and the silence form `{name, value, isRegex, isEqual}`.
//!
//! As in Alertmanager, regular expressions are anchored at both ends and a missing label
//! matches as the empty string.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};
use ugro_types::LabelSet;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~`
    Re,
    /// `!~`
    NotRe,
}

/// One compiled matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: Op,
    /// Value or pattern as written.
    pub value: String,
    re: Option<Regex>,
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// Label names follow Prometheus: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Label values must be printable text of reasonable size: they travel into HTTP payloads,
/// environment variables and scontrol arguments.
pub fn valid_label_value(value: &str) -> Result<(), &'static str> {
    if value.len() > 1024 {
        return Err("longer than 1024 bytes");
    }
    if value.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

impl Matcher {
    /// Builds a matcher; regexes are anchored like Alertmanager's.
    pub fn new(name: &str, op: Op, value: &str) -> Result<Self, String> {
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        let re = match op {
            Op::Re | Op::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            Op::Eq | Op::Ne => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Parses `name="value"`, `name!=value`, `name=~"re"`, `name!~re` (quotes optional).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(t)
            .trim();
        let pos = t.find(['=', '!']).ok_or_else(|| {
            format!("{text:?}: expected name=value, name!=value, name=~re or name!~re")
        })?;
        let name = t[..pos].trim();
        let rest = &t[pos..];
        let (op, val) = if let Some(v) = rest.strip_prefix("=~") {
            (Op::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (Op::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (Op::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Eq, v)
        } else {
            return Err(format!("{text:?}: unknown operator"));
        };
        let val = val.trim();
        let val = if val.len() >= 2 && val.starts_with('"') && val.ends_with('"') {
            serde_json::from_str::<String>(val)
                .map_err(|e| format!("{text:?}: bad quoted value: {e}"))?
        } else {
            val.to_owned()
        };
        Matcher::new(name, op, &val).map_err(|e| format!("{text:?}: {e}"))
    }

    /// Whether the label set satisfies this matcher.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match self.op {
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
            Op::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            Op::NotRe => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// All matchers match.
pub fn all_match(ms: &[Matcher], labels: &LabelSet) -> bool {
    ms.iter().all(|m| m.matches(labels))
}

/// A matcher in the shape of Alertmanager's silence API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceMatcher {
    /// Label name.
    pub name: String,
    /// Value or regex.
    pub value: String,
    /// Regex match.
    #[serde(rename = "isRegex", default)]
    pub is_regex: bool,
    /// Equality (false negates), default true as in Alertmanager.
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    /// Compiles it.
    pub fn compile(&self) -> Result<Matcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => Op::Eq,
            (false, false) => Op::Ne,
            (true, true) => Op::Re,
            (true, false) => Op::NotRe,
        };
        Matcher::new(&self.name, op, &self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(p: &[(&str, &str)]) -> LabelSet {
        p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn parses_all_four_operators_and_quotes() {
        let l = ls(&[("alertname", "GpuThermal"), ("node", "gpu-01")]);
        assert!(Matcher::parse("alertname=GpuThermal").unwrap().matches(&l));
        assert!(
            Matcher::parse(r#"alertname="GpuThermal""#)
                .unwrap()
                .matches(&l)
        );
        assert!(Matcher::parse("node!=gpu-02").unwrap().matches(&l));
        assert!(Matcher::parse("node=~gpu-0[0-9]").unwrap().matches(&l));
        assert!(!Matcher::parse(r#"node!~"gpu-.*""#).unwrap().matches(&l));
    }

    #[test]
    fn regexes_are_anchored_and_missing_labels_are_empty() {
        let l = ls(&[("node", "gpu-01x")]);
        assert!(!Matcher::parse("node=~gpu-01").unwrap().matches(&l));
        assert!(Matcher::parse("gpu=").unwrap().matches(&l));
        assert!(Matcher::parse("gpu!~.+").unwrap().matches(&l));
    }

    #[test]
    fn bad_names_and_regexes_are_refused() {
        assert!(Matcher::parse("1x=a").is_err());
        assert!(Matcher::parse("x=~(").is_err());
        assert!(Matcher::parse("nothing").is_err());
    }
}
