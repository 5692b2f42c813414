//! The live loop, which ties the four jobs together: it owns the scheduler and the node table,
//! asks the polling tasks ([`crate::poll`]) for polls, turns their answers into the raw stream
//! (samples, a `tick` every `--tick`, `stats`, `error`s) and hands that to the pipeline queue
//! ([`crate::pipeline`]) without ever waiting on it. Delivery runs behind the alert stage,
//! persistence on its own thread ([`crate::persist`]). What comes back — each node's score
//! state, breaker holds, state-write failures — steers the scheduler and the `stats` records.
//!
//! Clock, transport and control (stop, reload) are injected ([`Deps`]), so the loop runs under
//! tokio's paused time in tests.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use ugro_types::stage::StageError;
use ugro_types::{ErrorRecord, Exit, HealthState, Kind, Timestamp};

use crate::Error;
use crate::clock::Clock;
use crate::config::{Cluster, NodeConf, TransportConf};
use crate::link::{LocalProbe, PollError, find_local_probe, spec_for};
use crate::persist::{self, Persister};
use crate::pipeline::{self, Feed, Feedback, Key, Msg, Output, Processor, Stages};
use crate::poll::{Done, Timing, Transport, accept_reply, start_worker, unreachable_line};
use crate::sched::{CycleSummary, Outcome, SchedConf, Scheduler};
use crate::view::Views;

/// Settings of a live run beyond the cluster file.
#[derive(Debug, Clone)]
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
    /// `stats` period; zero turns the periodic and final ones off (those reporting a change in
    /// whether the state can be written still go out: WatcherStateUnwritable depends on them).
    pub stats_every: Duration,
    /// `tick` period.
    pub tick: Duration,
}

impl Default for LiveOpts {
    fn default() -> Self {
        LiveOpts {
            cycles: None,
            deploy: true,
            overrides: crate::Overrides::default(),
            cluster_path: None,
            tags: Vec::new(),
            stats_every: Duration::from_secs(60),
            tick: Duration::from_secs(1),
        }
    }
}

/// What the loop is told from outside (signals in the binary, the test in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Finish the polls in flight and stop; a second one stops at once.
    Stop,
    /// Reload the cluster file.
    Reload,
}

/// The loop's injected dependencies.
pub struct Deps {
    /// Time (must follow tokio time: the loop sleeps on tokio timers).
    pub clock: Arc<dyn Clock>,
    /// How links are opened.
    pub transport: Arc<dyn Transport>,
    /// Stop and reload requests.
    pub control: mpsc::UnboundedReceiver<Control>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish()
    }
}

/// Everything the pipeline thread is started with.
#[derive(Debug)]
pub struct Setup {
    /// `--listen`: the fleet endpoint's feeding side (the caller keeps the endpoint).
    pub metrics: Option<crate::endpoint::Feed>,
    /// Chain or scorer.
    pub stages: Stages,
    /// Output, table, `--tee`.
    pub output: Output,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// History entries per node.
    pub history: usize,
    /// Pipeline queue capacity (records).
    pub queue: usize,
    /// The pipeline's counters (the alert stage's spool count is wired to them).
    pub counters: Arc<pipeline::Counters>,
}

