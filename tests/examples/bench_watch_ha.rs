//! scripts/bench-watch-ha.sh: notifications per alert group with 1 watcher, 2 replicas of one
//! shard and 2 shards x 2 replicas of `ugro-watch --pipeline`, each watcher posting to both
//! members of a clustered pair of real Alertmanagers that page one webhook recorder. The same
//! fleet and the same faults (kinds and times) in each configuration, in three phases: all
//! watchers up; one replica killed a second after the phase's first fault; the second
//! Alertmanager down while faults start, and back after. The figure is firing notifications
//! per alert group (Alertmanager's group: node + alertname); the target is exactly 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ugro_e2e::alertmanager::{
    AmCluster, Recorder, available, replica_route, write_replica_configs,
};
use ugro_e2e::{KillOnDrop, bin, root};
use ugro_watch::shard::owner;

/// Alertmanager's group_interval: a duplicate would come at a group flush.
const GROUP_INTERVAL_S: u64 = 4;
/// Seconds between two faults of a phase.
const STAGGER: Duration = Duration::from_millis(1500);
/// How long after a phase's last fault its groups may take to page before they count as missed.
const PAGE_DEADLINE: Duration = Duration::from_secs(25);

/// A fault kind: the fake node's mode, the fixture its sample comes from, and the alerts
/// (alertname = the group with the node) that ugro-alert's catalog raises for it.
struct Kind {
    mode: &'static str,
    fixture: Option<&'static str>,
    alerts: &'static [&'static str],
}

const HEALTHY: Kind = Kind {
    mode: "healthy",
    fixture: Some("h200x8-idle.json"),
    alerts: &[],
};

static KINDS: [Kind; 8] = [
    Kind {
        mode: "xid79",
        fixture: Some("fault-xid79-gpu-lost.json"),
        alerts: &["NodeCritical", "GpuXidFatal", "GpuLost", "NodeCircuitOpen"],
    },
    Kind {
        mode: "ecc",
        fixture: Some("fault-ecc-uncorrected.json"),
        alerts: &["NodeCritical", "GpuEccErrors", "NodeCircuitOpen"],
    },
    Kind {
        mode: "remap",
        fixture: Some("fault-remap-failure.json"),
        alerts: &["NodeCritical", "GpuRowRemapFailure", "NodeCircuitOpen"],
    },
    Kind {
        mode: "thermal",
        fixture: Some("fault-thermal.json"),
        alerts: &["NodeDegraded", "GpuThermal", "GpuXid"],
    },
    Kind {
        mode: "pcie",
        fixture: Some("fault-pcie-x8.json"),
        alerts: &["NodeDegraded", "GpuPcieDegraded"],
    },
    Kind {
        mode: "throttle",
        fixture: Some("fault-hw-slowdown.json"),
        alerts: &["NodeDegraded", "GpuThrottled"],
    },
    Kind {
        mode: "gpus7of8",
        fixture: Some("fault-7-of-8.json"),
        alerts: &["NodeCritical", "GpuLost", "NodeCircuitOpen"],
    },
    Kind {
        mode: "hang",
        fixture: None,
        alerts: &["NodeUnreachable", "NodeCircuitOpen"],
    },
];

fn kind(mode: &str) -> &'static Kind {
    KINDS.iter().find(|k| k.mode == mode).expect("a known mode")
}

/// Per phase: (mode, shard of the faulty node with 2 shards). Every configuration faults the
/// same nodes at the same points of its run.
const PHASES: [(&str, &[(&str, u32)]); 3] = [
    (
        "all watchers up",
        &[
            ("xid79", 1),
            ("ecc", 2),
            ("remap", 1),
            ("thermal", 2),
            ("pcie", 1),
            ("throttle", 2),
            ("gpus7of8", 1),
            ("hang", 2),
        ],
    ),
    // All in the killed replica's shard.
    (
        "one replica killed (1 s after the first fault)",
        &[("xid79", 1), ("thermal", 1), ("hang", 1), ("remap", 1)],
    ),
    (
        "Alertmanager 2 down during the faults, back after",
        &[("ecc", 1), ("pcie", 2), ("throttle", 1), ("gpus7of8", 2)],
    ),
];

struct Setup {
    name: &'static str,
    shards: u32,
    replicas: usize,
}

