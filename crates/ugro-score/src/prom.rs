//! `--format prometheus`: the latest scored sample of every node (with its breaker state, and
//! the alerts firing, when the input carries them) as one Prometheus exposition, rewritten as
//! records arrive: to standard output as one block per rewrite, or to `--output FILE`
//! replaced atomically for node_exporter's textfile collector.
//!
//! When to rewrite: when the input pauses (nothing more is ready to read), at most once per
//! [`MIN_REWRITE_GAP`]; an input that never pauses still gets a rewrite every gap; and at end of
//! input. So `ugro-probe --interval 30s | ugro-score -f prometheus -o F` rewrites F after each
//! sample, and a watcher's stream of a thousand nodes rewrites it about once a second, not a
//! thousand times. The check runs only when the read buffer is empty, so it costs nothing
//! while a burst is being read.

use std::cell::RefCell;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ugro_metrics::{Names, NodeTable};
use ugro_support::output::{Destination, EmitError};
use ugro_types::stage::{Emit, Stage, StageError};

use crate::Scorer;

/// The shortest time between two rewrites while records keep arriving.
pub const MIN_REWRITE_GAP: Duration = Duration::from_secs(1);

/// The node table and where its exposition goes.
#[derive(Debug)]
pub struct Sink {
    table: NodeTable,
    names: Names,
    to: Destination,
    dirty: bool,
    last: Option<Instant>,
    /// The first rewrite that failed: reading stops, and the run reports this.
    pub failed: Option<EmitError>,
}

impl Sink {
    /// A sink writing `names` to `file` (standard output without one).
    pub fn new(names: Names, file: Option<PathBuf>) -> Self {
        Sink {
            table: NodeTable::new(),
            names,
            to: Destination::new(file),
            dirty: false,
            last: None,
            failed: None,
        }
    }

    /// How long to wait for more input before rewriting; `None` when there is nothing new.
    pub fn wait_left(&self, now: Instant) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        let since = self
            .last
            .map_or(MIN_REWRITE_GAP, |t| now.saturating_duration_since(t));
        Some(MIN_REWRITE_GAP.saturating_sub(since))
    }

    /// Writes the exposition now.
    pub fn flush(&mut self, now: Instant) -> Result<(), EmitError> {
        let text = self.table.render(self.names, None);
        self.to.write(&text)?;
        self.dirty = false;
        self.last = Some(now);
        Ok(())
    }
}

/// The scorer, feeding what it emits into the sink.
#[derive(Debug)]
pub struct PromStage<'a> {
    /// The scorer (JSON format: its output lines are the scored records).
    pub scorer: &'a mut Scorer,
    /// Shared with the [`IdleReader`] that decides when to rewrite.
    pub sink: Rc<RefCell<Sink>>,
}

impl Stage for PromStage<'_> {
    fn process(&mut self, line: &str, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut sink = self.sink.borrow_mut();
        let mut bad = None;
        self.scorer.process(line, &mut |rec| {
            match std::str::from_utf8(rec)
                .map_err(|e| e.to_string())
                .and_then(|r| sink.table.ingest(r).map_err(|e| e.to_string()))
            {
                Ok(changed) => sink.dirty |= changed,
                Err(e) => bad = Some(e),
            }
            Ok(())
        })?;
        bad.map_or(Ok(()), |e| Err(StageError::Reject(e)))
    }

    fn finish(&mut self, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut sink = self.sink.borrow_mut();
        // A run that saw no record still writes its (empty) exposition: the file says "this
        // run", not whatever an earlier run left.
        if sink.failed.is_none()
            && (sink.dirty || sink.last.is_none())
            && let Err(e) = sink.flush(Instant::now())
        {
            sink.failed = Some(e);
        }
        Ok(())
    }
}

/// The input, read through a check before each refill of the read buffer: if the sink has news
/// and the input has nothing ready (or the gap since the last rewrite has passed), rewrite first.
#[derive(Debug)]
pub struct IdleReader<R> {
    inner: R,
    sink: Rc<RefCell<Sink>>,
}

impl<R: Read + AsFd> IdleReader<R> {
    /// Reads `inner` on behalf of `sink`.
    pub fn new(inner: R, sink: Rc<RefCell<Sink>>) -> Self {
        IdleReader { inner, sink }
    }

    /// True when input is ready within `wait` (or the check itself failed: then read, and let
    /// the read say what is wrong).
    fn ready_within(&self, wait: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.inner, PollFlags::IN)];
        let t = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        !matches!(poll(&mut fds, Some(&t)), Ok(0))
    }

    fn rewrite_if_due(&mut self) -> io::Result<()> {
        let Some(left) = self.sink.borrow().wait_left(Instant::now()) else {
            return Ok(());
        };
        if !left.is_zero() && self.ready_within(left) {
            return Ok(());
        }
        let mut sink = self.sink.borrow_mut();
        if let Err(e) = sink.flush(Instant::now()) {
            let msg = e.to_string();
            sink.failed = Some(e);
            return Err(io::Error::other(msg));
        }
        Ok(())
    }
}

impl<R: Read + AsFd> Read for IdleReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rewrite_if_due()?;
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_news_is_written_at_once_and_later_news_waits_out_the_gap() {
        let mut s = Sink::new(Names::Ugro, None);
        let t0 = Instant::now();
        assert_eq!(s.wait_left(t0), None, "nothing new: no rewrite");
        s.dirty = true;
        assert_eq!(s.wait_left(t0), Some(Duration::ZERO));
        s.dirty = false;
        s.last = Some(t0);
        s.dirty = true;
        let soon = t0 + Duration::from_millis(300);
        assert_eq!(s.wait_left(soon), Some(Duration::from_millis(700)));
        assert_eq!(
            s.wait_left(t0 + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
    }
}
