//! Range checks for every number and duration in the alert configuration (issue 15): a
//! `queue_size: 0` would block every sender, `attempts: 0` would drop every notification,
//! a duration of centuries overflows the clock arithmetic. The loader already refuses
//! non-finite numbers; these say what each value may be, naming `file:line: field` and the
//! value.

use std::time::Duration;

use ugro_support::config::Range;

use super::{RawConfig, RawReceiver, RawRoute};

type Check = Result<(), (String, String)>;

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A send or command time limit: long enough to connect, short enough to notice.
const TIMEOUT: Range<Duration> = Range::new(Duration::from_millis(100), HOUR);

/// `Err((field, message))` for the first value out of its range.
pub(super) fn check(raw: &RawConfig) -> Check {
    let g = &raw.global;
    let d = &raw.delivery;
    let mut checks: Vec<Check> = vec![
        Range::new(Duration::ZERO, 7 * DAY).check("global.resolve_timeout", g.resolve_timeout),
        Range::new(1, 10_000_000).check("global.cluster_min_nodes", g.cluster_min_nodes),
        Range::new(SEC, 7 * DAY).check("global.cluster_window", g.cluster_window),
        Range::new(Duration::ZERO, DAY).check("global.max_clock_skew", g.max_clock_skew),
        TIMEOUT.check("delivery.timeout", d.timeout),
        Range::new(1, 100).check("delivery.attempts", d.attempts),
        Range::new(Duration::ZERO, HOUR).check("delivery.backoff", d.backoff),
        Range::new(Duration::ZERO, DAY).check("delivery.max_backoff", d.max_backoff),
        Range::new(1, 10_000_000).check("delivery.spool_max_entries", d.spool_max_entries),
        Range::new(0, 1 << 40).check("delivery.spool_max_bytes", d.spool_max_bytes),
        Range::new(SEC, DAY).check("delivery.spool_retry_interval", d.spool_retry_interval),
        Range::new(SEC, HOUR).check("delivery.budget", d.budget),
        Range::new(1, 1_000_000).check("delivery.queue_size", d.queue_size),
    ];
    if let Some(r) = &raw.route {
        route(r, "route", &mut checks);
    }
    for (i, r) in raw.receivers.iter().enumerate() {
        receiver(r, &format!("receivers[{i}]"), &mut checks);
    }
    checks.into_iter().collect()
}

fn opt(range: Range<Duration>, field: String, v: Option<Duration>) -> Check {
    v.map_or(Ok(()), |v| range.check(&field, v))
}

fn route(r: &RawRoute, at: &str, checks: &mut Vec<Check>) {
    checks.push(opt(
        Range::new(Duration::ZERO, DAY),
        format!("{at}.group_wait"),
        r.group_wait,
    ));
    let interval = Range::new(SEC, 365 * DAY);
    checks.push(opt(
        interval,
        format!("{at}.group_interval"),
        r.group_interval,
    ));
    checks.push(opt(
        interval,
        format!("{at}.repeat_interval"),
        r.repeat_interval,
    ));
    for (i, sub) in r.routes.iter().enumerate() {
        route(sub, &format!("{at}.routes[{i}]"), checks);
    }
}

fn receiver(r: &RawReceiver, at: &str, checks: &mut Vec<Check>) {
    if let Some(e) = &r.exec {
        checks.push(opt(TIMEOUT, format!("{at}.exec.timeout"), e.timeout));
    }
    if let Some(w) = &r.webhook {
        checks.push(
            Range::new(0, 1_000_000).check(&format!("{at}.webhook.max_alerts"), w.max_alerts),
        );
    }
    if let Some(a) = &r.alertmanager {
        let resend = Range::new(SEC, DAY);
        checks.push(opt(
            resend,
            format!("{at}.alertmanager.resend_interval"),
            a.resend_interval,
        ));
    }
    if let Some(s) = &r.slurm_drain {
        checks.push(opt(TIMEOUT, format!("{at}.slurm_drain.timeout"), s.timeout));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::AlertConfig;

    fn err(text: &str) -> String {
        AlertConfig::from_str(Path::new("a.yaml"), text)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn out_of_range_values_are_refused_naming_line_field_and_value() {
        for (text, want) in [
            (
                "delivery:\n  attempts: 0\n",
                "a.yaml:2: delivery.attempts: 0 is out of range",
            ),
            (
                "delivery:\n  timeout: 5s\n  queue_size: 0\n",
                "a.yaml:3: delivery.queue_size: 0",
            ),
            (
                "global:\n  cluster_window: 0s\n",
                "a.yaml:2: global.cluster_window: 0s",
            ),
            (
                "route:\n  receiver: stdout\n  routes:\n    - receiver: stdout\n    - receiver: stdout\n      repeat_interval: 0s\n",
                "a.yaml:6: route.routes[1].repeat_interval: 0s",
            ),
            (
                "receivers:\n  - name: a\n    stdout: {}\n  - name: b\n    exec:\n      command: [true]\n      timeout: 1ms\n",
                "a.yaml:7: receivers[1].exec.timeout: 1ms",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text}\n{e}");
        }
    }

    #[test]
    fn the_defaults_are_within_every_range() {
        AlertConfig::from_str(Path::new("a.yaml"), "{}\n").unwrap();
    }
}
