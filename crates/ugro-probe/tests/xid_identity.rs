//! The same kernel record is the same event (boot id, sequence number, time) in every probe
//! process: two one-shot runs, and a resident probe restarted mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use ugro_types::{Sample, Timestamp};

const BOOT: &str = "0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60";

fn probe(state: &Path, kmsg: &Path) -> Command {
    let mut c = Command::cargo_bin("ugro-probe").unwrap();
    c.env_remove("UGRO_PROBE_CONFIG")
        .arg("--cpu-state-file")
        .arg(state.join("cpu.json"))
        .arg("--gpu-fixture")
        .arg(ugro_e2e::gpu_fixture("h200x8-idle.json"))
        .arg("--kmsg-file")
        .arg(kmsg)
        // Every record of this boot is in the window, however long ago it booted.
        .args(["--xid-lookback", "3650d"]);
    c
}

/// A kmsg record for an XID logged `usec` microseconds after boot, on GPU `bus`.
fn record(seq: u64, usec: u64, bus: &str, code: u32) -> String {
    format!("4,{seq},{usec},-;NVRM: Xid (PCI:0000:{bus}:00): {code}, pid=7, name=python\n")
}

/// What makes an XID report the same event: (boot id, seq, ts, code).
type Event = (Option<String>, Option<u64>, Option<Timestamp>, u32);

/// Every XID in a sample, in seq order.
fn events(s: &Sample) -> Vec<Event> {
    let g = s.gpu.as_ref().expect("gpu section");
    let mut v: Vec<_> = g
        .devices
        .iter()
        .flat_map(|d| &d.xids)
        .chain(&g.unattributed_xids)
        .map(|x| (x.boot_id.clone(), x.seq, x.ts, x.code))
        .collect();
    v.sort_by_key(|e| e.1);
    v
}

fn one(c: &mut Command) -> Sample {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_probe_processes_over_the_same_replay_report_each_event_with_the_same_identity() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    let text = [
        record(500, 4_000_123, "5d", 74),
        "6,501,4100000,-;usb 1-1: new device\n".to_owned(),
        record(502, 4_200_999, "5d", 94),
        record(503, 9_876_543, "ee", 79),
    ]
    .concat();
    std::fs::write(&kmsg, text).unwrap();
    let a = one(probe(d.path(), &kmsg).args(["--boot-id", BOOT]));
    let b = one(probe(d.path(), &kmsg).args(["--boot-id", BOOT]));
    let ea = events(&a);
    assert_eq!(ea.len(), 3, "{ea:?}");
    assert_eq!(ea, events(&b));
    let seqs: Vec<_> = ea.iter().map(|e| e.1).collect();
    assert_eq!(seqs, [Some(500), Some(502), Some(503)]);
    assert!(ea.iter().all(|e| e.0.as_deref() == Some(BOOT)));
    // The time is the boot's start (the kernel's btime) plus the record's offset.
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(ea[0].2, Some(Timestamp(btime * 1000 + 4000)));
    assert_eq!(ea[2].2, Some(Timestamp(btime * 1000 + 9876)));
    // Without --boot-id a replay is taken to be of this boot.
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let c = one(&mut probe(d.path(), &kmsg));
    assert!(
        events(&c)
            .iter()
            .all(|e| e.0.as_deref() == Some(host.trim()))
    );
    assert_eq!(c.host.unwrap().boot_id.as_deref(), Some(host.trim()));
}

/// A resident probe on `kmsg`, driven one sample at a time.
struct Resident {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Resident {
    fn start(state: &Path, kmsg: &Path) -> Self {
        let mut child = probe(state, kmsg)
            .args(["--serve", "--boot-id", BOOT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Resident { child, out }
    }

    fn sample(&mut self) -> Sample {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn a_restarted_resident_probe_reports_the_same_identity_for_the_same_event() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    std::fs::write(&kmsg, record(900, 1_000_500, "18", 48)).unwrap();
    let mut first = Resident::start(d.path(), &kmsg);
    let s1 = first.sample();
    // The log grows while the probe runs.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&kmsg)
        .unwrap();
    f.write_all(record(901, 2_000_500, "18", 48).as_bytes())
        .unwrap();
    drop(f);
    let s2 = first.sample();
    first.stop();
    // The watcher restarts the probe: the same events come back, not new ones.
    let mut second = Resident::start(d.path(), &kmsg);
    let s3 = second.sample();
    second.stop();
    assert_eq!(events(&s1).len(), 1);
    assert_eq!(events(&s1)[0], events(&s2)[0]);
    assert_eq!(events(&s2).len(), 2);
    assert_eq!(events(&s2), events(&s3));
    assert_eq!(events(&s3)[1].1, Some(901));
}
