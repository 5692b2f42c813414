//! A pipeline stage: the shape `ugro-score`, `ugro-breaker` and `ugro-alert` share, so that the
//! same code runs behind a shell pipe (`ugro-score | ugro-breaker | ugro-alert`) and in-process
//! inside `ugro-watch --pipeline` ([`Chain`]), and the two give the same output.
//!
//! # The tick rule
//!
//! A stage keeps time by the records it reads, never by the wall clock: its clock is the newest
//! `ts` it has seen, and its timers (alert group_wait, group_interval, repeat_interval, resolve
//! timeouts; the breaker's automatic half-open) fire when a record moves that clock past them.
//! A record of kind `tick` carries nothing but its time. The run loop here — the one every
//! filter and ugro-watch use — hands every line to [`Stage::process`] first (score and breaker
//! pass a tick on, alert consumes it) and then, for an accepted tick, calls [`Stage::tick`] with
//! its `ts`, so a stage's timers run before the next record reaches it. The loop never ticks on
//! its own. So whatever writes the ticks decides when time passes, and a recorded stream gives
//! the same output in a shell pipeline, through [`Chain`], and again on replay.

use std::io::{Read, Write};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::io::{LineReader, ReadAhead, ReadError, RecordWriter, WriteError};
use crate::{Exit, Kind, Timestamp};

/// Where a stage sends its output lines (one record each, without the newline).
pub type Emit<'a> = dyn FnMut(&[u8]) -> Result<(), WriteError> + 'a;

/// What can go wrong while a stage handles a line.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// This line is bad: it is reported as `tool: line N: cause`, counted and skipped.
    #[error("{0}")]
    Reject(String),
    /// The output could not be written (a closed stdout stops quietly).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading the input failed, or `--strict` stopped at a bad line.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The stage cannot go on (its state file became unusable, say).
    #[error("{message}")]
    Fatal {
        /// Exit status.
        exit: Exit,
        /// What happened.
        message: String,
    },
}

impl StageError {
    /// The exit status.
    pub fn exit(&self) -> Exit {
        match self {
            StageError::Reject(_) => Exit::DataErr,
            StageError::Write(e) => e.exit(),
            StageError::Read(e) => e.exit(),
            StageError::Fatal { exit, .. } => *exit,
        }
    }
}

impl crate::ToolError for StageError {
    fn exit(&self) -> Exit {
        StageError::exit(self)
    }
}

/// One record-processing stage.
pub trait Stage {
    /// Handles one non-blank input line, emitting zero or more records.
    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError>;

