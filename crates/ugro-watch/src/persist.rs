//! Persistence, the fourth job: the state directory (`nodes/<node>.json`, `fleet.json`,
//! `stats.json`) written by a thread of its own, so that a slow disk (every write is fsynced)
//! never delays a poll or the pipeline.
//!
//! The queue is bounded by coalescing: it holds at most one pending content per file, the
//! newest; a newer content replaces an older one not yet written (counted as `superseded`).
//! A write that fails (disk full, directory gone or read-only) leaves the file as it was — every
//! write is a temporary file renamed over the old one — and keeps the newest content pending;
//! the writer reports the failure once (an [`Event`]), retries with a backoff of 1 s doubling to
//! 30 s, and reports again when a write succeeds. Nothing is dropped while it waits, and
//! polling never waits for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ugro_support::state::{StateError, write_atomic};

/// Writes one file; the real one is [`write_atomic`], tests inject failures.
pub type Writer = dyn Fn(&Path, &[u8]) -> Result<(), StateError> + Send + Sync;

/// A change in whether the state directory can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A write failed (the first after a success): why.
    Unwritable(String),
    /// A write succeeded again.
    Writable,
}

/// Counters for `stats` records.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files written.
    pub writes: AtomicU64,
    /// Failed write attempts.
    pub failures: AtomicU64,
    /// Pending contents replaced by newer ones before they were written.
    pub superseded: AtomicU64,
    /// Files waiting to be written.
    pub queued: AtomicU64,
    /// The last attempt failed.
    pub unwritable: AtomicBool,
}

#[derive(Default)]
struct Pending {
    files: HashMap<PathBuf, Vec<u8>>,
    closing: bool,
    /// Bumped by every `put`, so a flush knows whether new work arrived.
    generation: u64,
    /// The generation fully written (or given up on) by the writer.
    done: u64,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    counters: Counters,
}

/// The persistence job: a handle that queues files for the writer thread.
pub struct Persister {
    dir: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Option<StateError>>>,
}

impl std::fmt::Debug for Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persister").field("dir", &self.dir).finish()
    }
}

/// Where a queued file goes: cheap to clone, for the pipeline thread.
#[derive(Clone)]
pub struct Queue {
    dir: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("dir", &self.dir).finish()
    }
}

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Persister {
    /// Creates `dir` and `dir/nodes` (mode 0700) and starts the writer; `events` hears of
    /// changes in writability.
    pub fn open(dir: &Path, events: Box<dyn Fn(Event) + Send>) -> Result<Persister, StateError> {
        Self::with_writer(
            dir,
            events,
            Arc::new(|p: &Path, b: &[u8]| write_atomic(p, b)),
        )
    }

    /// As [`Persister::open`] with the file writer injected.
    pub fn with_writer(
        dir: &Path,
        events: Box<dyn Fn(Event) + Send>,
        writer: Arc<Writer>,
    ) -> Result<Persister, StateError> {
        use std::os::unix::fs::DirBuilderExt;
        let nodes = dir.join("nodes");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&nodes)
            .map_err(|source| StateError::Io {
                path: nodes.clone(),
                source,
            })?;
        for d in [dir, nodes.as_path()] {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        }
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            counters: Counters::default(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ugro-watch-state".into())
            .spawn(move || write_loop(&s, &*writer, &*events))
            .map_err(|source| StateError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Persister {
            dir: dir.to_owned(),
            shared,
            thread: Some(thread),
        })
    }

    /// A handle for queueing files.
    pub fn queue(&self) -> Queue {
        Queue {
            dir: self.dir.clone(),
            shared: self.shared.clone(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Writes what is queued (trying once more if writes are failing) and stops the writer;
    /// the error of the last failed write, if it did not succeed since.
    pub fn close(mut self) -> Result<(), StateError> {
        if let Ok(mut p) = self.shared.pending.lock() {
            p.closing = true;
        }
        self.shared.wake.notify_all();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Some(e))) => Err(e),
            _ => Ok(()),
        }
    }
}

impl Queue {
    /// Queues `bytes` for `name` (relative to the state directory); never waits for the disk.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        let path = self.dir.join(name);
        let Ok(mut p) = self.shared.pending.lock() else {
            return;
        };
        if p.files.insert(path, bytes).is_some() {
            self.shared
                .counters
                .superseded
                .fetch_add(1, Ordering::Relaxed);
        }
        p.generation += 1;
        self.shared
            .counters
            .queued
            .store(p.files.len() as u64, Ordering::Relaxed);
        drop(p);
        self.shared.wake.notify_all();
    }

    /// Waits until everything queued before this call was written or failed (tests, and the
    /// end of a replay). The writer may be backing off: at most `limit`.
    pub fn flush(&self, limit: Duration) {
        let Ok(mut p) = self.shared.pending.lock() else {
            return;
        };
        let want = p.generation;
        let deadline = std::time::Instant::now() + limit;
        while p.done < want {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.shared.wake.wait_timeout(p, left) {
                Ok((g, _)) => p = g,
                Err(_) => return,
            }
        }
    }
}

