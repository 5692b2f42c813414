//! `--output FILE`: a file that readers such as node_exporter's textfile collector pick up
//! whole, replaced atomically every time the tool has new output.
//!
//! The text goes to a temporary file in the same directory (so the rename stays on one file
//! system) whose name starts with `.ugro-tmp-` (so a collector that reads `*.prom` never sees
//! it half written), is made world-readable (the collector usually runs as another user), and
//! is renamed over the target. There is no fsync: a reader wants the latest complete file, not
//! one that survives a power cut, and an fsync per interval would stall the sampling loop on a
//! busy disk. A crash leaves the previous file, or a stray temporary file that nothing reads.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ugro_types::io::{RecordWriter, WriteError};
use ugro_types::{Exit, ToolError};

/// Why the output file could not be replaced.
#[derive(Debug, thiserror::Error)]
#[error("--output {path}: {source}")]
pub struct OutputError {
    /// The file (or its directory, when the temporary file could not be made).
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

impl ToolError for OutputError {
    fn exit(&self) -> Exit {
        Exit::IoErr
    }
}

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// Standard output (a closed one is [`WriteError::Closed`]: stop quietly).
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The `--output` file.
    #[error(transparent)]
    File(#[from] OutputError),
}

impl ToolError for EmitError {
    fn exit(&self) -> Exit {
        match self {
            EmitError::Write(e) => e.exit(),
            EmitError::File(e) => e.exit(),
        }
    }
}

/// Where a tool's whole output goes each time it has new output: standard output (one block
/// after another) or `--output FILE` (replaced).
#[derive(Debug)]
pub struct Destination {
    file: Option<PathBuf>,
    stdout: RecordWriter<std::io::Stdout>,
}

impl Destination {
    /// `file`, or standard output without one.
    pub fn new(file: Option<PathBuf>) -> Self {
        Destination {
            file,
            stdout: RecordWriter::new(std::io::stdout()),
        }
    }

    /// Writes `text`: appended to standard output, or replacing the file.
    pub fn write(&mut self, text: &str) -> Result<(), EmitError> {
        match &self.file {
            Some(p) => replace_file(p, text.as_bytes())?,
            None => self.stdout.write_text(text)?,
        }
        Ok(())
    }
}

/// Replaces `path` with `text` atomically, mode 0644.
pub fn replace_file(path: &Path, text: &[u8]) -> Result<(), OutputError> {
    let err = |p: &Path| {
        let path = p.to_owned();
        move |source| OutputError { path, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ugro-tmp-")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(err(dir))?;
    tmp.write_all(text).map_err(err(path))?;
    tmp.persist(path).map_err(|e| err(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_file_is_replaced_whole_and_readable_by_others() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ugro.prom");
        replace_file(&p, b"a 1\n").unwrap();
        replace_file(&p, b"a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ugro.prom"], "no temporary file left behind");
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let e = replace_file(Path::new("/nonexistent/dir/ugro.prom"), b"x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dir"), "{e}");
        assert_eq!(e.exit(), Exit::IoErr);
    }
}
