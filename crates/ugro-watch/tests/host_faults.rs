//! Faults of the watcher's own host: a state directory on a real tmpfs that fills up and is
//! freed again. Needs permission to mount (root with CAP_SYS_ADMIN); where there is none the
//! test says so and stops, and the persistence job's unit test (an injected writer returning
//! ENOSPC, src/persist.rs) still covers the retry logic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .ok()?;
        // Filling must only ever hit the small mount, never the disk under it.
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let mounted = st.success() && dev(at) != at.parent().and_then(dev);
        mounted.then(|| Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem under `dir` with one file until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    p
}

fn raw_records(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits (up to `limit`, a safety bound) until `pred` holds.
fn wait_for(limit: Duration, what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_state_disk_stops_no_poll_or_alert_and_writing_resumes_when_freed() {
    let d = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&d.path().join("mnt"), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let state = fs.0.join("state");
    std::fs::write(
        d.path().join("alert.yaml"),
        "route: {receiver: stdout, group_wait: 1s, group_interval: 2s}\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("c.yaml"),
        format!(
            "intervals: {{base: 200ms, max: 200ms}}\ntransport: {{command: [{}, '{{node}}', '0', ok, '50']}}\n\
             nodes:\n  - name: a\n  - name: b\n",
            fake_probe().display()
        ),
    )
    .unwrap();
    let tee = d.path().join("raw.jsonl");
    let args = [
        "-c",
        "c.yaml",
        "--pipeline",
        "--alert-config",
        "alert.yaml",
        "--state-dir",
        state.to_str().unwrap(),
        "--tee",
        tee.to_str().unwrap(),
        "--stats-every",
        "1s",
    ];
    let mut w = Running::start(&args, d.path());
    let node_a = state.join("nodes/a.json");
    wait_for(Duration::from_secs(30), "nodes/a.json", || node_a.exists());
    let before: Value = serde_json::from_slice(&std::fs::read(&node_a).unwrap()).unwrap();
    let filler = fill(&fs.0);
    let full_at = raw_records(&tee).len();
    w.until(
        Duration::from_secs(60),
        "WatcherStateUnwritable firing",
        |s| {
            s.iter().any(|(_, v)| {
                v["labels"]["alertname"] == "WatcherStateUnwritable" && v["status"] == "firing"
            })
        },
    );
    // The failure is an error record and a stat; polling went on meanwhile.
    let raw = raw_records(&tee);
    let error = raw[full_at..]
        .iter()
        .find(|r| r["kind"] == "error")
        .expect("an error record");
    assert!(
        error["cause"].as_str().unwrap().contains("No space left"),
        "{error}"
    );
    let stats: Vec<&Value> = raw.iter().filter(|r| r["kind"] == "stats").collect();
    assert!(stats.iter().any(|s| s["state_unwritable"] == true));
    let unwritable_from = raw
        .iter()
        .position(|r| r["kind"] == "stats" && r["state_unwritable"] == true)
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "samples while the disk is full",
        || {
            raw_records(&tee)[unwritable_from..]
                .iter()
                .filter(|r| r["kind"] == "sample" && r["node"] == "a")
                .count()
                >= 5
        },
    );
    // What was written before the disk filled is still whole.
    let kept: Value = serde_json::from_slice(&std::fs::read(&node_a).unwrap()).unwrap();
    assert_eq!(kept["node"], "a");
    std::fs::remove_file(&filler).unwrap();
    w.until(
        Duration::from_secs(90),
        "WatcherStateUnwritable resolved",
        |s| {
            s.iter().any(|(_, v)| {
                v["labels"]["alertname"] == "WatcherStateUnwritable" && v["status"] == "resolved"
            })
        },
    );
    wait_for(
        Duration::from_secs(60),
        "nodes/a.json written again",
        || {
            std::fs::read(&node_a)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| {
                    v["updated"] != kept["updated"] && v["updated"] != before["updated"]
                })
        },
    );
    let breaker: Value =
        serde_json::from_slice(&std::fs::read(state.join("breaker.json")).unwrap()).unwrap();
    assert_eq!(breaker["format"], "ugro-breaker");
    w.signal("TERM");
    let (st, _) = w.wait(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0));
}
