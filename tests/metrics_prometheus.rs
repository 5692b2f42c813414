//! contrib/ against real components: a fake fleet with faults, made by the real probe, score,
//! breaker and alert binaries from fixtures, written by `ugro-score --format prometheus
//! --output` into the textfile directories of two real node_exporters (Debian's
//! prometheus-node-exporter), scraped by a real Prometheus (Debian's prometheus) that loads
//! contrib/prometheus/ugro.rules.yml. Every PromQL expression of every dashboard panel and every
//! rule is evaluated through Prometheus's HTTP API and must return at least one series, values
//! are compared with the records, and the alerts the rules raise are compared with ugro-alert's.
//! Grafana itself is not run (it is not a Debian package): the dashboards' JSON is checked
//! against the structure Grafana loads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use ugro_e2e::{KillOnDrop, bin, free_port, gpu_fixture, require, root, run_tool};
use ugro_types::{Alert, AlertStatus, DeviceState, Kind, Sample, Timestamp, Unreachable};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Panels that read only what ugro-watch's endpoint serves (the watcher's health, its polls):
/// empty over textfiles, and checked by the test that scrapes `ugro-watch --listen`. The
/// textfile test checks that these are exactly the panels using watcher-only families, so the
/// list cannot grow unnoticed.
const WATCHER_PANELS: &[&str] = &[
    "Polling cycle duration",
    "Probes per second",
    "Failed polls per second",
    "Queue fill",
    "Poll lateness",
    "Watcher memory",
    "Slowest polls",
    "Oldest polls",
    "Queue depth",
    "Polls in flight",
    "Alert delivery",
];

