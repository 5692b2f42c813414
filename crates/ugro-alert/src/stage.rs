//! The pipeline stage: parses records, drives the engine, hands what it produces to the
//! delivery workers (never waiting on them), and keeps the state file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ugro_support::state::StateLock;
use ugro_types::Exit;
use ugro_types::stage::{Emit, Stage, StageError};
use ugro_types::{Kind, SkewGuard, Timestamp};

use crate::Error;
use crate::config::{AlertConfig, ReceiverKind};
use crate::deliver::{Dispatcher, RealTransport, ReceiverStats, Transport};
use crate::engine::{Engine, EngineState, Out};
use crate::remedy::Remedy;
use crate::rules::Input;

/// State file format name and version.
pub const STATE_FORMAT: &str = "ugro-alert";
/// State file format version.
pub const STATE_VERSION: u32 = 1;

/// `ugro-alert` as a [`Stage`].
#[derive(Debug)]
pub struct AlertStage {
    engine: Engine,
    lock: StateLock,
    dispatcher: Dispatcher,
    /// Remediation of the slurm_drain receiver that has it.
    remedy: Option<Remedy>,
    next_silence_check: Timestamp,
    silences_mtime: Option<std::time::SystemTime>,
    out: Out,
    /// Refuses records from the future (global.max_clock_skew) on an injected wall clock.
    skew: SkewGuard,
    /// Alert records emitted on stdout.
    pub emitted: u64,
}

fn fatal(e: impl std::fmt::Display, exit: Exit) -> StageError {
    StageError::Fatal {
        exit,
        message: e.to_string(),
    }
}

/// The spool directory for a state file: `--spool-dir`, else `<state>.spool` beside it.
pub fn spool_dir(cfg: &AlertConfig, state: &Path) -> PathBuf {
    cfg.delivery.spool_dir.clone().unwrap_or_else(|| {
        let mut s = state.as_os_str().to_owned();
        s.push(".spool");
        PathBuf::from(s)
    })
}

impl AlertStage {
    /// Opens the state file (locked for the life of the stage) and the spool.
    pub fn open(cfg: AlertConfig, state: &Path) -> Result<AlertStage, Error> {
        Self::with_transport(cfg, state, Box::new(RealTransport::default()))
    }

    /// As [`AlertStage::open`], with the transport injected.
    pub fn with_transport(
        cfg: AlertConfig,
        state: &Path,
        transport: Box<dyn Transport>,
    ) -> Result<AlertStage, Error> {
        let lock = StateLock::acquire(state)?;
        let st: EngineState = lock.read(STATE_FORMAT, STATE_VERSION)?.unwrap_or_default();
        ugro_support::state::check_nodes(lock.path(), st.node_names())?;
        let dir = spool_dir(&cfg, state);
        let origin = std::path::absolute(state)
            .unwrap_or_else(|_| state.to_owned())
            .display()
            .to_string();
        let transport: Arc<dyn Transport> = Arc::from(transport);
        let remedy = Remedy::open(&cfg, state, transport.clone())?;
        let dispatcher =
            Dispatcher::start(&cfg, &dir, origin, transport).map_err(|source| Error::Spool {
                path: dir.clone(),
                source,
            })?;
        let silences_mtime = cfg
            .silences_path
            .as_deref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let skew = SkewGuard::new(cfg.global.max_clock_skew);
        Ok(AlertStage {
            engine: Engine::new(cfg, st),
            lock,
            dispatcher,
            remedy,
            next_silence_check: Timestamp(i64::MIN),
            silences_mtime,
            out: Out::default(),
            skew,
            emitted: 0,
        })
    }