fn write_loop(shared: &Shared, writer: &Writer, events: &dyn Fn(Event)) -> Option<StateError> {
    let c = &shared.counters;
    let mut backoff = BACKOFF_MIN;
    let mut failing: Option<StateError> = None;
    loop {
        let (batch, generation, closing) = {
            let Ok(mut p) = shared.pending.lock() else {
                return failing;
            };
            while p.files.is_empty() && !p.closing {
                p = match shared.wake.wait(p) {
                    Ok(g) => g,
                    Err(_) => return failing,
                };
            }
            c.queued.store(0, Ordering::Relaxed);
            (std::mem::take(&mut p.files), p.generation, p.closing)
        };
        let mut left: HashMap<PathBuf, Vec<u8>> = HashMap::new();
        let mut batch: Vec<(PathBuf, Vec<u8>)> = batch.into_iter().collect();
        // Node files first, fleet and stats after: a reader of fleet.json finds the node files
        // it names.
        batch.sort_by_key(|(p, _)| !p.parent().is_some_and(|d| d.ends_with("nodes")));
        let mut err = None;
        for (path, bytes) in batch {
            if err.is_some() {
                left.insert(path, bytes);
                continue;
            }
            match writer(&path, &bytes) {
                Ok(()) => {
                    c.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    left.insert(path, bytes);
                    err = Some(e);
                }
            }
        }
        let ok = err.is_none();
        if let Some(e) = err {
            c.unwritable.store(true, Ordering::Relaxed);
            if failing.is_none() {
                tracing::error!("state directory: {e}; polling goes on, retrying");
                events(Event::Unwritable(e.to_string()));
            }
            failing = Some(e);
        } else if failing.take().is_some() {
            tracing::info!("state directory writable again");
            c.unwritable.store(false, Ordering::Relaxed);
            events(Event::Writable);
            backoff = BACKOFF_MIN;
        }
        let Ok(mut p) = shared.pending.lock() else {
            return failing;
        };
        // What failed goes back unless something newer for the same file arrived meanwhile.
        for (path, bytes) in left {
            p.files.entry(path).or_insert(bytes);
        }
        c.queued.store(p.files.len() as u64, Ordering::Relaxed);
        if ok || closing {
            p.done = generation;
        }
        shared.wake.notify_all();
        if closing {
            if ok && !p.files.is_empty() {
                continue;
            }
            return failing;
        }
        if !ok {
            // Wait out the backoff unless asked to close.
            let (g, _) = match shared.wake.wait_timeout_while(p, backoff, |p| !p.closing) {
                Ok(r) => r,
                Err(_) => return failing,
            };
            drop(g);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_with_the_newest_content() {
        let d = tempfile::tempdir().unwrap();
        let s = Persister::open(&d.path().join("st"), Box::new(|_| {})).unwrap();
        let q = s.queue();
        q.put("nodes/n1.json", b"{\"a\":1}".to_vec());
        q.put("nodes/n1.json", b"{\"a\":2}".to_vec());
        q.put("stats.json", b"{}".to_vec());
        s.close().unwrap();
        let got = std::fs::read(d.path().join("st/nodes/n1.json")).unwrap();
        assert!(got == b"{\"a\":2}", "{}", String::from_utf8_lossy(&got));
        assert!(d.path().join("st/stats.json").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.path().join("st/nodes"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }

    /// A disk that is full until told otherwise: injected ENOSPC, so this runs anywhere (the
    /// end-to-end test uses a real full tmpfs where mounting one is allowed).
    #[test]
    fn a_full_disk_is_reported_once_retried_and_nothing_written_is_lost() {
        let d = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(false));
        let f = full.clone();
        let writer: Arc<Writer> = Arc::new(move |p: &Path, b: &[u8]| {
            if f.load(Ordering::SeqCst) {
                return Err(StateError::Io {
                    path: p.to_owned(),
                    source: std::io::Error::from_raw_os_error(28),
                });
            }
            write_atomic(p, b)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let s = Persister::with_writer(
            &d.path().join("st"),
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
            writer,
        )
        .unwrap();
        let q = s.queue();
        q.put("nodes/a.json", b"1".to_vec());
        q.flush(Duration::from_secs(30));
        full.store(true, Ordering::SeqCst);
        q.put("nodes/a.json", b"2".to_vec());
        match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            Event::Unwritable(m) => assert!(m.contains("os error 28"), "{m}"),
            e => panic!("{e:?}"),
        }
        assert!(s.counters().unwritable.load(Ordering::SeqCst));
        // What was written before the disk filled is still there.
        assert_eq!(
            std::fs::read(d.path().join("st/nodes/a.json")).unwrap(),
            b"1"
        );
        q.put("nodes/a.json", b"3".to_vec());
        q.put("nodes/b.json", b"4".to_vec());
        full.store(false, Ordering::SeqCst);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)).unwrap(),
            Event::Writable
        );
        q.flush(Duration::from_secs(30));
        assert_eq!(
            std::fs::read(d.path().join("st/nodes/a.json")).unwrap(),
            b"3"
        );
        assert_eq!(
            std::fs::read(d.path().join("st/nodes/b.json")).unwrap(),
            b"4"
        );
        assert!(rx.try_recv().is_err(), "reported once each way");
        assert!(s.counters().failures.load(Ordering::SeqCst) >= 1);
        s.close().unwrap();
    }
}