const SETUPS: [Setup; 3] = [
    Setup {
        name: "1 watcher",
        shards: 1,
        replicas: 1,
    },
    Setup {
        name: "2 replicas",
        shards: 1,
        replicas: 2,
    },
    Setup {
        name: "2 shards x 2",
        shards: 2,
        replicas: 2,
    },
];

/// The fake fleet: node names, the nodes' mode files and answer templates under `dir`.
struct Fleet {
    dir: PathBuf,
    names: Vec<String>,
}

impl Fleet {
    /// Every node healthy; the templates are real `ugro-probe` samples of the fixtures.
    fn new(dir: &Path, nodes: usize) -> Fleet {
        std::fs::create_dir_all(dir.join("tpl")).unwrap();
        std::fs::create_dir_all(dir.join("modes")).unwrap();
        std::fs::create_dir_all(dir.join("up")).unwrap();
        for k in KINDS.iter().chain([&HEALTHY]) {
            if let Some(f) = k.fixture {
                let t = template(dir, f);
                std::fs::write(dir.join("tpl").join(format!("{}.json", k.mode)), t).unwrap();
            }
        }
        let f = Fleet {
            dir: dir.to_owned(),
            names: (0..nodes).map(|i| format!("node-{i:02}")).collect(),
        };
        f.reset();
        f
    }

