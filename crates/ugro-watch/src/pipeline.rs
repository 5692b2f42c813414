//! The pipeline, the second job: score → breaker → alert (or, without `--pipeline`, the scorer
//! alone, for the table, the state directory and the scheduler) on a thread of its own, fed by
//! a bounded queue. It writes stdout, keeps the node views, hands the state directory's files to
//! the persistence job and tells the live loop each node's score state and breaker holds.
//!
//! The stages are the CLIs' own, built from the same configuration files, and they run under
//! the shared tick rule (`ugro_types::stage`), so `--pipeline` writes byte for byte what
//! `ugro-watch | ugro-score | ugro-breaker | ugro-alert` writes for the same raw stream.
//!
//! When the queue is full (the pipeline is behind: a blocked stdout, a slow disk under the
//! breaker's or alert's state file), the live loop does not wait: records wait in a backlog on
//! its side, where a node's newer sample replaces its older waiting one (and a newer tick,
//! stats record or node list the older one); each replaced sample is counted as
//! `pipeline_superseded` in `stats`. Error records are never replaced. So memory stays bounded
//! (one waiting sample per node) and polling stays on schedule, at the cost of samples the
//! pipeline never saw, which are counted.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use ugro_types::io::{RecordWriter, WriteError};
use ugro_types::stage::{Chain, Emit, Stage, StageError, peek_kind};
use ugro_types::view::{AlertView, BreakerView, RecordView, SampleView, TransitionView};
use ugro_types::{Exit, HealthState, Kind, Score, Timestamp, ToolError};

/// A scored line: its header and score.
type Scored<'a> = RecordView<'a, Score, serde::de::IgnoredAny>;
/// A line the breaker annotated: its header and annotation.
type Annotated<'a> = RecordView<'a, serde::de::IgnoredAny, BreakerView>;

use crate::persist;
use crate::view::{Views, render_table};
use crate::{Cli, Cluster, Error};

/// Where the breaker and alert keep their state: next to the watcher's other state when there
/// is a state directory, else in the user's state directory under names of their own, so a
/// watcher never shares state files with a separately running shell pipeline.
fn state_file(
    flag: &Option<PathBuf>,
    dir: Option<&Path>,
    name: &str,
    fallback: &str,
) -> Result<PathBuf, ugro_support::state::StateError> {
    if let Some(f) = flag {
        return Ok(f.clone());
    }
    Ok(match dir {
        Some(d) => d.join(name),
        None => ugro_support::state::default_state_dir()?.join(fallback),
    })
}

/// Which stage a tapped record came out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// ugro-score: samples with `score`.
    Score,
    /// ugro-breaker: annotated samples, transitions, fleet records.
    Breaker,
    /// ugro-alert: alerts.
    Alert,
}

/// Copies of the records each stage emitted, for the views, which need the score and breaker
/// state that the last stage (alert) does not pass on.
pub type Tapped = Arc<Mutex<Vec<(Tap, Vec<u8>)>>>;

/// Figures the pipeline thread keeps for the live loop's `stats` records.
#[derive(Debug, Default)]
pub struct Counters {
    /// Raw records handled.
    pub records: AtomicU64,
    /// The alert stage's delivery figures per receiver (queue depth, spooled, delivered,
    /// failed, dropped, superseded, retries, last error), refreshed once per tick.
    pub delivery: Mutex<Vec<ugro_alert::deliver::ReceiverStats>>,
    /// Failed writes of the breaker's or alert's state file.
    pub stage_state_failures: AtomicU64,
}

/// Reads a stage's own figures into the [`Counters`] after each call.
type Probe<S> = Box<dyn Fn(&S) + Send>;

/// A stage whose output is also copied to a tap; otherwise it is the stage itself, so the
/// chain behaves exactly as the shell pipeline does.
struct Tee<S> {
    inner: S,
    tap: Tap,
    out: Tapped,
    /// Reads the stage's own figures after each tick and at the end.
    probe: Option<Probe<S>>,
}