    /// Lets time pass to `now` with no other input (group and repeat timers). The run loop
    /// calls it for each `tick` record the stage accepted (see the tick rule above).
    fn tick(&mut self, _now: Timestamp, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// End of input: emit what is pending and persist state.
    fn finish(&mut self, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Writes the stage's state file now, if it has one. A long-running host (ugro-watch)
    /// calls it to find out whether a state file that could not be written can be again.
    fn persist(&mut self) -> Result<(), StageError> {
        Ok(())
    }

    /// The number of the input line the next [`Stage::process`] call handles, for stages that
    /// report bad lines on behalf of others ([`Chain`]).
    fn line(&mut self, _n: u64) {}

    /// Lines this stage rejected and reported itself ([`Chain`]); they count for the exit
    /// status like lines the run loop rejected.
    fn rejected(&self) -> u64 {
        0
    }
}

/// The record kind of a line, read from its members up to `kind` only (a line's header comes
/// first in every record ugro writes, so this costs a few bytes of parsing, not the line).
/// `None` when the line is not a JSON object with a readable `kind` before any bad member.
pub fn peek_kind(line: &str) -> Option<Kind> {
    canonical_kind(line.as_bytes()).or_else(|| peek_kind_any_order(line))
}

/// The layout every ugro tool writes, `{"v":N,"kind":"NAME",…`, read without a deserializer:
/// the run loop asks every line for its kind, so this is on the filters' hot path. Anything
/// else (members in another order, spaces, an escaped name) goes to the general reader.
fn canonical_kind(b: &[u8]) -> Option<Kind> {
    let rest = b.strip_prefix(b"{\"v\":")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = rest.get(digits..).filter(|_| digits > 0)?;
    let rest = rest.strip_prefix(b",\"kind\":\"")?;
    let end = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    let name = std::str::from_utf8(&rest[..end]).ok()?;
    let de = de::value::StrDeserializer::<de::value::Error>::new(name);
    Kind::deserialize(de).ok()
}

/// [`peek_kind`] for any member order: the members before `kind` are skipped as JSON.
fn peek_kind_any_order(line: &str) -> Option<Kind> {
    struct IsKind(bool);
    impl<'de> de::Deserialize<'de> for IsKind {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = IsKind;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<IsKind, E> {
                    Ok(IsKind(v == "kind"))
                }
            }
            d.deserialize_str(V)
        }
    }
    struct Peek<'a>(&'a mut Option<Kind>);
    impl<'de> Visitor<'de> for Peek<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(IsKind(is_kind)) = map.next_key()? {
                if is_kind {
                    *self.0 = Some(map.next_value()?);
                    // Stopping here makes the deserializer complain about the rest of the
                    // object; the caller ignores that, the kind is already known.
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut kind = None;
    let mut de = serde_json::Deserializer::from_str(line);
    let _ = (&mut de).deserialize_map(Peek(&mut kind));
    kind
}

/// One line through one stage under the tick rule: processed, then, if it is a `tick` record
/// the stage accepted, its timers run to the tick's time.
pub fn step(stage: &mut dyn Stage, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
    step_with(stage, line, peek_kind(line), emit, |s, l, e| {
        s.process(l, e)
    })
}

/// [`step`] for a line whose kind is known, `process` doing the stage's part of the line.
fn step_with<S: Stage + ?Sized>(
    stage: &mut S,
    line: &str,
    kind: Option<Kind>,
    emit: &mut Emit<'_>,
    process: impl FnOnce(&mut S, &str, &mut Emit<'_>) -> Result<(), StageError>,
) -> Result<(), StageError> {
    process(stage, line, emit)?;
    if kind == Some(Kind::Tick) {
        let h = crate::parse_header(line).map_err(|e| StageError::Reject(e.to_string()))?;
        stage.tick(h.ts, emit)?;
    }
    Ok(())
}

/// How the run loop treats its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Stop at the first bad line (`--strict`).
    pub strict: bool,
    /// Hand records of kinds this build does not know to the stage (`--pass-unknown-kinds`,
    /// for sites that add kinds of their own) instead of rejecting them as bad lines.
    pub pass_unknown_kinds: bool,
}

impl From<bool> for Options {
    /// `strict`, with every other option at its default.
    fn from(strict: bool) -> Self {
        Options {
            strict,
            ..Options::default()
        }
    }
}

/// Why a line's kind is refused: one this build does not know. By default every tool
/// refuses those, because a typo (`"Sample"`, `"sample "`) would otherwise pass unscored and
/// unalerted.
pub fn unknown_kind(line: &str) -> String {
    #[derive(Deserialize)]
    struct KindOnly<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    let name = serde_json::from_str::<KindOnly<'_>>(line).map_or_else(|_| "?".into(), |k| k.kind);
    format!(
        "unknown kind {name:?} (this build reads sample, transition, fleet, alert, stats, error, tick; --pass-unknown-kinds passes other kinds through)"
    )
}

/// Runs a stage over an input stream with the contract's bad-line rules; returns 65 if any
/// line was rejected, 0 otherwise. `opts` is [`Options`] (or `strict` alone).
pub fn run<R: Read, W: Write>(
    tool: &'static str,
    opts: impl Into<Options>,
    input: R,
    out: &mut RecordWriter<W>,
    stage: &mut dyn Stage,
) -> Result<Exit, StageError> {
    run_counted(tool, opts, input, out, stage, &mut 0)
}

/// [`run`], also telling how many lines were rejected (set on error too), for tools whose
/// report depends on it (a check's status line).
///
/// Output is deferred while more input is already read ([`RecordWriter::set_deferred`]) and
/// flushed before any read that could wait: an idle stream sees each record at once, a
/// backlog goes out in large writes.
pub fn run_counted<R: Read, W: Write>(
    tool: &'static str,
    opts: impl Into<Options>,
    input: R,
    out: &mut RecordWriter<W>,
    stage: &mut dyn Stage,
    rejected: &mut u64,
) -> Result<Exit, StageError> {
    let opts = opts.into();
    let mut reader = LineReader::new(input, tool, opts.strict);
    out.set_deferred(true)?;
    let result = (|| {
        loop {
            if !reader.has_line() {
                out.flush()?;
            }
            let Some((n, line)) = reader.next_line()? else {
                break;
            };
            if let Some(cause) = one_line(stage, opts, (n, line), out, |s, l, e| s.process(l, e))? {
                reader.reject(n, cause)?;
            }
        }
        let mut emit = |rec: &[u8]| out.write_raw(rec);
        stage.finish(&mut emit)
    })();
    finish_run(&reader, out, stage, result, rejected)
}
/// One line through `stage` under the run loop's rules (the line number first, a kind this
/// build does not know refused, the tick rule), `process` doing the stage's part. A line the
/// stage or the kind rule refuses comes back as its cause, for the reader to report and count.
fn one_line<S: Stage + ?Sized, W: Write>(
    stage: &mut S,
    opts: Options,
    (n, line): (u64, &str),
    out: &mut RecordWriter<W>,
    process: impl FnOnce(&mut S, &str, &mut Emit<'_>) -> Result<(), StageError>,
) -> Result<Option<String>, StageError> {
    stage.line(n);
    let kind = peek_kind(line);
    if kind == Some(Kind::Other) && !opts.pass_unknown_kinds {
        return Ok(Some(unknown_kind(line)));
    }
    let mut emit = |rec: &[u8]| out.write_raw(rec);
    match step_with(stage, line, kind, &mut emit, process) {
        Ok(()) => Ok(None),
        Err(StageError::Reject(cause)) => Ok(Some(cause)),
        Err(e) => Err(e),
    }
}

/// The end of a run: output no longer deferred, the rejected lines counted, the exit status.
fn finish_run<R: Read, W: Write, S: Stage + ?Sized>(
    reader: &LineReader<R>,
    out: &mut RecordWriter<W>,
    stage: &S,
    result: Result<(), StageError>,
    rejected: &mut u64,
) -> Result<Exit, StageError> {
    let flushed = out.set_deferred(false);
    *rejected = reader.rejected() + stage.rejected();
    result?;
    flushed?;
    Ok(if *rejected > 0 {
        Exit::DataErr
    } else {
        reader.finish()
    })
}

/// A stage whose work on a line starts with a step that needs nothing of the stage (decoding
/// the line): [`run_parallel`] does that step for a backlog of lines on several threads, then
/// hands the results to the stage in line order. The stage's [`Stage::process`] must be
/// `process_prepared(line, prepare(line))`, so both loops give the same output.
pub trait Prepare: Stage {
    /// What the first step makes of a line (it may borrow from the line).
    type Prepared<'l>: Send;

    /// The first step. It runs on any thread and sees only the line.
    fn prepare(line: &str) -> Self::Prepared<'_>;

    /// The rest of [`Stage::process`], in line order.
    fn process_prepared<'l>(
        &mut self,
        line: &'l str,
        prepared: Self::Prepared<'l>,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError>;
}

/// The most input a read-ahead batch holds; lines beyond it wait for the next batch.
const BATCH_BYTES: usize = 1 << 20;
/// The most lines (good or refused) a batch holds, whatever their size.
const BATCH_LINES: usize = 16 << 10;
/// Fewer lines than this are prepared on the run loop's thread: sharing them out would cost
/// more than it saves.
const PARALLEL_MIN_LINES: usize = 8;

/// A line read ahead: its number and where it lies in the batch, or a line the reader refused.
enum Ahead {
    Line(u64, std::ops::Range<usize>),
    Bad(u64, crate::io::BadLine),
}

/// Lines read ahead, copied out of the reader so that the next batch can be read while this
/// one is processed.
#[derive(Default)]
struct Batch {
    text: String,
    ahead: Vec<Ahead>,
}

impl Batch {
    fn clear(&mut self) {
        self.text.clear();
        self.ahead.clear();
    }

    fn push(&mut self, reader: &LineReader<ReadAhead>, entry: crate::io::Entry) {
        match entry {
            crate::io::Entry::Bad(n, why) => self.ahead.push(Ahead::Bad(n, why)),
            crate::io::Entry::Line(n) => {
                let at = self.text.len();
                self.text.push_str(reader.current());
                self.ahead.push(Ahead::Line(n, at..self.text.len()));
            }
        }
    }

    fn full(&self) -> bool {
        self.text.len() >= BATCH_BYTES || self.ahead.len() >= BATCH_LINES
    }

    /// The good lines, in order: what the stage prepares.
    fn lines(&self) -> Vec<&str> {
        self.ahead
            .iter()
            .filter_map(|a| match a {
                Ahead::Line(_, r) => Some(&self.text[r.clone()]),
                Ahead::Bad(..) => None,
            })
            .collect()
    }
}

/// A batch with its lines prepared, ready to be processed.
type Ready<'b, S> = (&'b Batch, Vec<<S as Prepare>::Prepared<'b>>);

/// What the batches of one [`run_parallel`] share.
struct Run<'r, S: Prepare, W: Write> {
    stage: &'r mut S,
    reader: LineReader<ReadAhead>,
    opts: Options,
    out: &'r mut RecordWriter<W>,
    /// A read that failed after lines already read: returned once those have gone through.
    failed: Option<ReadError>,
}

/// [`run_counted`] for a [`Prepare`] stage, with the same output, reports, line numbers and
/// exit status. The input is read on a thread of its own ([`ReadAhead`]); every line already
/// read, up to 1 MiB, is one batch, prepared on `threads` threads and then processed in order.
/// With more than one thread the run loop itself runs on the decoding pool: while it processes
/// a batch, the lines read meanwhile are prepared as the next batch, and once it is done it
/// helps with them. Output is flushed before a read that would wait, as in [`run_counted`]: on
/// an idle stream each line is a batch of one and its record leaves at once.
pub fn run_parallel<S: Prepare + Send, R: Read + Send + 'static, W: Write + Send>(
    tool: &'static str,
    opts: impl Into<Options>,
    input: R,
    out: &mut RecordWriter<W>,
    stage: &mut S,
    threads: std::num::NonZeroUsize,
    rejected: &mut u64,
) -> Result<Exit, StageError> {
    let opts = opts.into();
    let Some(pool) = pool(threads) else {
        // One thread: nothing to overlap, so no reader thread and no copy into batches.
        return run_counted(tool, opts, input, out, stage, rejected);
    };
    let source = ReadAhead::spawn(input).map_err(ReadError::Io)?;
    out.set_deferred(true)?;
    let mut run = Run {
        stage,
        reader: LineReader::new(source, tool, opts.strict),
        opts,
        out,
        failed: None,
    };
    let result = pool.install(|| run.batches()).and_then(|()| {
        let mut emit = |rec: &[u8]| run.out.write_raw(rec);
        run.stage.finish(&mut emit)
    });
    finish_run(&run.reader, run.out, &*run.stage, result, rejected)
}

