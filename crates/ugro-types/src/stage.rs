//! A pipeline stage: the shape `ugro-score`, `ugro-breaker` and `ugro-alert` share, so that the
//! same code runs behind a shell pipe (`ugro-score | ugro-breaker | ugro-alert`) and in-process
//! inside `ugro-watch --pipeline` ([`Chain`]), and the two give the same output.

use std::io::{BufRead, Write};

use crate::io::{LineReader, ReadError, RecordWriter, WriteError};
use crate::{Exit, Timestamp};

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

    /// Lets time pass with no input (group and repeat timers). `now` is the caller's clock.
    fn tick(&mut self, _now: Timestamp, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// End of input: emit what is pending and persist state.
    fn finish(&mut self, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        Ok(())
    }
}

/// Runs a stage over an input stream with the contract's bad-line rules; returns 65 if any
/// line was rejected, 0 otherwise.
pub fn run<R: BufRead, W: Write>(
    tool: &'static str,
    strict: bool,
    input: R,
    out: &mut RecordWriter<W>,
    stage: &mut dyn Stage,
) -> Result<Exit, StageError> {
    run_counted(tool, strict, input, out, stage, &mut 0)
}

/// [`run`], also telling how many lines were rejected (set on error too), for tools whose
/// report depends on it (a check's status line).
pub fn run_counted<R: BufRead, W: Write>(
    tool: &'static str,
    strict: bool,
    input: R,
    out: &mut RecordWriter<W>,
    stage: &mut dyn Stage,
    rejected: &mut u64,
) -> Result<Exit, StageError> {
    let mut reader = LineReader::new(input, tool, strict);
    let mut emit = |rec: &[u8]| out.write_raw(rec);
    let result = (|| {
        while let Some((n, line)) = reader.next_line()? {
            match stage.process(line, &mut emit) {
                Ok(()) => {}
                Err(StageError::Reject(cause)) => reader.reject(n, cause)?,
                Err(e) => return Err(e),
            }
        }
        stage.finish(&mut emit)
    })();
    *rejected = reader.rejected();
    result.map(|()| reader.finish())
}

/// Stages composed in-process: each record one stage emits is the next stage's input line.
/// A record rejected by a later stage is reported under that stage's name with the number of
/// the original input line.
pub struct Chain {
    stages: Vec<(&'static str, Box<dyn Stage + Send>)>,
    rejected: u64,
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
    Tick(Timestamp),
    Finish,
}

impl Chain {
    /// A chain of `(tool name, stage)` in pipeline order.
    pub fn new(stages: Vec<(&'static str, Box<dyn Stage + Send>)>) -> Self {
        Chain {
            stages,
            rejected: 0,
        }
    }

    /// Lines rejected by any stage.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Feeds one line to the first stage; whatever the last stage emits goes to `emit`.
    pub fn process(
        &mut self,
        line_no: u64,
        line: &str,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        self.drive(0, line_no, Step::Line(line), emit)
    }

    /// Ticks every stage, in order, feeding what each emits to the next.
    pub fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        for i in 0..self.stages.len() {
            self.drive(i, 0, Step::Tick(now), emit)?;
        }
        Ok(())
    }

    /// Finishes every stage, in order, feeding what each emits to the next.
    pub fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        for i in 0..self.stages.len() {
            self.drive(i, 0, Step::Finish, emit)?;
        }
        Ok(())
    }

    fn drive(
        &mut self,
        at: usize,
        line_no: u64,
        step: Step<'_>,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        let Some((name, stage)) = self.stages.get_mut(at) else {
            if let Step::Line(l) = step {
                emit(l.as_bytes())?;
            }
            return Ok(());
        };
        let mut produced: Vec<Vec<u8>> = Vec::new();
        let mut collect = |rec: &[u8]| {
            produced.push(rec.to_vec());
            Ok(())
        };
        let r = match step {
            Step::Line(l) => stage.process(l, &mut collect),
            Step::Tick(now) => stage.tick(now, &mut collect),
            Step::Finish => stage.finish(&mut collect),
        };
        match r {
            Ok(()) => {}
            Err(StageError::Reject(cause)) => {
                self.rejected += 1;
                crate::io::report_bad_line(name, line_no, &cause);
            }
            Err(e) => return Err(e),
        }
        for rec in produced {
            let text = String::from_utf8_lossy(&rec).into_owned();
            self.drive(at + 1, line_no, Step::Line(&text), emit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn run_reports_bad_lines_and_keeps_good_ones() {
        let mut out = RecordWriter::new(Vec::new());
        let exit = run("t", false, &b"a\nbad\nb\n"[..], &mut out, &mut Upper).unwrap();
        assert_eq!(exit, Exit::DataErr);
        assert_eq!(out.get_mut().as_slice(), b"A\nB\n");
    }

    #[test]
    fn chain_feeds_each_stage_into_the_next() {
        let mut chain = Chain::new(vec![("u", Box::new(Upper)), ("d", Box::new(Double))]);
        let mut got = Vec::new();
        let mut emit = |r: &[u8]| {
            got.push(String::from_utf8_lossy(r).into_owned());
            Ok(())
        };
        chain.process(1, "x", &mut emit).unwrap();
        chain.process(2, "bad", &mut emit).unwrap();
        assert_eq!(got, ["X", "X"]);
        assert_eq!(chain.rejected(), 1);
    }
}