// ---- the dashboards, as Grafana reads them --------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dashboard {
    uid: String,
    title: String,
    schema_version: u32,
    panels: Vec<Panel>,
    templating: Templating,
    time: TimeRange,
    #[serde(rename = "__inputs", default)]
    inputs: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct TimeRange {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
struct Templating {
    list: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    query: serde_json::Value,
    #[serde(default)]
    datasource: Option<Datasource>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Datasource {
    #[serde(rename = "type")]
    kind: String,
    uid: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Panel {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    title: String,
    grid_pos: GridPos,
    #[serde(default)]
    datasource: Option<Datasource>,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    panels: Vec<Panel>,
}

#[derive(Debug, Deserialize)]
struct GridPos {
    h: u32,
    w: u32,
    x: u32,
    y: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    ref_id: String,
    expr: String,
    datasource: Datasource,
}

fn dashboard(name: &str) -> Dashboard {
    let p = root().join("contrib/grafana").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn dashboards() -> Vec<(&'static str, Dashboard)> {
    ["ugro-fleet.json", "ugro-node.json"]
        .map(|n| (n, dashboard(n)))
        .into()
}

/// Every (panel title, expression) of a dashboard, rows included.
fn expressions(d: &Dashboard) -> Vec<(String, String)> {
    fn walk(ps: &[Panel], out: &mut Vec<(String, String)>) {
        for p in ps {
            out.extend(p.targets.iter().map(|t| (p.title.clone(), t.expr.clone())));
            walk(&p.panels, out);
        }
    }
    let mut out = Vec::new();
    walk(&d.panels, &mut out);
    out
}

#[test]
fn dashboards_have_the_structure_grafana_loads() {
    let prom_ds = Datasource {
        kind: "prometheus".into(),
        uid: "${datasource}".into(),
    };
    for (name, d) in dashboards() {
        assert!(!d.uid.is_empty() && d.uid.len() <= 40, "{name}: uid");
        assert!(!d.title.is_empty());
        assert!(
            d.schema_version >= 36,
            "{name}: schemaVersion {}",
            d.schema_version
        );
        assert!(
            d.inputs.is_none(),
            "{name}: __inputs would stop file provisioning"
        );
        assert!(d.time.from.starts_with("now") && d.time.to == "now");
        let vars = &d.templating.list;
        let ds = vars
            .iter()
            .find(|v| v.name == "datasource")
            .expect("a datasource variable");
        assert_eq!(
            (ds.kind.as_str(), ds.query.as_str()),
            ("datasource", Some("prometheus"))
        );
        for v in vars.iter().filter(|v| v.kind == "query") {
            assert_eq!(
                v.datasource.as_ref(),
                Some(&prom_ds),
                "{name}: variable {}",
                v.name
            );
            assert!(
                v.query["query"]
                    .as_str()
                    .is_some_and(|q| q.starts_with("label_values("))
            );
        }
        let known = ["timeseries", "stat", "table", "bargauge", "gauge", "row"];
        let mut ids = BTreeSet::new();
        let mut all = Vec::new();
        fn flat<'a>(ps: &'a [Panel], out: &mut Vec<&'a Panel>) {
            for p in ps {
                out.push(p);
                flat(&p.panels, out);
            }
        }
        flat(&d.panels, &mut all);
        for p in &all {
            assert!(ids.insert(p.id), "{name}: panel id {} twice", p.id);
            assert!(
                known.contains(&p.kind.as_str()),
                "{name}: {}: type {}",
                p.title,
                p.kind
            );
            let g = &p.grid_pos;
            assert!(
                g.w >= 1 && g.x + g.w <= 24 && g.h >= 1,
                "{name}: {}: gridPos",
                p.title
            );
            let _ = g.y;
            if p.kind == "row" {
                continue;
            }
            assert_eq!(p.datasource.as_ref(), Some(&prom_ds), "{name}: {}", p.title);
            assert!(!p.targets.is_empty(), "{name}: {} has no query", p.title);
            let refs: BTreeSet<_> = p.targets.iter().map(|t| &t.ref_id).collect();
            assert_eq!(
                refs.len(),
                p.targets.len(),
                "{name}: {}: refIds repeat",
                p.title
            );
            for t in &p.targets {
                assert_eq!(t.datasource, prom_ds, "{name}: {}", p.title);
                for var in ["$node", "$gpu"] {
                    if t.expr.contains(var) {
                        assert!(
                            vars.iter().any(|v| format!("${}", v.name) == var),
                            "{name}: {} uses undefined {var}",
                            p.title
                        );
                    }
                }
            }
        }
    }
}

// ---- names: contrib uses only what the renderer writes ---------------------------------------

/// Metric names (not recording-rule names, not label names) in a PromQL-bearing text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let word = &text[start..i];
        let prev = start.checked_sub(1).map(|p| bytes[p]);
        let ours = word.starts_with("ugro_") || word.starts_with("DCGM_FI_");
        if ours && prev != Some(b':') && bytes.get(i) != Some(&b':') {
            out.insert(word.to_owned());
        }
        if i == start {
            i += 1;
        }
    }
    out
}

#[test]
fn every_metric_name_in_contrib_is_one_the_renderer_writes() {
    let mut texts =
        vec![std::fs::read_to_string(root().join("contrib/prometheus/ugro.rules.yml")).unwrap()];
    texts.extend(
        ["ugro-fleet.json", "ugro-node.json"]
            .map(|n| std::fs::read_to_string(root().join("contrib/grafana").join(n)).unwrap()),
    );
    let mut seen = 0;
    for t in &texts {
        for name in metric_names(t) {
            assert!(
                ugro_metrics::catalog::by_name(&name).is_some(),
                "contrib uses {name}, which ugro_metrics::catalog does not define"
            );
            seen += 1;
        }
    }
    assert!(seen > 40, "the scan found only {seen} names");
}

// ---- promtool on the rules -------------------------------------------------------------------

fn promtool(args: &[&str], dir: &Path) -> Option<String> {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            require(&format!("promtool ({e})"), false);
            return None;
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    Some(said)
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    let dir = root().join("contrib/prometheus");
    if let Some(said) = promtool(&["check", "rules", "ugro.rules.yml"], &dir) {
        assert!(said.contains("SUCCESS"), "{said}");
    }
    if let Some(said) = promtool(&["test", "rules", "ugro.rules.test.yml"], &dir) {
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

/// Every dashboard query (Grafana's variables filled in) as a recording rule, for promtool's
/// PromQL parser: a query that does not parse fails here with promtool's message.
#[test]
fn every_dashboard_query_passes_promtool_check_rules() {
    let mut rules = Vec::new();
    for (name, d) in dashboards() {
        for (i, (title, expr)) in expressions(&d).into_iter().enumerate() {
            let record = format!(
                "dashboard:{}:{i}",
                name.trim_end_matches(".json").replace('-', "_")
            );
            rules.push(
                serde_json::json!({"record": record, "expr": fill(&expr, "gpu-a"),
                "labels": {"panel": title}}),
            );
        }
    }
    assert!(rules.len() > 40, "{}", rules.len());
    let file = serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]});
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("dashboards.rules.yml"),
        serde_norway::to_string(&file).unwrap(),
    )
    .unwrap();
    if let Some(said) = promtool(&["check", "rules", "dashboards.rules.yml"], d.path()) {
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

#[test]
fn the_alertmanager_example_passes_amtool_check_config() {
    let dir = root().join("contrib/alertmanager");
    let out = match Command::new("amtool")
        .args(["check-config", "ugro.alertmanager.yml"])
        .current_dir(&dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            require(&format!("amtool ({e})"), false);
            return;
        }
    };
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("2 inhibit rules"),
        "{said}"
    );
}