impl<S: Prepare + Send, W: Write + Send> Run<'_, S, W> {
    /// Every batch to the end of input, two buffers taking turns: one is processed while the
    /// other is read and prepared.
    fn batches(&mut self) -> Result<(), StageError> {
        let (mut a, mut b) = (Batch::default(), Batch::default());
        let Some(mut cur) = self.wait_for_batch(&mut a)? else {
            return Ok(());
        };
        loop {
            let Some(next) = self.turn(cur, &mut b)? else {
                return Ok(());
            };
            let Some(after) = self.turn(next, &mut a)? else {
                return Ok(());
            };
            cur = after;
        }
    }

    /// Processes `cur` and reads the batch after it into `next`: what is already at hand,
    /// prepared while `cur` is processed; or, when nothing is, after `cur` has been processed
    /// and flushed, waiting for it. `None` at the end of input.
    fn turn<'c, 'n>(
        &mut self,
        (cur, prepared): Ready<'c, S>,
        next: &'n mut Batch,
    ) -> Result<Option<Ready<'n, S>>, StageError> {
        next.clear();
        if self.failed.is_none() {
            self.read_at_hand(next);
        }
        if next.ahead.is_empty() {
            self.process(cur, prepared)?;
            return self.wait_for_batch(next);
        }
        let lines = next.lines();
        // The other threads of the pool take the next batch's lines while this one
        // processes, and this one joins them when it is done.
        let (done, next_prepared) =
            rayon::join(|| self.process(cur, prepared), || prepare_all::<S>(&lines));
        done?;
        Ok(Some((next, next_prepared)))
    }

    /// Flushes, returns a read error left over from reading ahead, then reads the next line
    /// (waiting for it) and every line at hand after it into `batch`, and prepares them.
    fn wait_for_batch<'n>(
        &mut self,
        batch: &'n mut Batch,
    ) -> Result<Option<Ready<'n, S>>, StageError> {
        self.out.flush()?;
        if let Some(e) = self.failed.take() {
            return Err(e.into());
        }
        batch.clear();
        let Some(first) = self.reader.next_entry()? else {
            return Ok(None);
        };
        batch.push(&self.reader, first);
        self.read_at_hand(batch);
        let prepared = prepare_all::<S>(&batch.lines());
        Ok(Some((batch, prepared)))
    }

    /// Adds the lines that can be had without waiting to `batch`, up to [`BATCH_BYTES`] and
    /// [`BATCH_LINES`]; a read that fails is kept in `failed`.
    fn read_at_hand(&mut self, batch: &mut Batch) {
        while !batch.full() {
            let entry = line_at_hand(&mut self.reader).and_then(|at_hand| match at_hand {
                true => self.reader.next_entry(),
                false => Ok(None),
            });
            match entry {
                Ok(Some(entry)) => batch.push(&self.reader, entry),
                Ok(None) => return,
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
    }

    /// Each line of a prepared batch through [`one_line`] in order, the reader's refusals
    /// reported in their place.
    fn process<'b>(
        &mut self,
        batch: &'b Batch,
        prepared: Vec<S::Prepared<'b>>,
    ) -> Result<(), StageError> {
        let mut prepared = prepared.into_iter();
        for a in &batch.ahead {
            let (n, cause) = match a {
                Ahead::Bad(n, why) => (*n, Some(why.to_string())),
                Ahead::Line(n, r) => {
                    let Some(p) = prepared.next() else {
                        unreachable!("prepare_all gives one value per line")
                    };
                    let line = &batch.text[r.clone()];
                    // The stage reads the same text `one_line` hands it; `line` carries its
                    // lifetime.
                    let process =
                        |s: &mut S, _: &str, e: &mut Emit<'_>| s.process_prepared(line, p, e);
                    (
                        *n,
                        one_line(self.stage, self.opts, (*n, line), self.out, process)?,
                    )
                }
            };
            if let Some(cause) = cause {
                self.reader.reject(n, cause)?;
            }
        }
        Ok(())
    }
}

