//! A real Nagios Core 4 (Debian `nagios4`) runs `ugro-score --format nagios` on a 100-node
//! input once; what it records in status.dat (state, plugin output, long output, perfdata) is
//! what the check printed: whole, uncut, and with perfdata thresholds that agree with the state;
//! the same output as a passive result and in the perfdata file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use ugro_e2e::{bin, require, root};

const NAGIOS: &str = "/usr/sbin/nagios4";

/// Stops the Nagios process this test started (its workers exit with it).
struct Nagios(Child);

impl Drop for Nagios {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.0.wait();
    }
}

/// 100 nodes from the busy H200 fixture: every tenth with a fatal XID, every tenth (offset)
/// with a row remap pending.
fn hundred_nodes() -> String {
    let fixture = root().join("crates/ugro-score/fixtures/h200-busy.jsonl");
    let busy: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    (0..100)
        .map(|i| {
            let mut v = busy.clone();
            v["node"] = json!(format!("gpu-node-{i:03}"));
            match i % 10 {
                3 => {
                    v["gpu"]["devices"][0]["xids"] =
                        json!([{"code": 79, "ts": "2026-11-28T16:38:00.000Z"}])
                }
                5 => v["gpu"]["devices"][0]["remapped_rows"]["pending"] = json!(true),
                _ => {}
            }
            format!("{v}\n")
        })
        .collect()
}

fn write_config(dir: &Path, check: &str) -> PathBuf {
    let d = dir.display();
    // As root, Nagios would drop to the nagios user, who cannot write the temp dir.
    let user = if rustix::process::geteuid().is_root() {
        "nagios_user=root\nnagios_group=root\n"
    } else {
        ""
    };
    std::fs::create_dir_all(dir.join("results")).unwrap();
    let main = format!(
        "log_file={d}/nagios.log\ncfg_file={d}/objects.cfg\nstatus_file={d}/status.dat\n\
         status_update_interval=1\ncheck_result_path={d}/results\ncommand_file={d}/nagios.cmd\n\
         check_external_commands=1\nlock_file={d}/nagios.lock\ntemp_file={d}/nagios.tmp\n\
         temp_path={d}\nstate_retention_file={d}/retention.dat\nretain_state_information=0\n\
         object_cache_file={d}/objects.cache\nprecached_object_file={d}/objects.precache\n\
         query_socket={d}/nagios.qh\n{user}enable_notifications=0\ninterval_length=1\n\
         check_result_reaper_frequency=1\nuse_syslog=0\nprocess_performance_data=1\n\
         service_perfdata_file={d}/perfdata.log\n\
         service_perfdata_file_template=$SERVICEDESC$\\t$SERVICEPERFDATA$\n\
         service_perfdata_file_mode=a\nservice_perfdata_file_processing_interval=0\n"
    );
    let days: String = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ]
    .iter()
    .map(|day| format!("  {day} 00:00-24:00\n"))
    .collect();
    // The service is checked only when the test forces it (a check interval of an hour).
    let objects = format!(
        "define timeperiod {{\n  timeperiod_name always\n  alias always\n{days}}}\n\
         define command {{\n  command_name ugro_check\n  command_line {check}\n}}\n\
         define command {{\n  command_name noop\n  command_line /bin/true\n}}\n\
         define contact {{\n  contact_name nobody\n  service_notification_period always\n  \
         host_notification_period always\n  service_notification_options n\n  \
         host_notification_options n\n  service_notification_commands noop\n  \
         host_notification_commands noop\n}}\n\
         define host {{\n  host_name cluster\n  address 127.0.0.1\n  check_command noop\n  \
         max_check_attempts 1\n  check_period always\n  contacts nobody\n  \
         notification_period always\n  active_checks_enabled 0\n}}\n\
         define service {{\n  host_name cluster\n  service_description ugro\n  \
         check_command ugro_check\n  max_check_attempts 1\n  check_interval 3600\n  \
         retry_interval 3600\n  notification_interval 3600\n  check_period always\n  \
         contacts nobody\n  notification_period always\n}}\n\
         define service {{\n  host_name cluster\n  service_description ugro-passive\n  \
         check_command noop\n  active_checks_enabled 0\n  passive_checks_enabled 1\n  \
         max_check_attempts 1\n  check_interval 3600\n  retry_interval 3600\n  \
         notification_interval 3600\n  check_period always\n  contacts nobody\n  \
         notification_period always\n}}\n"
    );
    std::fs::write(dir.join("nagios.cfg"), main).unwrap();
    std::fs::write(dir.join("objects.cfg"), objects).unwrap();
    dir.join("nagios.cfg")
}

