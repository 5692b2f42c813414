//! The watcher's own cost at fleet sizes a host's file-descriptor limit does not allow with one
//! child process per node (scripts/bench-watch-scale.sh): the real monitor (scheduler, poll
//! tasks, scorer on its thread, output) over an in-process transport whose nodes answer a
//! probe-sized sample line after a latency, in real time. No pipes, no processes: what this
//! measures is the watcher alone (RSS, CPU per poll, cycle time), beside the command-transport
//! run that adds 3 fds and a child per node.
//!
//!     cargo run --release -p ugro-watch --example scale_sim -- [NODES] [CYCLES] [BASE_MS]

// A benchmark program: its output is the report.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::sync::mpsc;
use ugro_watch::clock::{Clock, TokioClock};
use ugro_watch::link::{LinkSpec, PollError};
use ugro_watch::monitor::{self, Control, Deps, LiveOpts};
use ugro_watch::poll::{BoxFuture, NodeLink, Timing, Transport};
use ugro_watch::{Cli, Cluster};

/// Answer latency of every fake node.
const LATENCY: Duration = Duration::from_millis(50);

// The fake node's sample line is the paused-time tests' (one busy GPU).
#[path = "../tests/live/mod.rs"]
mod live;

#[derive(Clone)]
struct Net {
    clock: Arc<TokioClock>,
}

struct Link {
    node: String,
    clock: Arc<TokioClock>,
}

impl NodeLink for Link {
    fn poll(&mut self) -> BoxFuture<'_, Result<String, PollError>> {
        Box::pin(async move {
            tokio::time::sleep(LATENCY).await;
            Ok(live::sample_line(&self.node, self.clock.wall(), 80, false))
        })
    }
    fn set_timing(&mut self, _t: Timing) {}
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Transport for Net {
    fn open(&self, spec: LinkSpec, _t: Timing) -> Box<dyn NodeLink> {
        Box::new(Link {
            node: spec.node,
            clock: self.clock.clone(),
        })
    }
}

/// Keeps the stats records of the output and counts the rest, so the captured output does not
/// grow the RSS being measured.
#[derive(Clone, Default)]
struct Stats {
    lines: Arc<Mutex<Vec<String>>>,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl Write for Stats {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut p = self.partial.lock().unwrap();
        p.extend_from_slice(b);
        while let Some(i) = p.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = p.drain(..=i).collect();
            let pat: &[u8] = b"\"kind\":\"stats\"";
            if line.windows(pat.len()).any(|w| w == pat) {
                self.lines
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&line).into_owned());
            }
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn proc_status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU of this process, seconds.
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let arg = |i: usize, d: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (nodes, cycles, base_ms) = (arg(1, 10_000), arg(2, 12), arg(3, 5_000));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    let mut y = format!(
        "intervals: {{base: {base_ms}ms, max: {base_ms}ms, spread: 0}}\ntimeout: 10s\n\
         concurrency: {nodes}\ntransport: {{command: [fake, '{{node}}']}}\nnodes:\n"
    );
    for i in 0..nodes {
        y.push_str(&format!("  - name: sim-{i:05}\n"));
    }
    std::fs::write(&path, y).unwrap();
    let argv = [
        "ugro-watch",
        "-c",
        path.to_str().unwrap(),
        "--format",
        "json",
    ];
    let cli = Cli::try_parse_from(argv).unwrap();
    let cluster = Cluster::load(&path).unwrap();
    let overrides = ugro_watch::Overrides::from_cli(&cli).unwrap();
    let mut setup = ugro_watch::setup(&cli, &cluster).unwrap();
    let out = Stats::default();
    setup.output.out = Some(Box::new(out.clone()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cpu0, t0) = (cpu_s(), std::time::Instant::now());
    rt.block_on(async {
        let clock = Arc::new(TokioClock::system());
        let (_ctl, control) = mpsc::unbounded_channel::<Control>();
        let deps = Deps {
            clock: clock.clone(),
            transport: Arc::new(Net { clock }),
            control,
        };
        let opts = LiveOpts {
            cycles: Some(cycles),
            deploy: false,
            overrides,
            cluster_path: Some(path.clone()),
            tags: Vec::new(),
            stats_every: Duration::from_millis(base_ms),
            tick: cli.tick,
        };
        monitor::run(cluster, opts, setup, deps).await.unwrap();
    });
    report(nodes, cycles, base_ms, &out, cpu_s() - cpu0, t0.elapsed());
}

fn report(nodes: u64, cycles: u64, base_ms: u64, out: &Stats, cpu: f64, wall: Duration) {
    #[derive(serde::Deserialize)]
    struct S {
        cycles: u64,
        cycle_ms: Option<f64>,
        cycle_ms_max: Option<f64>,
        probes: u64,
    }
    let stats: Vec<S> = out
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let probes: u64 = stats.iter().map(|s| s.probes).sum();
    // The first two stats records cover start-up (the first cycle's polls all at once).
    let steady: Vec<&S> = stats.iter().filter(|s| s.cycles > 0).skip(2).collect();
    let mean = steady.iter().filter_map(|s| s.cycle_ms).sum::<f64>() / steady.len().max(1) as f64;
    let worst = steady
        .iter()
        .filter_map(|s| s.cycle_ms_max)
        .fold(0.0, f64::max);
    println!(
        "in-process transport, {nodes} nodes, base {base_ms} ms, {cycles} cycles, answer after {} ms",
        LATENCY.as_millis()
    );
    println!("  polls                      {probes}");
    println!(
        "  watcher RSS, peak          {:.1} MB ({:.1} kB per node)",
        proc_status("VmHWM:") as f64 / 1024.0,
        proc_status("VmHWM:") as f64 / nodes as f64
    );
    println!(
        "  watcher CPU                {cpu:.2} s over {:.1} s ({:.0} µs per poll)",
        wall.as_secs_f64(),
        cpu * 1e6 / probes.max(1) as f64
    );
    println!(
        "  steady cycle, mean / worst {mean:.0} / {worst:.0} ms (the slowest node answers in {} ms)",
        LATENCY.as_millis()
    );
}