/// Whether the next line can be had without waiting on the source, after taking in what the
/// source already holds (a line may be split across reads).
fn line_at_hand(reader: &mut LineReader<ReadAhead>) -> Result<bool, ReadError> {
    while !reader.has_line() {
        if !(reader.get_ref().ready() && reader.read_more(BATCH_BYTES)?) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The threads of one run: `None` for one thread (or when they cannot be started: the run is
/// then [`run_counted`]'s one-line loop).
fn pool(threads: std::num::NonZeroUsize) -> Option<rayon::ThreadPool> {
    (threads.get() > 1)
        .then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads.get())
                .build()
                .ok()
        })
        .flatten()
}

/// `S::prepare` over `lines`, in order: shared out on the pool this runs on when there are
/// enough lines.
fn prepare_all<'l, S: Prepare>(lines: &[&'l str]) -> Vec<S::Prepared<'l>> {
    use rayon::prelude::*;
    if lines.len() >= PARALLEL_MIN_LINES {
        lines
            .par_iter()
            .with_min_len(PARALLEL_MIN_LINES / 2)
            .map(|l| S::prepare(l))
            .collect()
    } else {
        lines.iter().map(|l| S::prepare(l)).collect()
    }
}

/// Stages composed in-process: each record one stage emits is the next stage's input line, and
/// each stage follows the tick rule exactly as it does behind a pipe. A record rejected by any
/// stage is reported under that stage's name with the number of the original input line, and
/// counted; with [`Chain::strict`] the first one stops the chain.
pub struct Chain {
    stages: Vec<(&'static str, Box<dyn Stage + Send>)>,
    rejected: u64,
    line_no: u64,
    strict: bool,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field(
                "stages",
                &self.stages.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

enum Step<'s> {
    Line(&'s str),
    Finish,
}

impl Chain {
    /// A chain of `(tool name, stage)` in pipeline order.
    pub fn new(stages: Vec<(&'static str, Box<dyn Stage + Send>)>) -> Self {
        Chain {
            stages,
            rejected: 0,
            line_no: 0,
            strict: false,
        }
    }

    /// Stops at the first rejected record (`--strict`).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Feeds one line (input line `line_no`) to the first stage; whatever the last stage emits
    /// goes to `emit`.
    pub fn feed(
        &mut self,
        line_no: u64,
        line: &str,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        self.line_no = line_no;
        let before = self.rejected;
        self.drive(0, Step::Line(line), emit)?;
        if self.strict && self.rejected > before {
            return Err(StageError::Read(ReadError::Strict(line_no)));
        }
        Ok(())
    }

    /// One stage's step. What the stage emitted goes on to the next stage even when the stage
    /// then fails (an alert already made is not lost because its state file could not be
    /// written); the failure is returned after that.
    fn drive(&mut self, at: usize, step: Step<'_>, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let Some((name, stage)) = self.stages.get_mut(at) else {
            if let Step::Line(l) = step {
                emit(l.as_bytes())?;
            }
            return Ok(());
        };
        let name = *name;
        let mut produced: Vec<Vec<u8>> = Vec::new();
        let mut collect = |rec: &[u8]| {
            produced.push(rec.to_vec());
            Ok(())
        };
        let r = match step {
            Step::Line(l) => step_fn(stage.as_mut(), l, &mut collect),
            Step::Finish => stage.finish(&mut collect),
        };
        let r = match r {
            Err(StageError::Reject(cause)) => {
                self.rejected += 1;
                crate::io::report_bad_line(name, self.line_no, &cause);
                Ok(())
            }
            r => r,
        };
        let mut first = r.err();
        for rec in produced {
            let text = String::from_utf8_lossy(&rec);
            if let Err(e) = self.drive(at + 1, Step::Line(&text), emit) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

// `step` under another name: inside `drive` the local `step` is the enum value.
fn step_fn(stage: &mut dyn Stage, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
    step(stage, line, emit)
}

impl Stage for Chain {
    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.feed(self.line_no, line, emit)
    }

    /// Nothing to do: a chain's stages tick on the `tick` records that reach them.
    fn tick(&mut self, _now: Timestamp, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Finishes every stage, in order, feeding what each emits to the next.
    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let mut first = None;
        for i in 0..self.stages.len() {
            if let Err(e) = self.drive(i, Step::Finish, emit) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Writes every stage's state file; the first failure, after trying them all.
    fn persist(&mut self) -> Result<(), StageError> {
        let mut first = None;
        for (_, s) in &mut self.stages {
            if let Err(e) = s.persist() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn line(&mut self, n: u64) {
        self.line_no = n;
    }

    fn rejected(&self) -> u64 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    struct Upper;
    impl Stage for Upper {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            if line.contains("bad") {
                return Err(StageError::Reject("contains bad".into()));
            }
            emit(line.to_uppercase().as_bytes()).map_err(StageError::from)
        }
    }
    struct Double;
    impl Stage for Double {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            emit(line.as_bytes())?;
            emit(line.as_bytes())?;
            Ok(())
        }
    }

    impl Prepare for Upper {
        type Prepared<'l> = Option<String>;
        fn prepare(line: &str) -> Option<String> {
            (!line.contains("bad")).then(|| line.to_uppercase())
        }
        fn process_prepared(
            &mut self,
            _: &str,
            upper: Option<String>,
            emit: &mut Emit<'_>,
        ) -> Result<(), StageError> {
            let upper = upper.ok_or_else(|| StageError::Reject("contains bad".into()))?;
            emit(upper.as_bytes()).map_err(StageError::from)
        }
    }

    /// Good lines, lines the stage refuses, lines the reader refuses (not UTF-8), unknown
    /// kinds, a tick, blank lines and CRLF, long enough for many batches.
    fn mixed_input() -> Vec<u8> {
        let mut input = Vec::new();
        for i in 0..3000 {
            let line: Vec<u8> = match i % 11 {
                3 => format!("bad {i}").into(),
                5 => vec![b'x', 0xff, b'\n'][..2].to_vec(),
                7 => format!(r#"{{"v":1,"kind":"Sample","n":{i}}}"#).into(),
                8 => br#"{"v":1,"kind":"tick","ts":"2026-11-28T00:00:00Z","node":"t"}"#.to_vec(),
                9 => b"   ".to_vec(),
                _ => format!("line {i} {}", "p".repeat(i % 700)).into(),
            };
            input.extend_from_slice(&line);
            input.extend_from_slice(if i % 4 == 0 { b"\r\n" } else { b"\n" });
        }
        input
    }

    #[test]
    fn run_parallel_gives_what_run_gives_whatever_the_batches_and_threads() {
        let input = mixed_input();
        let mut out = RecordWriter::new(Vec::new());
        let mut want_bad = 0;
        let want = run_counted("t", false, &input[..], &mut out, &mut Upper, &mut want_bad);
        let want_out = out.get_mut().clone();
        // Three lines in eleven are refused: by the stage, the reader and the kind rule.
        assert_eq!((want.unwrap(), want_bad), (Exit::DataErr, 3 * 273));
        for threads in [1, 2, 3] {
            for step in [7, 4096, 1 << 20] {
                let mut out = RecordWriter::new(Vec::new());
                let mut bad = 0;
                let n = std::num::NonZeroUsize::new(threads).unwrap();
                let src = crate::io::tests::Dribble::new(&input, step);
                let got = run_parallel("t", false, src, &mut out, &mut Upper, n, &mut bad);
                assert_eq!(
                    (got.unwrap(), bad),
                    (Exit::DataErr, want_bad),
                    "{threads} {step}"
                );
                assert!(
                    *out.get_mut() == want_out,
                    "threads {threads}, reads of {step}"
                );
            }
        }
    }

    #[test]
    fn run_parallel_stops_at_the_first_bad_line_when_strict() {
        let input = b"a\nb\nbad\nc\n".repeat(50);
        let mut out = RecordWriter::new(Vec::new());
        let n = std::num::NonZeroUsize::new(4).unwrap();
        let src = crate::io::tests::Dribble::new(&input, 1 << 20);
        let r = run_parallel("t", true, src, &mut out, &mut Upper, n, &mut 0);
        assert!(
            matches!(r, Err(StageError::Read(ReadError::Strict(3)))),
            "{r:?}"
        );
        assert_eq!(out.get_mut().as_slice(), b"A\nB\n");
    }

    #[test]
    fn run_parallel_flushes_each_record_before_it_waits_for_more_input() {
        use std::sync::mpsc;
        let (asked, _asked) = mpsc::channel();
        let (feed, more) = mpsc::channel();
        let src = Script {
            chunks: Default::default(),
            asked,
            more,
        };
        let (run, written) = spawn_run(src, Upper);
        // Each record must come out while the loop waits for the next line: a loop that
        // waited first would never answer (the timeout only turns that hang into a failure).
        for (line, want) in [("a\nb", "A\n"), ("\nc\n", "B\nC\n")] {
            feed.send(line.as_bytes().to_vec()).unwrap();
            expect_written(&written, want);
        }
        drop(feed);
        assert_eq!(run.join().unwrap().unwrap(), Exit::Ok);
    }

    /// Output that reaches the test when it is written.
    struct Tap(std::sync::mpsc::Sender<Vec<u8>>);
    impl Write for Tap {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `run_parallel` over `src` into `stage` on a thread of its own, with two decoding threads;
    /// its output comes to the returned receiver as it is written.
    fn spawn_run<S, R>(
        src: R,
        mut stage: S,
    ) -> (
        std::thread::JoinHandle<Result<Exit, StageError>>,
        std::sync::mpsc::Receiver<Vec<u8>>,
    )
    where
        S: Prepare + Send + 'static,
        R: Read + Send + 'static,
    {
        let (tap, written) = std::sync::mpsc::channel();
        let run = std::thread::spawn(move || {
            let mut out = RecordWriter::new(Tap(tap));
            let n = std::num::NonZeroUsize::new(2).unwrap();
            run_parallel("t", false, src, &mut out, &mut stage, n, &mut 0)
        });
        (run, written)
    }

    /// Reads `text.len()` bytes from `written`, failing (not hanging) if they never come.
    fn expect_written(written: &std::sync::mpsc::Receiver<Vec<u8>>, text: &str) {
        let wait = std::time::Duration::from_secs(120);
        let mut got = Vec::new();
        while got.len() < text.len() {
            got.extend(
                written
                    .recv_timeout(wait)
                    .expect("the record was not flushed"),
            );
        }
        assert_eq!(String::from_utf8(got).unwrap(), text);
    }

    /// Hands out `chunks` one per read, then says so on `asked` and waits for more on `more`
    /// (end of input when the test hangs up).
    struct Script {
        chunks: std::collections::VecDeque<Vec<u8>>,
        asked: std::sync::mpsc::Sender<()>,
        more: std::sync::mpsc::Receiver<Vec<u8>>,
    }
    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let chunk = match self.chunks.pop_front() {
                Some(c) => c,
                None => {
                    let _ = self.asked.send(());
                    match self.more.recv() {
                        Ok(c) => c,
                        Err(_) => return Ok(0),
                    }
                }
            };
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    /// Upper, but line `a` is held until the input's reader has asked for more than it had.
    struct Gate(std::sync::mpsc::Receiver<()>);
    impl Stage for Gate {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            self.process_prepared(line, (), emit)
        }
    }
    impl Prepare for Gate {
        type Prepared<'l> = ();
        fn prepare(_: &str) {}
        fn process_prepared(
            &mut self,
            l: &str,
            (): (),
            emit: &mut Emit<'_>,
        ) -> Result<(), StageError> {
            if l == "a" {
                let _ = self.0.recv();
            }
            emit(l.to_uppercase().as_bytes()).map_err(StageError::from)
        }
    }

    #[test]
    fn run_parallel_flushes_when_what_is_read_ahead_ends_in_part_of_a_line() {
        use std::sync::mpsc;
        let (asked, gate) = mpsc::channel();
        let (feed, more) = mpsc::channel();
        let chunks = [b"a\nb".to_vec(), b"c".to_vec()].into();
        let src = Script {
            chunks,
            asked,
            more,
        };
        let (run, written) = spawn_run(src, Gate(gate));
        // When `a` is done, "c" is read ahead and "bc" is still not a line: A must go out.
        expect_written(&written, "A\n");
        feed.send(b"\n".to_vec()).unwrap();
        expect_written(&written, "BC\n");
        drop(feed);
        assert_eq!(run.join().unwrap().unwrap(), Exit::Ok);
    }

    #[test]
    fn run_parallel_does_not_hold_a_record_back_for_blank_lines() {
        use std::sync::mpsc;
        let (asked, _asked) = mpsc::channel();
        let (feed, more) = mpsc::channel();
        let src = Script {
            chunks: [b"a\n\n \r\n".to_vec()].into(),
            asked,
            more,
        };
        let (run, written) = spawn_run(src, Upper);
        expect_written(&written, "A\n");
        feed.send(b"b\n".to_vec()).unwrap();
        expect_written(&written, "B\n");
        drop(feed);
        assert_eq!(run.join().unwrap().unwrap(), Exit::Ok);
    }

    #[test]
    fn run_parallel_writes_the_lines_read_before_a_read_error_then_fails() {
        struct Broken(bool);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(std::io::Error::other("disk on fire"));
                }
                buf[..5].copy_from_slice(b"a\nb\nc");
                Ok(5)
            }
        }
        let mut out = RecordWriter::new(Vec::new());
        let n = std::num::NonZeroUsize::new(2).unwrap();
        let r = run_parallel("t", false, Broken(false), &mut out, &mut Upper, n, &mut 0);
        assert!(
            matches!(r, Err(StageError::Read(ReadError::Io(_)))),
            "{r:?}"
        );
        assert_eq!(out.get_mut().as_slice(), b"A\nB\n");
    }

    /// Flags that order the overlap test's source and stage (only that test reads them).
    static GATE_READ_ON: AtomicBool = AtomicBool::new(false);
    static GATE_SOURCE_DONE: AtomicBool = AtomicBool::new(false);
    static GATE_B_PREPARED: AtomicBool = AtomicBool::new(false);

    /// Waits for `flag`, giving up after a minute (a guard, not a timing).
    fn wait_for(flag: &AtomicBool) -> bool {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !flag.load(SeqCst) {
            if std::time::Instant::now() > until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Reads "a"; then, once `go` is set (by the stage preparing "a", so that "a" is a batch of
    /// its own), "b" and "c"; then sets `ended` (both reads have been handed on) and reports end
    /// of input, or with `fail` an error.
    struct GatedSource {
        reads: u8,
        go: &'static AtomicBool,
        ended: &'static AtomicBool,
        fail: bool,
    }
    impl Read for GatedSource {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            let chunk: &[u8] = match self.reads {
                1 => b"a\n",
                2 => {
                    wait_for(self.go);
                    b"b\nc\n"
                }
                _ => {
                    self.ended.store(true, SeqCst);
                    if self.fail {
                        return Err(std::io::Error::other("disk on fire"));
                    }
                    b""
                }
            };
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    /// Refuses "a" unless "b" is prepared while "a" is processed.
    struct Overlap;
    impl Stage for Overlap {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            Self::prepare(line);
            self.process_prepared(line, (), emit)
        }
    }
    impl Prepare for Overlap {
        type Prepared<'l> = ();
        fn prepare(line: &str) {
            match line {
                "a" => {
                    GATE_READ_ON.store(true, SeqCst);
                    wait_for(&GATE_SOURCE_DONE);
                }
                "b" => GATE_B_PREPARED.store(true, SeqCst),
                _ => {}
            }
        }
        fn process_prepared(
            &mut self,
            line: &str,
            (): (),
            emit: &mut Emit<'_>,
        ) -> Result<(), StageError> {
            if line == "a" && !wait_for(&GATE_B_PREPARED) {
                return Err(StageError::Reject(
                    "b was not prepared while a was processed".into(),
                ));
            }
            emit(line.as_bytes()).map_err(StageError::from)
        }
    }

    /// `stage` through [`run_parallel`] on two threads over a [`GatedSource`] with these
    /// flags: the run's result and its output.
    fn run_gated<S: Prepare + Send>(
        stage: &mut S,
        strict: bool,
        (go, ended, fail): (&'static AtomicBool, &'static AtomicBool, bool),
    ) -> (Result<Exit, StageError>, Vec<u8>) {
        let mut out = RecordWriter::new(Vec::new());
        let n = std::num::NonZeroUsize::new(2).unwrap();
        let src = GatedSource {
            reads: 0,
            go,
            ended,
            fail,
        };
        let r = run_parallel("t", strict, src, &mut out, stage, n, &mut 0);
        (r, std::mem::take(out.get_mut()))
    }

    #[test]
    fn run_parallel_prepares_the_next_batch_while_it_processes_one() {
        let gates = (&GATE_READ_ON, &GATE_SOURCE_DONE, false);
        let (r, out) = run_gated(&mut Overlap, true, gates);
        assert!(matches!(r, Ok(Exit::Ok)), "{r:?}");
        assert_eq!(out, b"a\nb\nc\n");
    }

    static ERR_READ_ON: AtomicBool = AtomicBool::new(false);
    static ERR_READ_FAILING: AtomicBool = AtomicBool::new(false);

    /// Upper case; preparing "a" lets the source go on and waits until it is failing, so the
    /// error is met while "a"'s batch is processed or just after.
    struct UpperAfterA;
    impl Stage for UpperAfterA {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            self.process_prepared(line, Self::prepare(line), emit)
        }
    }
    impl Prepare for UpperAfterA {
        type Prepared<'l> = String;
        fn prepare(line: &str) -> String {
            if line == "a" {
                ERR_READ_ON.store(true, SeqCst);
                wait_for(&ERR_READ_FAILING);
            }
            line.to_uppercase()
        }
        fn process_prepared(
            &mut self,
            _: &str,
            upper: String,
            emit: &mut Emit<'_>,
        ) -> Result<(), StageError> {
            emit(upper.as_bytes()).map_err(StageError::from)
        }
    }

    #[test]
    fn run_parallel_writes_the_lines_of_the_next_batch_before_a_read_error_met_reading_it() {
        let gates = (&ERR_READ_ON, &ERR_READ_FAILING, true);
        let (r, out) = run_gated(&mut UpperAfterA, false, gates);
        assert!(
            matches!(r, Err(StageError::Read(ReadError::Io(_)))),
            "{r:?}"
        );
        assert_eq!(out, b"A\nB\nC\n");
    }

    #[test]
    fn run_reports_bad_lines_and_keeps_good_ones() {
        let mut out = RecordWriter::new(Vec::new());
        let exit = run("t", false, &b"a\nbad\nb\n"[..], &mut out, &mut Upper).unwrap();
        assert_eq!(exit, Exit::DataErr);
        assert_eq!(out.get_mut().as_slice(), b"A\nB\n");
    }

    #[test]
    fn unknown_kinds_are_bad_lines_unless_passed_through() {
        let input = format!(
            "{SAMPLE}\n{}\n{}\n{}\n{}\n",
            SAMPLE.replace("\"sample\"", "\"Sample\""),
            SAMPLE.replace("\"sample\"", "\"SAMPLE\""),
            SAMPLE.replace("\"sample\"", "\"sample \""),
            TICK
        );
        let mut out = RecordWriter::new(Vec::new());
        let mut rejected = 0;
        let exit = run_counted(
            "t",
            false,
            input.as_bytes(),
            &mut out,
            &mut Timer("a"),
            &mut rejected,
        )
        .unwrap();
        assert_eq!((exit, rejected), (Exit::DataErr, 3));
        let got = String::from_utf8(out.get_mut().clone()).unwrap();
        assert_eq!(got.lines().count(), 3, "sample, tick, timer: {got}");
        assert!(unknown_kind(r#"{"kind":"Sample"}"#).contains("\"Sample\""));
        let opts = Options {
            strict: false,
            pass_unknown_kinds: true,
        };
        let mut out = RecordWriter::new(Vec::new());
        let exit = run("t", opts, input.as_bytes(), &mut out, &mut Timer("a")).unwrap();
        assert_eq!(exit, Exit::Ok);
        assert_eq!(
            String::from_utf8(out.get_mut().clone())
                .unwrap()
                .lines()
                .count(),
            6
        );
    }

    /// A source that has one line ready, then would block: the run loop must have written
    /// the first record before it asks for more.
    struct ThenCheck<'a>(&'a std::cell::RefCell<Vec<u8>>, u8);
    impl std::io::Read for ThenCheck<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 += 1;
            let line: &[u8] = match self.1 {
                1 => b"a\n",
                2 => {
                    assert_eq!(self.0.borrow().as_slice(), b"A\n", "flushed before waiting");
                    b"b\nc\n"
                }
                _ => b"",
            };
            buf[..line.len()].copy_from_slice(line);
            Ok(line.len())
        }
    }

    #[test]
    fn output_is_flushed_before_the_loop_waits_for_input() {
        struct Shared<'a>(&'a std::cell::RefCell<Vec<u8>>);
        impl Write for Shared<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = std::cell::RefCell::new(Vec::new());
        let mut out = RecordWriter::new(Shared(&sink));
        run("t", false, ThenCheck(&sink, 0), &mut out, &mut Upper).unwrap();
        assert_eq!(sink.borrow().as_slice(), b"A\nB\nC\n");
    }

    #[test]
    fn chain_feeds_each_stage_into_the_next() {
        let mut chain = Chain::new(vec![("u", Box::new(Upper)), ("d", Box::new(Double))]);
        let mut got = Vec::new();
        let mut emit = |r: &[u8]| {
            got.push(String::from_utf8_lossy(r).into_owned());
            Ok(())
        };
        chain.feed(1, "x", &mut emit).unwrap();
        chain.feed(2, "bad", &mut emit).unwrap();
        assert_eq!(got, ["X", "X"]);
        assert_eq!(Stage::rejected(&chain), 1);
    }

    const TICK: &str = r#"{"v":1,"kind":"tick","ts":"2026-11-28T00:00:05.000Z","node":"*"}"#;
    const SAMPLE: &str = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:01.000Z","node":"n"}"#;

    #[test]
    fn kind_is_read_without_parsing_the_rest_of_the_line() {
        assert_eq!(peek_kind(TICK), Some(Kind::Tick));
        assert_eq!(
            peek_kind(r#"{"ts":"x","kind":"sample","a":[1,{"b":2}]}"#),
            Some(Kind::Sample)
        );
        // Everything after `kind` is left unread, even if it is broken.
        assert_eq!(
            peek_kind(r#"{"v":1,"kind":"alert","x":"#),
            Some(Kind::Alert)
        );
        assert_eq!(peek_kind(r#"{"v":1,"kind":"custom"}"#), Some(Kind::Other));
        assert_eq!(peek_kind("garbage"), None);
        assert_eq!(peek_kind(r#"{"v":1}"#), None);
        assert_eq!(peek_kind(r#"{"k\u0069nd":"tick"}"#), Some(Kind::Tick));
        // The fast path and the general reader agree.
        for line in [
            TICK,
            SAMPLE,
            r#"{"v":12,"kind":"custom","x":1}"#,
            r#"{"v":1,"kind":"sam\u0070le"}"#,
            r#"{ "v":1, "kind":"error"}"#,
        ] {
            assert_eq!(peek_kind(line), peek_kind_any_order(line), "{line}");
        }
        assert_eq!(canonical_kind(br#"{"v":1,"kind":"sam\u0070le"}"#), None);
        assert_eq!(canonical_kind(TICK.as_bytes()), Some(Kind::Tick));
    }

    /// Passes every line on and, on a tick, emits a line naming itself and the tick's time.
    struct Timer(&'static str);
    impl Stage for Timer {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            emit(line.as_bytes()).map_err(StageError::from)
        }
        fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
            let rec = format!(
                r#"{{"v":1,"kind":"stats","ts":"{now}","node":"*","by":"{}"}}"#,
                self.0
            );
            emit(rec.as_bytes()).map_err(StageError::from)
        }
    }

    #[test]
    fn stages_tick_on_tick_records_only_and_a_chain_ticks_like_a_pipe() {
        let input = format!("{SAMPLE}\n{TICK}\n{SAMPLE}\n");
        // Behind a pipe: each stage its own run loop.
        let mut a = RecordWriter::new(Vec::new());
        run("a", false, input.as_bytes(), &mut a, &mut Timer("a")).unwrap();
        let mut b = RecordWriter::new(Vec::new());
        run("b", false, &a.get_mut()[..], &mut b, &mut Timer("b")).unwrap();
        let piped = String::from_utf8(b.get_mut().clone()).unwrap();
        let lines: Vec<&str> = piped.lines().collect();
        assert_eq!(lines.len(), 5, "{piped}");
        assert_eq!(lines[1], TICK);
        // b ticks on the tick line, then a's timer record reaches it.
        assert!(
            lines[2].contains(r#""by":"b""#) && lines[3].contains(r#""by":"a""#),
            "{piped}"
        );
        // In-process: the same bytes.
        let mut chain = Chain::new(vec![
            ("a", Box::new(Timer("a"))),
            ("b", Box::new(Timer("b"))),
        ]);
        let mut c = RecordWriter::new(Vec::new());
        assert_eq!(
            run("watch", false, input.as_bytes(), &mut c, &mut chain).unwrap(),
            Exit::Ok
        );
        assert_eq!(String::from_utf8(c.get_mut().clone()).unwrap(), piped);
    }

    /// Emits its line, then fails as a stage whose state file cannot be written does.
    struct Unwritable;
    impl Stage for Unwritable {
        fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
            emit(line.as_bytes())?;
            Err(StageError::Fatal {
                exit: Exit::IoErr,
                message: "disk full".into(),
            })
        }
    }

    #[test]
    fn what_a_failing_stage_emitted_still_reaches_the_end_of_the_chain() {
        let mut chain = Chain::new(vec![("w", Box::new(Unwritable)), ("u", Box::new(Upper))]);
        let mut got = Vec::new();
        let mut emit = |r: &[u8]| {
            got.push(String::from_utf8_lossy(r).into_owned());
            Ok(())
        };
        let e = chain.feed(1, "x", &mut emit).unwrap_err();
        assert_eq!(e.exit(), Exit::IoErr);
        assert_eq!(got, ["X"]);
    }

    #[test]
    fn a_line_rejected_inside_a_chain_sets_the_exit_status_and_strict_stops() {
        let mut chain = Chain::new(vec![("d", Box::new(Double)), ("u", Box::new(Upper))]);
        let mut out = RecordWriter::new(Vec::new());
        let exit = run("watch", false, &b"a\nbad\nb\n"[..], &mut out, &mut chain).unwrap();
        assert_eq!(exit, Exit::DataErr);
        assert_eq!(out.get_mut().as_slice(), b"A\nA\nB\nB\n");
        let mut chain = Chain::new(vec![("u", Box::new(Upper))]).strict(true);
        let mut out = RecordWriter::new(Vec::new());
        let e = run("watch", true, &b"a\nbad\nb\n"[..], &mut out, &mut chain).unwrap_err();
        assert!(matches!(e, StageError::Read(ReadError::Strict(2))), "{e:?}");
    }
}