impl<S: Stage> Tee<S> {
    fn call<R>(
        &mut self,
        emit: &mut Emit<'_>,
        probe: bool,
        f: impl FnOnce(&mut S, &mut Emit<'_>) -> R,
    ) -> R {
        let out = &self.out;
        let tap = self.tap;
        let mut e = |rec: &[u8]| {
            if let Ok(mut v) = out.lock() {
                v.push((tap, rec.to_vec()));
            }
            emit(rec)
        };
        let r = f(&mut self.inner, &mut e);
        if let (true, Some(p)) = (probe, &self.probe) {
            p(&self.inner);
        }
        r
    }
}

impl<S: Stage> Stage for Tee<S> {
    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.call(emit, false, |s, e| s.process(line, e))
    }
    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.call(emit, true, |s, e| s.tick(now, e))
    }
    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.call(emit, true, |s, e| s.finish(e))
    }
    fn persist(&mut self) -> Result<(), StageError> {
        self.inner.persist()
    }
}

/// What runs on the pipeline thread.
pub enum Stages {
    /// `--pipeline`: the three stages; stdout gets what alert writes.
    Chain(Chain, Tapped),
    /// Raw output; the scorer scores for the views and the scheduler only.
    Scorer(Box<ugro_score::Scorer>),
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stages::Chain(c, _) => c.fmt(f),
            Stages::Scorer(_) => f.write_str("Scorer"),
        }
    }
}

/// The scorer alone, for raw mode. With a state directory its history (XID windows, the GPU
/// count, rates) survives a restart there, as in `--pipeline`; without one it lives in memory.
pub fn scorer(cli: &Cli, cluster: &Cluster, state_dir: Option<&Path>) -> Result<Stages, Error> {
    let path = cli
        .score_config
        .clone()
        .or_else(|| cluster.pipeline.score.clone());
    let cfg = ugro_score::ScoreConfig::load(path.as_deref()).map_err(setup("ugro-score"))?;
    let scorer = match state_dir {
        Some(dir) => {
            ugro_score::Scorer::with_state(cfg, ugro_score::Format::Json, &dir.join("score.json"))
                .map_err(setup("ugro-score"))?
        }
        None => ugro_score::Scorer::new(cfg),
    };
    Ok(Stages::Scorer(Box::new(scorer)))
}

/// Builds the chain and its tap; the alert stage's delivery figures go to `counters`.
pub fn build(
    cli: &Cli,
    cluster: &Cluster,
    state_dir: Option<&Path>,
    counters: &Arc<Counters>,
) -> Result<Stages, Error> {
    let pick =
        |flag: &Option<PathBuf>, file: &Option<PathBuf>| flag.clone().or_else(|| file.clone());
    let score_path = pick(&cli.score_config, &cluster.pipeline.score);
    let breaker_path = pick(&cli.breaker_config, &cluster.pipeline.breaker);
    let alert_path = pick(&cli.alert_config, &cluster.pipeline.alert);
    let score_cfg =
        ugro_score::ScoreConfig::load(score_path.as_deref()).map_err(setup("ugro-score"))?;
    let breaker_cfg = ugro_breaker::BreakerConfig::load(breaker_path.as_deref())
        .map_err(setup("ugro-breaker"))?;
    let alert_cfg =
        ugro_alert::AlertConfig::load(alert_path.as_deref()).map_err(setup("ugro-alert"))?;
    let breaker_state = state_file(
        &cli.breaker_state,
        state_dir,
        "breaker.json",
        "watch-breaker.json",
    )?;
    let alert_state = state_file(
        &cli.alert_state,
        state_dir,
        "alert.json",
        "watch-alert.json",
    )?;
    // The scorer's history (rates, trends, XID windows) survives a watcher restart.
    let score_state = state_file(
        &cli.score_state,
        state_dir,
        "score.json",
        "watch-score.json",
    )?;
    let scorer = ugro_score::Scorer::with_state(score_cfg, ugro_score::Format::Json, &score_state)
        .map_err(setup("ugro-score"))?;
    let breaker = ugro_breaker::BreakerStage::open(breaker_cfg, &breaker_state)
        .map_err(setup("ugro-breaker"))?;
    let alert =
        ugro_alert::AlertStage::open(alert_cfg, &alert_state).map_err(setup("ugro-alert"))?;
    let tapped: Tapped = Arc::new(Mutex::new(Vec::new()));
    let c = counters.clone();
    let delivery = move |a: &ugro_alert::AlertStage| {
        if let Ok(mut d) = c.delivery.lock() {
            *d = a.delivery_stats();
        }
    };
    let stages: Vec<(&'static str, Box<dyn Stage + Send>)> = vec![
        (
            "ugro-score",
            Box::new(tee(scorer, Tap::Score, &tapped, None)),
        ),
        (
            "ugro-breaker",
            Box::new(tee(breaker, Tap::Breaker, &tapped, None)),
        ),
        (
            "ugro-alert",
            Box::new(tee(alert, Tap::Alert, &tapped, Some(Box::new(delivery)))),
        ),
    ];
    Ok(Stages::Chain(Chain::new(stages), tapped))
}

