//! With HOME and XDG_STATE_HOME unset, state goes to `ugro-<uid>` in the temporary directory, a
//! name anyone can predict. A directory another user made there first is refused, so a spool
//! entry planted in it is never delivered with this user's receivers and credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{make_executable, write, write_config};
use ugro_types::{Alert, AlertStatus, LabelSet, Timestamp};

struct Setup {
    _dir: tempfile::TempDir,
    tmp: PathBuf,
    marks: PathBuf,
    cfg: PathBuf,
}

/// A temporary directory to serve as TMPDIR, and an exec receiver `x` that records each
/// notification it gets in `marks`.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    let marks = dir.path().join("marks");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir(&marks).unwrap();
    let script = dir.path().join("record.sh");
    write(
        &script,
        &format!("#!/bin/sh\ncat > \"{}/$$\"\n", marks.display()),
    );
    make_executable(&script);
    let cfg = dir.path().join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "route:\n  receiver: x\nreceivers:\n  - name: x\n    exec:\n      command: [{:?}]\n      timeout: 5s\n",
            script.display().to_string()
        ),
    );
    Setup {
        _dir: dir,
        tmp,
        marks,
        cfg,
    }
}

fn fallback(tmp: &Path) -> PathBuf {
    tmp.join(format!("ugro-{}", rustix::process::geteuid().as_raw()))
}

/// The fallback directory, made before ugro-alert runs with `mode`, holding a notification for
/// receiver `x` that this user never raised, as the spool stores it.
fn precreate_with_forged_entry(tmp: &Path, mode: u32) -> PathBuf {
    let dir = fallback(tmp);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    plant_forged_entry(&dir);
    dir
}

fn plant_forged_entry(state_dir: &Path) {
    let spool = state_dir.join("alert.json.spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mut labels = LabelSet::new();
    labels.insert("alertname".into(), "ForgedByAnotherUser".into());
    let t = Timestamp(1_795_000_000_000);
    let alert = Alert::new(t, AlertStatus::Firing, labels.clone(), t);
    let n = serde_json::json!({
        "id": "forged-1",
        "receiver": "x",
        "groupKey": "{}:{alertname=\"ForgedByAnotherUser\"}",
        "groupLabels": labels,
        "alerts": [alert],
        "ts": t,
    });
    write(
        &spool.join("00000000000000000001.json"),
        &serde_json::to_string(&n).unwrap(),
    );
}

/// One cron run with no home and no XDG state directory.
fn run_homeless(s: &Setup) -> Output {
    Command::new(assert_cmd::cargo::cargo_bin("ugro-alert"))
        .args(["-c", s.cfg.to_str().unwrap()])
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .env("TMPDIR", &s.tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn delivered(s: &Setup) -> Vec<String> {
    std::fs::read_dir(&s.marks)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn without_a_home_state_goes_to_a_private_directory_it_creates() {
    let s = setup();
    let out = run_homeless(&s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = fallback(&s.tmp);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(dir.join("alert.json").exists(), "state written there");
}

#[test]
fn spool_entries_in_this_users_own_private_directory_are_delivered() {
    // The control for the refusals below: the same planted entry, in a directory this user
    // made private, is retried like any spooled notification.
    let s = setup();
    precreate_with_forged_entry(&s.tmp, 0o700);
    let out = run_homeless(&s);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = delivered(&s);
    assert!(
        got.iter().any(|m| m.contains("ForgedByAnotherUser")),
        "{got:?}"
    );
}

#[test]
fn a_precreated_world_writable_directory_is_refused_and_its_spool_never_delivered() {
    let s = setup();
    let dir = precreate_with_forged_entry(&s.tmp, 0o777);
    let out = run_homeless(&s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("not private"), "{err}");
    assert!(delivered(&s).is_empty(), "a planted entry was delivered");
    assert!(!dir.join("alert.json").exists(), "state written into it");
}

#[test]
fn a_directory_owned_by_another_user_is_refused_and_its_spool_never_delivered() {
    let s = setup();
    let dir = precreate_with_forged_entry(&s.tmp, 0o700);
    // Giving it away needs root (as CI runs); the ownership rule itself is also unit-tested
    // in ugro-support without root.
    let nobody = rustix::process::Uid::from_raw(65_534);
    if rustix::fs::chown(&dir, Some(nobody), None).is_err() {
        assert!(
            !rustix::process::geteuid().is_root(),
            "chown failed as root"
        );
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let out = run_homeless(&s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(delivered(&s).is_empty(), "a planted entry was delivered");
}
