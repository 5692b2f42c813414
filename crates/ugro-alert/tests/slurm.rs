//! slurm_drain with a recording stand-in `scontrol` on PATH: drain, own-reason resume,
//! foreign reason left alone, DOWN left alone, dry run prints and does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use ugro_types::Timestamp;

const SCONTROL: &str = r#"#!/bin/sh
{ printf 'CALL'; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "@DIR@/log"
d="@DIR@"
env > "$d/env"
if [ "$1" = show ] && [ "$2" = node ]; then
  n="$3"
  if [ ! -f "$d/$n.state" ]; then echo "Node $n not found" >&2; exit 1; fi
  printf 'NodeName=%s Arch=x86_64 CoresPerSocket=32\n   State=%s ThreadsPerCore=2\n' "$n" "$(cat "$d/$n.state")"
  if [ -s "$d/$n.reason" ]; then printf '   Reason=%s [root@2026-11-28T00:00:00]\n' "$(cat "$d/$n.reason")"; fi
  exit 0
fi
if [ "$1" = update ]; then
  n="${2#NodeName=}"
  case "$3" in
    State=DRAIN) echo "IDLE+DRAIN" > "$d/$n.state"; printf '%s' "${4#Reason=}" > "$d/$n.reason" ;;
    State=RESUME) echo IDLE > "$d/$n.state"; : > "$d/$n.reason" ;;
  esac
  exit 0
fi
exit 1
"#;

fn setup(dir: &Path) -> (String, String) {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    // The directory is baked in: scontrol sees only the basics and its `env` allow-list.
    write(
        &bin.join("scontrol"),
        &SCONTROL.replace("@DIR@", dir.to_str().unwrap()),
    );
    make_executable(&bin.join("scontrol"));
    for (n, st, reason) in [
        ("n-idle", "IDLE", ""),
        ("n-down", "DOWN*", "Not responding"),
        ("n-foreign", "IDLE+DRAIN", "hw ticket 123"),
        ("n-own", "MIXED+DRAIN", "ugro: earlier run"),
    ] {
        write(&dir.join(format!("{n}.state")), st);
        write(&dir.join(format!("{n}.reason")), reason);
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, dir.to_str().unwrap().to_owned())
}

fn updates(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("CALL\tupdate"))
        .map(|l| l.trim_start_matches("CALL\t").to_owned())
        .collect()
}

const NODES: [&str; 4] = ["n-idle", "n-down", "n-foreign", "n-own"];

fn cfg(dir: &Path) -> String {
    cfg_with(dir, "timeout: 5s")
}

fn cfg_with(dir: &Path, slurm: &str) -> String {
    let cfg = dir.join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "global:\n  cluster_min_nodes: 100\nroute:\n  receiver: drain\n  group_by: [node]\nreceivers:\n  - name: drain\n    slurm_drain: {{{slurm}}}\n"
        ),
    );
    cfg.to_str().unwrap().to_owned()
}

