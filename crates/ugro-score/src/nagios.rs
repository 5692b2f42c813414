//! `--format nagios`: the Monitoring Plugins check of one run's samples, bounded to Nagios Core's
//! documented limit (MAX_PLUGIN_OUTPUT_LENGTH, 8192 bytes of output with perfdata), with `-w` /
//! `--critical` ranges on the score and perfdata whose thresholds explain the status.

use std::fmt::Write as _;
use std::str::FromStr;

use ugro_types::{HealthState, Score};

use crate::config::StateThresholds;
use crate::output::worse;

/// Nagios Core documents 8192 bytes of plugin output (MAX_PLUGIN_OUTPUT_LENGTH, with the C
/// string's NUL) and paths built to it cut past it; the whole output stays under it with room
/// to spare.
pub const MAX_OUTPUT: usize = 8000;
/// The default cap on the first line's perfdata (`--max-perfdata`).
pub const DEFAULT_MAX_PERFDATA: usize = 5120;
/// Summaries longer than this are shortened at a word in the status line and long text.
const MAX_SUMMARY: usize = 300;
/// Room kept at the end of the long text for the "more nodes not listed" line.
const TAIL_RESERVE: usize = 64;

/// A threshold range as the Monitoring Plugins guidelines write it: `[@][start:][end]`, `~`
/// for minus infinity; a value outside it (inside with `@`) alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    start: f64,
    end: f64,
    inside: bool,
    text: String,
}

impl Range {
    /// `start:` — alert below `start`, the form the score's own thresholds take.
    pub fn at_least(start: f64) -> Range {
        Range {
            start,
            end: f64::INFINITY,
            inside: false,
            text: format!("{start}:"),
        }
    }

    /// Whether `v` alerts.
    pub fn alerts(&self, v: f64) -> bool {
        let within = self.start <= v && v <= self.end;
        within == self.inside
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Range {
    type Err = String;

    fn from_str(s: &str) -> Result<Range, String> {
        let bad =
            |why: &str| format!("{s:?}: {why} (range syntax: [@][start:][end], e.g. 70: or @0:40)");
        let (inside, body) = s.strip_prefix('@').map_or((false, s), |b| (true, b));
        let num = |t: &str| t.parse::<f64>().ok().filter(|v| v.is_finite());
        let (start, end) = match body.split_once(':') {
            Some((a, b)) => {
                let start = match a {
                    "~" => f64::NEG_INFINITY,
                    "" => 0.0,
                    a => num(a).ok_or_else(|| bad("start is not a number"))?,
                };
                let end = match b {
                    "" => f64::INFINITY,
                    b => num(b).ok_or_else(|| bad("end is not a number"))?,
                };
                (start, end)
            }
            None => (0.0, num(body).ok_or_else(|| bad("not a number"))?),
        };
        if start > end {
            return Err(bad("start is above end"));
        }
        Ok(Range {
            start,
            end,
            inside,
            text: s.to_owned(),
        })
    }
}

/// What shapes a check's output.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// `-w`: WARNING when the score alerts (default `<degraded>:`).
    pub warning: Option<Range>,
    /// `--critical`: CRITICAL when the score alerts (default `<critical>:`).
    pub critical: Option<Range>,
    /// Bytes of perfdata on the first line at most.
    pub max_perfdata: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            warning: None,
            critical: None,
            max_perfdata: DEFAULT_MAX_PERFDATA,
        }
    }
}

struct Judge<'a> {
    warn: Range,
    crit: Range,
    t: &'a StateThresholds,
}

impl Judge<'_> {
    /// A node's check state: a hard fail is critical and missing data unknown, as the scorer
    /// says; the total against the ranges; a ruined component or a degraded GPU warns (the
    /// scorer's rule). Each cause has a perfdata value whose thresholds say the same.
    fn state(&self, s: &Score) -> HealthState {
        if fatal_count(s) > 0 {
            return HealthState::Critical;
        }
        let Some(total) = s.total.filter(|_| s.state != HealthState::Unknown) else {
            return HealthState::Unknown;
        };
        let c = &s.components;
        let ruined = [c.gpu, c.system, c.network, c.process]
            .into_iter()
            .flatten()
            .any(|v| v < self.t.critical);
        let slow_gpu = s.gpus.iter().any(|g| g.score < self.t.degraded);
        if self.crit.alerts(total) {
            HealthState::Critical
        } else if self.warn.alerts(total) || ruined || slow_gpu {
            HealthState::Degraded
        } else {
            HealthState::Healthy
        }
    }
}