struct NodeRt {
    name: String,
    spec: String,
    tx: Option<mpsc::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    sched: usize,
    replies: u64,
    /// Failed polls since start, for the endpoint.
    failures: u64,
    removed: bool,
    /// The scorer's state of the node's latest sample, as the pipeline reported it.
    health: Option<HealthState>,
    unreachable: bool,
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

/// Counters since start, for the endpoint (`stats` records carry per-period figures).
#[derive(Debug, Default)]
struct Totals {
    polls: u64,
    ssh: u64,
    timeout: u64,
    probe: u64,
    cycles: u64,
    /// The last cycle with polls: its duration, ms.
    last_cycle_ms: Option<u64>,
    /// When the last cycle finished.
    last_cycle_at: Option<std::time::Instant>,
}

/// Cumulative counters as of the last stats record, to report per-period figures.
#[derive(Debug, Default)]
struct Seen {
    state_writes: u64,
    state_failures: u64,
    state_superseded: u64,
    stage_failures: u64,
}

/// This process's resident memory, kB.
pub(crate) fn rss_kb() -> Option<u64> {
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

fn timing_of(c: &Cluster) -> Timing {
    Timing {
        timeout: c.timeout,
        reconnect_min: c.intervals.reconnect_min,
        reconnect_max: c.intervals.reconnect_max,
    }
}

fn selected<'a>(c: &'a Cluster, tags: &'a [String]) -> impl Iterator<Item = &'a NodeConf> {
    c.nodes
        .iter()
        .filter(move |n| tags.is_empty() || n.tags.iter().any(|t| tags.contains(t)))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A `tick` record: time passing, for the stages' timers (the tick rule, ugro(7)).
pub fn tick_line(ts: Timestamp) -> String {
    let rec = ugro_types::Stats {
        v: ugro_types::SCHEMA_VERSION,
        kind: Kind::Tick,
        ts,
        node: "*".into(),
        tool: "ugro-watch".into(),
        fields: serde_json::Map::new(),
    };
    serde_json::to_string(&rec).unwrap_or_default()
}

struct Live<'a> {
    cluster: Cluster,
    opts: LiveOpts,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn Transport>,
    sched: Scheduler,
    nodes: Vec<NodeRt>,
    by_name: HashMap<String, usize>,
    done_tx: mpsc::UnboundedSender<Done>,
    control_dir: Option<tempfile::TempDir>,
    local_probe: Option<PathBuf>,
    /// The hashed local probe, opened when the first SSH node is added (deploy on).
    deploy: Option<Arc<LocalProbe>>,
    timing: watch::Sender<Timing>,
    /// Tasks of removed or replaced nodes still closing their links.
    closing: Vec<tokio::task::JoinHandle<()>>,
    stats: StatsAcc,
    totals: Totals,
    seen: Seen,
    /// `--listen`: where the endpoint learns about polls and the watcher.
    metrics: Option<crate::endpoint::Feed>,
    busy: HashSet<String>,
    file_active: bool,
    stopping: bool,
    /// Stopping because of a signal (a terminal's Ctrl-C ends the ssh masters too).
    signalled: bool,
    feed: &'a mut Feed,
    counters: Arc<pipeline::Counters>,
    state: Option<&'a persist::Counters>,
    /// Why the state directory cannot be written, while it cannot.
    dir_error: Option<String>,
    /// Why the breaker's or alert's state file cannot be written, while it cannot.
    stage_error: Option<String>,
}

/// Runs the watcher: persistence and pipeline threads, then the live loop until a stop,
/// `--cycles` or a closed stdout; then everything is flushed and closed in order.
pub async fn run(
    cluster: Cluster,
    opts: LiveOpts,
    setup: Setup,
    deps: Deps,
) -> Result<Exit, Error> {
    let (persist_tx, persist_rx) = mpsc::unbounded_channel();
    let persister = match &setup.state_dir {
        Some(d) => Some(Persister::open(
            d,
            Box::new(move |e| {
                let _ = persist_tx.send(e);
            }),
        )?),
        None => None,
    };
    let views = Views::new(setup.history, setup.state_dir.is_some());
    let mut processor = Processor::new(
        setup.stages,
        setup.output,
        views,
        persister.as_ref().map(Persister::queue),
        setup.counters.clone(),
    );
    let (fb_tx, fb_rx) = mpsc::unbounded_channel();
    processor.set_feedback(fb_tx);
    let metrics = setup.metrics;
    if let Some(m) = &metrics {
        processor.set_metrics(m.clone());
    }
    let (mut feed, rx) = Feed::new(setup.queue);
    let thread = pipeline::spawn(processor, rx).map_err(Error::Io)?;
    let counters = setup.counters;
    let looped = live(
        cluster,
        opts,
        deps,
        &mut feed,
        counters,
        persister.as_ref().map(Persister::counters),
        fb_rx,
        persist_rx,
        metrics,
    )
    .await;
    feed.close().await;
    let piped = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
        .unwrap_or_else(|_| {
            Err(StageError::Fatal {
                exit: Exit::Software,
                message: "the pipeline thread panicked".into(),
            })
        });
    let closed = persister.map_or(Ok(()), Persister::close);
    let exit = looped?;
    piped.map_err(Error::Stage)?;
    closed?;
    Ok(exit)
}

/// Everything the live loop waits on.
struct Inbox {
    done: mpsc::UnboundedReceiver<Done>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
    jobs: mpsc::UnboundedReceiver<HashSet<String>>,
    jobs_tx: mpsc::UnboundedSender<HashSet<String>>,
    jobs_running: bool,
    feedback: Option<mpsc::UnboundedReceiver<Feedback>>,
    persist: Option<mpsc::UnboundedReceiver<persist::Event>>,
}

/// What woke the live loop.
enum Wake {
    Done(Done),
    Timer,
    Control(Control),
    Jobs(Option<HashSet<String>>),
    Feedback(Feedback),
    /// The pipeline thread has ended.
    PipelineGone,
    Persist(persist::Event),
    Room(mpsc::OwnedPermit<Msg>),
}

async fn recv_from<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

impl Inbox {
    /// The next event, or a timer after `sleep`; `room` is waited on when there is a backlog.
    async fn next(&mut self, sleep: Duration, room: Option<mpsc::Sender<Msg>>) -> Wake {
        tokio::select! {
            d = self.done.recv() => d.map_or(Wake::Timer, Wake::Done),
            () = tokio::time::sleep(sleep) => Wake::Timer,
            c = recv_from(&mut self.control) => match c {
                Some(c) => Wake::Control(c),
                None => { self.control = None; Wake::Timer }
            },
            b = self.jobs.recv() => { self.jobs_running = false; Wake::Jobs(b) }
            f = recv_from(&mut self.feedback) => match f {
                Some(f) => Wake::Feedback(f),
                None => { self.feedback = None; Wake::PipelineGone }
            },
            e = recv_from(&mut self.persist) => match e {
                Some(e) => Wake::Persist(e),
                None => { self.persist = None; Wake::Timer }
            },
            p = async { room?.reserve_owned().await.ok() }, if room.is_some() => {
                p.map_or(Wake::Timer, Wake::Room)
            }
        }
    }
}

/// When the loop's periodic work is next due (monotonic ms).
struct Timers {
    stats: u64,
    activity: u64,
    tick: u64,
}

#[allow(clippy::too_many_arguments)]
async fn live(
    cluster: Cluster,
    opts: LiveOpts,
    deps: Deps,
    feed: &mut Feed,
    counters: Arc<pipeline::Counters>,
    state: Option<&persist::Counters>,
    feedback: mpsc::UnboundedReceiver<Feedback>,
    persist_events: mpsc::UnboundedReceiver<persist::Event>,
    metrics: Option<crate::endpoint::Feed>,
) -> Result<Exit, Error> {
    raise_fd_limit();
    let (done_tx, done) = mpsc::unbounded_channel::<Done>();
    let (jobs_tx, jobs) = mpsc::unbounded_channel();
    let mut inbox = Inbox {
        done,
        control: Some(deps.control),
        jobs,
        jobs_tx,
        jobs_running: false,
        feedback: Some(feedback),
        persist: Some(persist_events),
    };
    let mut w = Live::new(cluster, opts, deps.clock, deps.transport, done_tx, feed);
    w.counters = counters;
    w.state = state;
    w.metrics = metrics;
    w.add_nodes()?;
    let start = w.clock.mono_ms();
    let mut timers = Timers {
        stats: start + ms(w.opts.stats_every),
        activity: start,
        tick: start + ms(w.opts.tick).max(1),
    };
    let mut forced = false;
    loop {
        let now = w.clock.mono_ms();
        if w.opts.cycles.is_some_and(|n| w.sched.cycle_at(now) >= n) {
            w.stopping = true;
        }
        if !w.stopping {
            w.dispatch(now);
        }
        w.cycles_finished();
        if w.stopping && w.sched.in_flight() == 0 {
            break;
        }
        let wake = w.periodic(&mut timers, &mut inbox, now);
        let sleep = Duration::from_millis(wake.saturating_sub(now).max(1));
        let room = w.feed.waiting_sender();
        match inbox.next(sleep, room).await {
            Wake::Done(d) => {
                w.on_done(d);
                while let Ok(d) = inbox.done.try_recv() {
                    w.on_done(d);
                }
            }
            Wake::Timer => {}
            Wake::Control(Control::Reload) => w.reload(),
            Wake::Control(Control::Stop) if w.signalled => {
                forced = true;
                break;
            }
            Wake::Control(Control::Stop) => {
                w.stopping = true;
                w.signalled = true;
            }
            Wake::PipelineGone => w.stopping = true,
            Wake::Jobs(b) => {
                if let Some(b) = b.filter(|b| !b.contains("\0failed")) {
                    apply_busy(&mut w, b);
                }
            }
            Wake::Feedback(f) => {
                w.on_feedback(f);
                while let Some(f) = inbox.feedback.as_mut().and_then(|r| r.try_recv().ok()) {
                    w.on_feedback(f);
                }
            }
            Wake::Persist(e) => w.on_persist(e),
            Wake::Room(p) => w.feed.send_reserved(p),
        }
    }
    w.finish(forced).await;
    Ok(Exit::Ok)
}

fn spawn_jobs_cmd(cmd: Vec<String>, budget: Duration, tx: mpsc::UnboundedSender<HashSet<String>>) {
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

impl<'a> Live<'a> {
    fn new(
        cluster: Cluster,
        opts: LiveOpts,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
        done_tx: mpsc::UnboundedSender<Done>,
        feed: &'a mut Feed,
    ) -> Self {
        let sched = Scheduler::new(sched_conf(&cluster));
        let (timing, _) = watch::channel(timing_of(&cluster));
        Live {
            cluster,
            opts,
            clock,
            transport,
            sched,
            nodes: Vec::new(),
            by_name: HashMap::new(),
            done_tx,
            control_dir: None,
            local_probe: find_local_probe(),
            deploy: None,
            timing,
            closing: Vec::new(),
            stats: StatsAcc::default(),
            totals: Totals::default(),
            seen: Seen::default(),
            metrics: None,
            busy: HashSet::new(),
            file_active: false,
            stopping: false,
            signalled: false,
            feed,
            counters: Arc::default(),
            state: None,
            dir_error: None,
            stage_error: None,
        }
    }

    /// Stats, activity checks and ticks that are due; returns when the loop must wake next.
    fn periodic(&mut self, t: &mut Timers, inbox: &mut Inbox, now: u64) -> u64 {
        let wall = self.clock.wall();
        let stats_on = !self.opts.stats_every.is_zero();
        if stats_on && now >= t.stats {
            t.stats = now + ms(self.opts.stats_every);
            self.send_stats(now, wall);
        }
        if now >= t.activity {
            t.activity = now + ms(self.cluster.intervals.base);
            check_activity(self);
            if let (Some(cmd), false) = (self.cluster.activity.jobs_cmd.clone(), inbox.jobs_running)
            {
                inbox.jobs_running = true;
                spawn_jobs_cmd(cmd, self.cluster.intervals.base, inbox.jobs_tx.clone());
            }
        }
        if now >= t.tick {
            t.tick = now + ms(self.opts.tick).max(1);
            let footer = self.footer();
            self.feed.send(Msg::Footer(footer));
            self.feed.send(Msg::Line {
                key: Some(Key::Tick),
                line: tick_line(wall),
            });
            self.publish();
        }
        let mut wake = t.tick.min(t.activity);
        if !self.stopping {
            wake = wake.min(self.sched.next_wake(now));
        }
        if stats_on {
            wake = wake.min(t.stats);
        }
        wake
    }

    /// The deploy binary for an SSH node, opened once (the first time one is added, at
    /// start-up or by a reload); `None` with --no-deploy.
    fn deploy_for(&mut self, n: &NodeConf) -> Result<Option<Arc<LocalProbe>>, Error> {
        if !self.opts.deploy || *self.cluster.transport_of(n) != TransportConf::Ssh {
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

    /// The control-socket directory, made when the first SSH node needs one.
    fn control_path(&mut self, n: &NodeConf) -> Result<PathBuf, Error> {
        if *self.cluster.transport_of(n) != TransportConf::Ssh {
            return Ok(PathBuf::new());
        }
        if self.control_dir.is_none() {
            self.control_dir = Some(crate::link::control_dir().map_err(Error::Io)?);
        }
        Ok(self
            .control_dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default())
    }

    fn add_nodes(&mut self) -> Result<(), Error> {
        let wanted: Vec<NodeConf> = selected(&self.cluster, &self.opts.tags).cloned().collect();
        if wanted.is_empty() {
            return Err(Error::Usage("no node matches --tag".into()));
        }
        // Every spec first, so a reload that cannot be applied changes nothing.
        let mut specs = Vec::with_capacity(wanted.len());
        for n in &wanted {
            let deploy = self.deploy_for(n)?;
            let control = self.control_path(n)?;
            let spec = spec_for(
                &self.cluster,
                n,
                self.local_probe.as_deref(),
                deploy.as_ref(),
                &control,
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
        }
        for (name, spec, key) in specs {
            if let Some(&i) = self.by_name.get(&name) {
                if self.nodes[i].spec == key {
                    continue;
                }
                // Changed: the old task finishes its poll (if any) and closes.
                self.retire(i);
            }
            let sched = self.sched.add(&name);
            let link = self.transport.open(spec, *self.timing.borrow());
            let (tx, handle) =
                start_worker(sched, link, self.timing.subscribe(), self.done_tx.clone());
            let rt = NodeRt {
                name: name.clone(),
                spec: key,
                tx: Some(tx),
                handle: Some(handle),
                sched,
                replies: 0,
                failures: 0,
                removed: false,
                health: None,
                unreachable: false,
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
        let names: Vec<String> = wanted.into_iter().map(|n| n.name).collect();
        if let Some(m) = &self.metrics {
            m.nodes(names.clone());
        }
        self.feed.send(Msg::Nodes(names));
        Ok(())
    }

    /// Stops polling a node; its task finishes the poll in flight (if any) and closes.
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
        let c = match loaded {
            Err(e) => {
                tracing::error!("SIGHUP: keeping the running configuration: {e}");
                return;
            }
            Ok(c) => c,
        };
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
            self.timing.send_replace(timing_of(&self.cluster));
            tracing::info!("SIGHUP: reloaded {}", path.display());
        }
    }

    fn dispatch(&mut self, now: u64) {
        for s in self.sched.due(now) {
            // Scheduler indices and node indices are allotted together.
            let sent = self
                .nodes
                .get(s)
                .and_then(|rt| rt.tx.as_ref())
                .is_some_and(|tx| tx.try_send(()).is_ok());
            if !sent {
                self.sched.done(s, Outcome::default(), now);
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        let now = self.clock.mono_ms();
        let wall = self.clock.wall();
        let Some(rt) = self.nodes.get_mut(d.idx) else {
            return;
        };
        rt.replies += 1;
        let (name, line_no) = (rt.name.clone(), rt.replies);
        let util = self.cluster.activity.gpu_utilization_pct;
        let result = d.result.and_then(|l| {
            accept_reply(&name, &l, util).map_err(|cause| {
                ugro_types::io::report_bad_line("ugro-watch", line_no, &format!("{name}: {cause}"));
                PollError::Probe(cause)
            })
        });
        self.stats.probes += 1;
        self.totals.polls += 1;
        let (line, busy, err) = match result {
            Ok((l, busy)) => (l, busy, None),
            Err(e) => (unreachable_line(&name, wall, &e), false, Some(e)),
        };
        if let Some(e) = &err {
            self.count_failure(&name, e);
        }
        let Some(rt) = self.nodes.get_mut(d.idx) else {
            return;
        };
        rt.unreachable = err.is_some();
        rt.failures += u64::from(err.is_some());
        if let Some(m) = &self.metrics {
            let p = ugro_metrics::PollStats {
                last: Some(wall),
                duration: Some(d.elapsed),
                failures: rt.failures,
            };
            m.poll(&name, p);
        }
        let outcome = Outcome {
            active: busy || self.file_active || self.busy.contains(&name),
            // The scorer's verdict on the node's latest sample; until there is one, the node
            // counts as not known to be healthy. Its verdict on this sample arrives from the
            // pipeline a moment later and corrects the interval if it differs.
            degraded: rt.health.is_none_or(|h| h != HealthState::Healthy),
            timed_out: matches!(err, Some(PollError::Timeout(_))),
            failed: err.is_some(),
        };
        let (sched_idx, removed) = (rt.sched, rt.removed);
        // A terminal's Ctrl-C also reaches the ssh control masters (same process group), so
        // SSH failures of polls in flight at shutdown say nothing about the node.
        let shutdown_noise = self.signalled && matches!(err, Some(PollError::Ssh(_)));
        self.sched.done(sched_idx, outcome, now);
        if !removed && !shutdown_noise {
            self.feed.send(Msg::Line {
                key: Some(Key::Sample(name)),
                line,
            });
        }
    }

    fn count_failure(&mut self, name: &str, e: &PollError) {
        self.stats.failures += 1;
        match e {
            PollError::Ssh(_) => (self.stats.ssh += 1, self.totals.ssh += 1),
            PollError::Timeout(_) => (self.stats.timeouts += 1, self.totals.timeout += 1),
            PollError::Probe(_) => (self.stats.probe += 1, self.totals.probe += 1),
        };
        tracing::info!(node = %name, "unreachable ({}): {}", e.cause(), e.message());
    }

    fn on_feedback(&mut self, f: Feedback) {
        match f {
            Feedback::Health { node, state } => {
                let Some(&i) = self.by_name.get(&node) else {
                    return;
                };
                self.nodes[i].health = Some(state);
                self.sched
                    .set_degraded(self.nodes[i].sched, state != HealthState::Healthy);
            }
            Feedback::Hold { node, until } => self.hold(&node, until),
            Feedback::StageState(r) => {
                self.stage_error = r.err();
                self.state_changed();
            }
            Feedback::Closed => self.stopping = true,
        }
    }

    fn on_persist(&mut self, e: persist::Event) {
        self.dir_error = match e {
            persist::Event::Unwritable(m) => Some(m),
            persist::Event::Writable => None,
        };
        self.state_changed();
    }

    /// The state became unwritable (an `error` record, and a `stats` record saying so, which
    /// fires WatcherStateUnwritable) or writable again (a `stats` record, which resolves it).
    fn state_changed(&mut self) {
        let now = self.clock.mono_ms();
        let wall = self.clock.wall();
        if let Some(cause) = self.state_error() {
            let rec = ErrorRecord {
                v: ugro_types::SCHEMA_VERSION,
                kind: Kind::Error,
                ts: wall,
                node: "*".into(),
                tool: "ugro-watch".into(),
                line: None,
                cause: format!("state not written, monitoring goes on: {cause}"),
            };
            if let Ok(line) = serde_json::to_string(&rec) {
                self.feed.send(Msg::Line { key: None, line });
            }
        }
        self.send_stats(now, wall);
    }

    fn state_error(&self) -> Option<String> {
        self.dir_error.clone().or_else(|| self.stage_error.clone())
    }

    fn hold(&mut self, node: &str, hold: Option<Timestamp>) {
        let Some(&i) = self.by_name.get(node) else {
            return;
        };
        let now = self.clock.mono_ms();
        let wall = self.clock.wall();
        let until = hold.map(|t| {
            if t.0 == i64::MAX {
                // Forced open without a trial time: look again at the longest interval.
                now + ms(self.cluster.intervals.max)
            } else {
                now + ms(t.since(wall))
            }
        });
        self.sched.hold(self.nodes[i].sched, until);
    }

    fn send_stats(&mut self, now: u64, wall: Timestamp) {
        let fields = self.stats_fields(now);
        let rec = ugro_types::Stats {
            v: ugro_types::SCHEMA_VERSION,
            kind: Kind::Stats,
            ts: wall,
            node: "*".into(),
            tool: "ugro-watch".into(),
            fields,
        };
        if let Ok(line) = serde_json::to_string(&rec) {
            self.feed.send(Msg::Line {
                key: Some(Key::Stats),
                line,
            });
        }
    }

    fn stats_fields(&mut self, now: u64) -> serde_json::Map<String, Value> {
        let s = std::mem::take(&mut self.stats);
        self.stats.since = now;
        let secs = (now.saturating_sub(s.since) as f64 / 1000.0).max(0.001);
        let (lo, hi) = self.sched.interval_range_ms();
        let live = self.nodes.iter().filter(|n| !n.removed);
        let nodes = live.clone().count();
        let unreachable = live.filter(|n| n.unreachable).count();
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
        put("suspects_in_flight", self.sched.suspects_in_flight().into());
        put("nodes", nodes.into());
        put("nodes_unreachable", unreachable.into());
        self.queue_fields(&mut put);
        if let Some(r) = rss_kb() {
            put("rss_kb", r.into());
        }
        f
    }

    /// The queues: pipeline, persistence, delivery spool; per-period counts are deltas.
    fn queue_fields(&mut self, put: &mut impl FnMut(&str, Value)) {
        let delta = |total: u64, seen: &mut u64| {
            let d = total.saturating_sub(*seen);
            *seen = total;
            d
        };
        put("pipeline_queue", self.feed.queued().into());
        put("pipeline_backlog", self.feed.backlog().into());
        put("pipeline_queue_max", self.feed.take_max_depth().into());
        put("pipeline_capacity", self.feed.capacity().into());
        put("pipeline_superseded", self.feed.superseded.into());
        self.delivery_fields(put);
        let stage = self.counters.stage_state_failures.load(Ordering::Relaxed);
        put(
            "stage_state_failures",
            delta(stage, &mut self.seen.stage_failures).into(),
        );
        if let Some(c) = self.state {
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            put("state_queue", get(&c.queued).into());
            put(
                "state_writes",
                delta(get(&c.writes), &mut self.seen.state_writes).into(),
            );
            put(
                "state_write_failures",
                delta(get(&c.failures), &mut self.seen.state_failures).into(),
            );
            put(
                "state_superseded",
                delta(get(&c.superseded), &mut self.seen.state_superseded).into(),
            );
        }
        let error = self.state_error();
        put("state_unwritable", error.is_some().into());
        if let Some(e) = error {
            put("state_error", e.into());
        }
    }

    /// The alert stage's delivery workers: totals, and each receiver's figures.
    fn delivery_fields(&self, put: &mut impl FnMut(&str, Value)) {
        let Ok(d) = self.counters.delivery.lock() else {
            return;
        };
        let sum = |f: fn(&ugro_alert::deliver::ReceiverStats) -> u64| d.iter().map(f).sum::<u64>();
        put("delivery_queue", sum(|r| r.queue_depth as u64).into());
        put("spooled", sum(|r| r.spooled as u64).into());
        put("delivery_failed", sum(|r| r.failed).into());
        put("delivery_dropped", sum(|r| r.dropped).into());
        if !d.is_empty() {
            put("delivery", serde_json::to_value(&*d).unwrap_or_default());
        }
    }

    /// Cycles whose polls have all finished: into the period's stats and the totals.
    fn cycles_finished(&mut self) {
        for sum in self.sched.take_finished() {
            self.stats.add(&sum);
            let t = &mut self.totals;
            t.cycles += 1;
            t.last_cycle_at = Some(std::time::Instant::now());
            if sum.polls > 0 {
                t.last_cycle_ms = Some(sum.duration_ms);
            }
        }
    }

    /// Once a tick, for the endpoint: the watcher's figures, the worst lateness of the polls
    /// started since the last tick, and the heartbeat `/healthz` reads.
    fn publish(&mut self) {
        let late = self.sched.take_max_lateness_ms();
        let Some(m) = &self.metrics else { return };
        m.late(late);
        m.watcher(self.watcher_stats());
        let (t, state_error) = (&self.totals, self.state_error());
        let budget = self.cluster.intervals.base + self.cluster.timeout;
        m.health(|h| {
            h.alive = std::time::Instant::now();
            h.cycles = t.cycles;
            h.last_cycle = t.last_cycle_at.unwrap_or(h.last_cycle);
            h.state_error = state_error;
            h.tick = self.opts.tick;
            h.cycle_budget = budget;
        });
    }

    fn watcher_stats(&self) -> ugro_metrics::WatcherStats {
        let t = &self.totals;
        let count = |n: usize| Some(n as u64);
        ugro_metrics::WatcherStats {
            nodes: count(self.nodes.iter().filter(|n| !n.removed).count()),
            cycle: t.last_cycle_ms.map(Duration::from_millis),
            polls: Some(t.polls),
            failures: [("ssh", t.ssh), ("timeout", t.timeout), ("probe", t.probe)]
                .map(|(c, n)| (c.to_owned(), n))
                .into(),
            in_flight: count(self.sched.in_flight()),
            concurrency_limit: count(self.sched.limit()),
            superseded: Some(self.feed.superseded),
            state_unwritable: Some(self.state_error().is_some()),
            queues: self.queue_stats(),
            delivery: self.delivery_stats(),
            ..ugro_metrics::WatcherStats::default()
        }
    }

    /// The queues' depths now: pipeline (queue and backlog), state directory, delivery.
    fn queue_stats(&self) -> Vec<ugro_metrics::QueueStats> {
        let q = |name: &str, depth: u64, capacity: Option<u64>| ugro_metrics::QueueStats {
            name: name.to_owned(),
            depth,
            capacity,
        };
        let mut out = vec![q(
            "pipeline",
            self.feed.depth() as u64,
            Some(self.feed.capacity() as u64),
        )];
        if let Some(c) = self.state {
            out.push(q("state", c.queued.load(Ordering::Relaxed), None));
        }
        if let Ok(d) = self.counters.delivery.lock()
            && !d.is_empty()
        {
            let depth = d.iter().map(|r| r.queue_depth as u64).sum();
            out.push(q("delivery", depth, None));
        }
        out
    }

    /// The alert stage's delivery workers, as the pipeline last reported them.
    fn delivery_stats(&self) -> Vec<ugro_metrics::DeliveryStats> {
        let Ok(d) = self.counters.delivery.lock() else {
            return Vec::new();
        };
        d.iter()
            .map(|r| ugro_metrics::DeliveryStats {
                receiver: r.receiver.clone(),
                url: r.instance.clone(),
                queue_depth: r.queue_depth as u64,
                spooled: r.spooled as u64,
                delivered: r.delivered,
                failed: r.failed,
                dropped: r.dropped,
                superseded: r.superseded,
                retries: r.retries,
            })
            .collect()
    }

    fn footer(&self) -> String {
        let (lo, hi) = self.sched.interval_range_ms();
        format!(
            "{} nodes · cycle {} · last cycle {} ms · interval {}–{} s · in flight {}/{} · queue {}",
            self.nodes.iter().filter(|n| !n.removed).count(),
            self.sched.cycle(),
            self.stats.last_ms,
            lo / 1000,
            hi / 1000,
            self.sched.in_flight(),
            self.sched.limit(),
            self.feed.depth(),
        )
    }

    /// The end of a run: the last stats record, then the links are closed (EOF to each
    /// resident probe; the tasks close their sessions).
    async fn finish(&mut self, forced: bool) {
        let now = self.clock.mono_ms();
        let wall = self.clock.wall();
        self.cycles_finished();
        if !self.opts.stats_every.is_zero() {
            self.send_stats(now, wall);
        }
        self.publish();
        let mut handles: Vec<_> = self
            .nodes
            .iter_mut()
            .filter_map(|n| {
                n.tx = None;
                n.handle.take()
            })
            .collect();
        handles.append(&mut self.closing);
        let budget = if forced { 1 } else { 5 };
        let _ = tokio::time::timeout(Duration::from_secs(budget), async {
            for h in handles {
                let _ = h.await;
            }
        })
        .await;
    }
}

fn check_activity(w: &mut Live<'_>) {
    let Some(f) = w.cluster.activity.file.clone() else {
        return;
    };
    let active = crate::activity::file_active(
        &f,
        w.cluster.activity.file_fresh,
        w.clock.wall().to_system_time(),
    );
    if active && !w.file_active {
        tracing::info!("activity file {} is fresh: jobs running", f.display());
        for rt in w.nodes.iter().filter(|n| !n.removed) {
            w.sched.activate(rt.sched);
        }
    }
    w.file_active = active;
}

fn apply_busy(w: &mut Live<'_>, busy: HashSet<String>) {
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

    #[test]
    fn a_tick_record_is_a_header_with_the_tool() {
        let l = tick_line(Timestamp(1_795_000_000_000));
        let h = ugro_types::parse_header(&l).unwrap();
        assert_eq!((h.kind, h.node.as_ref()), (Kind::Tick, "*"));
        assert_eq!(ugro_types::stage::peek_kind(&l), Some(Kind::Tick));
        assert!(l.contains(r#""tool":"ugro-watch""#), "{l}");
    }
}