    /// Every node healthy, no probe started yet.
    fn reset(&self) {
        for n in &self.names {
            self.set(n, "healthy");
        }
        for e in std::fs::read_dir(self.dir.join("up")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }

    /// What node `n` answers from now on (a rename: the node never reads half a file).
    fn set(&self, n: &str, mode: &str) {
        let tmp = self.dir.join("modes").join(format!(".{n}"));
        std::fs::write(&tmp, format!("{mode}\n")).unwrap();
        std::fs::rename(&tmp, self.dir.join("modes").join(n)).unwrap();
    }

    fn write_cluster(&self, path: &Path) {
        let probe = root().join("scripts/lib/ha-probe.sh");
        let mut y =
            String::from("intervals: {base: 1s, max: 1s, spread: 0.5}\ntimeout: 2s\nnodes:\n");
        for n in &self.names {
            y.push_str(&format!(
                "  - {{name: {n}, transport: {{command: [{}, '{{node}}', {}]}}}}\n",
                probe.display(),
                self.dir.display()
            ));
        }
        std::fs::write(path, y).unwrap();
    }

    /// Probes started so far (each fake node marks its start).
    fn started(&self) -> usize {
        std::fs::read_dir(self.dir.join("up")).map_or(0, Iterator::count)
    }

    /// The first node of `shard` (of 2) not in `used`.
    fn pick(&self, shard: u32, used: &BTreeSet<String>) -> String {
        self.names
            .iter()
            .find(|n| owner(n, 2) == shard && !used.contains(*n))
            .expect("enough nodes in each shard")
            .clone()
    }
}

/// `ugro-probe --gpu-fixture FIXTURE` once, with its node name and time made placeholders.
fn template(dir: &Path, fixture: &str) -> String {
    let out = Command::new(bin("ugro-probe"))
        .arg("--gpu-fixture")
        .arg(root().join("crates/ugro-probe/fixtures").join(fixture))
        .args(["--node", "ha-tpl-node", "--expect-gpus", "8", "--no-xid"])
        .arg("--cpu-state-file")
        .arg(dir.join("cpu.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ugro-probe on {fixture}: {out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line
        .trim_end()
        .replacen(r#""node":"ha-tpl-node""#, r#""node":"@NODE@""#, 1);
    assert!(
        !line.contains("ha-tpl-node"),
        "{fixture}: node name elsewhere"
    );
    let at = line.find(r#""ts":""#).expect("a ts") + 6;
    let end = at + line[at..].find('"').expect("end of ts");
    format!("{}@TS@{}\n", &line[..at], &line[end..])
}

struct Watcher {
    args: Vec<String>,
    stderr: PathBuf,
    child: KillOnDrop,
}

impl Watcher {
    fn new(work: &Path, shard: Option<String>, name: &str) -> Watcher {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let p = |f: &str| dir.join(f).display().to_string();
        let w = |f: &str| work.join(f).display().to_string();
        let mut args: Vec<String> = vec!["-c".into(), w("cluster.yaml"), "--pipeline".into()];
        if let Some(s) = shard {
            args.extend(["--shard".into(), s]);
        }
        for (flag, v) in [
            ("--breaker-config", w("breaker.yaml")),
            ("--alert-config", w("alert.yaml")),
            ("--breaker-state", p("breaker.json")),
            ("--alert-state", p("alert.json")),
            ("--score-state", p("score.json")),
            ("--stats-every", "0".into()),
            ("--format", "json".into()),
        ] {
            args.extend([flag.into(), v]);
        }
        args.push("--no-deploy".into());
        let mut w = Watcher {
            args,
            stderr: dir.join("stderr"),
            child: KillOnDrop::default(),
        };
        w.start();
        w
    }

    /// Starts it (again: the same state files, as a supervisor restarting it would).
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        self.child = KillOnDrop::new(
            Command::new(bin("ugro-watch"))
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap(),
        );
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(&mut self) {
        self.child.kill();
    }
}

/// An alert group: (node, alertname).
type Group = (String, String);

/// One injected fault.
struct Fault {
    phase: usize,
    at: Instant,
    groups: Vec<Group>,
}

/// One notification as the recorder got it.
struct Page {
    at: Instant,
    group: Group,
    firing: bool,
    /// The Alertmanager that sent it (its externalURL).
    from: String,
    alerts: usize,
}

fn pages(hook: &Recorder) -> Vec<Page> {
    hook.got_at()
        .into_iter()
        .map(|(at, p)| {
            let label = |k: &str| p["groupLabels"][k].as_str().unwrap_or("").to_owned();
            Page {
                at,
                group: (label("node"), label("alertname")),
                firing: p["status"] == "firing",
                from: p["externalURL"].as_str().unwrap_or("").to_owned(),
                alerts: p["alerts"].as_array().map_or(0, Vec::len),
            }
        })
        .collect()
}

/// The figures of one phase (or of the whole run) in one configuration.
#[derive(Default)]
struct Row {
    faults: usize,
    groups: usize,
    exactly_one: usize,
    min: Option<usize>,
    max: usize,
    duplicates: usize,
    missed: usize,
    unexpected: usize,
    resolved: usize,
    latency: Vec<f64>,
    missed_groups: Vec<String>,
    notes: Vec<String>,
}

/// Counts the firing notifications of the groups of `faults`; `unexpected` are paged groups no
/// fault so far explains whose first page came in `window`.
fn row(faults: &[&Fault], all: &[Fault], got: &[Page], window: (Instant, Instant)) -> Row {
    let mut r = Row {
        faults: faults.len(),
        ..Row::default()
    };
    for f in faults {
        for g in &f.groups {
            r.count(f, g, got);
        }
    }
    let known: BTreeSet<&Group> = all.iter().flat_map(|f| &f.groups).collect();
    let mut first: BTreeMap<&Group, Instant> = BTreeMap::new();
    for p in got.iter().filter(|p| p.firing && !known.contains(&p.group)) {
        first.entry(&p.group).or_insert(p.at);
    }
    for (g, at) in first {
        if at >= window.0 && at < window.1 {
            r.unexpected += 1;
            r.notes.push(format!("unexpected group {}/{}", g.0, g.1));
        }
    }
    r
}

impl Row {
    /// Adds group `g` of fault `f`: its notifications in `got`.
    fn count(&mut self, f: &Fault, g: &Group, got: &[Page]) {
        let mine: Vec<&Page> = got.iter().filter(|p| &p.group == g).collect();
        let firing: Vec<&&Page> = mine.iter().filter(|p| p.firing).collect();
        let n = firing.len();
        self.groups += 1;
        self.exactly_one += usize::from(n == 1);
        self.min = Some(self.min.map_or(n, |m| m.min(n)));
        self.max = self.max.max(n);
        self.duplicates += n.saturating_sub(1);
        self.missed += usize::from(n == 0);
        self.resolved += mine.len() - n;
        let after = |p: &Page| p.at.saturating_duration_since(f.at).as_secs_f64();
        if let Some(p) = firing.first() {
            self.latency.push(after(p));
        }
        if n == 0 {
            self.missed_groups.push(format!("{}/{}", g.0, g.1));
        }
        if n > 1 {
            let each: Vec<String> = firing
                .iter()
                .map(|p| format!("{:+.1}s from {} ({} alerts)", after(p), p.from, p.alerts))
                .collect();
            self.notes
                .push(format!("{}/{}: {}", g.0, g.1, each.join(", ")));
        }
    }
}

/// One configuration's run: its rows per phase, then the whole run.
struct Run<'a> {
    work: PathBuf,
    fleet: &'a Fleet,
    hook: Recorder,
    ams: AmCluster,
    watchers: Vec<Watcher>,
    faults: Vec<Fault>,
    used: BTreeSet<String>,
}

impl Run<'_> {
    fn inject(&mut self, phase: usize, mode: &str, shard: u32) {
        let node = self.fleet.pick(shard, &self.used);
        self.used.insert(node.clone());
        self.fleet.set(&node, mode);
        self.faults.push(Fault {
            phase,
            at: Instant::now(),
            groups: kind(mode)
                .alerts
                .iter()
                .map(|a| (node.clone(), (*a).to_owned()))
                .collect(),
        });
    }

    /// Until every group of `phase` has paged, or the deadline after its last fault.
    fn wait_paged(&self, phase: usize) {
        let want: BTreeSet<&Group> = self
            .faults
            .iter()
            .filter(|f| f.phase == phase)
            .flat_map(|f| &f.groups)
            .collect();
        let until = Instant::now() + PAGE_DEADLINE;
        while Instant::now() < until {
            let got: BTreeSet<Group> = pages(&self.hook)
                .into_iter()
                .filter(|p| p.firing)
                .map(|p| p.group)
                .collect();
            if want.iter().all(|g| got.contains(*g)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Past the next group flush of every instance: a duplicate would come then, and nothing
    /// signals a flush that pages nothing.
    fn past_a_flush() {
        std::thread::sleep(Duration::from_secs(GROUP_INTERVAL_S * 2 + 2));
    }

    fn snapshot(&self, phase: usize, since: Instant) -> Row {
        let mine: Vec<&Fault> = self.faults.iter().filter(|f| f.phase == phase).collect();
        row(
            &mine,
            &self.faults,
            &pages(&self.hook),
            (since, Instant::now()),
        )
    }

    fn phase(&mut self, i: usize) -> Row {
        let since = Instant::now();
        let victim = 0;
        let (_, faults) = PHASES[i];
        if i == 2 {
            // The killed replica comes back (its state files kept), then an Alertmanager goes.
            self.watchers[victim].start();
            self.ams.down(1);
        }
        for (j, (mode, shard)) in faults.iter().enumerate() {
            if j > 0 {
                std::thread::sleep(STAGGER);
            }
            self.inject(i, mode, *shard);
            if i == 1 && j == 0 {
                std::thread::sleep(Duration::from_secs(1));
                self.watchers[victim].kill();
            }
        }
        self.wait_paged(i);
        Self::past_a_flush();
        if i == 2 {
            self.ams.up(1);
            self.ams.wait_clustered();
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until && self.ams.alerts(1).len() < self.ams.alerts(0).len() {
                std::thread::sleep(Duration::from_millis(200));
            }
            Self::past_a_flush();
        }
        self.snapshot(i, since)
    }

    fn whole(&self, since: Instant) -> Row {
        let all: Vec<&Fault> = self.faults.iter().collect();
        row(
            &all,
            &self.faults,
            &pages(&self.hook),
            (since, Instant::now()),
        )
    }
}

fn run_setup(setup: &Setup, work: &Path, fleet: &Fleet) -> Vec<Row> {
    std::fs::create_dir_all(work).unwrap();
    fleet.reset();
    let hook = Recorder::start();
    let ams = AmCluster::start(&work.join("am"), 2, &replica_route(&hook, GROUP_INTERVAL_S));
    write_replica_configs(work, &ams);
    fleet.write_cluster(&work.join("cluster.yaml"));
    let mut watchers = Vec::new();
    for s in 1..=setup.shards {
        for r in 0..setup.replicas {
            let shard = (setup.shards > 1).then(|| format!("{s}/{}", setup.shards));
            watchers.push(Watcher::new(work, shard, &format!("w{s}{}", ['a', 'b'][r])));
        }
    }
    // Every watcher has started a probe on each of its nodes.
    let want = fleet.names.len() * setup.replicas;
    let until = Instant::now() + Duration::from_secs(60);
    while fleet.started() < want {
        assert!(
            Instant::now() < until,
            "{}: the watchers never polled every node",
            setup.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let since = Instant::now();
    let mut run = Run {
        work: work.to_owned(),
        fleet,
        hook,
        ams,
        watchers,
        faults: Vec::new(),
        used: BTreeSet::new(),
    };
    let mut rows: Vec<Row> = (0..PHASES.len()).map(|i| run.phase(i)).collect();
    rows.push(run.whole(since));
    eprintln!("{}: done, logs under {}", setup.name, run.work.display());
    rows
}

fn print(rows: &[Vec<Row>]) {
    let titles = PHASES
        .iter()
        .map(|p| p.0)
        .chain(["whole run (every group, counted at the end)"]);
    print!("{:<34}", "");
    for s in &SETUPS {
        print!("{:>16}", s.name);
    }
    println!("{:>12}", "target");
    for (i, title) in titles.enumerate() {
        println!("{title}");
        let line = |label: &str, f: &dyn Fn(&Row) -> String, target: &str| {
            let mut l = format!("  {label:<32}");
            for r in rows {
                l.push_str(&format!("{:>16}", f(&r[i])));
            }
            println!("{}", format!("{l}{target:>12}").trim_end());
        };
        line("faults injected", &|r| r.faults.to_string(), "");
        line("alert groups expected", &|r| r.groups.to_string(), "");
        line(
            "notifications per group min/max",
            &|r| format!("{}/{}", r.min.unwrap_or(0), r.max),
            "1/1",
        );
        line(
            "groups with exactly 1",
            &|r| format!("{}/{}", r.exactly_one, r.groups),
            "all",
        );
        line("duplicates", &|r| r.duplicates.to_string(), "0");
        line("missed", &|r| r.missed.to_string(), "0");
        line("unexpected groups", &|r| r.unexpected.to_string(), "0");
        line("resolved notifications", &|r| r.resolved.to_string(), "0");
        line(
            "first page after fault s med/max",
            &|r| latency(&r.latency),
            "",
        );
    }
    // Missed by the end of each phase; the whole run's notes hold every group paged more
    // than once or unexpectedly.
    for (s, r) in SETUPS.iter().zip(rows) {
        for (i, row) in r.iter().enumerate() {
            if !row.missed_groups.is_empty() {
                let when = if i < PHASES.len() {
                    format!("by the end of phase {}", i + 1)
                } else {
                    "at the end".to_owned()
                };
                println!("{}: missed {when}: {}", s.name, row.missed_groups.join(" "));
            }
        }
        for n in &r[PHASES.len()].notes {
            println!("{}: {n}", s.name);
        }
    }
}

fn latency(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    format!("{:.1}/{:.1}", v[v.len() / 2], v[v.len() - 1])
}

fn main() -> std::process::ExitCode {
    if !available() {
        // EX_UNAVAILABLE: the script says which package is missing.
        return std::process::ExitCode::from(69);
    }
    let nodes: usize = std::env::var("NODES").map_or(60, |v| v.parse().expect("NODES"));
    // The script gives a directory it removes however the run ends; run alone, a temporary one.
    let tmp;
    let work = match std::env::var_os("WORK") {
        Some(w) => PathBuf::from(w),
        None => {
            tmp = tempfile::tempdir().unwrap();
            tmp.path().to_owned()
        }
    };
    let fleet = Fleet::new(&work.join("fleet"), nodes);
    println!(
        "fleet: {nodes} fake nodes (real ugro-probe samples of the GPU fixtures), polled every 1 s, \
         timeout 2 s; faults: {}",
        KINDS.iter().map(|k| k.mode).collect::<Vec<_>>().join(" ")
    );
    let rows: Vec<Vec<Row>> = SETUPS
        .iter()
        .map(|s| run_setup(s, &work.join(s.name.replace(' ', "-")), &fleet))
        .collect();
    print(&rows);
    std::process::ExitCode::SUCCESS
}
