//! The installed tree: `scripts/install.sh` into a temporary prefix, then what an operator
//! does with it — run a tool, read a man page, complete a flag in bash, check the systemd units
//! with `systemd-analyze verify`, and run the check unit's and the crontab's pipelines.
//!
//! scripts/test.sh installs the release build once and passes its prefix in
//! `UGRO_INSTALL_PREFIX`; without it, the debug binaries of `cargo build --workspace` are
//! installed (`--profile dev --no-build`), so a plain `cargo test` stays fast.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use ugro_e2e::{bin, require, root};

const UNITS: [&str; 3] = [
    "ugro-watch.service",
    "ugro-check.service",
    "ugro-check.timer",
];

/// The installed prefix, installed once per test process.
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        if let Some(p) = std::env::var_os("UGRO_INSTALL_PREFIX").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install-prefix");
        let _ = std::fs::remove_dir_all(&prefix);
        // target/debug/ugro-score → target
        let target = bin("ugro-score")
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_owned();
        let out = Command::new("bash")
            .arg(root().join("scripts/install.sh"))
            .arg("--prefix")
            .arg(&prefix)
            .args(["--profile", "dev", "--no-build"])
            .env("CARGO_TARGET_DIR", target)
            .output()
            .unwrap();
        assert_success("install.sh", &out);
        prefix
    })
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn installed_tool_reports_its_version() {
    let out = Command::new(prefix().join("bin/ugro-score"))
        .arg("--version")
        .output()
        .unwrap();
    assert_success("ugro-score --version", &out);
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("ugro-score {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn installed_man_page_opens_with_man_and_has_every_section() {
    if !require("man (man-db)", have("man")) {
        return;
    }
    let out = Command::new("man")
        .arg("-M")
        .arg(prefix().join("share/man"))
        .arg("ugro-score")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    assert_success("man -M PREFIX/share/man ugro-score", &out);
    let page = String::from_utf8_lossy(&out.stdout);
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            page.lines().any(|l| l == section),
            "no {section} in:\n{page}"
        );
    }
    assert!(page.contains("UGRO_LOG_FORMAT"), "{page}");
    assert!(!page.contains('`'), "a literal backtick in:\n{page}");
}

/// Runs bash's completion function for `words` (the last one being completed) the way
/// readline would, and returns the candidates.
fn complete(script: &Path, command: &str, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        r#"source "$1"
spec=$(complete -p {command}) || exit 3
fn=$(sed -E 's/.* -F ([^ ]+) .*/\1/' <<<"$spec")
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
"$fn" {command} "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" "),
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "complete"])
        .arg(script)
        .output()
        .unwrap();
    assert_success("bash completion", &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn installed_bash_completion_completes_a_flag_and_its_values() {
    let script = prefix().join("share/bash-completion/completions/ugro-score");
    assert_eq!(
        complete(&script, "ugro-score", &["ugro-score", "--for"]),
        ["--format"]
    );
    let mut values = complete(&script, "ugro-score", &["ugro-score", "--format", ""]);
    values.sort();
    assert_eq!(values, ["json", "nagios", "prometheus", "table"]);
}

#[test]
fn installed_bash_completion_completes_breaker_subcommands() {
    let script = prefix().join("share/bash-completion/completions/ugro-breaker");
    assert_eq!(
        complete(&script, "ugro-breaker", &["ugro-breaker", "for"]),
        ["force-open", "forget"]
    );
}

#[test]
fn installed_units_pass_systemd_analyze_verify() {
    if !require("systemd-analyze", have("systemd-analyze")) {
        return;
    }
    let dir = prefix().join("lib/systemd/system");
    // verify checks that ExecStart= programs exist and that Documentation=man: pages open
    // with man; MANPATH points it at the installed pages. Unknown or misspelt keys are only
    // printed (the status stays 0), so any output at all fails the test.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| dir.join(u)))
        .env("MANPATH", prefix().join("share/man"))
        .env("SYSTEMD_LOG_LEVEL", "info")
        .output()
        .unwrap();
    assert_success("systemd-analyze verify", &out);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify said:\n{said}"
    );
}

