//! The metrics thread: it owns the node table, applies the mailbox to it, and renders the
//! exposition when a scrape finds no body younger than `--metrics-cache`, one render at a
//! time (scrapes that arrive during a render get its result). The text is streamed into a
//! gzip encoder; only the compressed body is kept.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use hyper::body::Bytes;
use ugro_metrics::{Names, NodeTable, QueueStats, WatcherStats};
use ugro_types::Sample;

use super::Shared;
use super::mailbox::{Key, Update};

/// How often the mailbox is applied when nobody scrapes: it holds at most one entry per key,
/// but each sample entry is a whole line.
const APPLY_EVERY: Duration = Duration::from_secs(5);

/// A rendered body.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// The exposition, gzip-compressed.
    pub gzip: Bytes,
    /// Its length uncompressed.
    pub plain_len: u64,
    /// When it was rendered.
    pub at: Instant,
}

/// The answer to a render request.
pub(crate) type Reply = Result<Arc<Rendered>, String>;

/// What the metrics thread is asked.
#[derive(Debug)]
pub(crate) enum Job {
    /// A body no older than the cache's lifetime.
    Render(tokio::sync::oneshot::Sender<Reply>),
    /// End.
    Stop,
}

/// Lowers the calling thread's priority (Linux nice values are per thread), so that polling
/// and the pipeline win the CPU over rendering and serving. Best effort: a sandbox that
/// forbids setpriority (systemd's `@resources` filter) leaves the priority as it is.
pub(crate) fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!("endpoint thread keeps its priority: {e}");
    }
}

/// The body to serve now: the cached one while it is fresh, else a new render.
pub(crate) async fn body(shared: &Shared) -> Reply {
    if let Some(r) = fresh(shared) {
        return Ok(r);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = shared
        .jobs
        .lock()
        .map_err(|_| "the metrics thread is gone".to_owned())?
        .send(Job::Render(tx));
    sent.map_err(|_| "the metrics thread is gone".to_owned())?;
    rx.await
        .map_err(|_| "the metrics thread is gone".to_owned())?
}

fn fresh(shared: &Shared) -> Option<Arc<Rendered>> {
    let cache = shared.cache.lock().ok()?;
    cache
        .as_ref()
        .filter(|r| r.at.elapsed() < shared.ttl)
        .cloned()
}

/// Starts the metrics thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    names: Names,
    jobs: Receiver<Job>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ugro-watch-metrics".into())
        .spawn(move || {
            lower_priority();
            let mut t = Table::new(names);
            while t.serve(&shared, &jobs) {}
        })
}

/// The node table and what the renders need besides it.
struct Table {
    table: NodeTable,
    names: Names,
    watcher: WatcherStats,
    /// The nodes watched, once the loop has said.
    nodes: Option<HashSet<String>>,
    last_render: Option<Duration>,
}

impl Table {
    fn new(names: Names) -> Table {
        Table {
            table: NodeTable::new(),
            names,
            watcher: WatcherStats::default(),
            nodes: None,
            last_render: None,
        }
    }

    /// Handles the next job, or applies the mailbox after a while without one; says whether
    /// to go on.
    fn serve(&mut self, shared: &Shared, jobs: &Receiver<Job>) -> bool {
        let first = match jobs.recv_timeout(APPLY_EVERY) {
            Ok(Job::Render(reply)) => reply,
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
            Err(RecvTimeoutError::Timeout) => {
                self.apply(shared);
                return true;
            }
        };
        let mut replies = vec![first];
        let mut go_on = true;
        while let Ok(j) = jobs.try_recv() {
            match j {
                Job::Render(r) => replies.push(r),
                Job::Stop => go_on = false,
            }
        }
        // A request that waited behind a render gets that render.
        let r = match fresh(shared) {
            Some(r) => Ok(r),
            None => self.render(shared),
        };
        for reply in replies {
            let _ = reply.send(r.clone());
        }
        go_on
    }

    fn apply(&mut self, shared: &Shared) {
        let updates = shared
            .mailbox
            .lock()
            .map(|mut m| m.take())
            .unwrap_or_default();
        for (key, u) in updates {
            self.update(key, u);
        }
        if let Some(keep) = &self.nodes {
            self.table.retain(|n| keep.contains(n));
        }
    }

    fn update(&mut self, key: Key, u: Update) {
        match (key, u) {
            (_, Update::Sample { line, score }) => match serde_json::from_str::<Sample>(&line) {
                Ok(mut s) => {
                    if let Some(sc) = score {
                        s.score = Some(*sc);
                    }
                    self.table.set_sample(s, None);
                }
                Err(e) => tracing::debug!("metrics: sample not shown: {e}"),
            },
            (Key::Breaker(n), Update::Breaker(b)) => self.table.set_breaker(&n, b),
            (Key::Poll(n), Update::Poll(p)) => self.table.set_poll(&n, p),
            (Key::Alert(f), Update::Alert(a)) => self.table.set_alert(&f, a),
            (_, Update::Nodes(names)) => self.nodes = Some(names.into_iter().collect()),
            (_, Update::Watcher(w)) => self.watcher = *w,
            _ => {}
        }
    }

    fn render(&mut self, shared: &Shared) -> Reply {
        let start = Instant::now();
        let waiting = shared.mailbox.lock().map_or(0, |m| m.len());
        self.apply(shared);
        let mut w = self.watcher.clone();
        let late = shared.lateness_ms.swap(0, Ordering::Relaxed);
        w.lateness = Some(Duration::from_millis(late));
        w.queues.push(QueueStats {
            name: "metrics".into(),
            depth: waiting as u64,
            capacity: None,
        });
        w.render = self.last_render;
        w.rss_bytes = crate::monitor::rss_kb().map(|kb| kb * 1024);
        let r = self.table.renderer(self.names, Some(&w));
        let plain_len = r.text_len() as u64;
        // Level 1: a tenth of the size at a fraction of the cost of the default level.
        let mut gz = GzEncoder::new(Vec::with_capacity(r.text_len() / 8), Compression::fast());
        let body = r
            .write_to(&mut gz)
            .and_then(|()| gz.flush())
            .and_then(|()| gz.finish())
            .map_err(|e| format!("rendering /metrics: {e}"))?;
        drop(r);
        let rendered = Arc::new(Rendered {
            gzip: Bytes::from(body),
            plain_len,
            at: Instant::now(),
        });
        self.last_render = Some(start.elapsed());
        if let Ok(mut c) = shared.cache.lock() {
            *c = Some(rendered.clone());
        }
        Ok(rendered)
    }
}
