//! The running monitor: workers own the links, the main task owns everything else (scheduler,
//! pipeline, views, output), so no state is shared between tasks and records leave in the
//! order they were made.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use ugro_types::io::{RecordWriter, WriteError};
use ugro_types::stage::{Chain, StageError};
use ugro_types::{Exit, Kind, Sample, Timestamp, Unreachable};

use crate::Error;
use crate::config::Cluster;
use crate::link::{Link, LinkSpec, LocalProbe, PollError, find_local_probe, spec_for};
use crate::pipeline::{Tap, Tapped};
use crate::sched::{Clock, CycleSummary, Outcome, SchedConf, Scheduler, SystemClock};
use crate::statedir::StateDir;
use crate::view::{NodeView, render_table};

/// Output and state handling shared by live polling and `--replay`.
pub struct Core<W: Write> {
    out: RecordWriter<W>,
    table: bool,
    color: bool,
    chain: Option<Chain>,
    tapped: Option<Tapped>,
    scorer: Option<ugro_score::Scorer>,
    seq: u64,
    views: Vec<NodeView>,
    index: HashMap<String, usize>,
    history: usize,
    state: Option<StateDir>,
    closed: bool,
    holds: Vec<(String, Option<Timestamp>)>,
    last_stats: Option<Vec<u8>>,
    footer: String,
    table_dirty: bool,
}

impl<W: Write> std::fmt::Debug for Core<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("nodes", &self.views.len())
            .field("pipeline", &self.chain.is_some())
            .finish()
    }
}

impl<W: Write> Core<W> {
    /// Output to `out`, through `chain` if given.
    pub fn new(
        out: W,
        chain: Option<(Chain, Tapped)>,
        state: Option<StateDir>,
        history: usize,
        table: bool,
        color: bool,
    ) -> Self {
        Core {
            out: RecordWriter::new(out),
            table,
            color,
            tapped: chain.as_ref().map(|c| c.1.clone()),
            chain: chain.map(|c| c.0),
            scorer: None,
            seq: 0,
            views: Vec::new(),
            index: HashMap::new(),
            history,
            state,
            closed: false,
            holds: Vec::new(),
            last_stats: None,
            footer: String::new(),
            table_dirty: true,
        }
    }

    /// In raw mode, scores samples for the table and the state directory only (the output
    /// stays raw).
    pub fn set_scorer(&mut self, s: Option<ugro_score::Scorer>) {
        self.scorer = s;
    }

    fn drain_taps(&mut self) {
        let Some(t) = &self.tapped else {
            return;
        };
        let taken = match t.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        for (tap, rec) in taken {
            let Ok(v) = serde_json::from_slice::<Value>(&rec) else {
                continue;
            };
            let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
            match (tap, kind) {
                // The scored sample is the one kept; the breaker's copy only adds its state.
                (Tap::Score, "sample") | (Tap::Breaker, "transition") | (Tap::Alert, "alert") => {
                    self.observe(&v, &rec);
                }
                (Tap::Breaker, "sample") => {
                    if let Some(b) = v.get("breaker") {
                        let node = v.get("node").and_then(Value::as_str).unwrap_or("");
                        if let Some(i) = self.index.get(node).copied()
                            && let Some(view) = self.views.get_mut(i)
                        {
                            view.observe_breaker(b);
                        }
                    }
                }
                (Tap::Score, "stats") => self.observe(&v, &rec),
                _ => {}
            }
        }
    }

    /// Whether stdout's reader went away.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Registers a node (table order is registration order).
    pub fn node(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let mut v = NodeView::new(name);
        v.keep_sample = self.state.is_some();
        // A row hidden by `forget` is used again, so nodes removed and added by reloads do
        // not grow the table.
        let i = match self.views.iter().position(|v| v.name.is_empty()) {
            Some(i) => {
                self.views[i] = v;
                i
            }
            None => {
                self.views.push(v);
                self.views.len() - 1
            }
        };
        self.index.insert(name.to_owned(), i);
        i
    }

    /// Rows in the table, shown or hidden.
    pub fn rows(&self) -> usize {
        self.views.len()
    }

    /// A node's view.
    pub fn view(&self, name: &str) -> Option<&NodeView> {
        self.index.get(name).and_then(|i| self.views.get(*i))
    }

