//! The line reader and record writer every tool uses.
//!
//! Reader rules: `\r\n` is accepted, blank lines are skipped, a bad line is reported on stderr
//! as `<tool>: line N: <cause>`, counted and skipped, so every good line still goes through; at
//! end of input [`LineReader::finish`] gives exit status 65 if any line was rejected. In strict
//! mode the first bad line stops the run.
//!
//! Writer rules: one `write_all` per record, flushed per record, so a reader downstream sees each
//! record as soon as it is made and records are never interleaved; a closed stdout
//! (`BrokenPipe`) becomes [`WriteError::Closed`], which binaries turn into a quiet exit 0.

use std::fmt::Display;
use std::io::{self, BufRead, Write};

use serde::Serialize;

use crate::Exit;

/// Reads input lines and keeps the bad-line accounting.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    tool: &'static str,
    strict: bool,
    line_no: u64,
    rejected: u64,
    buf: String,
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

impl<R: BufRead> LineReader<R> {
    /// A reader that reports as `tool`.
    pub fn new(inner: R, tool: &'static str, strict: bool) -> Self {
        LineReader {
            inner,
            tool,
            strict,
            line_no: 0,
            rejected: 0,
            buf: String::with_capacity(4096),
        }
    }

    /// The next non-blank line and its 1-based number, or `None` at end of input.
    /// A line that is not UTF-8 is rejected here and skipped.
    pub fn next_line(&mut self) -> Result<Option<(u64, &str)>, ReadError> {
        loop {
            self.buf.clear();
            // read_line validates UTF-8 once; on invalid bytes it consumes the line and leaves
            // the buffer empty, which is exactly "report and skip".
            match self.inner.read_line(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.line_no += 1;
                    let line = self.line_no;
                    self.reject(line, "not valid UTF-8")?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.line_no += 1;
            let end = self.buf.trim_end_matches(['\n', '\r']).len();
            if self.buf[..end].trim_start().is_empty() {
                continue;
            }
            return Ok(Some((self.line_no, &self.buf[..end])));
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

/// Writes one record per line, flushed per record.
#[derive(Debug)]
pub struct RecordWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// Wraps `inner`; it should be unbuffered or line-flushed (the writer flushes anyway).
    pub fn new(inner: W) -> Self {
        RecordWriter {
            inner,
            buf: Vec::with_capacity(4096),
        }
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

    /// Writes the buffer as one record (adding the newline if missing) and flushes.
    pub fn emit(&mut self) -> Result<(), WriteError> {
        if self.buf.last() != Some(&b'\n') {
            self.buf.push(b'\n');
        }
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
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
mod tests {
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