fn tee<S>(inner: S, tap: Tap, out: &Tapped, probe: Option<Probe<S>>) -> Tee<S> {
    Tee {
        inner,
        tap,
        out: out.clone(),
        probe,
    }
}

fn setup<E: ToolError>(stage: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::StageSetup {
        stage,
        exit: e.exit(),
        message: e.to_string(),
    }
}

/// What the pipeline tells the live loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Feedback {
    /// The scorer's state of a node's latest sample.
    Health {
        /// Node.
        node: String,
        /// State.
        state: HealthState,
    },
    /// A node's breaker opened (held until the trial; `Timestamp(i64::MAX)` when forced open
    /// without one) or closed again (`None`).
    Hold {
        /// Node.
        node: String,
        /// Until when.
        until: Option<Timestamp>,
    },
    /// Writing the breaker's or alert's state file failed (why), or works again (`Ok`).
    StageState(Result<(), String>),
    /// stdout's reader went away.
    Closed,
}

/// A message to the pipeline thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// One record of the raw stream; `key` says which waiting record it may replace.
    Line {
        /// What it supersedes in the backlog.
        key: Option<Key>,
        /// The record.
        line: String,
    },
    /// The table's rows, in cluster-file order.
    Nodes(Vec<String>),
    /// The table's footer.
    Footer(String),
}

/// What a waiting message supersedes: an older one with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A node's sample.
    Sample(String),
    /// A tick.
    Tick,
    /// A stats record.
    Stats,
    /// The node list.
    Nodes,
    /// The footer.
    Footer,
}

impl Msg {
    fn key(&self) -> Option<&Key> {
        match self {
            Msg::Line { key, .. } => key.as_ref(),
            Msg::Nodes(_) => Some(&Key::Nodes),
            Msg::Footer(_) => Some(&Key::Footer),
        }
    }
}

/// The live loop's end of the pipeline queue; never waits.
#[derive(Debug)]
pub struct Feed {
    tx: Option<mpsc::Sender<Msg>>,
    capacity: usize,
    backlog: VecDeque<Msg>,
    /// Samples replaced in the backlog by newer ones (never seen by the pipeline), in total.
    pub superseded: u64,
    /// Deepest queue plus backlog since the last [`Feed::take_max_depth`].
    max_depth: usize,
}