    /// Forgets a node (SIGHUP removed it).
    pub fn forget(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            // Keep indices stable; an empty name hides the row.
            if let Some(v) = self.views.get_mut(i) {
                *v = NodeView::default();
            }
        }
    }

    /// Breaker holds seen since the last call: `(node, next trial)`, `None` = released.
    pub fn take_holds(&mut self) -> Vec<(String, Option<Timestamp>)> {
        std::mem::take(&mut self.holds)
    }

    /// One record made by the watcher: through the pipeline (if any) and out.
    pub fn feed(&mut self, line: &str) -> Result<(), Error> {
        self.seq += 1;
        match self.chain.as_mut() {
            None => self.emit(line.as_bytes()),
            Some(chain) => {
                let mut produced: Vec<Vec<u8>> = Vec::new();
                let r = chain.process(self.seq, line, &mut |rec: &[u8]| {
                    produced.push(rec.to_vec());
                    Ok(())
                });
                self.drain_taps();
                for rec in &produced {
                    self.emit(rec)?;
                }
                match r {
                    Ok(()) => Ok(()),
                    Err(StageError::Reject(cause)) => {
                        ugro_types::io::report_bad_line("ugro-watch", self.seq, &cause);
                        Ok(())
                    }
                    Err(StageError::Write(WriteError::Closed)) => {
                        self.closed = true;
                        Ok(())
                    }
                    Err(e) => Err(Error::Stage(e)),
                }
            }
        }
    }

    /// Like [`Core::feed`] for a record already parsed by the caller (saves a parse per poll
    /// in raw mode).
    pub fn feed_value(&mut self, line: &str, mut v: Value) -> Result<(), Error> {
        if self.chain.is_some() {
            return self.feed(line);
        }
        self.seq += 1;
        self.score_for_view(line, &mut v);
        self.observe(&v, line.as_bytes());
        self.write(line.as_bytes())
    }

    /// Numbers the next record as input line `n` (for `--replay`'s messages).
    pub fn set_line(&mut self, n: u64) {
        self.seq = n.saturating_sub(1);
    }

    /// Lets the pipeline's timers run.
    pub fn tick(&mut self, now: Timestamp) -> Result<(), Error> {
        let Some(chain) = self.chain.as_mut() else {
            return Ok(());
        };
        let mut produced: Vec<Vec<u8>> = Vec::new();
        chain
            .tick(now, &mut |rec: &[u8]| {
                produced.push(rec.to_vec());
                Ok(())
            })
            .map_err(Error::Stage)?;
        self.drain_taps();
        for rec in &produced {
            self.emit(rec)?;
        }
        Ok(())
    }

    /// End of the run: the pipeline's pending records and state.
    pub fn finish(&mut self) -> Result<(), Error> {
        let Some(chain) = self.chain.as_mut() else {
            return Ok(());
        };
        let mut produced: Vec<Vec<u8>> = Vec::new();
        let r = chain.finish(&mut |rec: &[u8]| {
            produced.push(rec.to_vec());
            Ok(())
        });
        self.drain_taps();
        for rec in &produced {
            self.emit(rec)?;
        }
        r.map_err(Error::Stage)
    }

    fn emit(&mut self, rec: &[u8]) -> Result<(), Error> {
        if self.chain.is_none()
            && let Ok(mut v) = serde_json::from_slice::<Value>(rec)
        {
            if let Ok(line) = std::str::from_utf8(rec) {
                self.score_for_view(line, &mut v);
            }
            self.observe(&v, rec);
        }
        self.write(rec)
    }

    fn write(&mut self, rec: &[u8]) -> Result<(), Error> {
        if self.table || self.closed {
            return Ok(());
        }
        match self.out.write_raw(rec) {
            Ok(()) => Ok(()),
            Err(WriteError::Closed) => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(Error::Write(e)),
        }
    }

    fn score_for_view(&mut self, line: &str, v: &mut Value) {
        let Some(scorer) = self.scorer.as_mut() else {
            return;
        };
        if v.get("kind").and_then(Value::as_str) != Some("sample") || v.get("score").is_some() {
            return;
        }
        if let Ok(s) = serde_json::from_str::<Sample>(line) {
            let score = scorer.score_sample(&s);
            if let (Some(obj), Ok(sv)) = (v.as_object_mut(), serde_json::to_value(&score)) {
                obj.insert("score".into(), sv);
            }
        }
    }

    fn observe(&mut self, v: &Value, raw: &[u8]) {
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        let node = v.get("node").and_then(Value::as_str).unwrap_or("");
        if kind == "stats" {
            self.last_stats = Some(raw.to_vec());
            return;
        }
        if kind == "transition" {
            let to = v.get("to").and_then(Value::as_str).unwrap_or("");
            let hold = match to {
                "open" | "forced_open" => Some(
                    v.get("next_trial_at")
                        .and_then(Value::as_str)
                        .and_then(|t| Timestamp::parse(t).ok())
                        .unwrap_or(Timestamp(i64::MAX)),
                ),
                _ => None,
            };
            self.holds.push((node.to_owned(), hold));
        }
        if node.is_empty() || node == "*" {
            return;
        }
        let i = self.node(node);
        if let Some(view) = self.views.get_mut(i) {
            view.observe(v, self.history);
        }
        self.table_dirty = true;
    }

    /// Writes dirty node files, `fleet.json` and the latest `stats` record.
    pub fn flush_state(&mut self, now: Timestamp) {
        let Some(st) = &self.state else {
            return;
        };
        let mut any = false;
        for v in self
            .views
            .iter_mut()
            .filter(|v| v.dirty && !v.name.is_empty())
        {
            v.dirty = false;
            any = true;
            if let Ok(b) = serde_json::to_vec_pretty(&v.state_json(now)) {
                st.node(&v.name, b);
            }
        }
        if any {
            let fleet: Vec<Value> = self
                .views
                .iter()
                .filter(|v| !v.name.is_empty())
                .map(NodeView::summary_json)
                .collect();
            let doc = serde_json::json!({"updated": now, "nodes": fleet});
            if let Ok(b) = serde_json::to_vec_pretty(&doc) {
                st.file("fleet.json", b);
            }
        }
        if let Some(s) = self.last_stats.take() {
            st.file("stats.json", s);
        }
    }

    /// Sets the table footer.
    pub fn set_footer(&mut self, f: String) {
        if f != self.footer {
            self.footer = f;
            self.table_dirty = true;
        }
    }

    /// Redraws the table if anything changed.
    pub fn draw(&mut self) -> Result<(), Error> {
        if !self.table || !self.table_dirty || self.closed {
            return Ok(());
        }
        self.table_dirty = false;
        let text = render_table(
            self.views.iter().filter(|v| !v.name.is_empty()),
            &self.footer,
            self.color,
        );
        match self.out.write_text(&text) {
            Ok(()) => Ok(()),
            Err(WriteError::Closed) => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(Error::Write(e)),
        }
    }

    /// Stops the state writer, reporting its first error.
    pub fn close_state(&mut self) -> Result<(), Error> {
        match self.state.take() {
            Some(s) => s.close().map_err(Error::State),
            None => Ok(()),
        }
    }
}

