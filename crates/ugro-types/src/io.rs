//! The line reader and record writer every tool uses.
//!
//! Reader rules: `\r\n` is accepted, blank lines are skipped, a UTF-8 byte-order mark at the
//! start of the first line is skipped, a bad line is reported on stderr as
//! `<tool>: line N: <cause>`, counted and skipped, so every good line still goes through; at
//! end of input [`LineReader::finish`] gives exit status 65 if any line was rejected. In strict
//! mode the first bad line stops the run. A line longer than [`MAX_LINE_BYTES`] is rejected
//! without being held in memory: memory stays bounded whatever the input.
//!
//! Writer rules: each record is written whole (never interleaved with another) and, by default,
//! flushed at once. A filter's run loop ([`crate::stage::run`]) instead defers the flush
//! ([`RecordWriter::set_deferred`]) until its input has no complete line left to read, or
//! 32 KiB are waiting: a record still leaves at once when the stream is idle, and a backlog
//! goes out in writes of 32 KiB instead of one `write(2)` per record. A closed stdout
//! (`BrokenPipe`) becomes [`WriteError::Closed`], which binaries turn into a quiet exit 0.

use std::fmt::Display;
use std::io::{self, Read, Write};

use serde::Serialize;

use crate::Exit;

/// The longest input line any tool accepts, in bytes (16 MiB). A sample of the documented
/// maximum size ([`crate::limits`]) is far below it; a longer line is rejected and skipped
/// without being kept, so one runaway line cannot take the memory of the pipeline.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// What the reader asks of the source at once.
const READ_CHUNK: usize = 64 << 10;

/// Reads input lines and keeps the bad-line accounting. It buffers the source itself, so it
/// knows whether a complete line is waiting ([`LineReader::has_line`]) without a read that
/// could block.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    tool: &'static str,
    strict: bool,
    line_no: u64,
    rejected: u64,
    buf: Vec<u8>,
    /// `buf[start..end]` is read and not yet handed out.
    start: usize,
    end: usize,
    /// A newline known to be at this index (from [`LineReader::has_line`]).
    newline: Option<usize>,
    eof: bool,
    max_line: usize,
    /// `buf[..]` bounds of the line handed out last.
    line: (usize, usize),
}

/// Why reading stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The input could not be read.
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
    /// `--strict` and a line was bad (already reported on stderr).
    #[error("stopped at line {0} (--strict)")]
    Strict(u64),
}

impl ReadError {
    /// The exit status for this error.
    pub fn exit(&self) -> Exit {
        match self {
            ReadError::Io(_) => Exit::IoErr,
            ReadError::Strict(_) => Exit::DataErr,
        }
    }
}

/// What [`LineReader::next_entry`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Line N, good so far: [`LineReader::current`] is its text.
    Line(u64),
    /// Line N is refused by the reader.
    Bad(u64, BadLine),
}

/// Why the reader refuses a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    /// Longer than the limit (bytes); skipped without being kept.
    TooLong(usize),
    /// Not UTF-8.
    NotUtf8,
}

impl Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadLine::TooLong(max) => write!(f, "longer than {max} bytes; skipped"),
            BadLine::NotUtf8 => f.write_str("not valid UTF-8"),
        }
    }
}

/// A line as found in the buffer: where it is, or that it was too long.
enum Found {
    Line(usize, usize),
    TooLong,
}

impl<R: Read> LineReader<R> {
    /// A reader that reports as `tool`.
    pub fn new(inner: R, tool: &'static str, strict: bool) -> Self {
        LineReader {
            inner,
            tool,
            strict,
            line_no: 0,
            rejected: 0,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            newline: None,
            eof: false,
            max_line: MAX_LINE_BYTES,
            line: (0, 0),
        }
    }

