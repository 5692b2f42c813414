//! Where samples go: standard output, one record (or one exposition block) per sample, or
//! `--output FILE`, replaced atomically with each sample for node_exporter's textfile
//! collector. The Prometheus text is ugro-metrics' renderer, the one ugro-score and ugro-watch
//! use, so the three write the same names.

use std::io::Stdout;
use std::path::PathBuf;

use ugro_metrics::Names;
use ugro_support::output::{OutputError, replace_file};
use ugro_types::Sample;
use ugro_types::io::{RecordWriter, WriteError};

use crate::Format;

/// Why a sample could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// Standard output.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The `--output` file.
    #[error(transparent)]
    File(#[from] OutputError),
}

/// The output of one run.
#[derive(Debug)]
pub struct Output {
    format: Format,
    names: Names,
    file: Option<PathBuf>,
    stdout: RecordWriter<Stdout>,
}

impl Output {
    /// Samples in `format` (with `names` for Prometheus text) to `file`, or to stdout.
    pub fn new(format: Format, names: Names, file: Option<PathBuf>) -> Self {
        Output {
            format,
            names,
            file,
            stdout: RecordWriter::new(std::io::stdout()),
        }
    }

    /// The text for one sample: a JSON line, or a whole exposition.
    pub fn text(&self, s: &Sample) -> Result<String, WriteError> {
        Ok(match self.format {
            Format::Json => serde_json::to_string(s)? + "\n",
            Format::Prometheus => ugro_metrics::render_sample(s, self.names),
        })
    }

    /// Writes one sample.
    pub fn emit(&mut self, s: &Sample) -> Result<(), EmitError> {
        let text = self.text(s)?;
        match &self.file {
            Some(path) => replace_file(path, text.as_bytes())?,
            None => self.stdout.write_text(&text)?,
        }
        Ok(())
    }
}
