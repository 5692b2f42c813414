//! A webhook receiver that is down (refusing, then closing connections) and then up: every
//! notification arrives, in order, none twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::*;
use ugro_types::Timestamp;

#[derive(Clone, Copy)]
enum Mode {
    Close,
    Ok,
}

struct Server {
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    stop: Arc<Mutex<bool>>,
    port: u16,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    fn start(port: u16, mode: Mode) -> Server {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Mutex::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !*s.lock().unwrap() {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                if let Mode::Close = mode {
                    drop(c);
                    continue;
                }
                c.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut len = 0usize;
                let mut id = String::new();
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    let t = line.trim_end();
                    if t.is_empty() {
                        break;
                    }
                    let lower = t.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("x-ugro-notification-id:") {
                        id = t.split(':').nth(1).unwrap().trim().to_owned();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                g.lock()
                    .unwrap()
                    .push((id, serde_json::from_slice(&body).unwrap()));
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .unwrap();
            }
        });
        Server {
            got,
            stop,
            port,
            handle: Some(handle),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = self.port;
    }
}

#[test]
fn webhook_outage_loses_nothing_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("alert.yaml");
    write(
        &cfg,
        "route:\n  receiver: hook\n  group_by: [alertname]\nreceivers:\n  - name: hook\n    webhook:\n      url_env: HOOK_URL\ndelivery:\n  timeout: 1s\n  attempts: 2\n  backoff: 10ms\n",
    );
    let state = dir.path().join("state.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let url = format!("http://127.0.0.1:{port}/hook?token=s3cret");
    let env = [("HOOK_URL", url.as_str())];
    let t = Timestamp(1_795_000_000_000);

    // Down: nothing listens.
    let input = format!(
        "{}\n{}\n",
        sample("n1", t, "critical", ""),
        sample("n2", t, "critical", "")
    );
    let out = run(&args, &input, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("s3cret"),
        "the URL's token leaked into the log: {err}"
    );
    let spool = dir.path().join("state.json.spool");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);

    // Still down: it accepts and closes. The change queues behind the first notification.
    {
        let _s = Server::start(port, Mode::Close);
        let input = format!(
            "{}\n{}\n",
            sample("n1", secs(t, 300), "healthy", ""),
            sample("n2", secs(t, 300), "critical", "")
        );
        let out = run(&args, &input, &env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 2);
    }

    // Up: the spool drains in order, and later runs repeat nothing.
    let s = Server::start(port, Mode::Ok);
    for i in 0..3 {
        let out = run(&args, &sample("n2", secs(t, 600 + i), "critical", ""), &env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    let got = s.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:#?}");
    let ids: std::collections::HashSet<_> = got.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 2, "a notification arrived twice");
    let states = |v: &serde_json::Value| {
        let mut s: Vec<(String, String)> = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["node"].as_str().unwrap().to_owned(),
                    a["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        s.sort();
        s
    };
    let first = &got[0].1;
    assert_eq!(first["version"], "4");
    assert_eq!(first["receiver"], "hook");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["groupLabels"]["alertname"], "NodeCritical");
    assert_eq!(first["commonLabels"]["alertname"], "NodeCritical");
    assert_eq!(first["truncatedAlerts"], 0);
    assert!(
        first["groupKey"]
            .as_str()
            .unwrap()
            .contains("alertname=\"NodeCritical\"")
    );
    assert_eq!(
        states(first),
        [
            ("n1".into(), "firing".into()),
            ("n2".into(), "firing".into())
        ]
    );
    assert_eq!(
        states(&got[1].1),
        [
            ("n1".into(), "resolved".into()),
            ("n2".into(), "firing".into())
        ]
    );
    let second = &got[1].1["alerts"];
    assert_eq!(
        second[0]["endsAt"], "0001-01-01T00:00:00Z",
        "firing first, zero endsAt"
    );
    assert_eq!(
        second[1]["endsAt"],
        secs(t, 300).to_string(),
        "resolved at the clearing sample"
    );
}

#[test]
fn slack_receiver_posts_an_incoming_webhook_message_from_a_url_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = Server::start(port, Mode::Ok);
    let url_file = dir.path().join("slack.url");
    write(
        &url_file,
        &format!("http://127.0.0.1:{port}/services/T000/B000/secret\n"),
    );
    let cfg = dir.path().join("alert.yaml");
    write(
        &cfg,
        &format!(
            "route:\n  receiver: chat\n  group_by: [alertname]\nreceivers:\n  - name: chat\n    slack:\n      url_file: {}\n      channel: '#gpu-ops'\n",
            url_file.display()
        ),
    );
    let state = dir.path().join("state.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let t = Timestamp(1_795_000_000_000);
    let out = run(
        &args,
        &format!("{}\n", sample("gpu-9", t, "critical", "")),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("secret"),
        "URL leaked"
    );
    // The group was notified, so its resolve waits for group_interval (5m), as in Alertmanager.
    let out = run(
        &args,
        &format!("{}\n", sample("gpu-9", secs(t, 300), "healthy", "")),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = s.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:#?}");
    let (firing, resolved) = (&got[0].1, &got[1].1);
    assert_eq!(firing["channel"], "#gpu-ops");
    let text = firing["text"].as_str().unwrap();
    assert!(text.starts_with("[FIRING:1] NodeCritical"), "{text}");
    assert!(
        resolved["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED] NodeCritical"),
        "{resolved}"
    );
}
