//! The controller through the stage, one cron run per poll, with an in-memory Slurm: what it
//! runs, what it sets, what it escalates. The real slurmctld is in tests/slurm_remedy.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ugro_types::stage::Stage;
use ugro_types::{Alert, AlertStatus, Timestamp};

use crate::config::AlertConfig;
use crate::deliver::{Exec, ExecOutput, Failure, Transport};
use crate::stage::AlertStage;

#[derive(Debug, Default)]
struct Slurm {
    /// node -> (state, reason)
    nodes: BTreeMap<String, (String, String)>,
    /// node -> Comment (where replicas keep their lease)
    comments: BTreeMap<String, String>,
    /// Programs other than scontrol, as run.
    ran: Vec<Vec<String>>,
    /// Exit status of `remedy` and `check`.
    remedy_rc: i32,
    check_rc: i32,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<Mutex<Slurm>>);

fn ok(stdout: String) -> ExecOutput {
    ExecOutput {
        status: Some(0),
        stdout,
        stderr: String::new(),
    }
}

impl Fake {
    fn scontrol(&self, args: &[String]) -> ExecOutput {
        let mut s = self.0.lock().unwrap();
        let node = args
            .iter()
            .find_map(|a| a.strip_prefix("NodeName="))
            .or(args.get(2).map(String::as_str))
            .unwrap_or("")
            .to_owned();
        if let Some(c) = args.iter().find_map(|a| a.strip_prefix("Comment=")) {
            s.comments.insert(node, c.to_owned());
            return ok(String::new());
        }
        let comment = s.comments.get(&node).cloned().unwrap_or_default();
        let Some((state, reason)) = s.nodes.get_mut(&node) else {
            return ExecOutput {
                status: Some(1),
                stdout: String::new(),
                stderr: format!("Node {node} not found"),
            };
        };
        if args[0] == "show" {
            let mut out = format!("NodeName={node} Arch=x86_64\n   State={state} CPUTot=2\n");
            if !comment.is_empty() {
                out.push_str(&format!("   Comment={comment}\n"));
            }
            if !reason.is_empty() {
                out.push_str(&format!("   Reason={reason} [root@2026-11-28T00:00:00]\n"));
            }
            return ok(out);
        }
        if args.iter().any(|a| a == "State=RESUME") {
            *state = "IDLE".into();
            reason.clear();
        } else if let Some(r) = args.iter().find_map(|a| a.strip_prefix("Reason=")) {
            if !state.contains("DRAIN") {
                state.push_str("+DRAIN");
            }
            *reason = r.to_owned();
        }
        ok(String::new())
    }

    fn node(&self, n: &str) -> (String, String) {
        self.0.lock().unwrap().nodes[n].clone()
    }

    fn ran(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.ran.iter().map(|a| a.join(" ")).collect()
    }
}

impl Transport for Fake {
    fn post(
        &self,
        _: &str,
        _: &[(&str, String)],
        _: &[u8],
        _: std::time::Duration,
    ) -> Result<(), Failure> {
        Err(Failure::Permanent("no HTTP here".into()))
    }

    fn exec(&self, req: &Exec<'_>) -> Result<ExecOutput, String> {
        if req.argv[0] == "scontrol" {
            return Ok(self.scontrol(&req.argv[1..]));
        }
        let mut s = self.0.lock().unwrap();
        s.ran.push(req.argv.to_vec());
        let rc = if req.argv[0] == "check" {
            s.check_rc
        } else {
            s.remedy_rc
        };
        Ok(ExecOutput {
            status: Some(rc),
            stdout: format!("{} says {rc}\n", req.argv[0]),
            stderr: String::new(),
        })
    }

    /// The lease's settle wait passes at once: no other replica writes in between here
    /// unless a test says so.
    fn sleep(&self, _: std::time::Duration) {}
}

const T0: i64 = 1_795_000_000_000;

const GPU3: &str = r#"{"status":"ok","devices":[{"index":3,"pci_bus_id":"00000000:9D:00.0"}]}"#;

/// A sample of `node` at poll `i` (30 s apart): critical with a fatal XID on GPU 3, or
/// healthy.
fn line(node: &str, i: i64, critical: bool) -> String {
    let (state, reasons) = if critical {
        (
            "critical",
            r#"[{"code":"xid_fatal","component":"gpu","gpu":3,"fatal":true,"action":"reset_gpu","message":"XID 79 (fell off the bus)"}]"#,
        )
    } else {
        ("healthy", "[]")
    };
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{}","node":"{node}","gpu":{GPU3},"score":{{"state":"{state}","action":"reset_gpu","components":{{}},"reasons":{reasons},"summary":"s"}}}}"#,
        Timestamp(T0 + i * 30_000)
    )
}

