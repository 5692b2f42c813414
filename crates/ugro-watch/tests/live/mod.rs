//! The live loop in-process under tokio's paused time: an injected clock, an in-process fake
//! transport whose nodes answer after a latency (in paused time), hang, or fail, and captured
//! output. Poll times are logged by the fake links in the paused clock, so a schedule can be
//! checked without depending on the machine's speed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use tokio::sync::mpsc;
use ugro_types::Timestamp;
use ugro_watch::clock::{Clock, TokioClock};
use ugro_watch::link::{LinkSpec, PollError};
use ugro_watch::monitor::{self, Control, Deps, LiveOpts};
use ugro_watch::poll::{BoxFuture, NodeLink, Timing, Transport};
use ugro_watch::{Cli, Cluster};

/// How a fake node behaves at a given poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Answers after `latency` with one GPU at `util` percent, lost when `lost`.
    Answer {
        /// Paused-clock latency.
        latency: Duration,
        /// GPU utilisation.
        util: u32,
        /// The GPU is lost (the scorer says critical).
        lost: bool,
    },
    /// Never answers (the poll times out).
    Hang,
    /// The session fails at once.
    Down,
}

/// A healthy node answering after 50 ms with a busy GPU (so it stays at the base interval).
pub const BUSY: Behaviour = Behaviour::Answer {
    latency: Duration::from_millis(50),
    util: 80,
    lost: false,
};

/// Behaviour by node name and paused-clock time (ms since the start).
pub type Script = Arc<dyn Fn(&str, u64) -> Behaviour + Send + Sync>;

/// The fake network: every poll is logged as (node, paused ms at dispatch).
#[derive(Clone)]
pub struct FakeNet {
    pub script: Script,
    pub clock: Arc<TokioClock>,
    pub polls: Arc<Mutex<Vec<(String, u64)>>>,
}

struct FakeLink {
    node: String,
    net: FakeNet,
    timeout: Duration,
}

/// A sample line like the fake probe's.
pub fn sample_line(node: &str, ts: Timestamp, util: u32, lost: bool) -> String {
    let state = if lost { "lost" } else { "ok" };
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{ts}","node":"{node}","gpu":{{"status":"ok","source":"fake","devices":[{{"index":0,"state":"{state}","temperature_c":55,"utilization_pct":{util}}}]}},"host":{{"cpu_pct":5.0,"cpus":8,"load":[0.1,0.1,0.1],"memory_total_bytes":68719476736,"memory_available_bytes":60000000000,"disks":[]}},"network":{{"interfaces":[]}},"processes":{{"total":100,"zombies":0,"d_state":0,"training":[]}}}}"#
    )
}

impl NodeLink for FakeLink {
    fn poll(&mut self) -> BoxFuture<'_, Result<String, PollError>> {
        Box::pin(async move {
            let at = self.net.clock.mono_ms();
            self.net.polls.lock().unwrap().push((self.node.clone(), at));
            let b = (self.net.script)(&self.node, at);
            let timeout = self.timeout;
            let answer = async {
                match b {
                    Behaviour::Answer {
                        latency,
                        util,
                        lost,
                    } => {
                        tokio::time::sleep(latency).await;
                        Ok(sample_line(&self.node, self.net.clock.wall(), util, lost))
                    }
                    Behaviour::Hang => std::future::pending().await,
                    Behaviour::Down => Err(PollError::Ssh("connection refused".into())),
                }
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(r) => r,
                Err(_) => Err(PollError::Timeout(timeout)),
            }
        })
    }
    fn set_timing(&mut self, t: Timing) {
        self.timeout = t.timeout;
    }
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Transport for FakeNet {
    fn open(&self, spec: LinkSpec, t: Timing) -> Box<dyn NodeLink> {
        Box::new(FakeLink {
            node: spec.node,
            net: self.clone(),
            timeout: t.timeout,
        })
    }
}

/// A writer whose bytes the test reads afterwards.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// What a run left behind.
pub struct Run {
    pub exit: ugro_types::Exit,
    /// stdout.
    pub out: Capture,
    /// The raw stream (`--tee`).
    pub raw: Capture,
    /// (node, paused ms) of every poll.
    pub polls: Vec<(String, u64)>,
    /// `--listen`: the endpoint, still serving the run's final view.
    pub endpoint: Option<ugro_watch::endpoint::Endpoint>,
}