    /// The source.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The same reader with another line limit (tests).
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.max_line = max;
        self
    }

    /// Whether a complete line (or the end of input) is already read, so that
    /// [`LineReader::next_line`] will not wait on the source. Blank lines already read are
    /// skipped (and counted) here, as `next_line` would skip them: a blank keep-alive line is
    /// not a line to hold output back for.
    pub fn has_line(&mut self) -> bool {
        if self.eof || self.newline.is_some() {
            return true;
        }
        while let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
            let (a, i) = (self.start, self.start + i);
            let mut body = &self.buf[a..i];
            if self.line_no == 0 {
                body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
            }
            if i - a > self.max_line || !body.iter().all(u8::is_ascii_whitespace) {
                self.newline = Some(i);
                return true;
            }
            self.line_no += 1;
            self.start = i + 1;
        }
        false
    }

    /// Reads once more from the source when no complete line is held and less than
    /// `limit` bytes are: for a caller that knows the read will not wait ([`ReadAhead::ready`]).
    /// False when nothing was read.
    pub fn read_more(&mut self, limit: usize) -> Result<bool, ReadError> {
        if self.eof || self.has_line() || self.end - self.start >= limit.min(self.max_line) {
            return Ok(false);
        }
        self.fill()?;
        Ok(true)
    }

    /// The next non-blank line and its 1-based number, or `None` at end of input.
    /// A line that is not UTF-8, or longer than [`MAX_LINE_BYTES`], is rejected here and
    /// skipped.
    pub fn next_line(&mut self) -> Result<Option<(u64, &str)>, ReadError> {
        loop {
            match self.next_entry()? {
                None => return Ok(None),
                Some(Entry::Line(n)) => return Ok(Some((n, self.current()))),
                Some(Entry::Bad(n, why)) => self.reject(n, why)?,
            }
        }
    }

    /// [`LineReader::next_line`] without the reporting: the next non-blank line (read it with
    /// [`LineReader::current`]) or a line the reader refuses, which the caller reports with
    /// [`LineReader::reject`] when its turn comes. A run loop that reads ahead
    /// ([`crate::stage::run_parallel`]) keeps the reports in line order this way.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        loop {
            let (mut a, mut b) = match self.find()? {
                None => return Ok(None),
                Some(Found::TooLong) => {
                    self.line_no += 1;
                    return Ok(Some(Entry::Bad(
                        self.line_no,
                        BadLine::TooLong(self.max_line),
                    )));
                }
                Some(Found::Line(a, b)) => (a, b),
            };
            self.line_no += 1;
            if b > a && self.buf[b - 1] == b'\r' {
                b -= 1;
            }
            if self.line_no == 1 && self.buf[a..b].starts_with(b"\xef\xbb\xbf") {
                a += 3;
            }
            if self.buf[a..b].iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Validated where it lies and handed out borrowed from the buffer (which moves on
            // only at the next call): no copy of the line. simdutf8 checks it at memory speed,
            // so checking it again to hand out the `&str` costs less than the copy did.
            if simdutf8::basic::from_utf8(&self.buf[a..b]).is_err() {
                return Ok(Some(Entry::Bad(self.line_no, BadLine::NotUtf8)));
            }
            self.line = (a, b);
            return Ok(Some(Entry::Line(self.line_no)));
        }
    }

    /// The line the last [`Entry::Line`] named, until the next call that reads (empty before
    /// the first).
    pub fn current(&self) -> &str {
        let (a, b) = self.line;
        simdutf8::basic::from_utf8(&self.buf[a..b]).unwrap_or_default()
    }

    /// Finds the next line in the buffer, reading more as needed: its bounds (without the
    /// newline), `TooLong` once an overlong line has been skipped, `None` at end of input.
    fn find(&mut self) -> Result<Option<Found>, ReadError> {
        let mut skipping = false;
        loop {
            let nl = match self.newline.take() {
                Some(i) => Some(i),
                None => {
                    memchr::memchr(b'\n', &self.buf[self.start..self.end]).map(|i| self.start + i)
                }
            };
            if let Some(i) = nl {
                let a = self.start;
                self.start = i + 1;
                // A long line may arrive whole in one read: its length is checked here too.
                if skipping || i - a > self.max_line {
                    return Ok(Some(Found::TooLong));
                }
                return Ok(Some(Found::Line(a, i)));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(skipping.then_some(Found::TooLong));
                }
                let a = self.start;
                self.start = self.end;
                return Ok(Some(if skipping || self.end - a > self.max_line {
                    Found::TooLong
                } else {
                    Found::Line(a, self.end)
                }));
            }
            if self.end - self.start > self.max_line {
                // Drop what is held of the overlong line and read on to its end.
                skipping = true;
                self.start = self.end;
            }
            self.fill()?;
        }
    }

    /// Reads once more from the source, keeping `buf[start..end]` (moved to the front, the
    /// buffer grown when a long line fills it).
    fn fill(&mut self) -> Result<(), ReadError> {
        // The last line handed out is gone once the buffer moves.
        self.line = (0, 0);
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 2 {
            let want = (self.buf.len() * 2).min(self.max_line + READ_CHUNK + 1);
            self.buf.resize(want.max(self.end + READ_CHUNK / 2), 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
    }

    /// Reports a bad line on stderr and counts it; in strict mode, stops.
    pub fn reject(&mut self, line: u64, cause: impl Display) -> Result<(), ReadError> {
        self.rejected += 1;
        report_bad_line(self.tool, line, &cause);
        if self.strict {
            Err(ReadError::Strict(line))
        } else {
            Ok(())
        }
    }

    /// Lines rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The number of the last line read.
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    /// The exit status at end of input: 65 if any line was rejected.
    pub fn finish(&self) -> Exit {
        if self.rejected > 0 {
            Exit::DataErr
        } else {
            Exit::Ok
        }
    }
}

/// Chunks [`ReadAhead`] may hold before its thread waits for the reader to catch up.
const READ_AHEAD_CHUNKS: usize = 16;

/// A source read on a thread of its own, up to [`READ_AHEAD_CHUNKS`] reads of 64 KiB ahead of
/// its consumer: [`ReadAhead::ready`] tells whether input is waiting, so a run loop can take a
/// backlog as one batch and flush its output only before a read that would wait. The thread
/// stops at end of input, on a read error (handed on to the consumer) or when the consumer is
/// dropped; a thread still blocked in `read` when the process exits goes with it. So the
/// source is read up to 1 MiB past where the consumer stopped (a `--strict` stop, a closed
/// stdout), and a thread reading `io::stdin()` holds its lock until it returns: for a tool
/// that exits when its run loop does, not for a caller that reads the source afterwards.
#[derive(Debug)]
pub struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    /// Chunks read, handed back to the thread to be filled again, rather than a new zeroed
    /// chunk per read freed on the other thread (about 1.5 % of the CPU of a backlog). The
    /// thread allocates only when none is waiting here, so no more chunks exist than were
    /// ever in flight at once (the queue's 16, the one being filled, the one being read).
    spent: std::sync::mpsc::Sender<Vec<u8>>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ReadAhead {
    /// Starts reading `inner` on a new thread.
    pub fn spawn<R: Read + Send + 'static>(mut inner: R) -> io::Result<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        let (tx, chunks) = std::sync::mpsc::sync_channel(READ_AHEAD_CHUNKS);
        let (spent, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = queued.clone();
        std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || {
                loop {
                    // A chunk handed back is zeroed only past what its last read filled.
                    let mut buf = reuse.try_recv().unwrap_or_default();
                    buf.resize(READ_CHUNK, 0);
                    // End of input is an empty chunk, so that a thread that died is told apart.
                    let got = match inner.read(&mut buf) {
                        Ok(n) => {
                            buf.truncate(n);
                            Ok(buf)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let last = !matches!(&got, Ok(b) if !b.is_empty());
                    count.fetch_add(1, SeqCst);
                    if tx.send(got).is_err() || last {
                        return;
                    }
                }
            })?;
        Ok(ReadAhead {
            chunks,
            spent,
            queued,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        })
    }

    /// Whether a read now returns at once because input (or a read error) is waiting; false at
    /// end of input too, until the reader has seen it.
    pub fn ready(&self) -> bool {
        self.pos < self.cur.len() || self.queued.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(got) => {
                    self.queued
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    let spent = std::mem::replace(&mut self.cur, got?);
                    if spent.capacity() > 0 {
                        // The thread may have stopped; then the chunk is simply freed.
                        let _ = self.spent.send(spent);
                    }
                    self.pos = 0;
                    self.ended = self.cur.is_empty();
                }
                // Gone without saying end of input: its source panicked.
                Err(_) => return Err(io::Error::other("the input's reader thread stopped")),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Prints `<tool>: line N: <cause>` on stderr. Kept separate so tools that read lines another
/// way (the watcher's probe replies) report in the same format.
pub fn report_bad_line(tool: &str, line: u64, cause: &dyn Display) {
    // Nothing sensible can be done if stderr itself is gone.
    let _ = writeln!(io::stderr().lock(), "{tool}: line {line}: {cause}");
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The reader went away (`BrokenPipe`): stop quietly with status 0.
    #[error("output closed")]
    Closed,
    /// Any other I/O error.
    #[error("writing output: {0}")]
    Io(io::Error),
    /// The record could not be serialised (a bug).
    #[error("serialising a record: {0}")]
    Json(#[from] serde_json::Error),
}

impl WriteError {
    /// The exit status for this error.
    pub fn exit(&self) -> Exit {
        match self {
            WriteError::Closed => Exit::Ok,
            WriteError::Io(_) => Exit::IoErr,
            WriteError::Json(_) => Exit::Software,
        }
    }
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Io(e)
        }
    }
}

/// Writes one record per line: flushed per record, or deferred ([`RecordWriter::set_deferred`])
/// until [`RecordWriter::flush`] or until [`DEFER_BYTES`] are waiting.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// Records written while deferred and not yet handed to `inner`.
    pending: Vec<u8>,
    deferred: bool,
}

/// How much a deferred writer keeps before it writes anyway. Half a pipe's 64 KiB: a write as
/// large as the pipe waits for its reader to empty it, on every write, so the writer stops
/// while the reader works (measured: ugro-score --threads 1 into `cat` on the other CPU went
/// from 44 000 to 64 000 lines/s with 16 KiB instead of 64 KiB); 32 KiB wakes the reader half as
/// often as 16 KiB (all CPUs, 4.8 KB lines: about 120 000 against 108 000 lines/s).
pub const DEFER_BYTES: usize = 32 << 10;

impl<W: Write> RecordWriter<W> {
    /// Wraps `inner`; it should be unbuffered or line-flushed (the writer flushes anyway).
    pub fn new(inner: W) -> Self {
        RecordWriter {
            inner,
            buf: Vec::with_capacity(4096),
            pending: Vec::new(),
            deferred: false,
        }
    }

    /// Defers flushing: records collect (each still whole) until [`RecordWriter::flush`], or
    /// until [`DEFER_BYTES`] wait. Turning it off flushes what waits.
    pub fn set_deferred(&mut self, on: bool) -> Result<(), WriteError> {
        if !on {
            self.flush()?;
        } else if self.pending.capacity() == 0 {
            self.pending.reserve(DEFER_BYTES + 8192);
        }
        self.deferred = on;
        Ok(())
    }

    /// Writes what waits and flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if !self.pending.is_empty() {
            let r = self.inner.write_all(&self.pending);
            self.pending.clear();
            r?;
        }
        self.inner.flush()?;
        Ok(())
    }

    /// Serialises `record` as one line.
    pub fn write_record<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<(), WriteError> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, record)?;
        self.buf.push(b'\n');
        self.emit()
    }

    /// Writes an already-serialised record (without its newline).
    pub fn write_raw(&mut self, line: &[u8]) -> Result<(), WriteError> {
        if self.deferred {
            // Straight into the waiting batch: no copy through `buf`.
            self.pending.extend_from_slice(line);
            self.pending.push(b'\n');
            return self.maybe_write();
        }
        self.buf.clear();
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.emit()
    }

    /// Writes text for people (tables, nagios lines) as is; flushed like a record.
    pub fn write_text(&mut self, text: &str) -> Result<(), WriteError> {
        self.buf.clear();
        self.buf.extend_from_slice(text.as_bytes());
        self.emit()
    }

    /// A buffer to build a record in; finish with [`RecordWriter::emit`]. Lets a tool splice
    /// its annotation into the input line without a second copy.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        &mut self.buf
    }

    /// Writes the buffer as one record (adding the newline if missing): flushed at once, or
    /// added to the waiting batch when deferred.
    pub fn emit(&mut self) -> Result<(), WriteError> {
        if self.buf.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
        if self.deferred {
            self.pending.extend_from_slice(&self.buf);
            return self.maybe_write();
        }
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        Ok(())
    }

    fn maybe_write(&mut self) -> Result<(), WriteError> {
        if self.pending.len() >= DEFER_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The underlying writer (what waits in a deferred batch is not in it yet).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Drop for RecordWriter<W> {
    /// Records already made still go out when a run stops early.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.flush();
        }
    }
}

