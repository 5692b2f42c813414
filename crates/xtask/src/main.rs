//! `cargo xtask man [--check]`: generates what the repository keeps from the tools' clap
//! definitions and the schema docs — man/*.1 (with the extras in crates/xtask/man/*.md),
//! man/ugro.7 from SCHEMA.md, and completions/{bash,zsh,fish}/ — and with `--check` fails if
//! any of them is stale or a file there is not generated.

mod complete;
mod manpage;
mod roff;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The directories whose every file is generated.
const GENERATED: [&str; 2] = ["man", "completions"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    match args.first().map(String::as_str) {
        Some("man") => match outputs() {
            Ok(files) => sync(&files, check),
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::from(65)
            }
        },
        _ => {
            eprintln!("usage: cargo xtask man [--check]");
            ExitCode::from(64)
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tools() -> Vec<clap::Command> {
    vec![
        ugro_probe::command(),
        ugro_score::command(),
        ugro_breaker::command(),
        ugro_alert::command(),
        ugro_watch::command(),
    ]
}

/// The man pages' extras, compiled in so that editing one is a rebuild like editing `--help`.
fn extras(tool: &str) -> Result<&'static str, String> {
    Ok(match tool {
        "ugro-probe" => include_str!("../man/ugro-probe.md"),
        "ugro-score" => include_str!("../man/ugro-score.md"),
        "ugro-breaker" => include_str!("../man/ugro-breaker.md"),
        "ugro-alert" => include_str!("../man/ugro-alert.md"),
        "ugro-watch" => include_str!("../man/ugro-watch.md"),
        other => return Err(format!("no crates/xtask/man/{other}.md")),
    })
}

/// Every generated file, as (path from the repository root, contents).
fn outputs() -> Result<Vec<(String, Vec<u8>)>, String> {
    let common = include_str!("../man/common.md");
    let names: Vec<String> = tools().iter().map(|c| c.get_name().to_owned()).collect();
    let mut out = Vec::new();
    for cmd in tools() {
        let name = cmd.get_name().to_owned();
        for (path, script) in complete::scripts(&cmd) {
            out.push((format!("completions/{path}"), script));
        }
        let page = manpage::page(cmd, &names, extras(&name)?, common)?;
        out.push((format!("man/{name}.1"), page));
    }
    out.push((
        "man/ugro.7".to_owned(),
        schema_page(ugro_types::SCHEMA_DOC).into_bytes(),
    ));
    Ok(out)
}

/// Writes the files that differ (or lists them with `check`), and removes (or lists) files in
/// the generated directories that nothing generates.
fn sync(files: &[(String, Vec<u8>)], check: bool) -> ExitCode {
    let root = root();
    let mut stale = Vec::new();
    for (rel, bytes) in files {
        let path = root.join(rel);
        if std::fs::read(&path).is_ok_and(|current| current == *bytes) {
            continue;
        }
        if check {
            stale.push(rel.clone());
        } else if let Err(e) = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, bytes))
        {
            eprintln!("xtask: writing {}: {e}", path.display());
            return ExitCode::from(74);
        } else {
            eprintln!("wrote {rel}");
        }
    }
    for rel in strays(&root, files) {
        if check {
            stale.push(format!("{rel} (not generated)"));
        } else if let Err(e) = std::fs::remove_file(root.join(&rel)) {
            eprintln!("xtask: removing {rel}: {e}");
            return ExitCode::from(74);
        } else {
            eprintln!("removed {rel}");
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: stale (run `cargo xtask man`): {}", stale.join(", "));
        ExitCode::from(1)
    }
}

/// Files under the generated directories that are not in `files`.
fn strays(root: &Path, files: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = GENERATED.iter().map(|d| root.join(d)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                let rel = rel.to_string_lossy().into_owned();
                if !files.iter().any(|(f, _)| *f == rel) {
                    found.push(rel);
                }
            }
        }
    }
    found.sort();
    found
}

/// ugro(7): SCHEMA.md's `#` title is the NAME line, its sections follow DESCRIPTION.
fn schema_page(md: &str) -> String {
    let mut out = format!(
        ".TH UGRO 7 {} \"ugro {}\" \"ugro manual\"\n",
        manpage::DATE,
        env!("CARGO_PKG_VERSION")
    );
    out.push_str(manpage::LAYOUT);
    let mut blocks = roff::parse(md);
    if let Some(roff::Block::Heading(1, title)) = blocks.first().cloned() {
        blocks.remove(0);
        out.push_str(".SH NAME\nugro \\- ");
        out.push_str(&roff::inline(title.trim_start_matches("ugro ")));
        out.push_str("\n.SH \"DESCRIPTION\"\n");
    }
    out.push_str(&roff::render(&blocks, true));
    out
}