fn calls(dir: &Path, what: &str) -> usize {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// A stand-in Slurm, a configuration and a state file, run with --act.
struct Rig {
    dir: tempfile::TempDir,
    path: String,
    sdir: String,
    cfg: String,
}

impl Rig {
    fn new(slurm: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (path, sdir) = setup(dir.path());
        let cfg = cfg_with(dir.path(), slurm);
        Rig {
            dir,
            path,
            sdir,
            cfg,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, input: &str, extra: &[(&str, &str)]) -> String {
        let state = self.dir().join("s.json");
        let args = [
            "-c",
            self.cfg.as_str(),
            "--state",
            state.to_str().unwrap(),
            "--act",
        ];
        let mut env = vec![
            ("PATH", self.path.as_str()),
            ("SCONTROL_DIR", self.sdir.as_str()),
        ];
        env.extend_from_slice(extra);
        succeeded(&run(&args, input, &env))
    }
}

#[test]
fn a_node_slurm_does_not_know_is_reported_once_and_holds_back_no_other_drain() {
    let rig = Rig::new("timeout: 5s");
    let t = Timestamp(1_795_000_000_000);
    // The unknown node comes first: it used to be retried and block every drain behind it.
    let input = [
        sample("n-ghost", t, "critical", ""),
        sample("n-idle", t, "critical", ""),
    ]
    .join("\n");
    let err = rig.run(&input, &[]);
    assert_eq!(err.matches("Node n-ghost not found").count(), 1, "{err}");
    assert_eq!(calls(rig.dir(), "show\tnode\tn-ghost"), 1, "not retried");
    assert_eq!(
        updates(rig.dir()),
        [
            "update\tNodeName=n-idle\tState=DRAIN\tReason=ugro: NodeCritical: n-idle is critical (score 50)"
        ]
    );
    assert_eq!(
        spooled(&rig.dir().join("s.json.spool")),
        0,
        "nothing left to retry"
    );
    rig.run("", &[]);
    assert_eq!(
        calls(rig.dir(), "show\tnode\tn-ghost"),
        1,
        "a later run does not retry it"
    );
}

#[test]
fn scontrol_inherits_the_variables_its_env_lists_and_no_others() {
    let rig = Rig::new("timeout: 5s, env: [SLURM_CONF]");
    rig.run(
        &sample("n-idle", Timestamp(1_795_000_000_000), "critical", ""),
        &[
            ("SLURM_CONF", "/etc/slurm-test/slurm.conf"),
            ("UGRO_TEST_TOKEN", "s3cr3t"),
        ],
    );
    let seen = std::fs::read_to_string(rig.dir().join("env")).unwrap();
    assert!(
        seen.contains("SLURM_CONF=/etc/slurm-test/slurm.conf\n"),
        "{seen}"
    );
    assert!(
        !seen.contains("s3cr3t") && !seen.contains("SCONTROL_DIR"),
        "{seen}"
    );
    assert_eq!(updates(rig.dir()).len(), 1);
}

#[test]
fn drains_critical_nodes_and_resumes_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (path, sdir) = setup(dir.path());
    let cfg = cfg(dir.path());
    let state = dir.path().join("s.json");
    let args = [
        "-c",
        cfg.as_str(),
        "--state",
        state.to_str().unwrap(),
        "--act",
    ];
    let env = [("PATH", path.as_str()), ("SCONTROL_DIR", sdir.as_str())];
    let t = Timestamp(1_795_000_000_000);
    let crit: Vec<String> = NODES.iter().map(|n| sample(n, t, "critical", "")).collect();
    let out = run(&args, &crit.join("\n"), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        updates(dir.path()),
        [
            "update\tNodeName=n-idle\tState=DRAIN\tReason=ugro: NodeCritical: n-idle is critical (score 50)"
        ]
    );
    let healthy: Vec<String> = NODES
        .iter()
        .map(|n| sample(n, secs(t, 300), "healthy", ""))
        .collect();
    let out = run(&args, &healthy.join("\n"), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Groups already notified keep group_interval across runs: the resolves of the nodes whose
    // group had just flushed at the first record go out with the next run.
    let healthy: Vec<String> = NODES
        .iter()
        .map(|n| sample(n, secs(t, 600), "healthy", ""))
        .collect();
    let out = run(&args, &healthy.join("\n"), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut u = updates(dir.path());
    u.sort();
    assert_eq!(
        u,
        [
            "update\tNodeName=n-idle\tState=DRAIN\tReason=ugro: NodeCritical: n-idle is critical (score 50)",
            "update\tNodeName=n-idle\tState=RESUME",
            "update\tNodeName=n-own\tState=RESUME",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n-foreign.state")).unwrap(),
        "IDLE+DRAIN"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n-down.state")).unwrap(),
        "DOWN*"
    );
}

#[test]
fn dry_run_prints_what_it_would_do_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, sdir) = setup(dir.path());
    let cfg = cfg(dir.path());
    let state = dir.path().join("s.json");
    let args = ["-c", cfg.as_str(), "--state", state.to_str().unwrap()];
    let env = [("PATH", path.as_str()), ("SCONTROL_DIR", sdir.as_str())];
    let t = Timestamp(1_795_000_000_000);
    let crit: Vec<String> = NODES.iter().map(|n| sample(n, t, "critical", "")).collect();
    let out = run(&args, &crit.join("\n"), &env);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dry run"), "{err}");
    assert!(
        err.contains(
            "would run: scontrol update NodeName=n-idle State=DRAIN Reason=ugro: NodeCritical: n-idle is critical"
        ),
        "{err}"
    );
    assert!(updates(dir.path()).is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n-idle.state")).unwrap(),
        "IDLE"
    );
}

#[test]
fn a_node_it_drained_is_resumed_even_while_its_alerts_are_silenced() {
    let dir = tempfile::tempdir().unwrap();
    let (path, sdir) = setup(dir.path());
    let silences = dir.path().join("silences.yaml");
    write(&silences, "[]\n");
    let cfg = dir.path().join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "silences_file: {}\nglobal:\n  cluster_min_nodes: 100\nroute:\n  receiver: drain\n  group_by: [node]\nreceivers:\n  - name: drain\n    slurm_drain: {{timeout: 5s}}\n",
            silences.display()
        ),
    );
    let state = dir.path().join("s.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--act",
    ];
    let env = [("PATH", path.as_str()), ("SCONTROL_DIR", sdir.as_str())];
    let t = Timestamp(1_795_000_000_000);
    let out = run(&args, &sample("n-idle", t, "critical", ""), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n-idle.state")).unwrap(),
        "IDLE+DRAIN\n"
    );
    // Maintenance silences the node; meanwhile it recovers.
    write(
        &silences,
        &format!(
            "- matchers:\n    - {{name: node, value: n-idle, isRegex: false}}\n  startsAt: \"{}\"\n  endsAt: \"{}\"\n  createdBy: ops\n  comment: maintenance\n",
            secs(t, 60),
            secs(t, 3600)
        ),
    );
    let input = [
        sample("n-idle", secs(t, 120), "critical", ""),
        sample("n-idle", secs(t, 300), "healthy", ""),
    ]
    .join("\n");
    let out = run(&args, &input, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        updates(dir.path()),
        [
            "update\tNodeName=n-idle\tState=DRAIN\tReason=ugro: NodeCritical: n-idle is critical (score 50)",
            "update\tNodeName=n-idle\tState=RESUME",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n-idle.state")).unwrap(),
        "IDLE\n"
    );
}

#[test]
fn a_silenced_critical_node_is_neither_drained_nor_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, sdir) = setup(dir.path());
    let t = Timestamp(1_795_000_000_000);
    let silences = dir.path().join("silences.yaml");
    write(
        &silences,
        &format!(
            "- matchers:\n    - {{name: node, value: n-idle, isRegex: false}}\n  startsAt: \"{}\"\n  endsAt: \"{}\"\n  createdBy: ops\n  comment: maintenance\n",
            secs(t, -60),
            secs(t, 3600)
        ),
    );
    let cfg = dir.path().join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "silences_file: {}\nglobal:\n  cluster_min_nodes: 100\nroute:\n  receiver: drain\n  group_by: [node]\nreceivers:\n  - name: drain\n    slurm_drain: {{timeout: 5s}}\n",
            silences.display()
        ),
    );
    let state = dir.path().join("s.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--act",
    ];
    let env = [("PATH", path.as_str()), ("SCONTROL_DIR", sdir.as_str())];
    let input = [
        sample("n-idle", t, "critical", ""),
        sample("n-idle", secs(t, 300), "healthy", ""),
    ]
    .join("\n");
    let out = run(&args, &input, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(updates(dir.path()).is_empty(), "{:?}", updates(dir.path()));
}