/// Polls `f` until it gives a value or `deadline` passes (Nagios writes its files on its own
/// schedule; there is no event to wait on from outside).
fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `servicestatus` block of status.dat once the service has been checked.
fn checked_service(status: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(status).ok()?;
    let block = text
        .split("servicestatus {")
        .nth(1)?
        .split("\n\t}")
        .next()?;
    let fields: BTreeMap<String, String> = block
        .lines()
        .filter_map(|l| l.trim_start().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (fields.get("has_been_checked").map(String::as_str) == Some("1")).then_some(fields)
}

/// Perfdata tokens, split on the spaces outside quoted labels.
fn tokens(perf: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in perf.chars() {
        if c == '\'' {
            quoted = !quoted;
        } else if c == ' ' && !quoted {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// The state a token's own thresholds give (`N:` alerts below N, `N` outside 0..N), 0-3.
fn token_state(t: &str) -> u8 {
    let (label, rest) = t.split_once('=').expect(t);
    assert!(
        label.len() > 2 && label.starts_with('\'') && label.ends_with('\''),
        "cut token {t}"
    );
    let f: Vec<&str> = rest.split(';').collect();
    assert_eq!(f.len(), 5, "cut token {t}");
    let alerts = |v: f64, r: &str| match r.split_once(':') {
        _ if r.is_empty() => false,
        Some((a, "")) => v < a.parse::<f64>().expect(t),
        Some(_) => panic!("unexpected range in {t}"),
        None => v < 0.0 || v > r.parse::<f64>().expect(t),
    };
    match f[0].parse::<f64>() {
        Err(_) => 3,
        Ok(v) if alerts(v, f[2]) => 2,
        Ok(v) if alerts(v, f[1]) => 1,
        Ok(_) => 0,
    }
}

#[test]
fn nagios_core_records_a_hundred_node_check_whole_and_consistent() {
    if !require(
        "nagios4 (Debian package nagios4)",
        Path::new(NAGIOS).exists(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("samples.jsonl");
    std::fs::write(&input, hundred_nodes()).unwrap();
    let score = bin("ugro-score");
    let check = format!("{} --format nagios {}", score.display(), input.display());
    // What the plugin prints on its own, to compare with what Nagios kept.
    let direct = Command::new(&score)
        .args(["--format", "nagios"])
        .arg(&input)
        .output()
        .unwrap();
    let printed = String::from_utf8(direct.stdout).unwrap();
    assert!(printed.len() < 8192, "{} bytes", printed.len());
    let (first, long) = printed.split_once('\n').unwrap();
    let (text, perf) = first.split_once(" | ").unwrap();

    let cfg = write_config(dir.path(), &check);
    let child = Command::new(NAGIOS)
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _nagios = Nagios(child);
    let cmd = dir.path().join("nagios.cmd");
    wait_for("Nagios's command file", Duration::from_secs(60), || {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(&cmd)
            .ok()
            .filter(|m| m.file_type().is_fifo())
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(
        &cmd,
        format!("[{now}] SCHEDULE_FORCED_SVC_CHECK;cluster;ugro;{now}\n"),
    )
    .unwrap();
    let svc = wait_for(
        "the forced check in status.dat",
        Duration::from_secs(120),
        || checked_service(&dir.path().join("status.dat")),
    );

    assert_eq!(
        svc["current_state"],
        direct.status.code().unwrap().to_string()
    );
    assert_eq!(svc["current_state"], "2", "a fatal XID on ten nodes");
    // Nagios stores `;` of the plugin output as `:` (its log and status formats use `;`).
    assert_eq!(svc["plugin_output"], text.replace(';', ":"));
    assert_eq!(
        svc["long_plugin_output"],
        long.trim_end().replace('\n', "\\n")
    );
    let kept = &svc["performance_data"];
    assert_eq!(kept, perf, "Nagios kept the perfdata as printed");
    let kept = tokens(kept);
    let worst = kept
        .iter()
        .map(|t| token_state(t))
        .max_by_key(|s| [0, 1, 3, 2][*s as usize]);
    assert_eq!(worst, Some(2), "the perfdata thresholds say CRITICAL too");
    assert_eq!(
        kept.iter().filter(|t| t.contains(" score'=")).count(),
        100,
        "every node's score"
    );
    let left: usize = text
        .split("perfdata: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(text);
    assert!(
        text.contains(&format!("{left} of {} values left out", kept.len() + left)),
        "{text}"
    );
}