#[test]
fn the_textfile_unit_passes_systemd_analyze_verify() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !require("systemd-analyze", have) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("contrib/node_exporter/ugro-textfile.service"))
        .unwrap();
    let here = bin("ugro-probe").parent().unwrap().display().to_string();
    let unit = d.path().join("ugro-textfile.service");
    std::fs::write(&unit, text.replace("/usr/local/bin", &here)).unwrap();
    // verify opens the Documentation=man: pages; man wants them in a man1/ directory.
    let man1 = d.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    for page in ["ugro-probe.1", "ugro-score.1"] {
        std::os::unix::fs::symlink(root().join("man").join(page), man1.join(page)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", d.path().join("man"))
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

// ---- the fleet -------------------------------------------------------------------------------

struct Node {
    name: &'static str,
    fixture: Option<&'static str>,
    /// Which node_exporter serves it (0 writes DCGM names too, 1 ugro's only).
    exporter: usize,
}

const FLEET: &[Node] = &[
    Node {
        name: "gpu-a",
        fixture: Some("h200x8-busy.json"),
        exporter: 0,
    },
    Node {
        name: "gpu-b",
        fixture: Some("fault-xid79-gpu-lost.json"),
        exporter: 0,
    },
    Node {
        name: "gpu-c",
        fixture: Some("fault-hw-slowdown.json"),
        exporter: 0,
    },
    Node {
        name: "gpu-d",
        fixture: Some("fault-ecc-uncorrected.json"),
        exporter: 0,
    },
    Node {
        name: "gpu-e",
        fixture: Some("fault-remap-failure.json"),
        exporter: 0,
    },
    Node {
        name: "gpu-f",
        fixture: Some("fault-pcie-x8.json"),
        exporter: 0,
    },
    Node {
        name: "gpu-g",
        fixture: Some("fault-thermal.json"),
        exporter: 1,
    },
    Node {
        name: "gpu-h",
        fixture: Some("recovery-gpu-reset.json"),
        exporter: 1,
    },
    // No GPU section: state unknown though the node answered (NodeDataMissing).
    Node {
        name: "gpu-i",
        fixture: None,
        exporter: 1,
    },
    // What ugro-watch writes for a node it cannot reach.
    Node {
        name: "gpu-j",
        fixture: None,
        exporter: 1,
    },
    // A healthy node whose data stopped an hour ago (a textfile nobody rewrites).
    Node {
        name: "gpu-k",
        fixture: Some("h200x8-idle.json"),
        exporter: 1,
    },
];

fn probe(dir: &Path, node: &Node) -> String {
    let mut args: Vec<String> = vec!["--node".into(), node.name.into(), "--no-xid".into()];
    args.push("--cpu-state-file".into());
    args.push(
        dir.join(format!("{}-cpu.json", node.name))
            .display()
            .to_string(),
    );
    match node.fixture {
        Some(f) => {
            args.push("--gpu-fixture".into());
            args.push(gpu_fixture(f).display().to_string());
        }
        None => args.push("--no-gpu".into()),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_tool("ugro-probe", &args, b"");
    assert!(
        out.status.success(),
        "probe {}: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn samples(dir: &Path) -> String {
    let mut lines = String::new();
    for node in FLEET {
        match node.name {
            "gpu-j" => {
                let mut s = Sample::new("gpu-j", Timestamp::now());
                s.unreachable = Some(Unreachable {
                    cause: "ssh".into(),
                    message: "ssh: connect to host gpu-j port 22: Connection timed out".into(),
                });
                lines += &(serde_json::to_string(&s).unwrap() + "\n");
            }
            "gpu-k" => {
                let mut s: Sample = serde_json::from_str(probe(dir, node).trim()).unwrap();
                s.ts = Timestamp(s.ts.millis() - 3_600_000);
                lines += &(serde_json::to_string(&s).unwrap() + "\n");
            }
            // Three critical samples in a row open gpu-b's breaker.
            "gpu-b" => (0..3).for_each(|_| lines += &probe(dir, node)),
            _ => lines += &probe(dir, node),
        }
    }
    lines
}

fn tool(name: &str, args: &[&str], input: &str) -> String {
    let out = run_tool(name, args, input.as_bytes());
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The records of one node (samples and transitions), in order.
fn of_node(records: &str, node: &str) -> String {
    records
        .lines()
        .filter(|l| ugro_types::parse_header(l).is_ok_and(|h| h.node == node))
        .map(|l| format!("{l}\n"))
        .collect()
}

struct Made {
    /// The latest scored sample of each node, as the breaker passed it.
    truth: BTreeMap<String, Sample>,
    /// ugro-alert's firing alerts.
    alerts: Vec<Alert>,
}

/// Runs the pipeline and writes each node's textfile (and the alerts' file) into `dirs`.
fn make_fleet(work: &Path, dirs: &[PathBuf; 2]) -> Made {
    let scored = tool("ugro-score", &[], &samples(work));
    let br = work.join("breaker.json");
    let passed = tool("ugro-breaker", &["--state", br.to_str().unwrap()], &scored);
    let cfg = work.join("alert.yaml");
    // Inhibition off, so that every condition ugro-alert raises is in its output (the
    // Prometheus rules raise them all too; Alertmanager does the inhibiting). Timing off: the
    // fleet is one sample per node, and this compares conditions, not `for` (tested in
    // ugro-alert's engine tests).
    std::fs::write(
        &cfg,
        "global:\n  builtin_inhibit_rules: false\n  watchdog: true\nalert_rules: {'*': {for: 0, keep_firing_for: 0}}\nflap_detection: {enabled: false}\n",
    )
    .unwrap();
    let al = work.join("alert-state.json");
    let alerts = tool(
        "ugro-alert",
        &["-c", cfg.to_str().unwrap(), "--state", al.to_str().unwrap()],
        &passed,
    );
    let mut truth = BTreeMap::new();
    for node in FLEET {
        let own = of_node(&passed, node.name);
        let file = dirs[node.exporter].join(format!("{}.prom", node.name));
        let names = if node.exporter == 0 { "dcgm" } else { "ugro" };
        let args = [
            "-f",
            "prometheus",
            "--metric-names",
            names,
            "-o",
            file.to_str().unwrap(),
        ];
        tool("ugro-score", &args, &own);
        let text = std::fs::read_to_string(&file).unwrap();
        if node.exporter == 0 {
            ugro_e2e::assert_promtool_dcgm(&text);
        } else {
            ugro_e2e::assert_promtool_clean(&text);
        }
        let mut last = own
            .lines()
            .filter(|l| ugro_types::parse_header(l).is_ok_and(|h| h.kind == Kind::Sample));
        let s: Sample = serde_json::from_str(last.next_back().unwrap()).unwrap();
        truth.insert(node.name.to_owned(), s);
    }
    let file = dirs[0].join("alerts.prom");
    tool(
        "ugro-score",
        &["-f", "prometheus", "-o", file.to_str().unwrap()],
        &alerts,
    );
    ugro_e2e::assert_promtool_clean(&std::fs::read_to_string(&file).unwrap());
    let alerts = alerts
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap())
        .filter(|a| a.status == AlertStatus::Firing)
        .collect();
    Made { truth, alerts }
}

// ---- the real servers ------------------------------------------------------------------------

fn get(url: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

fn get_text(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent.get(url).call().ok()?.body_mut().read_to_string().ok()
}

/// Polls `f` until it gives a value: a server that is starting, or a Prometheus that has not
/// scraped or evaluated yet, has no event to wait on.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node_exporter(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--collector.disable-defaults", "--collector.textfile"])
        .arg(format!("--collector.textfile.directory={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop::new(child), port)
}

/// The shipped rules with every `for` and `keep_firing_for` at 0s: this test compares what
/// the rules and ugro-alert (also run with `for: 0`) raise from the same fleet, in seconds;
/// the timing itself is ugro.rules.test.yml's (promtool), which would take minutes here.
fn rules_without_for(work: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("contrib/prometheus/ugro.rules.yml")).unwrap();
    let mut out = String::new();
    let mut timed = 0;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(key) = ["for:", "keep_firing_for:"]
            .iter()
            .find(|k| t.starts_with(**k))
        {
            out.push_str(&line[..line.len() - t.len()]);
            out.push_str(key);
            out.push_str(" 0s\n");
            timed += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        timed > 10,
        "the rules have `for` on their alerts ({timed} found)"
    );
    let path = work.join("ugro.rules.yml");
    std::fs::write(&path, out).unwrap();
    path
}

fn prometheus(work: &Path, job: &str, targets: &[u16]) -> (KillOnDrop, u16) {
    let port = free_port();
    let rules = rules_without_for(work);
    let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\n\
         scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    );
    let cfg_path = work.join("prometheus.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            work.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop::new(child), port)
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    data: Data,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Series>,
}

#[derive(Debug, Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

struct Prom(u16);

impl Prom {
    fn query(&self, expr: &str) -> Vec<Series> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={}",
            self.0,
            urlencode(expr)
        );
        let v = get(&url).unwrap_or_else(|| panic!("query failed: {expr}"));
        let a: Answer =
            serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{expr}: {e}: {v}"));
        assert_eq!(a.status, "success", "{expr}");
        match a.data.result_type.as_str() {
            "vector" => a.data.result,
            other => panic!("{expr}: result type {other}"),
        }
    }

    fn value(&self, expr: &str) -> f64 {
        let r = self.query(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0].value.1.parse().unwrap()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A dashboard expression with Grafana's variables filled in.
fn fill(expr: &str, node: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$node", node)
        .replace("$gpu", ".*")
}

/// Whether `expr` reads a family only ugro-watch's endpoint serves.
fn uses_watcher_only(expr: &str) -> bool {
    use ugro_metrics::Source;
    ugro_metrics::CATALOG
        .iter()
        .filter(|m| matches!(m.source, Source::Poll | Source::Watcher))
        .any(|m| expr.contains(m.name))
}

#[test]
fn dashboards_and_rules_evaluate_against_a_real_prometheus_over_node_exporter_textfiles() {
    let have = |p: &str| Path::new(p).exists();
    if !require("prometheus", have(PROMETHEUS))
        || !require("prometheus-node-exporter", have(NODE_EXPORTER))
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dirs = [work.path().join("textfile0"), work.path().join("textfile1")];
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let made = make_fleet(work.path(), &dirs);
    let exporters: Vec<(KillOnDrop, u16)> = dirs.iter().map(|d| node_exporter(d)).collect();
    for (_, port) in &exporters {
        let text = wait_for("node_exporter", || {
            get_text(&format!("http://127.0.0.1:{port}/metrics"))
        });
        // The collector read every file: no scrape error, and our series are there.
        assert!(text.contains("node_textfile_scrape_error 0"), "{text}");
        assert!(text.contains("ugro_node_state{"), "{text}");
    }
    let ports: Vec<u16> = exporters.iter().map(|(_, p)| *p).collect();
    let (_prom, port) = prometheus(work.path(), "node", &ports);
    let prom = Prom(port);
    wait_for("Prometheus ready", || {
        get_text(&format!("http://127.0.0.1:{port}/-/ready"))
    });
    // Both targets up, the rules evaluated, and two scrapes in a minute for rate().
    wait_for("targets scraped and rules evaluated", || {
        let up = prom.query("sum(up{job=\"node\"})");
        let ready = up.first().is_some_and(|s| s.value.1 == "2")
            && !prom.query("ALERTS{alertname=\"NodeCritical\"}").is_empty()
            && !prom
                .query("rate(ugro_gpu_pcie_replays_total[1m])")
                .is_empty()
            && !prom.query("ugro:nodes:count_by_state").is_empty();
        ready.then_some(())
    });

    let nodes: Vec<&str> = made.truth.keys().map(String::as_str).collect();
    panels_return_series(&prom, &nodes, false);
    rules_return_series(&prom, &[]);
    values_match_the_records(&prom, &made);
    prometheus_alerts_are_ugro_alerts(&prom, &made);
    dcgm_dashboard_queries_work(&prom, &made);
}

/// Every panel's every expression returns a series (a `$node` one for at least one of
/// `nodes`); with `watcher` false, those reading watcher-only families are left out and must
/// be exactly [`WATCHER_PANELS`].
fn panels_return_series(prom: &Prom, nodes: &[&str], watcher: bool) {
    let mut skipped = BTreeSet::new();
    for (name, d) in dashboards() {
        for (title, expr) in expressions(&d) {
            if !watcher && uses_watcher_only(&expr) {
                skipped.insert(title.clone());
                continue;
            }
            // The node dashboard is for one node at a time: a panel counts as not empty when
            // it shows something for at least one node of the fleet (the recovery action only
            // exists on drivers that report it, for instance).
            let nodes: &[&str] = if expr.contains("$node") { nodes } else { &[""] };
            let hits = nodes
                .iter()
                .filter(|n| !prom.query(&fill(&expr, n)).is_empty())
                .count();
            assert!(hits > 0, "{name}: panel {title:?}: no series for {expr}");
        }
    }
    if !watcher {
        let want: BTreeSet<String> = WATCHER_PANELS.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(skipped, want, "panels only ugro-watch --listen fills");
    }
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
}

fn rules() -> Vec<Rule> {
    let text = std::fs::read_to_string(root().join("contrib/prometheus/ugro.rules.yml")).unwrap();
    let f: RuleFile = serde_norway::from_str(&text).unwrap();
    f.groups.into_iter().flat_map(|g| g.rules).collect()
}

/// Every rule's expression returns a series, but for the alerts in `quiet`.
fn rules_return_series(prom: &Prom, quiet: &[&str]) {
    let rules = rules();
    assert!(rules.len() >= 20);
    for r in &rules {
        let name = r.alert.as_deref().or(r.record.as_deref()).unwrap();
        if quiet.contains(&name) {
            continue;
        }
        assert!(
            !prom.query(&r.expr).is_empty(),
            "rule {name}: no series for {}",
            r.expr
        );
    }
}

fn values_match_the_records(prom: &Prom, made: &Made) {
    for (node, s) in &made.truth {
        let sc = s.score.as_ref().unwrap();
        let state = prom.query(&format!("ugro_node_state{{node=\"{node}\"}} == 1"));
        assert_eq!(state.len(), 1, "{node}");
        assert_eq!(state[0].metric["state"], sc.state.as_str(), "{node}");
        let action = prom.query(&format!("ugro_node_action{{node=\"{node}\"}} == 1"));
        assert_eq!(action[0].metric["action"], sc.action.as_str(), "{node}");
        match sc.total {
            Some(t) => {
                let v = prom.value(&format!("ugro_node_score{{node=\"{node}\"}}"));
                assert!((v - t).abs() < 1e-9, "{node}: score {v} vs {t}");
            }
            None => assert!(
                prom.query(&format!("ugro_node_score{{node=\"{node}\"}}"))
                    .is_empty()
            ),
        }
        let devices = s.gpu.as_ref().map_or(&[][..], |g| &g.devices[..]);
        let up = devices
            .iter()
            .filter(|d| d.state == DeviceState::Ok)
            .count();
        let got = prom
            .query(&format!("ugro_gpu_up{{node=\"{node}\"}} == 1"))
            .len();
        assert_eq!(got, up, "{node}: GPUs up");
        for d in devices {
            let q = format!(
                "ugro_gpu_utilization_percent{{node=\"{node}\",gpu=\"{}\"}}",
                d.index
            );
            match d.utilization_pct {
                Some(u) => assert_eq!(prom.value(&q), f64::from(u), "{q}"),
                None => assert!(prom.query(&q).is_empty(), "{q}"),
            }
        }
        let reachable = prom.value(&format!("ugro_node_reachable{{node=\"{node}\"}}"));
        assert_eq!(reachable == 1.0, s.unreachable.is_none(), "{node}");
    }
    let open = prom.query("ugro_node_breaker_state{state=\"open\"} == 1");
    let open: Vec<&str> = open.iter().map(|s| s.metric["node"].as_str()).collect();
    assert_eq!(open, ["gpu-b"]);
    let cause = prom.query("ugro_node_unreachable == 1");
    assert_eq!(
        (
            cause[0].metric["node"].as_str(),
            cause[0].metric["cause"].as_str()
        ),
        ("gpu-j", "ssh")
    );
    let stale = prom.query("ugro:node_sample_age:seconds > 3000");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].metric["node"], "gpu-k");
}

type AlertKey = (String, Option<String>, Option<String>, String);

fn key(labels: &BTreeMap<String, String>) -> AlertKey {
    (
        labels["alertname"].clone(),
        labels.get("node").cloned(),
        labels.get("gpu").cloned(),
        labels["severity"].clone(),
    )
}

fn prometheus_alerts_are_ugro_alerts(prom: &Prom, made: &Made) {
    let ugro: BTreeSet<AlertKey> = made.alerts.iter().map(|a| key(&a.labels)).collect();
    assert!(ugro.len() > 10, "{ugro:?}");
    // What ugro-alert raised is what ugro-score's file says is firing...
    let firing: BTreeSet<AlertKey> = prom
        .query("ugro_alert_firing == 1")
        .iter()
        .map(|s| key(&s.metric))
        .collect();
    assert_eq!(firing, ugro, "ugro_alert_firing vs ugro-alert's records");
    // ...and what the contrib rules raise from the same fleet, but for the Prometheus-only alert.
    let rules: BTreeSet<AlertKey> = prom
        .query("ALERTS{alertstate=\"firing\", alertname!=\"UgroMetricsStale\"}")
        .iter()
        .map(|s| key(&s.metric))
        .collect();
    let only_rules: Vec<_> = rules.difference(&ugro).collect();
    let only_ugro: Vec<_> = ugro.difference(&rules).collect();
    assert!(
        only_rules.is_empty() && only_ugro.is_empty(),
        "Prometheus rules and ugro-alert differ:\n only rules: {only_rules:?}\n only ugro-alert: {only_ugro:?}"
    );
    let stale = prom.query("ALERTS{alertname=\"UgroMetricsStale\", alertstate=\"firing\"}");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].metric["node"], "gpu-k");
}

/// Queries in the style of dcgm-exporter's stock Grafana dashboard and its users' alerts,
/// against the nodes written with `--metric-names dcgm`; values must be ugro's.
fn dcgm_dashboard_queries_work(prom: &Prom, made: &Made) {
    for q in [
        "DCGM_FI_DEV_GPU_TEMP{instance=~\".+\", gpu=~\".+\"}",
        "avg(DCGM_FI_DEV_GPU_TEMP{instance=~\".+\", gpu=~\".+\"})",
        "DCGM_FI_DEV_POWER_USAGE{instance=~\".+\", gpu=~\".+\"}",
        "sum(DCGM_FI_DEV_POWER_USAGE{instance=~\".+\", gpu=~\".+\"})",
        "DCGM_FI_DEV_GPU_UTIL{instance=~\".+\", gpu=~\".+\"}",
        "DCGM_FI_DEV_FB_USED{instance=~\".+\", gpu=~\".+\"}",
        "DCGM_FI_DEV_XID_ERRORS > 0",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
        "count by (Hostname, modelName) (DCGM_FI_DEV_GPU_TEMP)",
    ] {
        assert!(!prom.query(q).is_empty(), "no series for {q}");
    }
    let a = &made.truth["gpu-a"];
    let d0 = &a.gpu.as_ref().unwrap().devices[0];
    let sel = format!(
        "{{Hostname=\"gpu-a\", gpu=\"0\", UUID=\"{}\"}}",
        d0.uuid.as_deref().unwrap()
    );
    assert_eq!(
        prom.value(&format!("DCGM_FI_DEV_GPU_UTIL{sel}")),
        f64::from(d0.utilization_pct.unwrap())
    );
    let mib = (d0.memory_used_bytes.unwrap() >> 20) as f64;
    assert_eq!(prom.value(&format!("DCGM_FI_DEV_FB_USED{sel}")), mib);
    let xid = prom.query("DCGM_FI_DEV_XID_ERRORS > 0");
    assert_eq!(xid[0].metric["Hostname"], "gpu-b");
    assert_eq!(xid[0].metric["err_code"], "79");
    let ecc = prom.query("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0");
    assert_eq!(
        (
            ecc[0].metric["Hostname"].as_str(),
            ecc[0].metric["gpu"].as_str()
        ),
        ("gpu-d", "6")
    );
    // Names on the ugro-only exporter are not doubled.
    assert!(
        prom.query("DCGM_FI_DEV_GPU_TEMP{Hostname=\"gpu-g\"}")
            .is_empty()
    );
}

// ---- ugro-watch --listen ---------------------------------------------------------------------

/// The watcher's fleet: the same fixtures as [`FLEET`] through real resident probes
/// (`ugro-probe --serve`), a node without GPUs, and two the watcher cannot poll (the probe
/// exits; the probe hangs). No node with old data: a watcher's samples are fresh.
fn watch_cluster(dir: &Path) -> (PathBuf, Vec<&'static str>) {
    let probe = bin("ugro-probe");
    let fake = root().join("crates/ugro-watch/tests/fixtures/fake-probe.sh");
    let mut yaml = String::from("intervals: {base: 1s, max: 1s, spread: 0}\ntimeout: 1s\nnodes:\n");
    let mut names = Vec::new();
    for node in FLEET
        .iter()
        .filter(|n| !matches!(n.name, "gpu-j" | "gpu-k"))
    {
        let gpu = match node.fixture {
            Some(f) => format!("--gpu-fixture, {}", gpu_fixture(f).display()),
            None => "--no-gpu".into(),
        };
        yaml += &format!(
            "  - {{name: {}, transport: {{command: [{}, --serve, --node, '{{node}}', --no-xid, {gpu}]}}}}\n",
            node.name,
            probe.display()
        );
        names.push(node.name);
    }
    for (name, mode) in [("gpu-x", "exit"), ("gpu-y", "hang")] {
        yaml += &format!(
            "  - {{name: {name}, transport: {{command: [{}, '{{node}}', '0', {mode}]}}}}\n",
            fake.display()
        );
        names.push(name);
    }
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, yaml).unwrap();
    (path, names)
}