/// Settings of a live run beyond the cluster file.
#[derive(Debug, Clone, Default)]
pub struct LiveOpts {
    /// Stop after this many cycles.
    pub cycles: Option<u64>,
    /// Agentless deploy.
    pub deploy: bool,
    /// Command-line settings, applied again after every SIGHUP reload.
    pub overrides: crate::Overrides,
    /// The cluster file, for SIGHUP.
    pub cluster_path: Option<PathBuf>,
    /// Only nodes with one of these tags.
    pub tags: Vec<String>,
    /// `stats` period.
    pub stats_every: Duration,
}

struct Done {
    idx: usize,
    result: Result<String, PollError>,
}

struct NodeRt {
    name: String,
    spec: String,
    tx: Option<mpsc::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    sched: usize,
    replies: u64,
    removed: bool,
}

#[derive(Debug, Default)]
struct StatsAcc {
    cycles: u64,
    busy_cycles: u64,
    sum_ms: u64,
    max_ms: u64,
    last_ms: u64,
    probes: u64,
    failures: u64,
    timeouts: u64,
    ssh: u64,
    probe: u64,
    since: u64,
}

impl StatsAcc {
    fn add(&mut self, s: &CycleSummary) {
        self.cycles += 1;
        if s.polls > 0 {
            self.busy_cycles += 1;
            self.sum_ms += s.duration_ms;
            self.max_ms = self.max_ms.max(s.duration_ms);
            self.last_ms = s.duration_ms;
        }
    }
}

fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

fn sched_conf(c: &Cluster) -> SchedConf {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    SchedConf {
        base_ms: ms(c.intervals.base),
        max_ms: ms(c.intervals.max),
        spread: c.intervals.spread,
        concurrency: c.concurrency,
    }
}

fn selected<'a>(
    c: &'a Cluster,
    tags: &'a [String],
) -> impl Iterator<Item = &'a crate::config::NodeConf> {
    c.nodes
        .iter()
        .filter(move |n| tags.is_empty() || n.tags.iter().any(|t| tags.contains(t)))
}

/// The sample a node that produced none stands for.
pub fn unreachable_line(node: &str, ts: Timestamp, e: &PollError) -> String {
    let mut s = Sample::new(node, ts);
    s.unreachable = Some(Unreachable {
        cause: e.cause().to_owned(),
        message: e.message(),
    });
    serde_json::to_string(&s).unwrap_or_default()
}

