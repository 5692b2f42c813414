//! The bounded queue between the pipeline stage and one delivery worker. Pushing never waits:
//! a newer notification for a group already queued replaces the queued one (each carries the
//! group's full state), and one that finds the queue full is refused for the caller to count.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// The queue and what the worker is told through it.
#[derive(Debug)]
pub(crate) struct LaneState<T> {
    pub queue: VecDeque<T>,
    /// End of input: the worker stops by then (delivery budget).
    pub deadline: Option<Instant>,
    /// The worker has nothing it can do now (empty, backing off, or done).
    pub idle: bool,
    /// The worker has exited.
    pub done: bool,
    /// The worker is to exit once its queue is handled.
    pub stop: bool,
    /// Entries were written to the spool behind the worker's back: look again now.
    pub rescan: bool,
}

/// A queue with one consumer thread.
#[derive(Debug)]
pub(crate) struct Lane<T> {
    state: Mutex<LaneState<T>>,
    cv: Condvar,
    cap: usize,
}

/// What became of a pushed item.
#[derive(Debug)]
pub(crate) enum Pushed<T> {
    Queued,
    Superseded,
    /// The queue was full: the item is handed back.
    Full(T),
}

impl<T> Lane<T> {
    pub fn new(cap: usize) -> Self {
        Lane {
            state: Mutex::new(LaneState {
                queue: VecDeque::new(),
                deadline: None,
                idle: true,
                done: false,
                stop: false,
                rescan: false,
            }),
            cv: Condvar::new(),
            cap: cap.max(1),
        }
    }

    /// The state; a worker that panicked while holding it leaves it usable.
    pub fn lock(&self) -> MutexGuard<'_, LaneState<T>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `item`, merging it into a queued item it supersedes (`same`, `merge`).
    pub fn push(
        &self,
        item: T,
        same: impl Fn(&T, &T) -> bool,
        merge: impl FnOnce(T, T) -> T,
    ) -> Pushed<T> {
        let mut st = self.lock();
        let r = if let Some(i) = st.queue.iter().position(|q| same(q, &item)) {
            if let Some(old) = st.queue.remove(i) {
                st.queue.insert(i, merge(old, item));
            }
            Pushed::Superseded
        } else if st.queue.len() >= self.cap {
            return Pushed::Full(item);
        } else {
            st.queue.push_back(item);
            Pushed::Queued
        };
        st.idle = false;
        drop(st);
        self.cv.notify_all();
        r
    }

    /// Everything queued, the deadline, and whether to stop.
    pub fn take(&self) -> (Vec<T>, Option<Instant>, bool) {
        let mut st = self.lock();
        (st.queue.drain(..).collect(), st.deadline, st.stop)
    }

    /// Whether the spool was written behind the worker's back (and clears it).
    pub fn take_rescan(&self) -> bool {
        std::mem::take(&mut self.lock().rescan)
    }

    /// Asks the worker to look at the spool again.
    pub fn rescan(&self) {
        let mut st = self.lock();
        st.rescan = true;
        st.idle = false;
        drop(st);
        self.cv.notify_all();
    }

    /// Sleeps until something is queued, the deadline changes from `seen`, or `until`.
    pub fn wait(&self, seen: Option<Instant>, until: Option<Instant>) {
        let mut st = self.lock();
        st.idle = true;
        self.cv.notify_all();
        loop {
            if !st.queue.is_empty() || st.deadline != seen || st.stop || st.rescan {
                return;
            }
            let now = Instant::now();
            st = match until {
                Some(u) if u <= now => return,
                Some(u) => match self.cv.wait_timeout(st, u - now) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                },
                None => self
                    .cv
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
    }

    /// Tells the worker to stop by `deadline` (an earlier one stays).
    pub fn stop_by(&self, deadline: Instant) {
        let mut st = self.lock();
        st.deadline = Some(st.deadline.map_or(deadline, |d| d.min(deadline)));
        drop(st);
        self.cv.notify_all();
    }

    /// Tells the worker to exit once its queue is handled.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }

    /// Marks the worker busy (it took work) or done (it exited).
    pub fn set_busy(&self) {
        self.lock().idle = false;
    }

    pub fn set_done(&self) {
        let mut st = self.lock();
        st.done = true;
        st.idle = true;
        drop(st);
        self.cv.notify_all();
    }

    /// Waits until the worker is idle with nothing queued (or done); false at `until`.
    pub fn wait_for(&self, until: Instant, done: bool) -> bool {
        let mut st = self.lock();
        loop {
            let ok = if done {
                st.done
            } else {
                st.done || (st.idle && st.queue.is_empty())
            };
            if ok {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            st = match self.cv.wait_timeout(st, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Counters of one receiver (or Alertmanager instance), updated by its worker.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub superseded: AtomicU64,
    pub retries: AtomicU64,
    /// Notifications the worker holds: in the spool, or in memory where it could not write.
    pub spooled: AtomicUsize,
    pub unspooled: AtomicUsize,
    pub last_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn error(&self, e: &str) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_owned());
    }
}
