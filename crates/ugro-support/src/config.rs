//! Loading YAML configuration files with errors that name the file, the line and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use ugro_types::{Exit, ToolError};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not match the schema.
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the parser could not tell).
        line: usize,
        /// Dotted path of the field, `.` for the document.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// 66 for a missing file, 78 otherwise.
    pub fn exit(&self) -> Exit {
        match self {
            ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Exit::NoInput
            }
            _ => Exit::Config,
        }
    }

    /// A semantic error found after parsing (a bad weight, an unknown receiver), located by
    /// looking the field's key up in the source text.
    pub fn invalid(path: &Path, text: &str, field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.to_owned(),
            line: locate_field(text, field),
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl ToolError for ConfigError {
    fn exit(&self) -> Exit {
        ConfigError::exit(self)
    }
}

/// Reads and parses a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value = parse_yaml(path, &text)?;
    Ok((value, text))
}

/// Parses YAML text that came from `path` (used in messages).
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map_or_else(|| locate_field(text, &field), |l| l.line());
        // serde_norway appends " at line L column C"; the line is already in front.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            field,
            message,
        }
    })
}

/// Best-effort line of a dotted field path (`weights.gpu`, `routes[1].receiver`): the line of
/// the last key segment, searched after the lines of the earlier ones.
pub fn locate_field(text: &str, field: &str) -> usize {
    let mut from = 0usize;
    let mut found = 0usize;
    for seg in field.split('.') {
        let key = seg.split('[').next().unwrap_or(seg).trim();
        if key.is_empty() {
            continue;
        }
        let hit = text.lines().enumerate().skip(from).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
        });
        if let Some((i, _)) = hit {
            found = i + 1;
            from = i + 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        weights: Weights,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Weights {
        #[allow(dead_code)]
        gpu: f64,
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let e = parse_yaml::<Conf>(Path::new("s.yaml"), "weights:\n  gpu: lots\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("s.yaml:2: weights.gpu: "), "{msg}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let e =
            parse_yaml::<Conf>(Path::new("s.yaml"), "weights:\n  gpu: 1\n  gpus: 2\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("s.yaml:3:"), "{msg}");
        assert!(msg.contains("gpus"), "{msg}");
    }

    #[test]
    fn semantic_errors_locate_the_field() {
        let text = "weights:\n  gpu: 0.9\n  system: 0.3\n";
        assert_eq!(locate_field(text, "weights.system"), 3);
    }
}