/// `ugro-watch --pipeline --listen` over [`watch_cluster`], with the raw stream in raw.jsonl
/// and the alert records in alerts.jsonl.
fn watcher(work: &Path, names: &str) -> (KillOnDrop, u16, Vec<&'static str>) {
    let (cluster, nodes) = watch_cluster(work);
    let port = free_port();
    let out = std::fs::File::create(work.join("alerts.jsonl")).unwrap();
    let cfg = work.join("alert.yaml");
    // Alert records on stdout, and the Watchdog also to a webhook (its delivery figures).
    let hook = webhook();
    std::fs::write(
        &cfg,
        format!(
            "global:\n  builtin_inhibit_rules: false\n  watchdog: true\n\
             route: {{receiver: out, group_wait: 0s, group_interval: 1s, repeat_interval: 1h,\
             routes: [{{receiver: hook, continue: true, matchers: ['alertname=\"Watchdog\"']}}]}}\n\
             receivers:\n  - {{name: out, stdout: {{}}}}\n\
             \x20 - {{name: hook, webhook: {{url: 'http://127.0.0.1:{hook}/hook'}}}}\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin("ugro-watch"))
        .arg("-c")
        .arg(&cluster)
        .args(["--pipeline", "--format", "json", "--metric-names", names])
        .arg("--alert-config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--tee")
        .arg(work.join("raw.jsonl"))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (KillOnDrop::new(child), port, nodes)
}

/// A webhook receiver on loopback that answers every request 200; its port.
fn webhook() -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line.trim_end() != "" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let _ = r.read_exact(&mut vec![0; len]);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    port
}

/// The last record of each node in a JSON-lines file the watcher is still writing (a last
/// line without its newline yet is left out).
fn last_by_node(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut last = BTreeMap::new();
    for l in complete.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["kind"] == "sample" {
            last.insert(v["node"].as_str().unwrap().to_owned(), v);
        }
    }
    last
}

