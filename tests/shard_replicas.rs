//! Two shards × two replicas of `ugro-watch --pipeline` over one fleet (real ugro-probe on GPU
//! fixtures, some with XID 79), all posting to a clustered pair of real Alertmanagers that page
//! a webhook recorder: every node is polled by exactly the replicas of its shard, and each
//! alert group pages exactly once — with all four watchers, after one replica is killed, and
//! with one Alertmanager down and after it returns.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ugro_e2e::alertmanager::{
    AmCluster, Recorder, available, replica_route, wait_for, write_replica_configs,
};
use ugro_e2e::{KillOnDrop, bin, records, root};
use ugro_watch::shard::owner;

const GROUP_INTERVAL_S: u64 = 4;
const SHARDS: [&str; 2] = ["1/2", "2/2"];

struct Watcher {
    shard: &'static str,
    dir: PathBuf,
    child: KillOnDrop,
}

impl Watcher {
    fn start(work: &Path, shard: &'static str, replica: &str) -> Watcher {
        let dir = work.join(format!("w{}{replica}", &shard[..1]));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |f: &str| dir.join(f).display().to_string();
        let w = |f: &str| work.join(f).display().to_string();
        let child = Command::new(bin("ugro-watch"))
            .args(["-c", &w("cluster.yaml"), "--pipeline", "--shard", shard])
            .args(["--breaker-config", &w("breaker.yaml")])
            .args(["--alert-config", &w("alert.yaml")])
            .args(["--breaker-state", &p("breaker.json")])
            .args(["--alert-state", &p("alert.json"), "--tee", &p("raw.jsonl")])
            .args(["--score-state", &p("score.json")])
            .args(["--stats-every", "0", "--format", "json", "--no-deploy"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(p("stderr")).unwrap()))
            .spawn()
            .unwrap();
        Watcher {
            shard,
            dir,
            child: KillOnDrop::new(child),
        }
    }

    fn polled(&self) -> BTreeSet<String> {
        let raw = std::fs::read(self.dir.join("raw.jsonl")).unwrap_or_default();
        records(&raw)
            .iter()
            .filter(|r| r["kind"] == "sample")
            .filter_map(|r| r["node"].as_str().map(str::to_owned))
            .collect()
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = self.child.get() {
            let st = Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    fn kill(&mut self) {
        self.child.kill();
    }
}

/// The fleet: `names`, those in `faulty` on the XID 79 fixture, the others healthy.
fn write_cluster(work: &Path, names: &[String], faulty: &BTreeSet<String>) {
    let probe = bin("ugro-probe");
    let fixtures = root().join("crates/ugro-probe/fixtures");
    let mut y =
        String::from("intervals: {base: 500ms, max: 500ms, spread: 0}\ntimeout: 5s\nnodes:\n");
    for n in names {
        let f = if faulty.contains(n) {
            "fault-xid79-gpu-lost.json"
        } else {
            "h200x8-idle.json"
        };
        y.push_str(&format!(
            "  - {{name: {n}, transport: {{command: [{}, --serve, --node, '{{node}}', --gpu-fixture, {}]}}}}\n",
            probe.display(),
            fixtures.join(f).display()
        ));
    }
    std::fs::write(work.join("cluster.yaml"), y).unwrap();
}

/// Firing pages per alert group (Alertmanager's groupKey) so far.
fn firing_pages(hook: &Recorder) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in hook.got().iter().filter(|p| p["status"] == "firing") {
        *m.entry(p["groupKey"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    m
}

fn paged_nodes(hook: &Recorder) -> BTreeSet<String> {
    hook.got()
        .iter()
        .filter_map(|p| p["groupLabels"]["node"].as_str().map(str::to_owned))
        .collect()
}

/// Waits past the next group flush of every instance: a duplicate page would come then, and
/// nothing signals a flush that pages nothing.
fn past_a_flush() {
    std::thread::sleep(Duration::from_secs(GROUP_INTERVAL_S * 2 + 2));
}

fn assert_once(hook: &Recorder, ams: &AmCluster, when: &str) {
    let pages = firing_pages(hook);
    assert!(
        pages.values().all(|&n| n == 1),
        "{when}: more than one page for a group: {pages:?}\n{}",
        ams.logs()
    );
}

#[test]
fn two_shards_of_two_replicas_poll_each_node_by_its_shard_and_page_each_group_once() {
    if !available() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let work = d.path();
    let hook = Recorder::start();
    let mut ams = AmCluster::start(&work.join("am"), 2, &replica_route(&hook, GROUP_INTERVAL_S));
    write_replica_configs(work, &ams);
    let mut names: Vec<String> = (0..12).map(|i| format!("gpu-{i:02}")).collect();
    // One faulty node in each shard.
    let faulty: BTreeSet<String> = (1..=2)
        .filter_map(|s| names.iter().find(|n| owner(n, 2) == s).cloned())
        .collect();
    assert_eq!(faulty.len(), 2);
    write_cluster(work, &names, &faulty);

    let mut ws: Vec<Watcher> = SHARDS
        .iter()
        .flat_map(|s| ["a", "b"].map(|r| Watcher::start(work, s, r)))
        .collect();

    // Every node polled by exactly the replicas of its shard.
    for w in &ws {
        let want: BTreeSet<String> = names
            .iter()
            .filter(|n| format!("{}/2", owner(n, 2)) == w.shard)
            .cloned()
            .collect();
        wait_for("a cycle of every node", || w.polled().len() >= want.len());
        assert_eq!(w.polled(), want, "shard {}", w.shard);
    }
    wait_for("a page for each faulty node", || {
        paged_nodes(&hook) == faulty
    });
    past_a_flush();
    assert_once(&hook, &ams, "four watchers");
    let groups = firing_pages(&hook).len();

    // A replica dies: its twin keeps the alerts up, no group pages again.
    ws[0].kill();
    past_a_flush();
    assert_once(&hook, &ams, "a replica killed");
    assert_eq!(firing_pages(&hook).len(), groups);
    for i in 0..2 {
        let held: BTreeSet<String> = ams
            .alerts(i)
            .iter()
            .filter_map(|a| a["labels"]["node"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(held, faulty, "alertmanager {i}");
    }

    // One Alertmanager down; a new fault (added by a reload) still pages, once.
    ams.down(1);
    let new = "gpu-new".to_owned();
    names.push(new.clone());
    let mut faulty2 = faulty.clone();
    faulty2.insert(new.clone());
    write_cluster(work, &names, &faulty2);
    for w in &ws {
        w.signal("HUP");
    }
    wait_for("the new fault paged by the one Alertmanager left", || {
        paged_nodes(&hook).contains(&new)
    });
    past_a_flush();
    assert_once(&hook, &ams, "one alertmanager down");

    // It returns: it learns from its peer what was paged, and pages nothing again.
    ams.up(1);
    ams.wait_clustered();
    wait_for("the returned instance holds the alerts again", || {
        ams.alerts(1).len() == ams.alerts(0).len()
    });
    past_a_flush();
    assert_once(&hook, &ams, "the alertmanager returned");
    assert_eq!(paged_nodes(&hook), faulty2);
}
