//! The pipeline stage: what `ugro-score` does per line, shared with `ugro-watch --pipeline`.

use ugro_types::io::{WriteError, set_field, splice_field};
use ugro_types::stage::{Emit, Prepare, Stage, StageError};
use ugro_types::view::SampleView;
use ugro_types::{Kind, check_header, parse_header};

use crate::Scorer;
use crate::output::{Format, table_header, table_row, worse};
use crate::scorer::MAX_CHECKS;

fn reject(e: impl std::fmt::Display) -> StageError {
    StageError::Reject(e.to_string())
}

impl Scorer {
    fn pass(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        match self.format {
            // A Prometheus run renders what the JSON stage emits (crate::prom).
            Format::Json | Format::Prometheus => emit(line.as_bytes()).map_err(StageError::from),
            // The text formats are about samples only.
            Format::Nagios | Format::Table => Ok(()),
        }
    }
}

fn state_error(e: ugro_support::state::StateError) -> StageError {
    StageError::Fatal {
        exit: e.exit(),
        message: e.to_string(),
    }
}

impl Stage for Scorer {
    fn tick(
        &mut self,
        _now: ugro_types::Timestamp,
        _emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        self.offer_state();
        Ok(())
    }

    fn finish(&mut self, _emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.save_state().map_err(state_error)
    }

    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.process_prepared(line, Self::prepare(line), emit)
    }
}

impl Prepare for Scorer {
    type Prepared<'l> = Result<SampleView<'l>, serde_json::Error>;

    /// Decoding the sample: most of a line's cost, and it needs nothing of the scorer.
    fn prepare(line: &str) -> Self::Prepared<'_> {
        SampleView::from_line(line)
    }

    fn process_prepared<'l>(
        &mut self,
        line: &'l str,
        prepared: Self::Prepared<'l>,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        // The typed parse is the fast path; only when it fails is the header looked at, to
        // tell a record of another kind (passed through) from a broken sample (rejected).
        let sample = match prepared {
            Ok(s) => s,
            Err(e) => {
                return match parse_header(line) {
                    Ok(h) if h.kind != Kind::Sample => self.pass(line, emit),
                    Ok(_) => Err(reject(format_args!("invalid sample: {e}"))),
                    Err(he) => Err(reject(he)),
                };
            }
        };
        check_header(sample.v, &sample.node).map_err(reject)?;
        if sample.kind != Kind::Sample {
            return self.pass(line, emit);
        }
        let score = self.score_view(&sample);
        self.samples += 1;
        // A clock read per 64 samples is enough to pace the state snapshots.
        if self.samples.is_multiple_of(64) {
            self.offer_state();
        }
        self.worst = Some(worse(self.worst, score.state));
        match self.format {
            Format::Json | Format::Prometheus => {
                if sample.has_score {
                    let v = serde_json::to_value(&score).map_err(WriteError::Json)?;
                    let out = set_field(line, "score", v).map_err(reject)?;
                    return emit(&out).map_err(StageError::from);
                }
                self.score_buf.clear();
                serde_json::to_writer(&mut self.score_buf, &score).map_err(WriteError::Json)?;
                self.out_buf.clear();
                if !splice_field(&mut self.out_buf, line, "score", &self.score_buf) {
                    return Err(reject("not a JSON object"));
                }
                emit(&self.out_buf).map_err(StageError::from)
            }
            Format::Nagios => {
                // One plugin status line covers the whole run: written by `run` at the end,
                // when the worst state (and so the exit status) is known.
                if self.checks.len() < MAX_CHECKS {
                    self.checks.push((sample.node.clone().into_owned(), score));
                } else {
                    self.checks_dropped += 1;
                }
                Ok(())
            }
            Format::Table => {
                if !self.header_done {
                    self.header_done = true;
                    emit(table_header().as_bytes())?;
                }
                let row = table_row(&sample.node, &sample.ts.to_string(), &score);
                emit(row.as_bytes()).map_err(StageError::from)
            }
        }
    }
}