impl Feed {
    /// A queue of `capacity` messages and its receiving end for the pipeline thread.
    pub fn new(capacity: usize) -> (Feed, mpsc::Receiver<Msg>) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let feed = Feed {
            tx: Some(tx),
            capacity,
            backlog: VecDeque::new(),
            superseded: 0,
            max_depth: 0,
        };
        (feed, rx)
    }

    /// Hands `msg` on, or keeps it in the backlog (replacing what it supersedes) when the
    /// queue is full. Dropped only when the pipeline thread has ended.
    pub fn send(&mut self, msg: Msg) {
        self.pump();
        let msg = match (&self.tx, self.backlog.is_empty()) {
            (None, _) => return,
            (Some(tx), true) => match tx.try_send(msg) {
                Ok(()) => {
                    self.note_depth();
                    return;
                }
                Err(mpsc::error::TrySendError::Full(m)) => m,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.tx = None;
                    return;
                }
            },
            (Some(_), false) => msg,
        };
        if let Some(k) = msg.key()
            && let Some(i) = self.backlog.iter().position(|m| m.key() == Some(k))
        {
            if matches!(k, Key::Sample(_)) {
                self.superseded += 1;
            }
            self.backlog.remove(i);
        }
        self.backlog.push_back(msg);
        self.note_depth();
    }

    /// Moves what the queue has room for from the backlog into it.
    pub fn pump(&mut self) {
        let Some(tx) = &self.tx else {
            self.backlog.clear();
            return;
        };
        while let Some(m) = self.backlog.pop_front() {
            match tx.try_send(m) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.backlog.push_front(m);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.tx = None;
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// A sender to wait on for room, when there is a backlog (see [`Feed::send_reserved`]).
    pub fn waiting_sender(&self) -> Option<mpsc::Sender<Msg>> {
        if self.backlog.is_empty() {
            return None;
        }
        self.tx.clone()
    }

    /// Uses a slot reserved with [`Feed::waiting_sender`] for the oldest waiting message.
    pub fn send_reserved(&mut self, permit: mpsc::OwnedPermit<Msg>) {
        if let Some(m) = self.backlog.pop_front() {
            permit.send(m);
        }
        self.pump();
    }

    fn note_depth(&mut self) {
        self.max_depth = self.max_depth.max(self.depth());
    }

    /// Messages in the queue.
    pub fn queued(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, |tx| self.capacity - tx.capacity())
    }

    /// Messages waiting in the backlog.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Queue plus backlog.
    pub fn depth(&self) -> usize {
        self.queued() + self.backlog()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The deepest queue plus backlog since the last call.
    pub fn take_max_depth(&mut self) -> usize {
        let d = std::mem::take(&mut self.max_depth);
        d.max(self.depth())
    }

    /// Hands everything waiting on, waiting for room (at the end of a run, when polling has
    /// stopped), then closes the queue so that the pipeline thread finishes.
    pub async fn close(&mut self) {
        if let Some(tx) = self.tx.take() {
            while let Some(m) = self.backlog.pop_front() {
                if tx.send(m).await.is_err() {
                    break;
                }
            }
        }
        self.backlog.clear();
    }
}

/// The pipeline thread's work, also run directly by `--replay` through the shared run loop
/// (`ugro_types::stage::run`): a [`Stage`] whose output goes to its own writer (records, or the
/// table), so the run loop's writer is not used.
pub struct Processor {
    stages: Stages,
    out: RecordWriter<Box<dyn Write + Send>>,
    tee: Option<RecordWriter<Box<dyn Write + Send>>>,
    table: bool,
    color: bool,
    footer: String,
    views: Views,
    state: Option<persist::Queue>,
    last_stats: Option<Vec<u8>>,
    feedback: Option<mpsc::UnboundedSender<Feedback>>,
    /// `--listen`: the endpoint's mailbox.
    metrics: Option<crate::endpoint::Feed>,
    closed: bool,
    stage_unwritable: bool,
    counters: Arc<Counters>,
    /// Number of the line being handled (raw-stream record number in live mode).
    seq: u64,
    /// The newest tick or sample time seen: the state files' `updated` at the end.
    now: Timestamp,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("stages", &self.stages)
            .finish()
    }
}

/// How a [`Processor`] presents its output.
#[derive(Default)]
pub struct Output {
    /// Where records (or the table) go.
    pub out: Option<Box<dyn Write + Send>>,
    /// A copy of the raw stream (`--tee`).
    pub tee: Option<Box<dyn Write + Send>>,
    /// Draw the live table instead of writing records.
    pub table: bool,
    /// Colour the table.
    pub color: bool,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("table", &self.table)
            .finish()
    }
}

impl Processor {
    /// A processor over `stages`.
    pub fn new(
        stages: Stages,
        output: Output,
        views: Views,
        state: Option<persist::Queue>,
        counters: Arc<Counters>,
    ) -> Self {
        Processor {
            stages,
            out: RecordWriter::new(output.out.unwrap_or_else(|| Box::new(std::io::stdout()))),
            tee: output.tee.map(RecordWriter::new),
            table: output.table,
            color: output.color,
            footer: String::new(),
            views,
            state,
            last_stats: None,
            feedback: None,
            metrics: None,
            closed: false,
            stage_unwritable: false,
            counters,
            seq: 0,
            now: Timestamp(i64::MIN),
        }
    }

    /// Where the live loop hears about scores, holds and state-file failures.
    pub fn set_feedback(&mut self, tx: mpsc::UnboundedSender<Feedback>) {
        self.feedback = Some(tx);
    }

    /// Where the fleet endpoint learns about samples, breaker states and alerts.
    pub fn set_metrics(&mut self, feed: crate::endpoint::Feed) {
        self.metrics = Some(feed);
    }

    fn tell(&self, f: Feedback) {
        if let Some(tx) = &self.feedback {
            let _ = tx.send(f);
        }
    }