/// Checks a probe reply: a current-schema sample; its `node` is set to the configured name.
pub fn accept_reply(node: &str, line: &str) -> Result<String, String> {
    let h = ugro_types::parse_header(line).map_err(|e| format!("bad reply: {e}"))?;
    if h.kind != Kind::Sample {
        return Err(format!("probe answered a {} record", h.kind.as_str()));
    }
    if h.node == node {
        return Ok(line.to_owned());
    }
    let fixed = ugro_types::io::set_field(line, "node", Value::String(node.to_owned()))
        .map_err(|e| format!("bad reply: {e}"))?;
    String::from_utf8(fixed).map_err(|e| format!("bad reply: {e}"))
}

/// Activity and health seen in a raw sample.
pub fn classify(v: &Value, util_threshold: u32) -> Outcome {
    let unreachable = v.get("unreachable").is_some();
    let training = v
        .pointer("/processes/training")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let devices = v
        .pointer("/gpu/devices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let busy_gpu = devices.iter().any(|d| {
        d.get("utilization_pct")
            .and_then(Value::as_u64)
            .is_some_and(|u| u >= u64::from(util_threshold))
    });
    let gpu_status = v.pointer("/gpu/status").and_then(Value::as_str);
    let gpu_bad = matches!(gpu_status, Some("failed" | "missing"))
        || devices.iter().any(|d| {
            d.get("state")
                .and_then(Value::as_str)
                .is_some_and(|s| s != "ok")
        });
    let score_bad = v
        .pointer("/score/state")
        .and_then(Value::as_str)
        .is_some_and(|s| s != "healthy");
    Outcome {
        active: training || busy_gpu,
        degraded: unreachable || gpu_bad || score_bad,
        timed_out: false,
        failed: unreachable,
    }
}

/// The link settings a reload may change without reconnecting: timeout, reconnect backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl Timing {
    fn of(c: &Cluster) -> Timing {
        Timing {
            timeout: c.timeout,
            reconnect_min: c.intervals.reconnect_min,
            reconnect_max: c.intervals.reconnect_max,
        }
    }
}

fn start_worker(
    idx: usize,
    spec: LinkSpec,
    timing: &tokio::sync::watch::Sender<Timing>,
    done: &mpsc::UnboundedSender<Done>,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let mut timing = timing.subscribe();
    let t = *timing.borrow_and_update();
    let mut link = Link::new(spec, t.timeout, t.reconnect_min, t.reconnect_max);
    let done = done.clone();
    let handle = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            if timing.has_changed().unwrap_or(false) {
                let t = *timing.borrow_and_update();
                link.set_timing(t.timeout, t.reconnect_min, t.reconnect_max);
            }
            let result = link.poll().await;
            if done.send(Done { idx, result }).is_err() {
                break;
            }
        }
        link.close().await;
    });
    (tx, handle)
}

struct Live<'a, W: Write> {
    cluster: Cluster,
    opts: LiveOpts,
    core: &'a mut Core<W>,
    clock: SystemClock,
    sched: Scheduler,
    nodes: Vec<NodeRt>,
    by_name: HashMap<String, usize>,
    done_tx: mpsc::UnboundedSender<Done>,
    control: tempfile::TempDir,
    local_probe: Option<PathBuf>,
    /// The hashed local probe, opened when the first SSH node is added (deploy on).
    deploy: Option<Arc<LocalProbe>>,
    timing: tokio::sync::watch::Sender<Timing>,
    /// Workers of removed or replaced nodes still closing their links.
    closing: Vec<tokio::task::JoinHandle<()>>,
    stats: StatsAcc,
    busy: HashSet<String>,
    file_active: bool,
    stopping: bool,
}

