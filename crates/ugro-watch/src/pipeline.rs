//! score → breaker → alert in-process, from the same configuration files the CLIs take, so
//! `ugro-watch --pipeline` and `ugro-watch | ugro-score | ugro-breaker | ugro-alert` agree.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ugro_types::Timestamp;
use ugro_types::ToolError;
use ugro_types::stage::{Chain, Emit, Stage, StageError};

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

/// Copies of the records each stage emitted, for the table and the state directory, which need
/// the score and breaker state that the last stage (alert) does not pass on.
pub type Tapped = Arc<Mutex<Vec<(Tap, Vec<u8>)>>>;

/// A stage whose output is also copied to a tap; otherwise it is the stage itself, so the
/// chain behaves exactly as the shell pipeline does.
struct Tee<S> {
    inner: S,
    tap: Tap,
    out: Tapped,
}

impl<S: Stage> Tee<S> {
    fn wrap<'a>(
        tap: Tap,
        out: &'a Tapped,
        emit: &'a mut Emit<'_>,
    ) -> impl FnMut(&[u8]) -> Result<(), ugro_types::io::WriteError> + 'a {
        move |rec: &[u8]| {
            if let Ok(mut v) = out.lock() {
                v.push((tap, rec.to_vec()));
            }
            emit(rec)
        }
    }
}

impl<S: Stage> Stage for Tee<S> {
    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut e = Self::wrap(self.tap, &self.out, emit);
        self.inner.process(line, &mut e)
    }
    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut e = Self::wrap(self.tap, &self.out, emit);
        self.inner.tick(now, &mut e)
    }
    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut e = Self::wrap(self.tap, &self.out, emit);
        self.inner.finish(&mut e)
    }
}

/// The scorer alone, for the table in raw mode.
pub fn scorer(cli: &Cli, cluster: &Cluster) -> Result<ugro_score::Scorer, Error> {
    let path = cli
        .score_config
        .clone()
        .or_else(|| cluster.pipeline.score.clone());
    let cfg = ugro_score::ScoreConfig::load(path.as_deref()).map_err(setup("ugro-score"))?;
    Ok(ugro_score::Scorer::new(cfg))
}

/// Builds the chain and its tap.
pub fn build(
    cli: &Cli,
    cluster: &Cluster,
    state_dir: Option<&Path>,
) -> Result<(Chain, Tapped), Error> {
    let score_path = cli
        .score_config
        .clone()
        .or_else(|| cluster.pipeline.score.clone());
    let breaker_path = cli
        .breaker_config
        .clone()
        .or_else(|| cluster.pipeline.breaker.clone());
    let alert_path = cli
        .alert_config
        .clone()
        .or_else(|| cluster.pipeline.alert.clone());
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
    let score_state = state_file(&None, state_dir, "score.json", "watch-score.json")?;
    let scorer = ugro_score::Scorer::with_state(score_cfg, ugro_score::Format::Json, &score_state)
        .map_err(setup("ugro-score"))?;
    let breaker = ugro_breaker::BreakerStage::open(breaker_cfg, &breaker_state)
        .map_err(setup("ugro-breaker"))?;
    let alert =
        ugro_alert::AlertStage::open(alert_cfg, &alert_state).map_err(setup("ugro-alert"))?;
    let tapped: Tapped = Arc::new(Mutex::new(Vec::new()));
    let tee = |tap| (tap, tapped.clone());
    let (t1, o1) = tee(Tap::Score);
    let (t2, o2) = tee(Tap::Breaker);
    let (t3, o3) = tee(Tap::Alert);
    let stages: Vec<(&'static str, Box<dyn Stage + Send>)> = vec![
        (
            "ugro-score",
            Box::new(Tee {
                inner: scorer,
                tap: t1,
                out: o1,
            }),
        ),
        (
            "ugro-breaker",
            Box::new(Tee {
                inner: breaker,
                tap: t2,
                out: o2,
            }),
        ),
        (
            "ugro-alert",
            Box::new(Tee {
                inner: alert,
                tap: t3,
                out: o3,
            }),
        ),
    ];
    Ok((Chain::new(stages), tapped))
}

fn setup<E: ToolError>(stage: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::StageSetup {
        stage,
        exit: e.exit(),
        message: e.to_string(),
    }
}