fn config(act: bool, extra: &str) -> String {
    format!(
        r#"alert_rules: {{'*': {{for: 0, keep_firing_for: 0}}}}
flap_detection: {{enabled: false}}
global: {{cluster_min_nodes: 1000}}
route:
  receiver: drain
  group_by: [node]
  group_interval: 1s
  routes:
    - {{matchers: ['alertname=~"NodeNeedsService|QuarantineBudgetExhausted"'], receiver: out, continue: true}}
    - receiver: drain
receivers:
  - name: out
    stdout: {{}}
  - name: drain
    slurm_drain:
      act: {act}
      scontrol: scontrol
      remediation:
        actions:
          reset_gpu: [remedy, "{{node}}", "--gpu={{gpu}}", "{{pci_bus_id}}", "{{action}}"]
      verify:
        healthy_polls: 2
{extra}"#
    )
}

/// One cron run over `lines`; the alerts it printed.
fn run(dir: &Path, yaml: &str, fake: &Fake, lines: &[String]) -> Vec<Alert> {
    let cfg = AlertConfig::from_str(Path::new("a.yaml"), yaml).unwrap();
    let mut st =
        AlertStage::with_transport(cfg, &dir.join("s.json"), Box::new(fake.clone())).unwrap();
    let mut out: Vec<Alert> = Vec::new();
    let mut emit = |b: &[u8]| {
        out.push(serde_json::from_slice(b).unwrap());
        Ok(())
    };
    for l in lines {
        st.process(l, &mut emit).unwrap();
    }
    st.finish(&mut emit).unwrap();
    drop(st);
    out
}

fn slurm(nodes: &[&str]) -> Fake {
    let f = Fake::default();
    for n in nodes {
        f.0.lock()
            .unwrap()
            .nodes
            .insert((*n).to_owned(), ("IDLE".into(), String::new()));
    }
    f
}

fn needs_service(alerts: &[Alert]) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.labels["alertname"] == "NodeNeedsService" && a.status == AlertStatus::Firing)
        .collect()
}

#[test]
fn the_remediation_gets_the_faulty_gpu_its_pci_bus_id_and_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let f = slurm(&["g1"]);
    let yaml = config(true, "");
    run(dir.path(), &yaml, &f, &[line("g1", 0, true)]);
    assert_eq!(f.ran(), ["remedy g1 --gpu=3 00000000:9D:00.0 reset_gpu"]);
    assert_eq!(
        f.node("g1"),
        (
            "IDLE+DRAIN".into(),
            "ugro: remedy reset_gpu verifying: GpuXidFatal gpu=3 xid=79".into()
        )
    );
    run(dir.path(), &yaml, &f, &[line("g1", 1, false)]);
    assert!(f.node("g1").0.contains("DRAIN"), "one healthy poll of two");
    run(dir.path(), &yaml, &f, &[line("g1", 2, false)]);
    assert_eq!(f.node("g1"), ("IDLE".into(), String::new()));
}

#[test]
fn a_fault_that_returns_after_two_remediations_needs_service_without_a_third() {
    let dir = tempfile::tempdir().unwrap();
    let f = slurm(&["g1"]);
    let yaml = config(true, "");
    let mut i = 0;
    for _ in 0..2 {
        for critical in [true, false, false] {
            run(dir.path(), &yaml, &f, &[line("g1", i, critical)]);
            i += 1;
        }
        assert_eq!(f.node("g1").0, "IDLE", "remediated, verified, resumed");
    }
    assert_eq!(f.ran().len(), 2);
    let alerts = run(dir.path(), &yaml, &f, &[line("g1", i, true)]);
    assert_eq!(f.ran().len(), 2, "no third remediation");
    let (state, reason) = f.node("g1");
    assert!(state.contains("DRAIN"));
    assert_eq!(
        reason,
        "ugro: needs service: GpuXidFatal gpu=3 xid=79: returned after 2 remediations within 1day"
    );
    let a = needs_service(&alerts);
    assert_eq!(a.len(), 1, "{alerts:?}");
    assert_eq!(a[0].annotations["action"], "hardware_inspection");
    assert!(a[0].annotations["description"].contains("remedy says 0"));

    // The operator fixes it and releases it: the alert resolves, ugro holds it no more.
    crate::remedy::enqueue(
        &dir.path().join("s.json"),
        &crate::remedy::Command::Release { node: "g1".into() },
    )
    .unwrap();
    let alerts = run(dir.path(), &yaml, &f, &[line("g1", i + 1, false)]);
    let later = run(dir.path(), &yaml, &f, &[line("g1", i + 2, false)]);
    assert!(
        alerts
            .iter()
            .chain(&later)
            .any(|a| a.labels["alertname"] == "NodeNeedsService"
                && a.status == AlertStatus::Resolved),
        "{alerts:?} {later:?}"
    );
}

