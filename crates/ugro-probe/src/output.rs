//! Where samples go: standard output, one record (or one exposition block) per sample, or
//! `--output FILE`, replaced atomically with each sample for node_exporter's textfile
//! collector. The Prometheus text is ugro-metrics' renderer, the one ugro-score and ugro-watch
//! use, so the three write the same names.

use std::path::PathBuf;

use ugro_metrics::Names;
use ugro_support::output::{Destination, EmitError};
use ugro_types::Sample;
use ugro_types::io::WriteError;

use crate::Format;

/// The output of one run.
#[derive(Debug)]
pub struct Output {
    format: Format,
    names: Names,
    to: Destination,
}

impl Output {
    /// Samples in `format` (with `names` for Prometheus text) to `file`, or to stdout.
    pub fn new(format: Format, names: Names, file: Option<PathBuf>) -> Self {
        Output {
            format,
            names,
            to: Destination::new(file),
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
        self.to.write(&text)
    }
}
