//! The text exposition format: families with HELP and TYPE once and all their series together
//! (as `promtool check metrics` and node_exporter's textfile collector require), label values
//! escaped, values the way Prometheus's parser reads them.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::catalog::{Kind, Metric};

/// Label pairs, escaped once and reused: a GPU's `node`, `gpu`, `uuid` are written into every
/// one of its series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(String);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels(String::new())
    }

    /// These labels plus `name="value"`.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(name);
        self.0.push_str("=\"");
        escape_into(&mut self.0, value);
        self.0.push('"');
        self
    }

    /// A copy of these labels plus `name="value"`.
    pub fn and(&self, name: &str, value: &str) -> Self {
        self.clone().with(name, value)
    }

    /// A copy plus `name="value"` when there is a value.
    pub fn and_opt(&self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.and(name, v),
            None => self.clone(),
        }
    }
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// An exposition being built: series are added in any order and come out grouped by family,
/// families in the order they were first added.
#[derive(Debug, Default)]
pub struct Exposition {
    index: HashMap<&'static str, usize>,
    families: Vec<(&'static Metric, String)>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Adds one series; `None` adds nothing (no series is better than a made-up 0).
    pub fn set(&mut self, m: &'static Metric, labels: &Labels, value: Option<f64>) {
        let Some(v) = value else { return };
        let i = *self.index.entry(m.name).or_insert_with(|| {
            self.families.push((m, String::new()));
            self.families.len() - 1
        });
        let body = &mut self.families[i].1;
        body.push_str(m.name);
        if !labels.0.is_empty() {
            body.push('{');
            body.push_str(&labels.0);
            body.push('}');
        }
        body.push(' ');
        write_value(body, v);
        body.push('\n');
    }

    /// Adds a 0/1 series.
    pub fn flag(&mut self, m: &'static Metric, labels: &Labels, value: Option<bool>) {
        self.set(m, labels, value.map(|b| if b { 1.0 } else { 0.0 }));
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The text.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(self.text_len());
        // Writing into a Vec cannot fail, and every piece written is UTF-8.
        let _ = self.write_to(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The text's length in bytes, without rendering it.
    pub fn text_len(&self) -> usize {
        self.families
            .iter()
            .map(|(m, body)| Self::header(m).len() + body.len())
            .sum()
    }

    /// Writes the text family by family, without building it in one piece first: a fleet's
    /// exposition is tens of megabytes, and a writer such as a gzip encoder needs no second copy.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        for (m, body) in &self.families {
            w.write_all(Self::header(m).as_bytes())?;
            w.write_all(body.as_bytes())?;
        }
        Ok(())
    }

    fn header(m: &Metric) -> String {
        let kind = match m.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let mut h = String::with_capacity(m.help.len() + 2 * m.name.len() + 24);
        let _ = writeln!(h, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(h, "# TYPE {} {kind}", m.name);
        h
    }
}

/// Integers without a fraction, so counters read as counts; the special values as the
/// exposition format spells them (Rust would write `inf`).
fn write_value(out: &mut String, v: f64) {
    let _ = if v.is_nan() {
        write!(out, "NaN")
    } else if v.is_infinite() {
        write!(out, "{}", if v > 0.0 { "+Inf" } else { "-Inf" })
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        write!(out, "{}", v as i64)
    } else {
        write!(out, "{v}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{GPU_UP, PROBE_TIMESTAMP};

    #[test]
    fn series_are_grouped_by_family_with_help_and_type_once() {
        let mut e = Exposition::new();
        let a = Labels::new().with("node", "a");
        let b = Labels::new().with("node", "b");
        e.set(&PROBE_TIMESTAMP, &a, Some(1.5));
        e.flag(&GPU_UP, &a.and("gpu", "0"), Some(true));
        e.set(&PROBE_TIMESTAMP, &b, Some(2.0));
        e.set(&PROBE_TIMESTAMP, &b, None);
        let text = e.render();
        assert_eq!(
            text.matches("# TYPE ugro_probe_timestamp_seconds gauge")
                .count(),
            1
        );
        let ts_a = text
            .find("ugro_probe_timestamp_seconds{node=\"a\"} 1.5")
            .unwrap_or(0);
        let ts_b = text
            .find("ugro_probe_timestamp_seconds{node=\"b\"} 2\n")
            .unwrap_or(0);
        let up = text
            .find("ugro_gpu_up{node=\"a\",gpu=\"0\"} 1")
            .unwrap_or(0);
        assert!(ts_a > 0 && ts_b > ts_a && up > ts_b, "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_special_values_spelled_out() {
        let mut e = Exposition::new();
        let l = Labels::new().with("node", "a\"b\\c\nd");
        e.set(&PROBE_TIMESTAMP, &l, Some(f64::INFINITY));
        e.set(&PROBE_TIMESTAMP, &l, Some(f64::NAN));
        let text = e.render();
        assert!(text.contains(r#"{node="a\"b\\c\nd"} +Inf"#), "{text}");
        assert!(text.contains("} NaN\n"), "{text}");
    }
}
