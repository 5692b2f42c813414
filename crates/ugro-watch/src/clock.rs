//! Time for the live loop and the scheduler, injected so that the loop runs under tokio's
//! paused time in tests and the scheduler under a fake clock in simulations.

use std::time::Duration;

use ugro_types::Timestamp;

/// Time as the scheduler sees it.
pub trait Clock: Send + Sync {
    /// Monotonic milliseconds since an arbitrary start.
    fn mono_ms(&self) -> u64;
    /// Wall-clock time for records.
    fn wall(&self) -> Timestamp;
}

/// The live loop's clock: monotonic time is tokio's (so it stands still under
/// `tokio::time::pause` and moves with `advance`), wall time is the system clock's, or, for
/// tests under paused time, a fixed origin plus tokio's elapsed time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: tokio::time::Instant,
    wall0: Option<Timestamp>,
}

impl TokioClock {
    /// Tokio time and the system's wall clock.
    pub fn system() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            wall0: None,
        }
    }

    /// Tokio time, with wall time `wall0` plus the tokio time elapsed since now.
    pub fn starting_at(wall0: Timestamp) -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            wall0: Some(wall0),
        }
    }
}

impl Clock for TokioClock {
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn wall(&self) -> Timestamp {
        match self.wall0 {
            Some(w) => w.add(self.start.elapsed()),
            None => Timestamp::now(),
        }
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock {
    now: std::sync::atomic::AtomicU64,
    wall0: i64,
}

impl FakeClock {
    /// Starts at monotonic 0 and wall time `wall0`.
    pub fn new(wall0: Timestamp) -> Self {
        FakeClock {
            now: 0.into(),
            wall0: wall0.millis(),
        }
    }
    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.now.fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
    /// Sets monotonic time (never backwards).
    pub fn set(&self, ms: u64) {
        self.now.fetch_max(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn mono_ms(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn wall(&self) -> Timestamp {
        Timestamp(
            self.wall0
                .saturating_add(i64::try_from(self.mono_ms()).unwrap_or(i64::MAX)),
        )
    }
}
