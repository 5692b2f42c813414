//! The fleet endpoint, a fifth job: `--listen ADDR` serves `/metrics` (Prometheus text, from
//! `ugro_metrics`) and `/healthz` over HTTP, from the watcher's current view and without
//! touching the polling path.
//!
//! * The pipeline thread and the live loop hand what they learn (samples and their scores,
//!   breaker states, alerts, each node's polls, the watcher's own figures) to a [`Feed`]: a
//!   [`mailbox`] that keeps the newest entry per key (per node and kind, per alert), so it is
//!   bounded by the fleet, never waits, and loses no alert's resolution the way a dropping
//!   channel would. Putting an entry is a hash-map insert under a lock that nothing holds for
//!   longer than that.
//! * A metrics thread ([`render`]) owns the node table, applies the mailbox every few seconds
//!   and before each render, and renders on demand: at most once per `--metrics-cache`, one
//!   render at a time however many scrapes arrive. The text (35 MB for 1 000 nodes × 8 GPUs
//!   of real probe lines, 1.6 MB gzipped) is streamed into a gzip encoder and only the
//!   compressed body is kept.
//! * An HTTP thread ([`http`], hyper on a runtime of its own) serves the cached body as it is
//!   to scrapers that accept gzip (Prometheus does) and inflates it while sending to the
//!   others, so a slow or stalled scraper holds a few kilobytes and its own connection, never
//!   the table, the loop or the other scrapers. Both threads run at a lower priority (nice 10,
//!   where the system allows it).
//! * `/healthz` ([`health`]) answers from the loop's heartbeat alone, also while a render runs.

mod health;
mod http;
pub mod mailbox;
mod render;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ugro_metrics::{FiringAlert, Names, PollStats, WatcherStats};
use ugro_types::Score;
use ugro_types::view::BreakerView;

pub use health::{Health, Verdict};
use mailbox::{Key, Mailbox, Update};

/// What the endpoint is started with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Which metric names to write.
    pub names: Names,
    /// How long a rendered body is served again.
    pub cache: Duration,
}

/// `--listen`: `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or a bare `PORT` (on 127.0.0.1).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|e| format!("port {port:?}: {e}"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if s.starts_with(':') {
        return Err(format!(
            "{s:?} names no address: give 127.0.0.1{s} (or 0.0.0.0{s} with --listen-non-loopback)"
        ));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not IP:PORT, [IPv6]:PORT, localhost:PORT or PORT"))
}

/// Refuses an address other than loopback unless it was asked for: the endpoint has no
/// authentication or TLS, and its body names every node and GPU of the fleet.
pub fn check_listen(addr: SocketAddr, non_loopback: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || non_loopback {
        return Ok(());
    }
    Err(format!(
        "--listen {addr}: not a loopback address; the endpoint has no authentication or TLS and \
         names every node and GPU: add --listen-non-loopback to serve it there"
    ))
}

/// State shared by the feeding side, the metrics thread and the HTTP thread.
#[derive(Debug)]
pub(crate) struct Shared {
    mailbox: Mutex<Mailbox>,
    health: Mutex<Health>,
    /// The worst poll lateness (ms) since the last render; the loop raises it, a render takes it.
    lateness_ms: AtomicU64,
    cache: Mutex<Option<Arc<render::Rendered>>>,
    jobs: Mutex<mpsc::Sender<render::Job>>,
    ttl: Duration,
}

/// The running endpoint.
#[derive(Debug)]
pub struct Endpoint {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Endpoint {
    /// Binds the address and starts the metrics and HTTP threads.
    pub fn start(opts: &Options) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(opts.listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            mailbox: Mutex::new(Mailbox::default()),
            health: Mutex::new(Health::starting(Instant::now())),
            lateness_ms: AtomicU64::new(0),
            cache: Mutex::new(None),
            jobs: Mutex::new(jobs_tx),
            ttl: opts.cache,
        });
        let metrics = render::spawn(shared.clone(), opts.names, jobs_rx)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = http::spawn(listener, shared.clone(), stopped)?;
        tracing::info!("serving /metrics and /healthz on http://{addr}");
        Ok(Endpoint {
            shared,
            addr,
            stop: Some(stop),
            threads: vec![metrics, server],
        })
    }

    /// The address it listens on (the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The feeding side, for the pipeline thread and the live loop.
    pub fn feed(&self) -> Feed {
        Feed(self.shared.clone())
    }

    /// Stops serving: connections in progress are dropped, the threads joined.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Ok(j) = self.shared.jobs.lock() {
            let _ = j.send(render::Job::Stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The feeding side of the endpoint: every call puts one entry in the mailbox and returns.
#[derive(Debug, Clone)]
pub struct Feed(Arc<Shared>);

impl Feed {
    fn put(&self, key: Key, update: Update) {
        if let Ok(mut m) = self.0.mailbox.lock() {
            m.put(key, update);
        }
    }

    /// A node's latest sample line, with its score when the line does not carry it (raw mode).
    pub fn sample(&self, node: &str, line: String, score: Option<Score>) {
        let score = score.map(Box::new);
        self.put(Key::Sample(node.to_owned()), Update::Sample { line, score });
    }

    /// A node's breaker state (annotation or transition).
    pub fn breaker(&self, node: &str, b: BreakerView) {
        self.put(Key::Breaker(node.to_owned()), Update::Breaker(b));
    }

    /// An alert: firing, or resolved (`None`).
    pub fn alert(&self, fingerprint: &str, firing: Option<FiringAlert>) {
        self.put(Key::Alert(fingerprint.to_owned()), Update::Alert(firing));
    }

    /// A node's polls.
    pub fn poll(&self, node: &str, p: PollStats) {
        self.put(Key::Poll(node.to_owned()), Update::Poll(p));
    }

    /// The nodes being watched (at start and after each reload): the others are dropped.
    pub fn nodes(&self, names: Vec<String>) {
        self.put(Key::Nodes, Update::Nodes(names));
    }

    /// The watcher's own figures.
    pub fn watcher(&self, w: WatcherStats) {
        self.put(Key::Watcher, Update::Watcher(Box::new(w)));
    }

    /// A poll started `ms` late.
    pub fn late(&self, ms: u64) {
        self.0.lateness_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The loop's heartbeat and the state writer's health, for `/healthz`.
    pub fn health(&self, f: impl FnOnce(&mut Health)) {
        if let Ok(mut h) = self.0.health.lock() {
            f(&mut h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_to_loopback_and_others_need_the_flag() {
        let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_listen("9108"), Ok(lo(9108)));
        assert_eq!(parse_listen("localhost:9108"), Ok(lo(9108)));
        assert_eq!(
            parse_listen("127.0.0.2:1"),
            "127.0.0.2:1".parse().map_err(|_| String::new())
        );
        assert!(
            parse_listen(":9108")
                .unwrap_err()
                .contains("127.0.0.1:9108")
        );
        assert!(parse_listen("example.org:80").is_err());
        assert!(parse_listen("[::1]:9108").is_ok_and(|a| a.ip().is_loopback()));
        let any: SocketAddr = "0.0.0.0:9108".parse().unwrap();
        assert!(
            check_listen(any, false)
                .unwrap_err()
                .contains("--listen-non-loopback")
        );
        assert!(check_listen(any, true).is_ok());
        let v6: SocketAddr = "[2001:db8::1]:9108".parse().unwrap();
        assert!(check_listen(v6, false).is_err());
        assert!(check_listen(lo(1), false).is_ok());
    }
}