    /// Replaces the wall clock (tests).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.skew = self.skew.with_clock(clock);
        self
    }

    /// The engine (tests, status).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Delivery figures per receiver (and Alertmanager instance): queue depth, spooled,
    /// delivered, failed, dropped, superseded, retries, last error. Cheap; never waits on a
    /// worker.
    pub fn delivery_stats(&self) -> Vec<ReceiverStats> {
        self.dispatcher.stats()
    }

    /// Waits until every delivery worker has nothing it can do now (all delivered, or backing
    /// off after a failure); false at `timeout`. For tests and orderly hand-overs: the stage
    /// itself never waits on delivery except for the budget at [`Stage::finish`].
    pub fn wait_delivery_idle(&self, timeout: Duration) -> bool {
        self.dispatcher.wait_idle(timeout)
    }

    /// Hands Alertmanager results that came in to the engine.
    fn collect_am(&mut self) {
        for o in self.dispatcher.am_outcomes() {
            self.engine.am_result(&o.batch, o.result);
        }
    }

    fn dispatch(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut out = std::mem::take(&mut self.out);
        let had = !out.is_empty();
        for n in out.notifications.drain(..) {
            let stdout = matches!(
                self.engine
                    .config()
                    .receivers
                    .get(&n.receiver)
                    .map(|r| &r.kind),
                Some(ReceiverKind::Stdout)
            );
            if stdout {
                for a in &n.alerts {
                    let bytes = serde_json::to_vec(a).map_err(|e| fatal(e, Exit::Software))?;
                    emit(&bytes)?;
                    self.emitted += 1;
                }
            } else {
                let mut n = n;
                if let Some(r) = self.remedy.as_mut().filter(|r| r.receiver() == n.receiver) {
                    r.admit(&mut n, self.engine.now());
                }
                self.dispatcher.submit(n);
            }
        }
        for b in out.am.drain(..) {
            self.dispatcher.submit_am(b);
        }
        self.out = out;
        if had {
            self.save()?;
        }
        Ok(())
    }

    /// Re-reads the silences file when it changed (checked every 10 s of record time); a
    /// broken file keeps the silences in force and says why.
    fn maybe_reload_silences(&mut self, now: Timestamp) {
        if now < self.next_silence_check {
            return;
        }
        self.next_silence_check = now.add(std::time::Duration::from_secs(10));
        let Some(path) = self.engine.config().silences_path.clone() else {
            return;
        };
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if mtime == self.silences_mtime {
            return;
        }
        self.silences_mtime = mtime;
        match crate::config::load_silences(&path) {
            Ok(s) => {
                tracing::info!(
                    "silences reloaded from {}: {} entries",
                    path.display(),
                    s.len()
                );
                self.engine.set_silences(s);
            }
            Err(e) => tracing::error!("silences not reloaded, keeping the previous ones: {e}"),
        }
    }

    /// End of a run: Alertmanager batches go round (a result may make the next one due: a
    /// change made while a batch was out) until none is out or the budget is spent.
    fn finish_am(&mut self, deadline: Instant, emit: &mut Emit<'_>) -> Result<(), StageError> {
        loop {
            self.collect_am();
            let mut out = std::mem::take(&mut self.out);
            self.engine.am_flush(&mut out);
            self.out = out;
            self.dispatch(emit)?;
            if !self.engine.am_in_flight() || !self.dispatcher.wait_am(deadline) {
                return Ok(());
            }
        }
    }

    /// Remediation after the engine: outcomes in, due steps out, its alerts into the engine
    /// (and from there to their receivers).
    fn remedy_step(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let Some(r) = self.remedy.as_mut() else {
            return Ok(());
        };
        r.advance(now);
        let alerts = r.take_alerts();
        if !alerts.is_empty() {
            for a in alerts {
                self.engine.remedy_alert(a, now);
            }
            let mut out = std::mem::take(&mut self.out);
            self.engine.advance(now, &mut out);
            self.out = out;
            self.dispatch(emit)?;
        }
        self.save_remedy()
    }

    /// The end of a run, before delivery winds down: remediation steps go as far as they
    /// can (a remediation already running is waited for, up to its timeout, so that the next
    /// run does not start it again), and the alerts they raise join this run's delivery.
    fn finish_remedy(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let now = self.engine.now();
        if self.remedy.is_none() {
            return Ok(());
        }
        // This run's drains land first, so that remediation sees the nodes as Slurm has them
        // now rather than racing the receiver.
        self.dispatcher
            .wait_idle(self.engine.config().delivery.budget);
        let Some(r) = self.remedy.as_mut() else {
            return Ok(());
        };
        r.finish(now);
        let alerts = r.take_alerts();
        for a in alerts {
            self.engine.remedy_alert(a, now);
        }
        let mut out = std::mem::take(&mut self.out);
        self.engine.finish(&mut out);
        self.out = out;
        self.dispatch(emit)?;
        self.save_remedy()
    }

    fn save_remedy(&mut self) -> Result<(), StageError> {
        match self.remedy.as_mut().map(Remedy::save) {
            Some(Err(e)) => {
                let exit = e.exit();
                Err(fatal(e, exit))
            }
            _ => Ok(()),
        }
    }

    fn save(&mut self) -> Result<(), StageError> {
        if self.engine.changed {
            self.lock
                .write(STATE_FORMAT, STATE_VERSION, self.engine.state())
                .map_err(|e| {
                    let exit = e.exit();
                    fatal(e, exit)
                })?;
            self.engine.changed = false;
        }
        Ok(())
    }
}