fn fatal_count(s: &Score) -> usize {
    s.reasons.iter().filter(|r| r.fatal).count()
}

/// Text for the status line or long text: no perfdata separator, no line break, at most
/// [`MAX_SUMMARY`] bytes (cut at a word, marked with `...`).
fn plugin_text(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '|' => '/',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    if clean.len() <= MAX_SUMMARY {
        return clean;
    }
    let mut cut = MAX_SUMMARY - 4;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &clean[..cut];
    let head = head.rsplit_once(' ').map_or(head, |(h, _)| h);
    format!("{head} ...")
}

/// A node name inside a quoted perfdata label: the guidelines reserve `'` and `=` there.
fn perf_label(node: &str) -> String {
    node.chars()
        .map(|c| {
            if matches!(c, '\'' | '=' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn token(label: &str, value: Option<f64>, warn: &str, crit: &str, max: &str) -> String {
    match value {
        Some(v) => format!("'{label}'={v};{warn};{crit};0;{max}"),
        None => format!("'{label}'=U;{warn};{crit};0;{max}"),
    }
}

/// A node's perfdata: first the score (and its hard fails, when it has any), then the
/// components and GPUs, so a capped check keeps every node's score before any detail.
fn node_tokens(prefix: &str, s: &Score, j: &Judge<'_>) -> (Vec<String>, Vec<String>) {
    let (w, c) = (j.warn.to_string(), j.crit.to_string());
    let mut first = vec![token(&format!("{prefix}score"), s.total, &w, &c, "100")];
    let fatal = fatal_count(s);
    if fatal > 0 {
        // Range "0": any hard fail is critical, as the status says.
        first.push(format!("'{prefix}fatal'={fatal};;0;0;"));
    }
    let comp_warn = format!("{}:", j.t.critical);
    let gpu_warn = format!("{}:", j.t.degraded);
    let k = &s.components;
    let mut rest = Vec::new();
    for (label, v) in [
        ("gpu", k.gpu),
        ("system", k.system),
        ("network", k.network),
        ("process", k.process),
    ] {
        if v.is_some() {
            rest.push(token(&format!("{prefix}{label}"), v, &comp_warn, "", "100"));
        }
    }
    for g in &s.gpus {
        let label = format!("{prefix}gpu{}", g.index);
        rest.push(token(&label, Some(g.score), &gpu_warn, "", "100"));
    }
    (first, rest)
}

/// Whole tokens, in order, while they fit in `budget` bytes (with their separating spaces);
/// returns the perfdata and how many tokens were left out.
fn fit_tokens(tokens: &[String], budget: usize) -> (String, usize) {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if out.len() + 1 + t.len() > budget {
            return (out, tokens.len() - i);
        }
        out.push(' ');
        out.push_str(t);
    }
    (out, 0)
}

/// The whole plugin output for the samples of one run, following the Monitoring Plugins
/// guidelines and bounded to [`MAX_OUTPUT`] bytes: `UGRO <STATE> - <text> | <perfdata>` for the
/// worst state (also the exit status), perfdata capped at `max_perfdata` in whole tokens (the
/// text says how many were left out); with several samples, one long-text line per node,
/// worst first, while they fit. `bad_lines` rejected lines make the state at least UNKNOWN.
pub fn report(
    checks: &[(String, Score)],
    dropped: u64,
    bad_lines: u64,
    t: &StateThresholds,
    opts: &CheckOptions,
) -> (HealthState, String) {
    let judge = Judge {
        warn: opts
            .warning
            .clone()
            .unwrap_or_else(|| Range::at_least(t.degraded)),
        crit: opts
            .critical
            .clone()
            .unwrap_or_else(|| Range::at_least(t.critical)),
        t,
    };
    let mut judged: Vec<(&str, &Score, HealthState)> = checks
        .iter()
        .map(|(n, s)| (n.as_str(), s, judge.state(s)))
        .collect();
    // Worst first, lowest score first within a state: what a capped output keeps.
    judged.sort_by(|a, b| {
        b.2.badness().cmp(&a.2.badness()).then(
            a.1.total
                .unwrap_or(-1.0)
                .total_cmp(&b.1.total.unwrap_or(-1.0)),
        )
    });
    let mut worst = judged.iter().map(|j| j.2).reduce(|a, b| worse(Some(a), b));
    if bad_lines > 0 || worst.is_none() {
        worst = Some(worse(worst, HealthState::Unknown));
    }
    let worst = worst.unwrap_or(HealthState::Unknown);
    let mut out = format!("UGRO {} - ", worst.plugin_status().label());
    let bad = match bad_lines {
        0 => String::new(),
        1 => "; 1 bad input line".to_owned(),
        n => format!("; {n} bad input lines"),
    };
    let (tokens, nodes) = match judged.as_slice() {
        [] => {
            out.push_str(if bad_lines > 0 {
                "no valid sample in the input"
            } else {
                "no samples in the input"
            });
            out.push_str(&bad);
            return (worst, out);
        }
        [(node, score, _)] => {
            let _ = write!(
                out,
                "{}: {}{bad}",
                plugin_text(node),
                plugin_text(&score.summary)
            );
            let (mut a, b) = node_tokens("", score, &judge);
            a.extend(b);
            (a, None)
        }
        many => {
            let _ = write!(
                out,
                "{} nodes: {}; {}: {}{bad}",
                many.len() as u64 + dropped,
                counts(many),
                plugin_text(many[0].0),
                plugin_text(&many[0].1.summary),
            );
            (many_tokens(many, &judge), Some(many))
        }
    };
    let budget = opts
        .max_perfdata
        .min(MAX_OUTPUT.saturating_sub(out.len() + 200));
    let (perf, left_out) = fit_tokens(&tokens, budget);
    if left_out > 0 {
        let _ = write!(
            out,
            "; perfdata: {left_out} of {} values left out (--max-perfdata {})",
            tokens.len(),
            opts.max_perfdata
        );
    }
    out.push_str(" |");
    out.push_str(&perf);
    if let Some(many) = nodes {
        long_text(&mut out, many, dropped);
    }
    (worst, out)
}

fn counts(many: &[(&str, &Score, HealthState)]) -> String {
    let n = |st: HealthState| many.iter().filter(|j| j.2 == st).count();
    format!(
        "{} critical, {} unknown, {} degraded, {} healthy",
        n(HealthState::Critical),
        n(HealthState::Unknown),
        n(HealthState::Degraded),
        n(HealthState::Healthy)
    )
}

/// The counts (a critical or degraded node is CRITICAL or WARNING by its count's range), then
/// every node's score, then the details.
fn many_tokens(many: &[(&str, &Score, HealthState)], judge: &Judge<'_>) -> Vec<String> {
    let n = |st: HealthState| many.iter().filter(|j| j.2 == st).count();
    let mut tokens = vec![
        format!("'nodes'={};;;0;", many.len()),
        format!("'critical'={};;0;0;", n(HealthState::Critical)),
        format!("'unknown'={};;;0;", n(HealthState::Unknown)),
        format!("'degraded'={};0;;0;", n(HealthState::Degraded)),
        format!("'healthy'={};;;0;", n(HealthState::Healthy)),
    ];
    let mut details = Vec::new();
    for (node, score, _) in many {
        let (first, rest) = node_tokens(&format!("{} ", perf_label(node)), score, judge);
        tokens.extend(first);
        details.extend(rest);
    }
    tokens.extend(details);
    tokens
}

/// One line per node, worst first, while the whole output stays under [`MAX_OUTPUT`]; the rest
/// are counted on a last line.
fn long_text(out: &mut String, many: &[(&str, &Score, HealthState)], dropped: u64) {
    for (i, (node, score, _)) in many.iter().enumerate() {
        let line = format!("\n{}: {}", plugin_text(node), plugin_text(&score.summary));
        if out.len() + line.len() + TAIL_RESERVE > MAX_OUTPUT {
            let more = (many.len() - i) as u64 + dropped;
            let _ = write!(out, "\n({more} more nodes not listed)");
            return;
        }
        out.push_str(&line);
    }
    if dropped > 0 {
        let _ = write!(out, "\n({dropped} more samples not listed)");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Range;

    #[test]
    fn ranges_alert_as_the_plugin_guidelines_define() {
        let r = |s: &str| s.parse::<Range>().unwrap();
        // (range, value, alerts)
        for (range, v, want) in [
            ("10", 11.0, true),
            ("10", -1.0, true),
            ("10", 5.0, false),
            ("70:", 69.9, true),
            ("70:", 70.0, false),
            ("~:40", 41.0, true),
            ("~:40", -100.0, false),
            ("10:20", 9.0, true),
            ("10:20", 15.0, false),
            ("@10:20", 15.0, true),
            ("@10:20", 21.0, false),
        ] {
            assert_eq!(r(range).alerts(v), want, "{range} {v}");
        }
        for bad in ["", "abc", "20:10", "@", "1:x", "nan"] {
            assert!(bad.parse::<Range>().is_err(), "{bad:?}");
        }
    }
}