/// (alertname, node, gpu, severity) of the alerts the watcher's records leave firing.
fn firing_records(path: &Path) -> BTreeSet<AlertKey> {
    let text = std::fs::read_to_string(path).unwrap();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut last: BTreeMap<String, Alert> = BTreeMap::new();
    let alerts = complete
        .lines()
        .filter(|l| ugro_types::parse_header(l).is_ok_and(|h| h.kind == Kind::Alert));
    for l in alerts {
        let a: Alert = serde_json::from_str(l).unwrap();
        last.insert(a.fingerprint.clone(), a);
    }
    last.values()
        .filter(|a| a.status == AlertStatus::Firing)
        .map(|a| key(&a.labels))
        .collect()
}

#[test]
fn dashboards_and_rules_evaluate_against_a_real_prometheus_scraping_ugro_watch() {
    if !require("prometheus", Path::new(PROMETHEUS).exists()) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (_watch, wport, names) = watcher(work.path(), "dcgm");
    let url = format!("http://127.0.0.1:{wport}");
    let health = wait_for("ugro-watch /healthz", || get(&format!("{url}/healthz")));
    assert_eq!(health["status"], "ok", "{health}");
    // Its body, fetched the way promtool would: ugro's names clean, DCGM's as dcgm-exporter's.
    let body = wait_for("a body with every node", || {
        let t = get_text(&format!("{url}/metrics"))?;
        names
            .iter()
            .all(|n| t.contains(&format!("ugro_node_reachable{{node=\"{n}\"}}")))
            .then_some(t)
    });
    ugro_e2e::assert_promtool_dcgm(&body);
    let (_prom, port) = prometheus(work.path(), "watch", &[wport]);
    let prom = Prom(port);
    wait_for("Prometheus ready", || {
        get_text(&format!("http://127.0.0.1:{port}/-/ready"))
    });
    wait_for(
        "the watcher scraped, its rates and the rules evaluated",
        || {
            let ready = !prom
                .query("rate(ugro_watch_polls_total[1m]) > 0")
                .is_empty()
                && !prom
                    .query("ALERTS{alertname=\"NodeCircuitOpen\"}")
                    .is_empty()
                && !prom
                    .query("ugro_node_breaker_state{state=\"open\"} == 1")
                    .is_empty()
                && !prom
                    .query("rate(ugro_watch_delivery_notifications_total[1m])")
                    .is_empty()
                && !prom.query("ugro:nodes:count_by_state").is_empty();
            ready.then_some(())
        },
    );
    panels_return_series(&prom, &names, true);
    // Every sample the watcher serves is fresh: nothing for the stale-data alert to fire on
    // (the textfile test covers it).
    rules_return_series(&prom, &["UgroMetricsStale"]);
    watcher_values_match_its_records(&prom, work.path(), &names);
}

