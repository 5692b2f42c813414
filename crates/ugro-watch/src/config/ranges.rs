//! Upper (and lower) bounds for the cluster file's numbers and durations (issue 15): a
//! `history: 100000000000` would reserve memory per node, a timeout of centuries overflows
//! the deadline arithmetic. Each failure names `file:line: field` and the value.

use std::time::Duration;

use ugro_support::config::Range;

use super::Cluster;

const MS10: Duration = Duration::from_millis(10);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// `Err((field, message))` for the first value out of its range.
pub(super) fn check(c: &Cluster) -> Result<(), (String, String)> {
    let iv = &c.intervals;
    let t = Range::new(MS10, HOUR);
    [
        Range::new(1, 100_000).check("concurrency", c.concurrency),
        t.check("timeout", c.timeout),
        t.check("ssh.connect_timeout", c.ssh.connect_timeout),
        Range::new(MS10, DAY).check("intervals.base", iv.base),
        Range::new(MS10, 7 * DAY).check("intervals.max", iv.max),
        Range::new(Duration::ZERO, HOUR).check("intervals.reconnect_min", iv.reconnect_min),
        Range::new(Duration::ZERO, DAY).check("intervals.reconnect_max", iv.reconnect_max),
        Range::new(0, 100_000).check("state.history", c.state.history),
        Range::new(Duration::ZERO, DAY).check("state.stats_every", c.state.stats_every),
        Range::new(Duration::ZERO, 7 * DAY).check("activity.file_fresh", c.activity.file_fresh),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Cluster;

    #[test]
    fn out_of_range_values_are_refused_naming_line_field_and_value() {
        for (text, want) in [
            (
                "nodes:\n  - name: a\nstate:\n  history: 100000000000\n",
                "c.yaml:4: state.history: 100000000000 is out of range",
            ),
            (
                "nodes:\n  - name: a\ntimeout: 100years\n",
                "c.yaml:3: timeout: 100years",
            ),
            (
                "nodes:\n  - name: a\nssh:\n  connect_timeout: 1ms\n",
                "c.yaml:4: ssh.connect_timeout: 1ms",
            ),
        ] {
            let e = Cluster::parse(Path::new("c.yaml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}\n{e}");
        }
    }
}