impl<W: Write> Live<'_, W> {
    /// The deploy binary for an SSH node, opened once (the first time one is added, at
    /// start-up or by a reload); `None` with --no-deploy.
    fn deploy_for(
        &mut self,
        n: &crate::config::NodeConf,
    ) -> Result<Option<Arc<LocalProbe>>, Error> {
        if !self.opts.deploy || *self.cluster.transport_of(n) != crate::config::TransportConf::Ssh {
            return Ok(None);
        }
        if self.deploy.is_none() {
            let p = self.local_probe.as_ref().ok_or_else(|| {
                Error::Unavailable(
                    "agentless deploy needs a local ugro-probe (next to ugro-watch or on PATH); \
                     install one or pass --no-deploy"
                        .into(),
                )
            })?;
            self.deploy = Some(Arc::new(LocalProbe::open(p).map_err(Error::Io)?));
        }
        Ok(self.deploy.clone())
    }

    fn add_nodes(&mut self) -> Result<(), Error> {
        let wanted: Vec<crate::config::NodeConf> =
            selected(&self.cluster, &self.opts.tags).cloned().collect();
        if wanted.is_empty() {
            return Err(Error::Usage("no node matches --tag".into()));
        }
        // Every spec first, so a reload that cannot be applied changes nothing.
        let mut specs = Vec::with_capacity(wanted.len());
        for n in &wanted {
            let deploy = self.deploy_for(n)?;
            let spec = spec_for(
                &self.cluster,
                n,
                self.local_probe.as_deref(),
                deploy.as_ref(),
                self.control.path(),
            )
            .map_err(Error::Unavailable)?;
            // Timing (timeout, intervals) is not part of a node's identity: it reaches the
            // running links through the timing channel, so a reload that changes only timing
            // keeps every session and resident probe.
            let key = format!("{spec:?}");
            specs.push((n.name.clone(), spec, key));
        }
        let keep: HashSet<&str> = wanted.iter().map(|n| n.name.as_str()).collect();
        let gone: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, rt)| !rt.removed && !keep.contains(rt.name.as_str()))
            .map(|(i, _)| i)
            .collect();
        for i in gone {
            let name = self.nodes[i].name.clone();
            self.retire(i);
            self.by_name.remove(&name);
            self.core.forget(&name);
        }
        for (name, spec, key) in specs {
            if let Some(&i) = self.by_name.get(&name) {
                if self.nodes[i].spec == key {
                    continue;
                }
                // Changed: the old worker finishes its poll (if any) and closes.
                self.retire(i);
            }
            let sched = self.sched.add(&name);
            let (tx, handle) = start_worker(sched, spec, &self.timing, &self.done_tx);
            self.core.node(&name);
            let rt = NodeRt {
                name: name.clone(),
                spec: key,
                tx: Some(tx),
                handle: Some(handle),
                sched,
                replies: 0,
                removed: false,
            };
            // The scheduler hands out a freed slot again only once its last poll has been
            // answered, so no late answer can reach the slot's new node.
            match self.nodes.get_mut(sched) {
                Some(slot) => *slot = rt,
                None => self.nodes.push(rt),
            }
            self.by_name.insert(name, sched);
        }
        self.closing.retain(|h| !h.is_finished());
        Ok(())
    }

    /// Stops polling a node; its worker finishes the poll in flight (if any) and closes.
    fn retire(&mut self, i: usize) {
        let Some(rt) = self.nodes.get_mut(i) else {
            return;
        };
        rt.removed = true;
        rt.tx = None;
        if let Some(h) = rt.handle.take() {
            self.closing.push(h);
        }
        self.sched.remove(rt.sched);
    }

    fn reload(&mut self) {
        let Some(path) = self.opts.cluster_path.clone() else {
            tracing::warn!("SIGHUP: no cluster file to reload (--local)");
            return;
        };
        let loaded = Cluster::load(&path)
            .map_err(Error::Config)
            .and_then(|mut c| {
                self.opts.overrides.apply(&mut c)?;
                Ok(c)
            });
        match loaded {
            Err(e) => tracing::error!("SIGHUP: keeping the running configuration: {e}"),
            Ok(c) => {
                for w in c.warnings() {
                    tracing::warn!("{w}");
                }
                let old = std::mem::replace(&mut self.cluster, c);
                // Before adding nodes, so new ones get their phase in the new base interval.
                self.sched.reconfigure(sched_conf(&self.cluster));
                if let Err(e) = self.add_nodes() {
                    tracing::error!("SIGHUP: {e}; keeping the running configuration");
                    self.cluster = old;
                    self.sched.reconfigure(sched_conf(&self.cluster));
                } else {
                    self.timing.send_replace(Timing::of(&self.cluster));
                    tracing::info!("SIGHUP: reloaded {}", path.display());
                }
            }
        }
    }

    fn dispatch(&mut self, now: u64) {
        let idx_by_sched: Vec<usize> = self.sched.due(now);
        for s in idx_by_sched {
            // Scheduler indices and node indices are allotted together.
            let Some(rt) = self.nodes.get(s) else {
                continue;
            };
            let sent = rt.tx.as_ref().is_some_and(|tx| tx.try_send(()).is_ok());
            if !sent {
                self.sched.done(s, Outcome::default(), now);
            }
        }
    }

    fn on_done(&mut self, d: Done) -> Result<(), Error> {
        let now = self.clock.mono_ms();
        let wall = self.clock.wall();
        let Some(rt) = self.nodes.get_mut(d.idx) else {
            return Ok(());
        };
        rt.replies += 1;
        let name = rt.name.clone();
        let removed = rt.removed;
        let sched_idx = rt.sched;
        let line_no = rt.replies;
        let result = d.result.and_then(|l| {
            accept_reply(&name, &l).map_err(|cause| {
                ugro_types::io::report_bad_line("ugro-watch", line_no, &format!("{name}: {cause}"));
                PollError::Probe(cause)
            })
        });
        self.stats.probes += 1;
        let (line, err) = match result {
            Ok(l) => (l, None),
            Err(e) => (unreachable_line(&name, wall, &e), Some(e)),
        };
        if let Some(e) = &err {
            self.stats.failures += 1;
            match e {
                PollError::Ssh(_) => self.stats.ssh += 1,
                PollError::Timeout(_) => self.stats.timeouts += 1,
                PollError::Probe(_) => self.stats.probe += 1,
            }
            tracing::info!(node = %name, "unreachable ({}): {}", e.cause(), e.message());
        }
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let mut outcome = classify(&v, self.cluster.activity.gpu_utilization_pct);
        outcome.timed_out = matches!(err, Some(PollError::Timeout(_)));
        outcome.failed = err.is_some();
        outcome.active |= self.file_active || self.busy.contains(&name);
        // A terminal's Ctrl-C also reaches the ssh control masters (same process group), so
        // SSH failures of polls in flight at shutdown say nothing about the node.
        let shutdown_noise = self.stopping && matches!(err, Some(PollError::Ssh(_)));
        if removed || shutdown_noise {
            self.sched.done(sched_idx, outcome, now);
            return Ok(());
        }
        self.core.feed_value(&line, v)?;
        // In --pipeline mode the score is known now: a node the scorer does not call healthy
        // is watched at the base interval.
        if let Some(state) = self
            .core
            .view(&name)
            .and_then(|v| v.last.as_ref())
            .and_then(|l| l.state.as_deref())
        {
            outcome.degraded |= state != "healthy";
        }
        self.sched.done(sched_idx, outcome, now);
        self.apply_holds(now, wall);
        Ok(())
    }

    fn apply_holds(&mut self, now: u64, wall: Timestamp) {
        for (node, hold) in self.core.take_holds() {
            let Some(&i) = self.by_name.get(&node) else {
                continue;
            };
            let until = hold.map(|t| {
                if t.0 == i64::MAX {
                    // Forced open without a trial time: look again at the longest interval.
                    now + u64::try_from(self.cluster.intervals.max.as_millis()).unwrap_or(60_000)
                } else {
                    now + u64::try_from(t.since(wall).as_millis()).unwrap_or(u64::MAX)
                }
            });
            self.sched.hold(self.nodes[i].sched, until);
        }
    }

    fn stats_record(&mut self, now: u64, wall: Timestamp) -> Option<String> {
        let s = std::mem::take(&mut self.stats);
        self.stats.since = now;
        let secs = (now.saturating_sub(s.since) as f64 / 1000.0).max(0.001);
        let (lo, hi) = self.sched.interval_range_ms();
        let unreachable = self
            .nodes
            .iter()
            .filter(|n| !n.removed)
            .filter(|n| {
                self.core
                    .view(&n.name)
                    .is_some_and(|v| v.unreachable.is_some())
            })
            .count();
        let mut f = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            f.insert(k.to_owned(), v);
        };
        put("cycles", s.cycles.into());
        put(
            "cycle_ms",
            s.sum_ms.checked_div(s.busy_cycles).unwrap_or(0).into(),
        );
        put("cycle_ms_max", s.max_ms.into());
        put("last_cycle_ms", s.last_ms.into());
        put("probes", s.probes.into());
        put(
            "probes_per_s",
            ((s.probes as f64 / secs * 10.0).round() / 10.0).into(),
        );
        put("failures", s.failures.into());
        put("timeouts", s.timeouts.into());
        put("ssh_failures", s.ssh.into());
        put("probe_failures", s.probe.into());
        put("interval_ms", lo.into());
        put("interval_max_ms", hi.into());
        put("concurrency_limit", self.sched.limit().into());
        put("in_flight", self.sched.in_flight().into());
        put(
            "nodes",
            self.nodes.iter().filter(|n| !n.removed).count().into(),
        );
        put("nodes_unreachable", unreachable.into());
        if let Some(r) = rss_kb() {
            put("rss_kb", r.into());
        }
        let rec = ugro_types::Stats {
            v: ugro_types::SCHEMA_VERSION,
            kind: Kind::Stats,
            ts: wall,
            node: "*".into(),
            tool: "ugro-watch".into(),
            fields: f,
        };
        serde_json::to_string(&rec).ok()
    }

    fn footer(&self) -> String {
        let (lo, hi) = self.sched.interval_range_ms();
        format!(
            "{} nodes · cycle {} · last cycle {} ms · interval {}–{} s · in flight {}/{}",
            self.nodes.iter().filter(|n| !n.removed).count(),
            self.sched.cycle(),
            self.stats.last_ms,
            lo / 1000,
            hi / 1000,
            self.sched.in_flight(),
            self.sched.limit()
        )
    }
}

