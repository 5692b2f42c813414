//! `cargo xtask man [--check]`: generates man/*.1 from each tool's clap definition and
//! man/ugro.7 from the ugro-types schema documentation; `--check` fails if any is stale.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    match args.first().map(String::as_str) {
        Some("man") => man(check),
        _ => {
            eprintln!("usage: cargo xtask man [--check]");
            ExitCode::from(64)
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pages() -> Vec<(String, Vec<u8>)> {
    let tools = [
        ugro_probe::command(),
        ugro_score::command(),
        ugro_breaker::command(),
        ugro_alert::command(),
        ugro_watch::command(),
    ];
    let mut out = Vec::new();
    for cmd in tools {
        let name = cmd.get_name().to_owned();
        let mut buf = Vec::new();
        let man = clap_mangen::Man::new(cmd)
            .date("2026-11-28")
            .source("ugro")
            .manual("ugro manual");
        if let Err(e) = man.render(&mut buf) {
            eprintln!("xtask: rendering {name}: {e}");
        }
        out.push((format!("{name}.1"), tidy_clap_page(&buf, &name)));
    }
    out.push((
        "ugro.7".to_owned(),
        markdown_to_roff(ugro_types::SCHEMA_DOC).into_bytes(),
    ));
    out
}

fn man(check: bool) -> ExitCode {
    let dir = root().join("man");
    let mut stale = Vec::new();
    for (name, bytes) in pages() {
        let path = dir.join(&name);
        let current = std::fs::read(&path).unwrap_or_default();
        if current == bytes {
            continue;
        }
        if check {
            stale.push(name);
        } else if let Err(e) =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &bytes))
        {
            eprintln!("xtask: writing {}: {e}", path.display());
            return ExitCode::from(74);
        } else {
            eprintln!("wrote man/{name}");
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "xtask: stale man pages (run `cargo xtask man`): {}",
            stale.join(", ")
        );
        ExitCode::from(1)
    }
}

/// mandoc -Tlint asks for an upper-case title, no trailing blanks and no `.br` next to a
/// paragraph break; clap_mangen gives none of these (it writes `.br`, a blank line, `.br` around
/// the list of possible values).
fn tidy_clap_page(page: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(page);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let mut out = String::with_capacity(text.len());
    for (i, line) in lines.iter().enumerate() {
        let next_is_break = lines.get(i + 1).is_some_and(|l| l.is_empty());
        let prev_is_break = i > 0 && lines[i - 1].is_empty();
        if *line == ".br" && (next_is_break || prev_is_break) {
            continue;
        }
        if let Some(rest) = line.strip_prefix(".TH ") {
            let rest = rest.strip_prefix(name).unwrap_or(rest);
            out.push_str(".TH ");
            out.push_str(&name.to_uppercase());
            out.push_str(rest);
        } else if line.is_empty() {
            out.push_str(".sp");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Fills roff text to lines of at most 78 bytes (mandoc's style limit), breaking at spaces.
fn fill(text: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if width > 0 && width + 1 + word.len() > 78 {
            out.push('\n');
            width = 0;
        } else if width > 0 {
            out.push(' ');
            width += 1;
        }
        if width == 0 && (word.starts_with('.') || word.starts_with('\'')) {
            out.push_str("\\&");
            width += 2;
        }
        out.push_str(word);
        width += word.len();
    }
    out
}

fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            '`' => {
                s.push_str(if in_code { "\\fR" } else { "\\fB" });
                in_code = !in_code;
            }
            _ => s.push(c),
        }
    }
    if in_code {
        s.push_str("\\fR");
    }
    if s.starts_with('.') || s.starts_with('\'') {
        s.insert_str(0, "\\&");
    }
    s
}

/// The small markdown subset SCHEMA.md uses: `#` title, `##` sections, paragraphs, `- ` lists
/// with indented continuation lines, inline code.
fn markdown_to_roff(md: &str) -> String {
    let mut out = String::from(".TH UGRO 7 2026-11-28 ugro \"ugro manual\"\n");
    let mut para: Vec<String> = Vec::new();
    let mut item: Option<Vec<String>> = None;
    let flush = |out: &mut String, para: &mut Vec<String>, item: &mut Option<Vec<String>>| {
        if let Some(lines) = item.take() {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&fill(&escape(&lines.join(" "))));
            out.push('\n');
        }
        if !para.is_empty() {
            // A paragraph macro straight after a heading is redundant (mandoc warns).
            if !out.ends_with("\"\n") {
                out.push_str(".PP\n");
            }
            out.push_str(&fill(&escape(&para.join(" "))));
            out.push('\n');
            para.clear();
        }
    };
    for line in md.lines() {
        if let Some(title) = line.strip_prefix("# ") {
            flush(&mut out, &mut para, &mut item);
            out.push_str(".SH NAME\nugro \\- ");
            out.push_str(&escape(title.trim_start_matches("ugro ")));
            out.push_str("\n.SH \"DESCRIPTION\"\n");
        } else if let Some(h) = line.strip_prefix("## ") {
            flush(&mut out, &mut para, &mut item);
            out.push_str(".SH \"");
            out.push_str(&escape(&h.to_uppercase()).replace('"', "'"));
            out.push_str("\"\n");
        } else if let Some(rest) = line.strip_prefix("- ") {
            flush(&mut out, &mut para, &mut item);
            item = Some(vec![rest.trim().to_owned()]);
        } else if line.trim().is_empty() {
            flush(&mut out, &mut para, &mut item);
        } else if let Some(lines) = item.as_mut() {
            lines.push(line.trim().to_owned());
        } else {
            para.push(line.trim().to_owned());
        }
    }
    flush(&mut out, &mut para, &mut item);
    out
}
