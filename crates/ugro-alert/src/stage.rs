//! The pipeline stage: parses records, drives the engine, delivers what it produces, and
//! keeps the state file.

use std::path::{Path, PathBuf};

use ugro_types::Exit;
use ugro_types::stage::{Emit, Stage, StageError};
use ugro_types::state::StateLock;
use ugro_types::{Kind, Timestamp};

use crate::Error;
use crate::config::{AlertConfig, ReceiverKind};
use crate::deliver::{Deliverer, RealTransport, Transport};
use crate::engine::{Engine, EngineState, Out};
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
    deliverer: Deliverer,
    next_spool_try: Timestamp,
    next_silence_check: Timestamp,
    silences_mtime: Option<std::time::SystemTime>,
    out: Out,
    /// The wall clock, injected for tests; only used to refuse records from the future.
    clock: fn() -> Timestamp,
    /// Its last reading: records not ahead of it by max_clock_skew need no new reading.
    wall: Timestamp,
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
        Self::with_transport(cfg, state, Box::new(RealTransport))
    }

    /// As [`AlertStage::open`], with the transport injected.
    pub fn with_transport(
        cfg: AlertConfig,
        state: &Path,
        transport: Box<dyn Transport>,
    ) -> Result<AlertStage, Error> {
        let lock = StateLock::acquire(state)?;
        let st: EngineState = lock.read(STATE_FORMAT, STATE_VERSION)?.unwrap_or_default();
        let needs_spool = cfg.receivers.values().any(|r| {
            !matches!(
                r.kind,
                ReceiverKind::Stdout | ReceiverKind::Alertmanager { .. }
            )
        });
        let dir = spool_dir(&cfg, state);
        let deliverer =
            Deliverer::new(cfg.clone(), needs_spool.then_some(dir.as_path()), transport).map_err(
                |source| Error::Spool {
                    path: dir.clone(),
                    source,
                },
            )?;
        let silences_mtime = cfg
            .silences_path
            .as_deref()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let mut s = AlertStage {
            engine: Engine::new(cfg, st),
            lock,
            deliverer,
            next_spool_try: Timestamp(i64::MIN),
            next_silence_check: Timestamp(i64::MIN),
            silences_mtime,
            out: Out::default(),
            clock: Timestamp::now,
            wall: Timestamp(i64::MIN),
            emitted: 0,
        };
        if s.deliverer.spool_pending() {
            s.deliverer.drain();
        }
        Ok(s)
    }

    /// Replaces the wall clock (tests).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.clock = clock;
        self.wall = Timestamp(i64::MIN);
        self
    }

    /// Refuses a record stamped more than max_clock_skew ahead of this host's clock: record
    /// time only moves forward, so one such record would hold every timer and silence
    /// hostage until the real time caught up.
    fn check_skew(&mut self, ts: Timestamp) -> Result<(), StageError> {
        let skew = self.engine.config().global.max_clock_skew;
        if skew.is_zero() || ts <= self.wall.add(skew) {
            return Ok(());
        }
        self.wall = (self.clock)();
        if ts <= self.wall.add(skew) {
            return Ok(());
        }
        let ahead = std::time::Duration::from_secs(ts.since(self.wall).as_secs());
        Err(StageError::Reject(format!(
            "ts {ts} is {} ahead of this host's clock (max_clock_skew {})",
            humantime::format_duration(ahead),
            humantime::format_duration(skew)
        )))
    }

    /// The engine (tests, status).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Notifications spooled after failures so far.
    pub fn spooled(&self) -> u64 {
        self.deliverer.spooled
    }

    fn dispatch(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let out = std::mem::take(&mut self.out);
        let had = !out.is_empty();
        for n in &out.notifications {
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
                self.deliverer.deliver(n);
            }
        }
        if !out.am.is_empty() {
            let results: Vec<(&crate::engine::AmBatch, bool)> = out
                .am
                .iter()
                .map(|b| (b, self.deliverer.deliver_am(b)))
                .collect();
            self.engine.am_result(&results);
        }
        self.out = out;
        self.out.notifications.clear();
        self.out.am.clear();
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

    fn maybe_drain(&mut self, now: Timestamp) {
        if now >= self.next_spool_try {
            self.next_spool_try = now.add(self.engine.config().delivery.spool_retry_interval);
            if self.deliverer.spool_pending() {
                self.deliverer.drain();
            }
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
        let rec: Input<'_> = match serde_json::from_str(line) {
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
        if rec.v > ugro_types::SCHEMA_VERSION {
            return Err(StageError::Reject(
                ugro_types::RecordError::FutureVersion { found: rec.v }.to_string(),
            ));
        }
        ugro_types::validate_node(&rec.node).map_err(|e| StageError::Reject(e.to_string()))?;
        match rec.kind {
            Kind::Sample if rec.score.is_none() => {
                return Err(StageError::Reject(
                    "sample has no score (run it through ugro-score first)".into(),
                ));
            }
            Kind::Sample | Kind::Transition | Kind::Fleet => {}
            // ugro-watch's stats say whether it can write its state (WatcherStateUnwritable).
            Kind::Stats if rec.state_unwritable.is_some() => {}
            // Consumed; the run loop then runs the timers to its time (the tick rule), so a
            // tick from the future is refused like any record.
            Kind::Tick => return self.check_skew(rec.ts),
            // Alerts, stats, errors and unknown kinds are consumed, not echoed: stdout carries
            // only this tool's alert records.
            _ => return Ok(()),
        }
        self.check_skew(rec.ts)?;
        if rec.ts >= self.next_silence_check {
            self.maybe_reload_silences(rec.ts);
        }
        let mut out = std::mem::take(&mut self.out);
        self.engine.observe(&rec, &mut out);
        self.out = out;
        if !self.out.is_empty() {
            self.dispatch(emit)?;
        }
        let now = self.engine.now();
        if now >= self.next_spool_try {
            self.maybe_drain(now);
        }
        Ok(())
    }

    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.maybe_reload_silences(now);
        let mut out = std::mem::take(&mut self.out);
        self.engine.advance(now, &mut out);
        self.out = out;
        self.dispatch(emit)?;
        self.maybe_drain(now);
        Ok(())
    }

    fn persist(&mut self) -> Result<(), StageError> {
        self.engine.changed = true;
        self.save()
    }

    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        if self.deliverer.spool_pending() {
            self.deliverer.drain();
        }
        let mut out = std::mem::take(&mut self.out);
        self.engine.finish(&mut out);
        self.out = out;
        self.dispatch(emit)?;
        self.engine.changed = true;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::deliver::ExecOutput;

    #[derive(Debug, Default)]
    struct Net {
        up: bool,
        got: Vec<serde_json::Value>,
        ids: Vec<String>,
    }

    #[derive(Debug, Clone, Default)]
    struct Fake(Arc<Mutex<Net>>);

    impl Transport for Fake {
        fn post(
            &self,
            _url: &str,
            headers: &[(&str, String)],
            body: &[u8],
            _timeout: Duration,
        ) -> Result<(), String> {
            let mut n = self.0.lock().unwrap();
            if !n.up {
                return Err("connection refused".into());
            }
            n.got.push(serde_json::from_slice(body).unwrap());
            n.ids.extend(headers.iter().map(|(_, v)| v.clone()));
            Ok(())
        }
        fn exec(
            &self,
            _: &[String],
            _: &[(String, String)],
            _: &[u8],
            _: Duration,
            _: bool,
        ) -> Result<ExecOutput, String> {
            Err("no programs here".into())
        }
    }

    const T0: i64 = 1_795_000_000_000;

    fn line(node: &str, s: i64) -> String {
        format!(
            r#"{{"v":1,"kind":"sample","ts":"{}","node":"{node}","score":{{"state":"critical","action":"reboot","components":{{}},"reasons":[],"summary":"bad"}}}}"#,
            Timestamp(T0 + s * 1000)
        )
    }

    #[test]
    fn long_run_outage_is_spooled_then_delivered_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AlertConfig::from_str(
            Path::new("a.yaml"),
            "route:\n  receiver: hook\n  group_wait: 10s\n  group_interval: 1m\nreceivers:\n  - name: hook\n    webhook: {url: 'http://127.0.0.1:9/x'}\ndelivery:\n  attempts: 1\n  backoff: 0s\n  spool_retry_interval: 30s\n",
        )
        .unwrap();
        let net = Fake::default();
        let mut st =
            AlertStage::with_transport(cfg, &dir.path().join("s.json"), Box::new(net.clone()))
                .unwrap();
        let mut emit = |_: &[u8]| Ok(());
        st.process(&line("n1", 0), &mut emit).unwrap();
        st.tick(Timestamp(T0 + 10_000), &mut emit).unwrap();
        st.process(&line("n2", 20), &mut emit).unwrap();
        st.tick(Timestamp(T0 + 70_000), &mut emit).unwrap();
        assert_eq!(st.spooled(), 2);
        assert!(net.0.lock().unwrap().got.is_empty());
        net.0.lock().unwrap().up = true;
        st.tick(Timestamp(T0 + 100_000), &mut emit).unwrap();
        st.tick(Timestamp(T0 + 200_000), &mut emit).unwrap();
        st.finish(&mut emit).unwrap();
        let n = net.0.lock().unwrap();
        assert_eq!(n.got.len(), 2, "{:#?}", n.got);
        let ids: std::collections::HashSet<_> = n.ids.iter().collect();
        assert_eq!(
            (ids.len(), n.ids.len()),
            (2, 2),
            "delivered twice: {:?}",
            n.ids
        );
        assert_eq!(n.got[0]["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(n.got[1]["alerts"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_record_far_ahead_of_the_host_clock_is_rejected_and_moves_no_clock() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AlertConfig::from_str(
            Path::new("a.yaml"),
            "route:\n  receiver: stdout\n  group_wait: 30s\n",
        )
        .unwrap();
        let net = Fake::default();
        let mut st =
            AlertStage::with_transport(cfg, &dir.path().join("s.json"), Box::new(net.clone()))
                .unwrap()
                .with_clock(|| Timestamp(T0));
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| {
            out.push(serde_json::from_slice::<serde_json::Value>(b).unwrap());
            Ok(())
        };
        match st.process(&line("n1", 7200), &mut emit) {
            Err(StageError::Reject(m)) => {
                assert!(m.contains("is 2h ahead of this host's clock"), "{m}");
            }
            other => panic!("not rejected: {other:?}"),
        }
        assert_eq!(st.engine().now(), Timestamp::default(), "clock moved");
        assert_eq!(st.engine().alerts().count(), 0);
        st.process(&line("n1", 0), &mut emit).unwrap();
        st.process(&line("n1", 31), &mut emit).unwrap();
        assert_eq!(out.len(), 1, "group_wait runs on the records' own time");
        assert_eq!(out[0]["labels"]["alertname"], "NodeCritical");
    }

    #[test]
    fn a_tick_runs_the_timers_and_one_from_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AlertConfig::from_str(
            Path::new("a.yaml"),
            "route:\n  receiver: stdout\n  group_wait: 30s\n",
        )
        .unwrap();
        let mut st =
            AlertStage::with_transport(cfg, &dir.path().join("s.json"), Box::new(Fake::default()))
                .unwrap()
                .with_clock(|| Timestamp(T0));
        let tick = |s: i64| {
            format!(
                r#"{{"v":1,"kind":"tick","ts":"{}","node":"*","tool":"ugro-watch"}}"#,
                Timestamp(T0 + s * 1000)
            )
        };
        let mut out = Vec::new();
        let mut emit = |b: &[u8]| {
            out.push(serde_json::from_slice::<serde_json::Value>(b).unwrap());
            Ok(())
        };
        ugro_types::stage::step(&mut st, &line("n1", 0), &mut emit).unwrap();
        let far = ugro_types::stage::step(&mut st, &tick(7200), &mut emit);
        assert!(matches!(far, Err(StageError::Reject(_))), "{far:?}");
        assert_eq!(st.engine().now(), Timestamp(T0), "clock moved");
        ugro_types::stage::step(&mut st, &tick(29), &mut emit).unwrap();
        ugro_types::stage::step(&mut st, &tick(30), &mut emit).unwrap();
        assert_eq!(out.len(), 1, "group_wait ran out on the tick");
        assert_eq!(out[0]["ts"], Timestamp(T0 + 30_000).to_string());
    }

    #[test]
    fn the_stage_can_run_inside_a_chain() {
        fn send<T: Send>() {}
        send::<AlertStage>();
    }
}