/// Polls until a signal, `--cycles` or a closed stdout.
pub async fn live<W: Write>(
    cluster: Cluster,
    opts: LiveOpts,
    core: &mut Core<W>,
) -> Result<Exit, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let control = tempfile::Builder::new()
        .prefix("ugro-watch-")
        .tempdir()
        .map_err(Error::Io)?;
    let local_probe = find_local_probe();
    raise_fd_limit();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let clock = SystemClock::default();
    let sched = Scheduler::new(sched_conf(&cluster));
    let (timing, _) = tokio::sync::watch::channel(Timing::of(&cluster));
    let mut w = Live {
        cluster,
        opts,
        core,
        clock,
        sched,
        nodes: Vec::new(),
        by_name: HashMap::new(),
        done_tx,
        control,
        local_probe,
        deploy: None,
        timing,
        closing: Vec::new(),
        stats: StatsAcc::default(),
        busy: HashSet::new(),
        file_active: false,
        stopping: false,
    };
    w.add_nodes()?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::Io)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(Error::Io)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(Error::Io)?;
    let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<HashSet<String>>();
    let mut jobs_running = false;

    let mut stopping = false;
    let start = w.clock.mono_ms();
    let mut next_stats = start + ms(w.opts.stats_every);
    let mut next_activity = start;
    let mut next_tick = start + 1000;
    let mut next_flush = start + 1000;
    let mut next_draw = start;
    let mut forced = false;
    loop {
        let now = w.clock.mono_ms();
        let wall = w.clock.wall();
        if !stopping {
            if w.opts.cycles.is_some_and(|n| w.sched.cycle_at(now) >= n) {
                stopping = true;
            }
            if w.core.closed() {
                stopping = true;
            }
        }
        if !stopping {
            w.dispatch(now);
        }
        for sum in w.sched.take_finished() {
            w.stats.add(&sum);
        }
        if stopping && w.sched.in_flight() == 0 {
            break;
        }
        if !w.opts.stats_every.is_zero() && now >= next_stats {
            next_stats = now + ms(w.opts.stats_every);
            if let Some(rec) = w.stats_record(now, wall) {
                w.core.feed(&rec)?;
            }
        }
        if now >= next_activity {
            next_activity = now + ms(w.cluster.intervals.base);
            check_activity(&mut w);
            if let (Some(cmd), false) = (w.cluster.activity.jobs_cmd.clone(), jobs_running) {
                jobs_running = true;
                let tx = jobs_tx.clone();
                let budget = w.cluster.intervals.base;
                tokio::spawn(async move {
                    match crate::activity::jobs_cmd(&cmd, budget).await {
                        Ok(busy) => {
                            let _ = tx.send(busy);
                        }
                        Err(e) => {
                            tracing::warn!("jobs command: {e}");
                            let _ = tx.send(HashSet::from(["\0failed".to_owned()]));
                        }
                    }
                });
            }
        }
        if now >= next_tick {
            next_tick = now + 1000;
            w.core.tick(wall)?;
        }
        if now >= next_flush {
            next_flush = now + 1000;
            w.core.flush_state(wall);
        }
        if now >= next_draw {
            next_draw = now + 500;
            let f = w.footer();
            w.core.set_footer(f);
            w.core.draw()?;
        }
        let mut wake = next_tick.min(next_flush).min(next_activity).min(next_draw);
        if !stopping {
            wake = wake.min(w.sched.next_wake(now));
        }
        if !w.opts.stats_every.is_zero() {
            wake = wake.min(next_stats);
        }
        let sleep = Duration::from_millis(wake.saturating_sub(now).max(1));
        tokio::select! {
            d = done_rx.recv() => {
                if let Some(d) = d {
                    w.on_done(d)?;
                    while let Ok(d) = done_rx.try_recv() {
                        w.on_done(d)?;
                    }
                }
            }
            () = tokio::time::sleep(sleep) => {}
            _ = sigint.recv() => { if stopping { forced = true; break; } stopping = true; w.stopping = true; }
            _ = sigterm.recv() => { if stopping { forced = true; break; } stopping = true; w.stopping = true; }
            _ = sighup.recv() => { w.reload(); }
            b = jobs_rx.recv() => {
                jobs_running = false;
                if let Some(b) = b.filter(|b| !b.contains("\0failed")) {
                    apply_busy(&mut w, b);
                }
            }
        }
    }
    let now = w.clock.mono_ms();
    let wall = w.clock.wall();
    for sum in w.sched.take_finished() {
        w.stats.add(&sum);
    }
    if !w.opts.stats_every.is_zero()
        && !w.core.closed()
        && let Some(rec) = w.stats_record(now, wall)
    {
        w.core.feed(&rec)?;
    }
    // Closing stdin ends each resident probe; the workers close their sessions.
    let mut handles: Vec<_> = w
        .nodes
        .iter_mut()
        .filter_map(|n| {
            n.tx = None;
            n.handle.take()
        })
        .collect();
    handles.append(&mut w.closing);
    let budget = if forced { 1 } else { 5 };
    let _ = tokio::time::timeout(Duration::from_secs(budget), async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
    w.core.finish()?;
    w.core.flush_state(wall);
    w.core.draw()?;
    w.core.close_state()?;
    Ok(Exit::Ok)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn check_activity<W: Write>(w: &mut Live<'_, W>) {
    let Some(f) = w.cluster.activity.file.clone() else {
        return;
    };
    let active = crate::activity::file_active(
        &f,
        w.cluster.activity.file_fresh,
        std::time::SystemTime::now(),
    );
    if active && !w.file_active {
        tracing::info!("activity file {} is fresh: jobs running", f.display());
        for rt in w.nodes.iter().filter(|n| !n.removed) {
            w.sched.activate(rt.sched);
        }
    }
    w.file_active = active;
}

fn apply_busy<W: Write>(w: &mut Live<'_, W>, busy: HashSet<String>) {
    for name in busy.difference(&w.busy) {
        if let Some(&i) = w.by_name.get(name) {
            tracing::info!(node = %name, "job started");
            w.sched.activate(w.nodes[i].sched);
        }
    }
    w.busy = busy;
}

/// A thousand resident probes need two pipes each; the soft limit is often 1024.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum)
        && cur < max
    {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn forgotten_rows_are_used_again() {
        let mut core = Core::new(Vec::new(), None, None, 10, false, false);
        core.node("a");
        for i in 0..50 {
            let name = format!("n{i}");
            core.node(&name);
            core.forget(&name);
        }
        assert_eq!(core.rows(), 2);
        assert!(core.view("a").is_some());
        assert!(core.view("n49").is_none());
    }

    #[test]
    fn unreachable_sample_has_cause_and_no_sections() {
        let l = unreachable_line("n1", Timestamp(0), &PollError::Ssh("refused".into()));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["kind"], "sample");
        assert_eq!(v["unreachable"]["cause"], "ssh");
        assert_eq!(v["unreachable"]["message"], "refused");
        assert!(v.get("gpu").is_none() && v.get("host").is_none());
        let o = classify(&v, 10);
        assert!(o.degraded && o.failed && !o.active);
    }

    #[test]
    fn replies_are_checked_and_renamed_to_the_configured_node() {
        let ok = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"localhost","x":1}"#;
        let v: Value = serde_json::from_str(&accept_reply("gpu-7", ok).unwrap()).unwrap();
        assert_eq!(v["node"], "gpu-7");
        assert_eq!(v["x"], 1);
        assert!(accept_reply("n", "not json").is_err());
        let stats = r#"{"v":1,"kind":"stats","ts":"2026-11-28T00:00:00Z","node":"n"}"#;
        assert!(accept_reply("n", stats).unwrap_err().contains("stats"));
        let future = r#"{"v":9,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#;
        assert!(accept_reply("n", future).is_err());
    }

    #[test]
    fn training_or_busy_gpus_mean_active() {
        let idle = json!({"gpu":{"status":"ok","devices":[{"index":0,"utilization_pct":3}]},
                          "processes":{"training":[]}});
        assert!(!classify(&idle, 10).active);
        let busy = json!({"gpu":{"status":"ok","devices":[{"index":0,"utilization_pct":95}]}});
        assert!(classify(&busy, 10).active);
        let training =
            json!({"processes":{"training":[{"pid":1,"command":"python","matched_by":"nvml"}]}});
        assert!(classify(&training, 10).active);
        let lost = json!({"gpu":{"status":"ok","devices":[{"index":0,"state":"lost"}]}});
        assert!(classify(&lost, 10).degraded);
    }
}
