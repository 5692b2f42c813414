//! `--state FILE`: the scorer's history kept between runs, so that a cron job that scores one
//! sample per node per run still gets rates, trends, XID windows, the reboot and recurrence
//! rules and the node's GPU count history.
//!
//! The file is the shared ugro state file (`ugro_support::state`: a lock held for the whole
//! run, so concurrent runs on one file serialise; written to a temporary file, fsynced and
//! renamed, mode 0600; format `ugro-score`, version 1; a corrupt or foreign file stops the run
//! with 78 and is left untouched). It is bounded as the in-memory history is (see
//! `crate::history`) and pruned by `history.max_age` before each save.
//!
//! The writing (and its fsync) happens on a writer thread behind a queue of one snapshot: a long
//! run (ugro-watch --pipeline) hands it a copy of the history every `history.persist_interval`
//! and goes on scoring; a snapshot offered while the writer is still busy is skipped (the next
//! one supersedes it) and counted. At the end of input the last snapshot is written and waited
//! for.

use std::path::Path;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use ugro_support::state::{StateError, StateLock, encode, write_atomic};

use crate::config::ScoreConfig;
use crate::history::History;

/// The `format` of the state file's envelope.
pub const STATE_FORMAT: &str = "ugro-score";
/// The version of the state file's data this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// The locked state file and its writer thread.
#[derive(Debug)]
pub(crate) struct StateStore {
    lock: StateLock,
    tx: Option<SyncSender<History>>,
    writer: Option<JoinHandle<Result<u64, StateError>>>,
    last_offer: Instant,
    /// Snapshots skipped because the writer was still busy with the previous one.
    pub(crate) skipped: u64,
}

impl StateStore {
    /// Locks `path` (waiting for another run to finish with it) and reads the history.
    pub(crate) fn open(path: &Path, cfg: &ScoreConfig) -> Result<(Self, History), StateError> {
        let lock = StateLock::acquire(path)?;
        let mut history: History = lock.read(STATE_FORMAT, STATE_VERSION)?.unwrap_or_default();
        // Node names go into labels and the watcher's file names: a tampered file brings none.
        ugro_support::state::check_nodes(path, history.nodes.keys().map(String::as_str))?;
        history.prune(cfg.history.max_age, cfg.max_tracked_nodes);
        let (tx, rx) = sync_channel::<History>(1);
        let target = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("ugro-score-state".into())
            .spawn(move || {
                let mut written = 0;
                for h in rx {
                    let bytes = encode(&target, STATE_FORMAT, STATE_VERSION, &h)?;
                    write_atomic(&target, &bytes)?;
                    written += 1;
                }
                Ok(written)
            })
            .map_err(|source| StateError::Io {
                path: path.to_owned(),
                source,
            })?;
        let store = StateStore {
            lock,
            tx: Some(tx),
            writer: Some(writer),
            last_offer: Instant::now(),
            skipped: 0,
        };
        Ok((store, history))
    }

    /// Offers a snapshot when `persist_interval` has passed since the last one.
    pub(crate) fn maybe_offer(&mut self, history: &History, cfg: &ScoreConfig) {
        if self.last_offer.elapsed() < cfg.history.persist_interval {
            return;
        }
        self.last_offer = Instant::now();
        let mut snapshot = history.clone();
        snapshot.prune(cfg.history.max_age, cfg.max_tracked_nodes);
        let Some(tx) = &self.tx else { return };
        match tx.try_send(snapshot) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.skipped += 1;
                tracing::debug!(
                    skipped = self.skipped,
                    "state writer busy: snapshot skipped"
                );
            }
            // The writer stopped on an error: `close` reports it.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Writes the final history and waits for the writer; reports its first error.
    pub(crate) fn close(&mut self, history: &History, cfg: &ScoreConfig) -> Result<(), StateError> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let mut last = history.clone();
        last.prune(cfg.history.max_age, cfg.max_tracked_nodes);
        // A blocking send: the writer may still be busy with a periodic snapshot.
        let _ = tx.send(last);
        drop(tx);
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let written = writer.join().map_err(|_| StateError::Io {
            path: self.lock.path().to_owned(),
            source: std::io::Error::other("the state writer thread panicked"),
        })??;
        tracing::debug!(
            written,
            skipped = self.skipped,
            path = %self.lock.path().display(),
            "state saved"
        );
        Ok(())
    }
}