#[test]
fn a_failing_check_keeps_the_node_drained_and_counts_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let f = slurm(&["g1"]);
    f.0.lock().unwrap().check_rc = 1;
    // Under verify:, beside healthy_polls.
    let yaml = config(true, "        check: [check, \"{node}\"]\n");
    for (i, critical) in [true, false, false].into_iter().enumerate() {
        run(dir.path(), &yaml, &f, &[line("g1", i as i64, critical)]);
    }
    assert_eq!(
        f.ran(),
        ["remedy g1 --gpu=3 00000000:9D:00.0 reset_gpu", "check g1"]
    );
    let (state, reason) = f.node("g1");
    assert!(state.contains("DRAIN"), "{state}");
    assert!(
        reason.starts_with("ugro: remedy reset_gpu failed: GpuXidFatal gpu=3 xid=79: check failed (exit 1: check says 1)"),
        "{reason}"
    );
}

#[test]
fn a_dry_run_says_what_it_would_run_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = slurm(&["g1"]);
    let yaml = config(false, "");
    run(dir.path(), &yaml, &f, &[line("g1", 0, true)]);
    run(dir.path(), &yaml, &f, &[line("g1", 1, true)]);
    assert!(f.ran().is_empty());
    assert_eq!(f.node("g1"), ("IDLE".into(), String::new()));
}

/// The same configuration with a lease held as `holder`.
fn replica(holder: &str) -> String {
    config(true, "").replace(
        "      scontrol: scontrol\n",
        &format!(
            "      scontrol: scontrol\n      lease: {{holder: {holder}, ttl: 1h, settle: 2s}}\n"
        ),
    )
}

fn lease_holder(f: &Fake, node: &str) -> String {
    let c =
        f.0.lock()
            .unwrap()
            .comments
            .get(node)
            .cloned()
            .unwrap_or_default();
    crate::deliver::lease::parse(&c)
        .map(|l| l.holder)
        .unwrap_or_default()
}

fn held(dir: &Path) -> crate::remedy::RemedyState {
    let lock = ugro_support::state::StateLock::acquire(&dir.join("s.json.remedy")).unwrap();
    lock.read(crate::remedy::STATE_FORMAT, crate::remedy::STATE_VERSION)
        .unwrap()
        .unwrap()
}

#[test]
fn of_two_replicas_fed_the_same_faults_only_the_lease_holder_remediates_and_resumes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let f = slurm(&["g1"]);
    f.0.lock()
        .unwrap()
        .comments
        .insert("g1".into(), "rma 42".into());
    let (ya, yb) = (replica("replica-a"), replica("replica-b"));
    run(a.path(), &ya, &f, &[line("g1", 0, true)]);
    assert_eq!(lease_holder(&f, "g1"), "replica-a");
    run(b.path(), &yb, &f, &[line("g1", 0, true)]);
    assert_eq!(f.ran().len(), 1, "one remediation: {:?}", f.ran());
    let follows = held(b.path()).held["g1"].follows.clone().unwrap();
    assert_eq!(follows.holder, "replica-a");
    assert!(follows.seen_drained);

    for i in 1..=2 {
        run(a.path(), &ya, &f, &[line("g1", i, false)]);
        run(b.path(), &yb, &f, &[line("g1", i, false)]);
    }
    assert_eq!(f.node("g1"), ("IDLE".into(), String::new()));
    assert_eq!(f.ran().len(), 1);
    assert!(held(a.path()).held.is_empty());
    assert!(
        held(b.path()).held.is_empty(),
        "b let go once a resumed it: {:?}",
        held(b.path()).held
    );
    let comment = f.0.lock().unwrap().comments["g1"].clone();
    assert!(
        comment.starts_with("rma 42 ugro-lease:replica-a:"),
        "{comment}"
    );
}

