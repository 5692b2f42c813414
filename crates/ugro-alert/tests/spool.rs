//! One spool directory shared by concurrent runs with their own state files: nothing is lost
//! while the receiver is down, and once it is up, runs draining the spool together send every
//! notification exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::*;
use ugro_types::Timestamp;

const RUNS: usize = 4;
const NODES: usize = 300;

fn concurrently(dir: &Path, input: impl Fn(usize) -> String, url: &str) {
    let spool = dir.join("spool");
    let cfg = dir.join("alert.yaml");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..RUNS)
            .map(|r| {
                let (spool, cfg, input) = (spool.clone(), cfg.clone(), input(r));
                let state = dir.join(format!("s{r}.json"));
                s.spawn(move || {
                    run(
                        &[
                            "-c",
                            cfg.to_str().unwrap(),
                            "--state",
                            state.to_str().unwrap(),
                            "--spool-dir",
                            spool.to_str().unwrap(),
                        ],
                        &input,
                        &[("HOOK_URL", url)],
                    )
                })
            })
            .collect();
        for h in handles {
            let out = h.join().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

#[test]
fn four_concurrent_runs_sharing_a_spool_lose_nothing_and_send_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        &dir.path().join("alert.yaml"),
        "global: {cluster_min_nodes: 100000}\nroute:\n  receiver: hook\n  group_by: [node]\nreceivers:\n  - name: hook\n    webhook: {url_env: HOOK_URL}\ndelivery: {attempts: 1, spool_max_entries: 100000, spool_retry_interval: 1h, budget: 5m}\n",
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let t = Timestamp(1_795_000_000_000);
    let input = |r: usize| {
        (0..NODES)
            .map(|n| sample(&format!("r{r}-n{n:03}"), t, "critical", ""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Down: everything goes to the one spool.
    concurrently(dir.path(), input, &url);
    let spool = dir.path().join("spool");
    assert_eq!(spooled(&spool), RUNS * NODES);

    // Up: the four runs drain it at the same time.
    let s = Server::start(port, Mode::Ok);
    let t0 = std::time::Instant::now();
    concurrently(dir.path(), |_| String::new(), &url);
    eprintln!(
        "PHASE2 {:?} left {} got {}",
        t0.elapsed(),
        spooled(&spool),
        s.got().len()
    );
    assert_eq!(spooled(&spool), 0);
    let got = s.got();
    let ids: HashSet<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    let nodes: HashSet<String> = got
        .iter()
        .map(|(_, v)| {
            v["alerts"][0]["labels"]["node"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(nodes.len(), RUNS * NODES, "lost notifications");
    assert_eq!(got.len(), RUNS * NODES, "sent twice");
    assert_eq!(ids.len(), RUNS * NODES);
}