/// The value of the first `key=` line of a unit file.
fn unit_value(unit: &str, key: &str) -> String {
    let text = std::fs::read_to_string(prefix().join("lib/systemd/system").join(unit)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{unit} has no {key}="))
        .to_owned()
}

/// Runs a shell pipeline with its state in `state` and checks what it left there: the CPU
/// reading, the breaker's and the alert's state, and a breaker for this node.
fn assert_pipeline_keeps_state(what: &str, out: &Output, state: &Path) {
    assert_success(what, out);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        serde_json::from_str::<ugro_types::Alert>(line)
            .unwrap_or_else(|e| panic!("{what}: not an alert record ({e}): {line}"));
    }
    for file in ["probe-cpu.json", "score.json", "breaker.json", "alert.json"] {
        assert!(
            state.join("ugro").join(file).is_file(),
            "{what}: no ugro/{file}"
        );
    }
    let status = Command::new(prefix().join("bin/ugro-breaker"))
        .args(["status", "--format", "json", "--state"])
        .arg(state.join("ugro/breaker.json"))
        .output()
        .unwrap();
    assert_success("ugro-breaker status", &status);
    let status: BreakerStatus = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status.nodes.len(), 1, "{what}: {status:?}");
    assert_eq!(status.nodes[0].state, "closed", "{what}: {status:?}");
}

/// What `ugro-breaker status --format json` says, as far as these tests read it.
#[derive(Debug, serde::Deserialize)]
struct BreakerStatus {
    nodes: Vec<NodeStatus>,
}

#[derive(Debug, serde::Deserialize)]
struct NodeStatus {
    state: String,
}

#[test]
fn check_unit_command_runs_the_pipeline_with_state_where_the_unit_keeps_it() {
    // The unit sets XDG_STATE_HOME=%S (/var/lib) and StateDirectory=ugro; here the state
    // home is a temporary directory, everything else is the unit's own command line.
    let exec = unit_value("ugro-check.service", "ExecStart");
    let argv = shell_words(&exec);
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env("XDG_STATE_HOME", state.path())
        .output()
        .unwrap();
    assert_pipeline_keeps_state("ugro-check.service's ExecStart", &out, state.path());
    let env = unit_value("ugro-check.service", "Environment");
    assert!(env.split(' ').any(|e| e == "XDG_STATE_HOME=%S"), "{env}");
    assert_eq!(unit_value("ugro-check.service", "StateDirectory"), "ugro");
}

#[test]
fn crontab_example_runs_the_pipeline_from_its_own_path() {
    let cron = prefix().join("share/doc/ugro/examples/cron.d/ugro-check");
    let text = std::fs::read_to_string(&cron).unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut job = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some((k, v)) = line.split_once('=').filter(|(k, _)| !k.contains(' ')) {
            env.push((k.to_owned(), v.to_owned()));
        } else {
            job = Some(cron_command(line));
        }
    }
    let job = job.expect("a job line");
    let shell = env
        .iter()
        .find(|(k, _)| k == "SHELL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    // cron runs the job with only the file's variables (and HOME, LOGNAME); the state home
    // is redirected from /var/lib to a temporary directory.
    let out = Command::new(&shell)
        .args(["-c", &job])
        .env_clear()
        .envs(env.iter().filter(|(k, _)| k != "XDG_STATE_HOME").cloned())
        .env("XDG_STATE_HOME", state.path())
        .env("HOME", state.path())
        .output()
        .unwrap();
    assert_pipeline_keeps_state("the crontab job", &out, state.path());
}

/// The command of a /etc/cron.d line: what follows minute, hour, day, month, weekday, user.
fn cron_command(line: &str) -> String {
    let mut rest = line.trim_start();
    for _ in 0..6 {
        let end = rest
            .find(char::is_whitespace)
            .expect("six fields before the command");
        rest = rest[end..].trim_start();
    }
    rest.to_owned()
}

/// Splits an ExecStart= line the way systemd does for this unit: words, with single-quoted
/// words kept whole (the unit uses no other quoting, `$` or `%`).
fn shell_words(line: &str) -> Vec<String> {
    assert!(
        !line.contains('$') && !line.contains('%') && !line.contains('"'),
        "{line}"
    );
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (word, tail) = match rest.strip_prefix('\'') {
            Some(q) => q.split_once('\'').expect("closing quote"),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        words.push(word.to_owned());
        rest = tail.trim_start();
    }
    words
}