#[test]
fn when_the_holder_dies_after_remediating_the_other_replica_verifies_and_resumes_without_remediating_again()
 {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let f = slurm(&["g1"]);
    let (ya, yb) = (replica("replica-a"), replica("replica-b"));
    run(a.path(), &ya, &f, &[line("g1", 0, true)]);
    run(b.path(), &yb, &f, &[line("g1", 0, true)]);
    assert_eq!(f.ran().len(), 1);
    // a dies here; its lease runs out.
    f.0.lock()
        .unwrap()
        .comments
        .insert("g1".into(), "ugro-lease:replica-a:1000".into());
    run(b.path(), &yb, &f, &[line("g1", 1, false)]);
    assert_eq!(lease_holder(&f, "g1"), "replica-b");
    let st = held(b.path());
    assert!(
        matches!(
            st.held["g1"].phase,
            crate::remedy::Phase::Verifying {
                remediated: true,
                ..
            }
        ),
        "{:?}",
        st.held["g1"]
    );
    assert_eq!(st.held["g1"].follows, None);
    assert_eq!(
        st.history["g1"].remediations.len(),
        1,
        "a's remediation counts"
    );
    for i in 2..=3 {
        run(b.path(), &yb, &f, &[line("g1", i, false)]);
    }
    assert_eq!(f.node("g1"), ("IDLE".into(), String::new()));
    assert_eq!(f.ran().len(), 1, "not remediated again: {:?}", f.ran());
}

#[test]
fn a_replica_taking_over_a_node_that_needs_service_keeps_it_drained_and_raises_the_alert() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let f = slurm(&["g1"]);
    let yb = replica("replica-b");
    run(a.path(), &replica("replica-a"), &f, &[line("g1", 0, true)]);
    run(b.path(), &yb, &f, &[line("g1", 0, true)]);
    {
        let mut s = f.0.lock().unwrap();
        s.nodes.get_mut("g1").unwrap().1 =
            "ugro: needs service: GpuXidFatal gpu=3 xid=79: 2 failed remediations within 7days"
                .into();
        s.comments
            .insert("g1".into(), "ugro-lease:replica-a:1000".into());
    }
    let alerts = run(b.path(), &yb, &f, &[line("g1", 1, false)]);
    assert_eq!(needs_service(&alerts).len(), 1, "{alerts:?}");
    for i in 2..=4 {
        run(b.path(), &yb, &f, &[line("g1", i, false)]);
    }
    let (state, reason) = f.node("g1");
    assert!(state.contains("DRAIN"), "{state}");
    assert_eq!(
        reason,
        "ugro: needs service: GpuXidFatal gpu=3 xid=79: 2 failed remediations within 7days"
    );
    assert_eq!(f.ran().len(), 1);
}

#[test]
fn a_holder_verifying_a_node_renews_its_lease_so_the_other_replica_does_not_take_it_over() {
    let a = tempfile::tempdir().unwrap();
    let f = slurm(&["g1"]);
    let ya = replica("replica-a");
    run(a.path(), &ya, &f, &[line("g1", 0, true)]);
    // Its lease is about to run out while it counts healthy polls.
    let soon = crate::deliver::lease::unix_now() + 1;
    f.0.lock()
        .unwrap()
        .comments
        .insert("g1".into(), format!("ugro-lease:replica-a:{soon}"));
    run(a.path(), &ya, &f, &[line("g1", 1, false)]);
    let c = f.0.lock().unwrap().comments["g1"].clone();
    let l = crate::deliver::lease::parse(&c).unwrap();
    assert_eq!(l.holder, "replica-a");
    assert!(l.until > soon + 3000, "renewed for its ttl (1h): {l:?}");
    assert!(f.node("g1").0.contains("DRAIN"), "still verifying");
}

#[test]
fn a_failure_found_on_taking_a_node_over_is_counted_and_retried_later_not_at_once() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let f = slurm(&["g1"]);
    f.0.lock().unwrap().remedy_rc = 1;
    let yb = replica("replica-b");
    run(a.path(), &replica("replica-a"), &f, &[line("g1", 0, true)]);
    run(b.path(), &yb, &f, &[line("g1", 0, true)]);
    let failed = f.node("g1").1;
    assert!(
        failed.starts_with("ugro: remedy reset_gpu failed: "),
        "{failed}"
    );
    f.0.lock()
        .unwrap()
        .comments
        .insert("g1".into(), "ugro-lease:replica-a:1000".into());
    run(b.path(), &yb, &f, &[line("g1", 1, true)]);
    assert_eq!(f.ran().len(), 1, "retried after retry_after, not now");
    assert_eq!(f.node("g1").1, failed, "the reason says it already");
    let st = held(b.path());
    assert!(
        matches!(st.held["g1"].phase, crate::remedy::Phase::Failed { .. }),
        "{:?}",
        st.held["g1"]
    );
    assert_eq!(st.history["g1"].failures.len(), 1);
}