impl Stage for AlertStage {
    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let input = match Input::parse(line) {
            Ok(r) => r,
            Err(e) => {
                // A kind this tool does not consume may carry fields of other types; only
                // its header has to be valid.
                return match ugro_types::parse_header(line) {
                    Ok(h) if !matches!(h.kind, Kind::Sample | Kind::Transition | Kind::Fleet) => {
                        Ok(())
                    }
                    _ => Err(StageError::Reject(e.to_string())),
                };
            }
        };
        let rec = &input.record;
        match rec.kind {
            Kind::Sample if rec.score.is_none() => {
                return Err(StageError::Reject(
                    "sample has no score (run it through ugro-score first)".into(),
                ));
            }
            Kind::Sample | Kind::Transition | Kind::Fleet => {}
            // ugro-watch's stats say whether it can write its state (WatcherStateUnwritable).
            Kind::Stats
                if input
                    .watcher
                    .as_ref()
                    .is_some_and(|w| w.state_unwritable.is_some()) => {}
            // Consumed; the run loop then runs the timers to its time (the tick rule), so a
            // tick from the future is refused like any record.
            Kind::Tick => {
                return self
                    .skew
                    .check(rec.ts)
                    .map_err(|e| StageError::Reject(e.to_string()));
            }
            // Alerts, stats, errors and unknown kinds are consumed, not echoed: stdout carries
            // only this tool's alert records.
            _ => return Ok(()),
        }
        // Record time only moves forward, so one record from the future would hold every
        // timer and silence hostage until the real time caught up.
        self.skew
            .check(rec.ts)
            .map_err(|e| StageError::Reject(e.to_string()))?;
        if rec.ts >= self.next_silence_check {
            self.maybe_reload_silences(rec.ts);
        }
        let mut out = std::mem::take(&mut self.out);
        self.collect_am();
        self.engine.observe(&input, &mut out);
        self.out = out;
        if !self.out.is_empty() {
            self.dispatch(emit)?;
        }
        if let Some(r) = self.remedy.as_mut()
            && rec.kind == Kind::Sample
        {
            r.sample(&input, line);
        }
        self.remedy_step(self.engine.now(), emit)
    }

    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.maybe_reload_silences(now);
        self.collect_am();
        let mut out = std::mem::take(&mut self.out);
        self.engine.advance(now, &mut out);
        self.out = out;
        self.dispatch(emit)?;
        self.remedy_step(now, emit)
    }

    fn persist(&mut self) -> Result<(), StageError> {
        self.engine.changed = true;
        self.save()?;
        self.save_remedy()
    }

    /// Delivers for at most `delivery.budget`, then leaves the rest in the spool (and the
    /// Alertmanager state) for the next run.
    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.dispatcher.spill_when_full();
        self.collect_am();
        let mut out = std::mem::take(&mut self.out);
        self.engine.finish(&mut out);
        self.out = out;
        self.dispatch(emit)?;
        self.finish_remedy(emit)?;
        let deadline = Instant::now() + self.engine.config().delivery.budget;
        self.dispatcher.begin_finish(deadline);
        self.finish_am(deadline, emit)?;
        self.dispatcher.end_finish(deadline);
        self.collect_am();
        self.engine.changed = true;
        self.save()
    }
}

#[cfg(test)]
mod tests;