/// Splices `"key":value` into a JSON object line just before its closing brace, so a
/// pass-through tool adds its field without re-serialising (and so without reordering or
/// losing) anything it does not own. Returns false if `line` does not end in `}`.
///
/// The caller must know that `key` is not already present (a typed parse of the line tells);
/// otherwise use [`set_field`].
pub fn splice_field(out: &mut Vec<u8>, line: &str, key: &str, value: &[u8]) -> bool {
    let trimmed = line.trim_end();
    let Some(body) = trimmed.strip_suffix('}') else {
        return false;
    };
    let body = body.trim_end();
    out.extend_from_slice(body.as_bytes());
    if !body.ends_with('{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(value);
    out.push(b'}');
    true
}

/// Replaces or adds top-level `key` in a JSON object line. Every other member is copied as the
/// bytes it arrived as (numbers beyond f64, `1.10`, escapes), in its order: the slow path for
/// records that already carry `key`.
pub fn set_field(
    line: &str,
    key: &str,
    value: serde_json::Value,
) -> Result<Vec<u8>, serde_json::Error> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;
    type Members<'a> = Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>;
    struct Object;
    impl<'de> Visitor<'de> for Object {
        type Value = Members<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry()? {
                members.push(member);
            }
            Ok(members)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let members = (&mut de).deserialize_map(Object)?;
    de.end()?;
    let mut out = Vec::with_capacity(line.len() + 256);
    out.push(b'{');
    let mut replaced = false;
    for (i, (k, raw)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, k)?;
        out.push(b':');
        if k == key {
            serde_json::to_writer(&mut out, &value)?;
            replaced = true;
        } else {
            out.extend_from_slice(raw.get().as_bytes());
        }
    }
    if !replaced {
        if !members.is_empty() {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key)?;
        out.push(b':');
        serde_json::to_writer(&mut out, &value)?;
    }
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn reader_accepts_crlf_and_skips_blank_lines() {
        let input = b"{\"a\":1}\r\n\r\n   \n{\"b\":2}\n";
        let mut r = LineReader::new(&input[..], "t", false);
        assert_eq!(r.next_line().unwrap(), Some((1, "{\"a\":1}")));
        assert_eq!(r.next_line().unwrap(), Some((4, "{\"b\":2}")));
        assert_eq!(r.next_line().unwrap(), None);
        assert_eq!(r.finish(), Exit::Ok);
    }

    #[test]
    fn reader_rejects_invalid_utf8_and_keeps_going() {
        let input = b"\xff\xfe\n{\"ok\":1}\n";
        let mut r = LineReader::new(&input[..], "t", false);
        assert_eq!(r.next_line().unwrap(), Some((2, "{\"ok\":1}")));
        assert_eq!(r.rejected(), 1);
        assert_eq!(r.finish(), Exit::DataErr);
    }

    #[test]
    fn a_byte_order_mark_is_skipped_on_the_first_line_only() {
        let input = b"\xef\xbb\xbf{\"a\":1}\n\xef\xbb\xbf{\"b\":2}\n";
        let mut r = LineReader::new(&input[..], "t", false);
        assert_eq!(r.next_line().unwrap(), Some((1, "{\"a\":1}")));
        // Later, a mark is content (and the JSON parser will say so).
        assert_eq!(r.next_line().unwrap(), Some((2, "\u{feff}{\"b\":2}")));
    }

    #[test]
    fn an_overlong_line_is_rejected_without_being_kept_and_the_next_one_is_read() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend_from_slice(b"\n{\"b\":2}\nyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
        let mut r = LineReader::new(&input[..], "t", false).with_max_line(100);
        assert_eq!(r.next_line().unwrap(), Some((1, "{\"a\":1}")));
        assert_eq!(r.next_line().unwrap(), Some((3, "{\"b\":2}")));
        assert_eq!(
            r.next_line().unwrap().map(|(n, l)| (n, l.len())),
            Some((4, 36))
        );
        assert_eq!(r.next_line().unwrap(), None);
        assert_eq!(r.rejected(), 1);
        // With a lower limit the last line, without its newline, is overlong too.

        let mut r = LineReader::new(&input[..], "t", false).with_max_line(20);
        while r.next_line().unwrap().is_some() {}
        assert_eq!(r.rejected(), 2);
        assert!(r.buf.len() < 200_000, "{}", r.buf.len());
    }

    /// Hands out its input `step` bytes per read, as a pipe does (the run loop's tests use
    /// it too).
    pub(crate) struct Dribble {
        data: Vec<u8>,
        step: usize,
        at: usize,
    }
    impl Dribble {
        pub(crate) fn new(data: &[u8], step: usize) -> Self {
            Dribble {
                data: data.to_vec(),
                step,
                at: 0,
            }
        }
    }
    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.data.len() - self.at).min(buf.len());
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn lines_split_across_reads_are_whole_and_has_line_says_when_one_is_ready() {
        let mut input = Vec::new();
        for i in 0..500 {
            input.extend_from_slice(
                format!("{{\"n\":{i},\"pad\":\"{}\"}}\r\n", "p".repeat(i % 300)).as_bytes(),
            );
        }
        for chunk in [1, 7, 4096, 1 << 20] {
            let mut r = LineReader::new(Dribble::new(&input, chunk), "t", false);
            let mut n = 0;
            while let Some((no, line)) = r.next_line().unwrap() {
                assert_eq!(no, n + 1);
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["n"], n);
                n += 1;
            }
            assert_eq!(n, 500, "chunk {chunk}");
        }
        let mut r = LineReader::new(Dribble::new(b"{}\n{}\n{", 1 << 20), "t", false);
        assert!(!r.has_line(), "nothing read yet");
        r.next_line().unwrap();
        assert!(r.has_line(), "the second line came with the first read");
        r.next_line().unwrap();
        assert!(!r.has_line(), "only part of a line is waiting");
    }

    #[test]
    fn blank_lines_already_read_are_skipped_by_has_line_and_counted() {
        let input = b"\xef\xbb\xbf\r\na\n\n  \r\n\nb";
        let mut r = LineReader::new(Dribble::new(input, 1 << 20), "t", false);
        assert_eq!(r.next_line().unwrap(), Some((2, "a")));
        // Three blank lines, then "b" without its newline: nothing to read without waiting.
        assert!(!r.has_line());
        assert_eq!(r.line_no(), 5);
        assert_eq!(r.next_line().unwrap(), Some((6, "b")));
    }

    #[test]
    fn read_ahead_hands_on_the_input_and_a_source_that_dies_is_an_error_not_the_end() {
        let mut all = Vec::new();
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        ReadAhead::spawn(io::Cursor::new(data.clone()))
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert!(all == data);
        // Short reads into chunks handed back after longer ones: no stale bytes come along.
        for step in [1000, 70_000, 65_536] {
            all.clear();
            ReadAhead::spawn(Dribble::new(&data, step))
                .unwrap()
                .read_to_end(&mut all)
                .unwrap();
            assert!(all == data, "reads of {step} bytes");
        }
        struct Dies;
        impl Read for Dies {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                panic!("a source that panics (this panic is the test's)")
            }
        }
        let e = ReadAhead::spawn(Dies)
            .unwrap()
            .read(&mut [0; 8])
            .unwrap_err();
        assert!(e.to_string().contains("reader thread stopped"), "{e}");
    }

    #[test]
    fn a_deferred_writer_batches_records_until_flushed_or_full() {
        #[derive(Default)]
        struct Writes(Vec<usize>);
        impl Write for Writes {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = RecordWriter::new(Writes::default());
        w.write_raw(b"{}").unwrap();
        assert_eq!(w.get_mut().0, [3], "not deferred: one write per record");
        w.set_deferred(true).unwrap();
        for _ in 0..10 {
            w.write_raw(b"{}").unwrap();
        }
        assert_eq!(w.get_mut().0.len(), 1, "deferred: nothing written yet");
        w.flush().unwrap();
        assert_eq!(w.get_mut().0, [3, 30]);
        let big = vec![b'x'; 10_000];
        for _ in 0..4 {
            w.write_raw(&big).unwrap();
        }
        assert_eq!(w.get_mut().0[2], 40_004, "written once 32 KiB wait");
        w.write_raw(b"{}").unwrap();
        w.set_deferred(false).unwrap();
        assert_eq!(
            *w.get_mut().0.last().unwrap(),
            3,
            "turning deferral off flushes"
        );
    }

    #[test]
    fn strict_reader_stops_at_first_bad_line() {
        let input = b"\xff\n{}\n";
        let mut r = LineReader::new(&input[..], "t", true);
        assert!(matches!(r.next_line(), Err(ReadError::Strict(1))));
    }

    #[test]
    fn splice_adds_a_field_and_keeps_the_rest() {
        let mut out = Vec::new();
        assert!(splice_field(
            &mut out,
            r#"{"a":1,"z":{"q":2}}  "#,
            "score",
            br#"{"s":3}"#
        ));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["z"]["q"], 2);
        assert_eq!(v["score"]["s"], 3);
        let mut out = Vec::new();
        assert!(splice_field(&mut out, "{ }", "k", b"1"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()["k"],
            1
        );
    }

    #[test]
    fn set_field_keeps_every_other_member_byte_for_byte() {
        let line =
            r#"{"big":12345678901234567890123,"f":1.10,"s":"\u00e9","score":{"old":1},"z":[1, 2]}"#;
        let out = set_field(line, "score", serde_json::json!(7)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"big":12345678901234567890123,"f":1.10,"s":"\u00e9","score":7,"z":[1, 2]}"#
        );
        let out = set_field("{}", "k", serde_json::json!(true)).unwrap();
        assert_eq!(out, br#"{"k":true}"#);
        assert!(set_field("[1]", "k", serde_json::json!(1)).is_err());
    }

    #[test]
    fn set_field_replaces_an_existing_key() {
        let out = set_field(
            r#"{"a":1,"score":{"old":true},"b":2}"#,
            "score",
            serde_json::json!({"new":true}),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["score"], serde_json::json!({"new":true}));
        assert_eq!(v["b"], 2);
    }

    #[test]
    fn broken_pipe_maps_to_closed() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = RecordWriter::new(Closed);
        let e = w.write_raw(b"{}").unwrap_err();
        assert!(matches!(e, WriteError::Closed));
        assert_eq!(e.exit(), Exit::Ok);
    }
}
