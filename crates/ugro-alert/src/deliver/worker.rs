//! One worker thread per receiver: it writes each notification to the spool before its first
//! attempt (so a crash, a timeout or the end of the delivery budget loses nothing), sends the
//! groups oldest first, backs off on retryable failures, drops permanent ones after reporting
//! them once, and picks up what other runs left in a shared spool.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ugro_types::{Alert, AlertStatus, LabelSet};

use super::lane::{Counters, Lane};
use super::payload::{exec_env, slack_payload, webhook_payload};
use super::slurm::Slurm;
use super::spool::{Claim, Locked, Spool};
use super::transport::{Exec, Failure, Transport};
use crate::config::{Delivery, Receiver, ReceiverKind};
use crate::engine::Notification;

/// An attempt with less budget left than this is not started.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Exit status of an exec receiver that refuses the notification for good (sysexits'
/// EX_DATAERR); any other failure is retried.
pub const EXEC_PERMANENT_EXIT: i32 = 65;

/// `newer` with the resolved alerts of `older` that it does not mention: each notification
/// carries its group's full state, except that a resolved alert leaves the group once
/// notified, so only those need carrying over for the receiver to hear of them.
pub fn supersede(older: Notification, mut newer: Notification) -> Notification {
    let carried: Vec<Alert> = older
        .alerts
        .into_iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .filter(|a| !newer.alerts.iter().any(|b| b.fingerprint == a.fingerprint))
        .collect();
    if carried.is_empty() {
        return newer;
    }
    let fps: Vec<&str> = carried.iter().map(|a| a.fingerprint.as_str()).collect();
    newer.id = format!(
        "{:016x}",
        ugro_types::fingerprint(&LabelSet::from([
            ("id".to_owned(), newer.id.clone()),
            ("carried".to_owned(), fps.join(",")),
        ]))
    );
    newer.alerts.extend(carried);
    newer.alerts.sort_by(|a, b| {
        (a.status != AlertStatus::Firing, &a.labels)
            .cmp(&(b.status != AlertStatus::Firing, &b.labels))
    });
    newer
}

/// Everything a worker needs, fixed at start.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub receiver: Receiver,
    pub delivery: Delivery,
    pub external_url: String,
    pub transport: Arc<dyn Transport>,
    pub spool: Option<Arc<Spool>>,
    /// The state file this run's notifications come from.
    pub origin: String,
    pub lane: Arc<Lane<Notification>>,
    pub counters: Arc<Counters>,
    /// Every receiver's counters: trimming the shared spool may drop another's entry.
    pub all: Arc<BTreeMap<String, Arc<Counters>>>,
}

#[derive(Debug)]
struct Held {
    path: Option<PathBuf>,
    n: Notification,
    seq: u64,
}

/// Receiver-wide retry state: a receiver that failed is not tried again before `next_try`.
#[derive(Debug)]
struct Backoff {
    failures: u32,
    next_try: Instant,
}

#[derive(Debug)]
pub(crate) struct Worker {
    ctx: Ctx,
    /// Pending notifications by (origin, group key), oldest first within a group.
    groups: BTreeMap<(String, String), Vec<Held>>,
    /// Spool files already looked at.
    known: HashSet<PathBuf>,
    seq: u64,
    backoff: Backoff,
    next_scan: Instant,
}

impl Worker {
    pub fn new(ctx: Ctx) -> Worker {
        let now = Instant::now();
        Worker {
            ctx,
            groups: BTreeMap::new(),
            known: HashSet::new(),
            seq: 0,
            backoff: Backoff {
                failures: 0,
                next_try: now,
            },
            next_scan: now,
        }
    }

    fn name(&self) -> &str {
        &self.ctx.receiver.name
    }

    /// The thread's body.
    pub fn run(mut self) {
        loop {
            let (items, deadline, stop) = self.ctx.lane.take();
            for n in items {
                self.accept(n);
            }
            if stop {
                break;
            }
            let now = Instant::now();
            let asked = self.ctx.lane.take_rescan();
            if asked || now >= self.next_scan {
                self.scan(now);
            }
            self.publish();
            let ready = !self.groups.is_empty() && now >= self.backoff.next_try;
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(left) = left
                && (self.groups.is_empty()
                    || deadline.is_some_and(|d| self.backoff.next_try >= d)
                    || left < MIN_ATTEMPT)
            {
                break;
            }
            if !ready {
                let mut wake = self.next_scan;
                if !self.groups.is_empty() {
                    wake = wake.min(self.backoff.next_try);
                }
                if let Some(d) = deadline {
                    wake = wake.min(d);
                }
                self.ctx.lane.wait(deadline, Some(wake));
                continue;
            }
            self.ctx.lane.set_busy();
            let cap = left.unwrap_or(Duration::MAX);
            self.send_next(cap);
        }
        // Whatever reached the queue meanwhile goes to the spool too.
        let (items, _, _) = self.ctx.lane.take();
        for n in items {
            self.accept(n);
        }
        self.leave();
        self.ctx.lane.set_done();
    }

