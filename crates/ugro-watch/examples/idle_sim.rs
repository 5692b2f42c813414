//! The idle figures of scripts/bench-watch.sh, computed by the real scheduler under fake time:
//! probes per hour for an idle fleet against fixed 5 s polling, and how long a job start
//! takes to be noticed when it is reported by the jobs command (checked every base interval).
//!
//!     cargo run --release -p ugro-watch --example idle_sim -- [NODES]

// A benchmark program: its output is the report.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use ugro_types::Timestamp;
use ugro_watch::sched::{Clock, FakeClock, Outcome, SchedConf, Scheduler};

const TICK_MS: u64 = 100;
const LATENCY_MS: u64 = 120;

fn main() {
    let nodes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let conf = SchedConf {
        base_ms: 5_000,
        max_ms: 60_000,
        spread: 0.5,
        concurrency: 64,
    };
    let clock = FakeClock::new(Timestamp(0));
    let mut s = Scheduler::new(conf.clone());
    for i in 0..nodes {
        s.add(&format!("gpu-{i:04}"));
    }
    let hour = 3_600_000;
    let mut pending: Vec<(u64, usize)> = Vec::new();
    let mut probes = 0u64;
    // One idle hour, then jobs start on 100 nodes at scattered instants.
    let mut starts: Vec<(u64, usize)> = (0..100u64)
        .map(|k| {
            let t = hour + 7_919 * k % 600_000 + (k * 37) % 1_000;
            (t, (k as usize * 97) % nodes)
        })
        .collect();
    starts.sort_unstable();
    let mut started: Vec<Option<u64>> = vec![None; nodes];
    let mut noticed: Vec<u64> = Vec::new();
    let end = hour + 700_000;
    while clock.mono_ms() <= end {
        let now = clock.mono_ms();
        pending.sort_unstable();
        while let Some(&(t, i)) = pending.first() {
            if t > now {
                break;
            }
            pending.remove(0);
            let active = started[i].is_some();
            s.done(
                i,
                Outcome {
                    active,
                    ..Outcome::default()
                },
                t,
            );
        }
        // The jobs command runs once per base interval and reports the busy nodes.
        if now.is_multiple_of(conf.base_ms) {
            for &(t, i) in starts.iter().filter(|(t, _)| *t <= now) {
                if started[i].is_none() {
                    started[i] = Some(t);
                    s.activate(i);
                }
            }
        }
        for i in s.due(now) {
            if now < hour {
                probes += 1;
            }
            // The first poll after the job start is when the watcher has noticed it.
            if let Some(t) = started[i].filter(|t| *t < u64::MAX / 2) {
                noticed.push(now - t);
                started[i] = Some(u64::MAX / 2);
            }
            pending.push((now + LATENCY_MS, i));
        }
        clock.advance(Duration::from_millis(TICK_MS));
    }
    let fixed = nodes as u64 * (hour / conf.base_ms);
    let fewer = 100.0 * (1.0 - probes as f64 / fixed as f64);
    let worst = noticed.iter().max().copied().unwrap_or(0);
    let mean = noticed.iter().sum::<u64>() as f64 / noticed.len().max(1) as f64;
    println!("idle fleet of {nodes} nodes, one hour (fake time, real scheduler):");
    println!("  {:<34} {:>12} {:>12}", "", "ugro-watch", "fixed 5s");
    println!("  {:<34} {:>12} {:>12}", "probes per hour", probes, fixed);
    println!(
        "  {:<34} {:>11.1}% {:>12}",
        "fewer probes", fewer, "target ≥90%"
    );
    println!(
        "  {:<34} {:>10} ms {:>12}",
        "job start → poll, worst of 100", worst, "≤ 5000 ms"
    );
    println!("  {:<34} {:>10.0} ms", "job start → poll, mean", mean);
    println!(
        "  RESULT idle: {} ({}% fewer, worst notice {} ms)",
        if fewer >= 90.0 && worst <= 5_000 {
            "PASS"
        } else {
            "FAIL"
        },
        fewer.round(),
        worst
    );
}