fn watcher_values_match_its_records(prom: &Prom, work: &Path, names: &[&str]) {
    assert_eq!(prom.value("ugro_watch_nodes"), names.len() as f64);
    let last = last_by_node(&work.join("raw.jsonl"));
    // What ugro-score makes of the same samples: the state the watcher's scorer serves.
    let raw: String = last.values().map(|v| format!("{v}\n")).collect();
    let scored = tool("ugro-score", &[], &raw);
    for l in scored.lines() {
        let s: Sample = serde_json::from_str(l).unwrap();
        let want = s.score.as_ref().unwrap().state.as_str();
        let q = format!("ugro_node_state{{node=\"{}\"}} == 1", s.node);
        assert_eq!(prom.query(&q)[0].metric["state"], want, "{}", s.node);
    }
    for n in names {
        let s: Sample = serde_json::from_value(last[*n].clone()).unwrap();
        let reachable = prom.value(&format!("ugro_node_reachable{{node=\"{n}\"}}"));
        assert_eq!(reachable == 1.0, s.unreachable.is_none(), "{n}");
        if let Some(u) = &s.unreachable {
            let q = format!("ugro_node_unreachable{{node=\"{n}\"}} == 1");
            assert_eq!(prom.query(&q)[0].metric["cause"], u.cause, "{n}");
        }
        for d in s.gpu.as_ref().map_or(&[][..], |g| &g.devices[..]) {
            let q = format!(
                "DCGM_FI_DEV_GPU_TEMP{{Hostname=\"{n}\", gpu=\"{}\"}}",
                d.index
            );
            match d.temperature_c {
                Some(t) => assert_eq!(prom.value(&q), f64::from(t), "{q}"),
                None => assert!(prom.query(&q).is_empty(), "{q}"),
            }
        }
    }
    let delivered =
        "ugro_watch_delivery_notifications_total{receiver=\"hook\", outcome=\"delivered\"}";
    assert!(
        prom.value(delivered) >= 1.0,
        "the Watchdog reached the webhook"
    );
    let failing: f64 = prom.value("sum(ugro_watch_poll_failures_total)");
    assert!(failing > 0.0);
    let xid = prom.query("DCGM_FI_DEV_XID_ERRORS > 0");
    assert_eq!(
        (
            xid[0].metric["Hostname"].as_str(),
            xid[0].metric["err_code"].as_str()
        ),
        ("gpu-b", "79")
    );
    // gpu-b's breaker opens on its third critical sample, which may come a scrape after the
    // readiness wait above saw the hung and unreachable nodes' breakers open.
    wait_for("gpu-b's breaker open in Prometheus", || {
        let open = prom.query("ugro_node_breaker_state{state=\"open\"} == 1");
        open.iter()
            .any(|s| s.metric["node"] == "gpu-b")
            .then_some(())
    });
    // The alerts Prometheus scraped are those the watcher's alert records leave firing (both
    // settle within a few cycles of the fixtures' steady state).
    wait_for("ugro_alert_firing equal to the alert records", || {
        let scraped: BTreeSet<AlertKey> = prom
            .query("ugro_alert_firing == 1")
            .iter()
            .map(|s| key(&s.metric))
            .collect();
        let records = firing_records(&work.join("alerts.jsonl"));
        (scraped.len() > 5 && scraped == records).then_some(())
    });
}