    /// Spools a notification from the stage (write-ahead) and queues it behind its group.
    fn accept(&mut self, n: Notification) {
        let path = match &self.ctx.spool {
            Some(s) => match s.write(&self.ctx.origin, &n) {
                Ok(claim) => Some(claim.path.clone()),
                Err(e) => {
                    tracing::error!(
                        "receiver {}: spool {}: {e}; the notification is kept in memory only",
                        n.receiver,
                        s.dir().display()
                    );
                    None
                }
            },
            None => None,
        };
        if let Some(p) = &path {
            self.known.insert(p.clone());
        }
        self.seq += 1;
        let key = (self.ctx.origin.clone(), n.group_key.clone());
        self.groups.entry(key).or_default().push(Held {
            path,
            n,
            seq: self.seq,
        });
        self.trim();
    }

    fn trim(&mut self) {
        let Some(s) = &self.ctx.spool else { return };
        let dropped = match s.trim() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("spool {}: {e}", s.dir().display());
                return;
            }
        };
        for (receiver, path, what) in dropped {
            tracing::error!(
                "spool full (spool_max_entries / spool_max_bytes): dropped the oldest notification: receiver {receiver} {what}"
            );
            if let Some(c) = self.ctx.all.get(&receiver) {
                Counters::add(&c.dropped, 1);
            }
            self.forget(&path);
        }
    }

    fn forget(&mut self, path: &PathBuf) {
        for held in self.groups.values_mut() {
            held.retain(|h| h.path.as_ref() != Some(path));
        }
        self.groups.retain(|_, h| !h.is_empty());
    }

    /// Adopts spool entries for this receiver that this worker does not hold: left by an
    /// earlier run, or by another run sharing the spool directory.
    fn scan(&mut self, now: Instant) {
        self.next_scan = now
            + self
                .ctx
                .delivery
                .spool_retry_interval
                .max(Duration::from_secs(1));
        let Some(s) = self.ctx.spool.clone() else {
            self.next_scan = now + Duration::from_secs(86_400);
            return;
        };
        let list = match s.list(Some(self.name())) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("spool {}: {e}", s.dir().display());
                return;
            }
        };
        let present: HashSet<&PathBuf> = list.iter().map(|(_, p, _)| p).collect();
        for held in self.groups.values_mut() {
            held.retain(|h| h.path.as_ref().is_none_or(|p| present.contains(p)));
        }
        self.groups.retain(|_, h| !h.is_empty());
        self.known.retain(|p| present.contains(p));
        // Runs draining one spool together each start at another place in it, so that they
        // do not all contend for the same entries; order within a group is by time anyway.
        let mut list = list;
        if !list.is_empty() {
            let at = std::process::id() as usize % list.len();
            list.rotate_left(at);
        }
        for (_, path, _) in list {
            if !self.known.insert(path.clone()) {
                continue;
            }
            match s.read(&path) {
                Ok(e) if e.n.receiver == self.ctx.receiver.name => {
                    self.seq += 1;
                    let held = self
                        .groups
                        .entry((e.origin, e.n.group_key.clone()))
                        .or_default();
                    held.push(Held {
                        path: Some(path),
                        n: e.n,
                        seq: self.seq,
                    });
                    held.sort_by_key(|h| (h.n.ts, h.seq));
                }
                Ok(_) => {}
                Err(_) if !path.exists() => {}
                Err(err) => {
                    tracing::error!("spool entry {} unreadable ({err}); removed", path.display());
                    if let Ok(Locked::Held(c)) = s.lock(&path) {
                        let _ = c.remove();
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let on_disk = self
            .groups
            .values()
            .flatten()
            .filter(|h| h.path.is_some())
            .count();
        let in_memory = self.groups.values().flatten().count() - on_disk;
        self.ctx.counters.spooled.store(on_disk, Ordering::Relaxed);
        self.ctx
            .counters
            .unspooled
            .store(in_memory, Ordering::Relaxed);
    }

    /// Sends the group that has waited longest, as one notification superseding the rest.
    fn send_next(&mut self, cap: Duration) {
        let Some(key) = self
            .groups
            .iter()
            .min_by_key(|(_, h)| h.first().map_or(u64::MAX, |h| h.seq))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(claims) = self.claim(&key) else {
            return;
        };
        let held = self.groups.remove(&key).unwrap_or_default();
        let count = held.len();
        let first_seq = held.first().map_or(0, |h| h.seq);
        let paths: Vec<Option<PathBuf>> = held.iter().map(|h| h.path.clone()).collect();
        let Some(mut n) = held.into_iter().map(|h| h.n).reduce(supersede) else {
            return;
        };
        let before = n.alerts.len();
        let result = self.send(&mut n, cap);
        let c = &self.ctx.counters;
        Counters::add(&c.superseded, count.saturating_sub(1) as u64);
        match result {
            Ok(()) => {
                Counters::add(&c.delivered, 1);
                self.backoff.failures = 0;
                self.remove(claims);
            }
            Err(Failure::Permanent(m)) => {
                tracing::error!(
                    "receiver {}: group {}: {m}: refused for good, not retried",
                    self.name(),
                    n.group_key
                );
                c.error(&m);
                Counters::add(&c.failed, 1);
                self.backoff.failures = 0;
                self.remove(claims);
            }
            Err(Failure::Retry(m)) => {
                self.backoff.failures += 1;
                let wait = self.wait_after(self.backoff.failures);
                self.backoff.next_try = Instant::now() + wait;
                tracing::warn!(
                    "receiver {}: {m}; retried in {}",
                    self.name(),
                    humantime::format_duration(wait)
                );
                c.error(&m);
                Counters::add(&c.retries, 1);
                let compact = count > 1 || n.alerts.len() != before;
                self.requeue(key, n, paths, claims, compact, first_seq);
            }
        }
    }

    /// Locks the spooled entries of a group. None when another run is sending one of them, or
    /// one has vanished (delivered elsewhere): the group is dropped from this worker's view,
    /// and the next scan brings back whatever is still on disk, in order.
    fn claim(&mut self, key: &(String, String)) -> Option<Vec<Claim>> {
        let held = self.groups.get(key)?;
        let Some(s) = self.ctx.spool.clone() else {
            return Some(Vec::new());
        };
        let mut claims = Vec::new();
        for h in held {
            let Some(p) = &h.path else { continue };
            match s.lock(p) {
                Ok(Locked::Held(c)) => claims.push(c),
                Ok(Locked::Busy | Locked::Gone) | Err(_) => {
                    let paths: Vec<PathBuf> = held.iter().filter_map(|h| h.path.clone()).collect();
                    for p in paths {
                        self.known.remove(&p);
                    }
                    self.groups.remove(key);
                    return None;
                }
            }
        }
        Some(claims)
    }

    fn remove(&mut self, claims: Vec<Claim>) {
        for c in claims {
            self.known.remove(&c.path);
            let p = c.path.clone();
            if let Err(e) = c.remove() {
                tracing::error!("spool: removing {}: {e}", p.display());
            }
        }
    }

    /// Puts a failed group back; several entries, or one the receiver partly handled, become
    /// one entry so that the spool holds what is still to send and no more.
    fn requeue(
        &mut self,
        key: (String, String),
        n: Notification,
        paths: Vec<Option<PathBuf>>,
        claims: Vec<Claim>,
        compact: bool,
        seq: u64,
    ) {
        if compact && let Some(s) = self.ctx.spool.clone() {
            match s.write(&key.0, &n) {
                Ok(new) => {
                    self.known.insert(new.path.clone());
                    self.remove(claims);
                    let path = Some(new.path.clone());
                    self.groups.insert(key, vec![Held { path, n, seq }]);
                    return;
                }
                Err(e) => tracing::error!("spool {}: {e}", s.dir().display()),
            }
        }
        // Left as they are on disk; each stands for the merged state now.
        let held = paths
            .into_iter()
            .map(|path| Held {
                path,
                n: n.clone(),
                seq,
            })
            .collect();
        self.groups.insert(key, held);
    }

    /// The wait after `failures` failures in a row: doubling backoff for the first
    /// `attempts`, then spool_retry_interval.
    fn wait_after(&self, failures: u32) -> Duration {
        let d = &self.ctx.delivery;
        if failures >= d.attempts {
            return d.spool_retry_interval.max(d.backoff);
        }
        d.backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(d.max_backoff)
    }

    fn send(&self, n: &mut Notification, cap: Duration) -> Result<(), Failure> {
        let timeout = self.ctx.delivery.timeout.min(cap);
        let ext = &self.ctx.external_url;
        let json = |v: serde_json::Value| {
            serde_json::to_vec(&v).map_err(|e| Failure::Permanent(e.to_string()))
        };
        let t = &*self.ctx.transport;
        match &self.ctx.receiver.kind {
            ReceiverKind::Stdout | ReceiverKind::Alertmanager { .. } => Ok(()),
            ReceiverKind::Webhook {
                url,
                max_alerts,
                token,
            } => {
                let body = json(webhook_payload(n, ext, *max_alerts))?;
                let mut headers = vec![("X-Ugro-Notification-Id", n.id.clone())];
                if let Some(tok) = token {
                    let tok = tok.resolve().map_err(Failure::Retry)?;
                    headers.push(("Authorization", format!("Bearer {tok}")));
                }
                t.post(
                    &url.resolve().map_err(Failure::Retry)?,
                    &headers,
                    &body,
                    timeout,
                )
            }
            ReceiverKind::Slack { url, channel } => {
                let body = json(slack_payload(n, channel.as_deref()))?;
                t.post(&url.resolve().map_err(Failure::Retry)?, &[], &body, timeout)
            }
            ReceiverKind::Exec {
                command,
                timeout: own,
                env,
            } => {
                let body = json(webhook_payload(n, ext, 0))?;
                let out = t
                    .exec(&Exec {
                        argv: command,
                        env: exec_env(n),
                        inherit: env,
                        stdin: &body,
                        timeout: own.unwrap_or(timeout).min(cap),
                        capture: false,
                    })
                    .map_err(Failure::Retry)?;
                match out.status {
                    Some(0) => Ok(()),
                    Some(EXEC_PERMANENT_EXIT) => Err(Failure::Permanent(format!(
                        "{} exited with {EXEC_PERMANENT_EXIT} (refused)",
                        command[0]
                    ))),
                    s => Err(Failure::Retry(format!("{} exited with {s:?}", command[0]))),
                }
            }
            ReceiverKind::SlurmDrain {
                act,
                scontrol,
                timeout: own,
                env,
                remedy,
            } => Slurm {
                act: *act,
                scontrol,
                timeout: own.unwrap_or(timeout).min(cap),
                inherit: env,
                transport: t,
                resumes: remedy.is_none(),
            }
            .deliver(n),
        }
    }

    /// End of the run: what is left is in the spool already; say so.
    fn leave(&mut self) {
        self.publish();
        let on_disk = self.ctx.counters.spooled.load(Ordering::Relaxed);
        let lost = self.ctx.counters.unspooled.load(Ordering::Relaxed);
        if on_disk > 0
            && let Some(s) = &self.ctx.spool
        {
            tracing::warn!(
                "receiver {}: {on_disk} notification(s) left in the spool {} for the next run",
                self.name(),
                s.dir().display()
            );
        }
        if lost > 0 {
            tracing::error!(
                "receiver {}: {lost} notification(s) lost: the spool could not be written",
                self.name()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(node: &str, status: AlertStatus) -> Alert {
        let labels: LabelSet = [
            ("alertname".to_owned(), "NodeCritical".to_owned()),
            ("node".to_owned(), node.to_owned()),
        ]
        .into();
        Alert::new(
            ugro_types::Timestamp(0),
            status,
            labels,
            ugro_types::Timestamp(0),
        )
    }

    fn n(id: &str, alerts: Vec<Alert>) -> Notification {
        Notification {
            id: id.into(),
            receiver: "r".into(),
            group_key: "g".into(),
            group_labels: LabelSet::new(),
            alerts,
            ts: ugro_types::Timestamp(0),
        }
    }

    fn states(n: &Notification) -> Vec<(String, AlertStatus)> {
        n.alerts
            .iter()
            .map(|a| (a.labels["node"].clone(), a.status))
            .collect()
    }

    #[test]
    fn a_newer_notification_supersedes_and_keeps_the_resolves_it_no_longer_carries() {
        use AlertStatus::{Firing, Resolved};
        let older = n("a", vec![alert("n2", Firing), alert("n1", Resolved)]);
        let newer = n("b", vec![alert("n2", Firing), alert("n3", Firing)]);
        let m = supersede(older, newer.clone());
        assert_eq!(
            states(&m),
            [
                ("n2".into(), Firing),
                ("n3".into(), Firing),
                ("n1".into(), Resolved)
            ]
        );
        assert_ne!(
            m.id, "b",
            "what the receiver gets differs from the newer one"
        );
        let same = supersede(n("a", vec![alert("n2", Firing)]), newer.clone());
        assert_eq!(same, newer, "nothing to carry: the newer one as it is");
        let refired = supersede(n("a", vec![alert("n3", Resolved)]), newer.clone());
        assert_eq!(refired, newer, "the newer state of an alert wins");
    }
}