    fn handle(&mut self, msg: Msg, seq: &mut u64) -> Result<(), StageError> {
        match msg {
            Msg::Line { line, .. } => {
                *seq += 1;
                self.line(*seq);
                let mut sink = |_: &[u8]| Ok(());
                match ugro_types::stage::step(self, &line, &mut sink) {
                    Err(StageError::Reject(cause)) => {
                        ugro_types::io::report_bad_line("ugro-watch", *seq, &cause);
                        Ok(())
                    }
                    r => r,
                }
            }
            Msg::Nodes(names) => {
                self.views.set_nodes(&names);
                Ok(())
            }
            Msg::Footer(f) => {
                if f != self.footer {
                    self.footer = f;
                    self.views.table_dirty = true;
                }
                Ok(())
            }
        }
    }

    fn write(&mut self, rec: &[u8]) -> Result<(), WriteError> {
        if self.table || self.closed {
            return Ok(());
        }
        match self.out.write_raw(rec) {
            Err(WriteError::Closed) => {
                self.closed = true;
                self.tell(Feedback::Closed);
                Ok(())
            }
            r => r,
        }
    }

    fn tee(&mut self, line: &str) {
        if let Some(t) = &mut self.tee
            && let Err(e) = t.write_raw(line.as_bytes())
        {
            tracing::error!("--tee: {e}; no longer copying the raw stream");
            self.tee = None;
        }
    }

    /// Takes in a record a stage emitted.
    fn observe(&mut self, tap: Tap, rec: &[u8]) {
        let Ok(text) = std::str::from_utf8(rec) else {
            return;
        };
        match (tap, peek_kind(text)) {
            (Tap::Score, Some(Kind::Sample)) => {
                if let (Ok(s), Ok(r)) = (SampleView::parse(text), Scored::parse(text)) {
                    self.observe_sample(&s, r.score, text);
                }
            }
            (Tap::Breaker, Some(Kind::Sample)) => {
                if let Ok(r) = Annotated::parse(text)
                    && let Some(a) = &r.breaker
                {
                    self.views.node_mut(&r.node).observe_annotation(a);
                    if let Some(m) = &self.metrics {
                        m.breaker(&r.node, *a);
                    }
                }
            }
            (Tap::Breaker, Some(Kind::Transition)) => self.observe_transition(text),
            (Tap::Alert, Some(Kind::Alert)) => {
                let Ok(a) = AlertView::parse(text) else {
                    return;
                };
                if let Some(m) = &self.metrics {
                    m.alert(&a.fingerprint, ugro_metrics::FiringAlert::from_record(&a));
                }
                if self.views.get(&a.node).is_some() {
                    self.views.node_mut(&a.node).observe_alert(&a);
                }
            }
            _ => {}
        }
    }

    /// A breaker transition: the node's view, and its hold for the scheduler.
    fn observe_transition(&mut self, text: &str) {
        let (Ok(h), Ok(t)) = (ugro_types::parse_header(text), TransitionView::parse(text)) else {
            return;
        };
        self.views.node_mut(&h.node).observe_transition(&t);
        if let (Some(m), Some(b)) = (&self.metrics, ugro_metrics::table::breaker_after(&t)) {
            m.breaker(&h.node, b);
        }
        let open = matches!(
            t.to,
            Some(ugro_types::BreakerState::Open | ugro_types::BreakerState::ForcedOpen)
        );
        let until = open.then(|| t.next_trial_at.unwrap_or(Timestamp(i64::MAX)));
        self.tell(Feedback::Hold {
            node: h.node.into_owned(),
            until,
        });
    }

    /// A sample and its score: the node's view, and its state for the scheduler.
    fn observe_sample(&mut self, s: &SampleView<'_>, score: Option<Score>, text: &str) {
        self.now = self.now.max(s.ts);
        if let Some(m) = &self.metrics {
            // A chain's scored line carries its score; a raw line does not.
            let raw = matches!(self.stages, Stages::Scorer(_));
            m.sample(&s.node, text.to_owned(), score.clone().filter(|_| raw));
        }
        let (history, keep) = (self.views.history, self.views.keep_raw);
        let v = self.views.node_mut(&s.node);
        v.observe_sample(s, score, text, history, keep);
        if let Some(state) = v.health() {
            self.tell(Feedback::Health {
                node: s.node.clone().into_owned(),
                state,
            });
        }
    }

