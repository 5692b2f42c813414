//! Where "jobs are running" comes from besides the samples: a file's recent modification
//! time, and a command listing busy nodes (`squeue`, a scheduler API wrapper).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Whether `path` was modified within `fresh` of `now`. A missing file means idle.
pub fn file_active(path: &Path, fresh: Duration, now: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO) <= fresh)
        .unwrap_or(false)
}

/// Runs the jobs command (argv, no shell) and returns the busy node names it printed.
pub async fn jobs_cmd(argv: &[String], timeout: Duration) -> Result<HashSet<String>, String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty jobs command".into());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "{prog} did not finish within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_names(&String::from_utf8_lossy(&out.stdout)))
}

/// Node names separated by whitespace or commas, with Slurm hostlists expanded
/// (`gpu[01-03,07]` → gpu01 gpu02 gpu03 gpu07).
pub fn parse_names(text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for tok in split_top(text) {
        expand(&tok, &mut out);
    }
    out
}

fn split_top(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            c if c.is_whitespace() => {
                depth = 0;
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

fn expand(tok: &str, out: &mut HashSet<String>) {
    let (Some(open), Some(close)) = (tok.find('['), tok.find(']')) else {
        out.insert(tok.to_owned());
        return;
    };
    if close < open {
        out.insert(tok.to_owned());
        return;
    }
    let (prefix, ranges, rest) = (&tok[..open], &tok[open + 1..close], &tok[close + 1..]);
    for r in ranges.split(',') {
        match r.split_once('-') {
            Some((a, b)) => {
                let width = a.len();
                let (Ok(lo), Ok(hi)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                    continue;
                };
                // A typo like [1-99999999] must not allocate the world.
                for i in lo..=hi.min(lo + 100_000) {
                    expand(&format!("{prefix}{i:0width$}{rest}"), out);
                }
            }
            None => expand(&format!("{prefix}{r}{rest}"), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_hostlists_expand() {
        let got = parse_names("gpu[01-03,07],cpu1\nrack[1-2]-n[1-2]\n");
        let mut v: Vec<_> = got.into_iter().collect();
        v.sort();
        assert_eq!(
            v,
            [
                "cpu1", "gpu01", "gpu02", "gpu03", "gpu07", "rack1-n1", "rack1-n2", "rack2-n1",
                "rack2-n2"
            ]
        );
    }

    #[test]
    fn fresh_file_means_active_and_missing_file_means_idle() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("jobs");
        let now = SystemTime::now();
        assert!(!file_active(&p, Duration::from_secs(60), now));
        std::fs::write(&p, b"").unwrap();
        assert!(file_active(
            &p,
            Duration::from_secs(60),
            now + Duration::from_secs(30)
        ));
        assert!(!file_active(
            &p,
            Duration::from_secs(60),
            now + Duration::from_secs(120)
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_command_output_is_parsed_and_failures_reported() {
        let argv = vec!["echo".to_owned(), "n[1-2]".to_owned(), "x".to_owned()];
        let got = jobs_cmd(&argv, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.len(), 3);
        assert!(got.contains("n2"));
        let bad = vec!["false".to_owned()];
        assert!(jobs_cmd(&bad, Duration::from_secs(5)).await.is_err());
    }
}