impl Run {
    /// Paused-clock times of one node's polls.
    pub fn polls_of(&self, node: &str) -> Vec<u64> {
        self.polls
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Asserts that each of `nodes` was polled at least every `interval` + 10 % from its first
    /// poll to `until` (paused ms), and returns the worst gap seen.
    pub fn assert_on_schedule(&self, nodes: &[String], interval: u64, until: u64) -> u64 {
        let limit = interval + interval / 10;
        let mut worst = 0;
        for n in nodes {
            let t = self.polls_of(n);
            assert!(!t.is_empty(), "{n} never polled");
            let mut gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            // The time since its last poll counts as a gap too: a node polled a few times and
            // then starved must fail.
            gaps.push(until.saturating_sub(*t.last().unwrap()));
            let g = gaps.iter().copied().max().unwrap_or(0);
            assert!(
                g <= limit,
                "{n}: gap of {g} ms > {limit} ms; polls at {t:?}"
            );
            worst = worst.max(g);
        }
        worst
    }
}

/// Wall-clock origin of the paused clock: an hour ago, so that records are never ahead of the
/// host's clock (the stages refuse records from the future) however long the paused run.
pub fn wall0() -> Timestamp {
    Timestamp::now().sub(Duration::from_secs(3600))
}

/// Runs the watcher under paused time (call from a `start_paused` test) for `cycles` base
/// intervals; `args` are ugro-watch's command line after the program name.
pub async fn run(
    dir: &std::path::Path,
    yaml: &str,
    args: &[&str],
    script: Script,
    cycles: u64,
) -> Run {
    run_logged(dir, yaml, args, script, cycles, Arc::default()).await
}

/// [`run`], logging the polls into `polls` as they happen.
pub async fn run_logged(
    dir: &std::path::Path,
    yaml: &str,
    args: &[&str],
    script: Script,
    cycles: u64,
    polls: Arc<Mutex<Vec<(String, u64)>>>,
) -> Run {
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut argv = vec![
        "ugro-watch",
        "-c",
        path.to_str().unwrap(),
        "--format",
        "json",
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap();
    let mut cluster = Cluster::load(&path).unwrap();
    let overrides = ugro_watch::Overrides::from_cli(&cli).unwrap();
    overrides.apply(&mut cluster).unwrap();
    let mut setup = ugro_watch::setup(&cli, &cluster).unwrap();
    let endpoint = ugro_watch::start_endpoint(&cli).unwrap();
    setup.metrics = endpoint.as_ref().map(ugro_watch::endpoint::Endpoint::feed);
    let (out, raw) = (Capture::default(), Capture::default());
    setup.output.out = Some(Box::new(out.clone()));
    setup.output.tee = Some(Box::new(raw.clone()));
    let clock = Arc::new(TokioClock::starting_at(wall0()));
    let net = FakeNet {
        script,
        clock: clock.clone(),
        polls,
    };
    let (_ctl, control) = mpsc::unbounded_channel::<Control>();
    let deps = Deps {
        clock,
        transport: Arc::new(net.clone()),
        control,
    };
    let opts = LiveOpts {
        cycles: Some(cycles),
        deploy: false,
        overrides,
        cluster_path: Some(path),
        tags: Vec::new(),
        stats_every: cli.stats_every.unwrap_or(cluster.state.stats_every),
        tick: cli.tick,
    };
    let exit = monitor::run(cluster, opts, setup, deps).await.unwrap();
    let polls = net.polls.lock().unwrap().clone();
    Run {
        exit,
        out,
        raw,
        polls,
        endpoint,
    }
}

/// A cluster file of `nodes`, all on a command transport the fake network stands in for.
pub fn cluster_yaml(head: &str, nodes: &[String]) -> String {
    let mut y = format!("{head}transport: {{command: [fake, '{{node}}']}}\nnodes:\n");
    for n in nodes {
        y.push_str(&format!("  - name: {n}\n"));
    }
    y
}

/// Behaviour by node-name prefix.
pub fn by_prefix(rules: Vec<(&'static str, Behaviour)>) -> Script {
    let map: HashMap<&'static str, Behaviour> = rules.into_iter().collect();
    Arc::new(move |node, _| {
        map.iter()
            .find(|(p, _)| node.starts_with(**p))
            .map_or(BUSY, |(_, b)| *b)
    })
}