    fn drain_taps(&mut self) {
        let Stages::Chain(_, tapped) = &self.stages else {
            return;
        };
        let taken = match tapped.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return,
        };
        for (tap, rec) in taken {
            self.observe(tap, &rec);
        }
    }

    /// A stage's failure: a state file that cannot be written is reported and monitoring goes
    /// on (the stage keeps its state and writes it again later); anything else stops.
    fn stage_result(&mut self, r: Result<(), StageError>) -> Result<(), StageError> {
        match r {
            Ok(()) => Ok(()),
            Err(StageError::Fatal {
                exit: Exit::IoErr,
                message,
            }) => {
                self.counters
                    .stage_state_failures
                    .fetch_add(1, Ordering::Relaxed);
                if !self.stage_unwritable {
                    self.stage_unwritable = true;
                    tracing::error!("{message}; polling and alerting go on, retrying");
                    self.tell(Feedback::StageState(Err(message)));
                }
                Ok(())
            }
            Err(StageError::Write(WriteError::Closed)) => {
                self.closed = true;
                self.tell(Feedback::Closed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn run_chain(
        &mut self,
        f: impl FnOnce(&mut Chain, &mut Emit<'_>) -> Result<(), StageError>,
    ) -> Result<(), StageError> {
        let Stages::Chain(chain, _) = &mut self.stages else {
            return Ok(());
        };
        let mut produced: Vec<Vec<u8>> = Vec::new();
        let r = f(chain, &mut |rec: &[u8]| {
            produced.push(rec.to_vec());
            Ok(())
        });
        self.drain_taps();
        for rec in &produced {
            self.write(rec)?;
        }
        self.stage_result(r)
    }

    fn housekeeping(&mut self, now: Timestamp) -> Result<(), StageError> {
        if self.stage_unwritable
            && let Stages::Chain(chain, _) = &mut self.stages
            && chain.persist().is_ok()
        {
            self.stage_unwritable = false;
            tracing::info!("breaker and alert state files writable again");
            self.tell(Feedback::StageState(Ok(())));
        }
        if let Some(q) = &self.state {
            for (name, bytes) in self.views.take_dirty(now) {
                q.put(&name, bytes);
            }
            if let Some(s) = self.last_stats.take() {
                q.put("stats.json", s);
            }
        }
        self.draw()
    }

    fn draw(&mut self) -> Result<(), StageError> {
        if !self.table || !self.views.table_dirty || self.closed {
            return Ok(());
        }
        self.views.table_dirty = false;
        let text = render_table(self.views.iter(), &self.footer, self.color);
        match self.out.write_text(&text) {
            Err(WriteError::Closed) => {
                self.closed = true;
                self.tell(Feedback::Closed);
                Ok(())
            }
            r => r.map_err(StageError::from),
        }
    }
}

impl Stage for Processor {
    fn process(&mut self, line: &str, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.counters.records.fetch_add(1, Ordering::Relaxed);
        self.tee(line);
        let kind = peek_kind(line);
        if kind == Some(Kind::Stats) {
            self.last_stats = Some(line.as_bytes().to_vec());
        }
        if let Stages::Chain(..) = self.stages {
            let n = self.seq;
            return self.run_chain(|c, e| c.feed(n, line, e));
        }
        // Raw mode: the line goes out as it came; the scorer scores the view it parses once,
        // for the table, the state directory and the scheduler.
        ugro_types::parse_header(line).map_err(|e| StageError::Reject(e.to_string()))?;
        if kind == Some(Kind::Sample) {
            let view = SampleView::parse(line)
                .map_err(|e| StageError::Reject(format!("invalid sample: {e}")))?;
            let score = match &mut self.stages {
                Stages::Scorer(s) => Some(s.score_view(&view)),
                Stages::Chain(..) => None,
            };
            self.observe_sample(&view, score, line);
        }
        self.write(line.as_bytes()).map_err(StageError::from)
    }

    /// The tick record itself went through the stages (which ran their timers); this is the
    /// watcher's own once-a-tick work: state directory, table, retrying failed state files.
    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.now = self.now.max(now);
        // Raw mode: the scorer's timer (its history snapshot to the state directory).
        if let Stages::Scorer(s) = &mut self.stages {
            s.tick(now, emit)?;
        }
        self.housekeeping(now)
    }

    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.run_chain(|c, e| c.finish(e))?;
        if let Stages::Scorer(s) = &mut self.stages {
            s.finish(emit)?;
        }
        let now = if self.now == Timestamp(i64::MIN) {
            Timestamp::now()
        } else {
            self.now
        };
        self.views.table_dirty = true;
        self.housekeeping(now)?;
        if self.stage_unwritable {
            return Err(StageError::Fatal {
                exit: Exit::IoErr,
                message: "the breaker or alert state file could not be written".into(),
            });
        }
        Ok(())
    }

    fn line(&mut self, n: u64) {
        if let Stages::Chain(c, _) = &mut self.stages {
            c.line(n);
        }
        self.seq = n;
    }

    fn rejected(&self) -> u64 {
        match &self.stages {
            Stages::Chain(c, _) => c.rejected(),
            Stages::Scorer(_) => 0,
        }
    }
}

/// Starts the pipeline thread; it ends when the queue is closed, after finishing the stages.
pub fn spawn(
    mut p: Processor,
    mut rx: mpsc::Receiver<Msg>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), StageError>>> {
    std::thread::Builder::new()
        .name("ugro-watch-pipeline".into())
        .spawn(move || {
            let mut seq = 0;
            while let Some(msg) = rx.blocking_recv() {
                if let Err(e) = p.handle(msg, &mut seq) {
                    // Stop taking records; the live loop sees the queue close and stops.
                    drop(rx);
                    return Err(e);
                }
            }
            let mut sink = |_: &[u8]| Ok(());
            p.finish(&mut sink)
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Passes records on; while `full`, fails as a stage whose state file cannot be written.
    struct Disk(Arc<AtomicBool>);
    impl Stage for Disk {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            emit(line.as_bytes())?;
            self.persist()
        }
        fn persist(&mut self) -> Result<(), StageError> {
            if self.0.load(Ordering::SeqCst) {
                return Err(StageError::Fatal {
                    exit: Exit::IoErr,
                    message: "state file s.json: No space left on device".into(),
                });
            }
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const SAMPLE: &str = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00.000Z","node":"n"}"#;
    const TICK: &str = r#"{"v":1,"kind":"tick","ts":"2026-11-28T00:00:01.000Z","node":"*"}"#;

    #[test]
    fn an_unwritable_stage_state_file_is_reported_once_and_its_recovery_too() {
        let full = Arc::new(AtomicBool::new(true));
        let chain = Chain::new(vec![("disk", Box::new(Disk(full.clone())))]);
        let out = Buf::default();
        let output = Output {
            out: Some(Box::new(out.clone())),
            ..Output::default()
        };
        let mut p = Processor::new(
            Stages::Chain(chain, Tapped::default()),
            output,
            Views::new(0, false),
            None,
            Arc::default(),
        );
        let (tx, mut rx) = mpsc::unbounded_channel();
        p.set_feedback(tx);
        let mut seq = 0;
        for line in [SAMPLE, SAMPLE, TICK] {
            let msg = Msg::Line {
                key: None,
                line: line.into(),
            };
            p.handle(msg, &mut seq).unwrap();
        }
        // Monitoring went on: every record came out though each write failed.
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        match rx.try_recv().unwrap() {
            Feedback::StageState(Err(m)) => assert!(m.contains("No space"), "{m}"),
            f => panic!("{f:?}"),
        }
        assert!(rx.try_recv().is_err(), "reported once");
        assert_eq!(p.counters.stage_state_failures.load(Ordering::SeqCst), 3);
        full.store(false, Ordering::SeqCst);
        let msg = Msg::Line {
            key: None,
            line: TICK.into(),
        };
        p.handle(msg, &mut seq).unwrap();
        assert_eq!(rx.try_recv().unwrap(), Feedback::StageState(Ok(())));
    }

    #[test]
    fn a_full_queue_keeps_one_waiting_sample_per_node_and_counts_the_rest() {
        let (mut feed, mut rx) = Feed::new(2);
        let sample = |node: &str, n: u32| Msg::Line {
            key: Some(Key::Sample(node.into())),
            line: format!("{node}-{n}"),
        };
        for n in 0..5 {
            feed.send(sample("a", n));
            feed.send(sample("b", n));
        }
        let err = Msg::Line {
            key: None,
            line: "error".into(),
        };
        feed.send(err.clone());
        feed.send(err);
        // Queue: a-0, b-0. Backlog: a-4, b-4 and both errors; six samples superseded.
        assert_eq!((feed.queued(), feed.backlog()), (2, 4));
        assert_eq!(feed.superseded, 6);
        let mut got = Vec::new();
        while feed.depth() > 0 {
            while let Ok(Msg::Line { line, .. }) = rx.try_recv() {
                got.push(line);
            }
            feed.pump();
        }
        assert_eq!(got, ["a-0", "b-0", "a-4", "b-4", "error", "error"]);
    }
}
