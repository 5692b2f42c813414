//! Polling, the first job: one task per node owns that node's link and runs one poll at a
//! time when the live loop asks for it; answers come back on a channel. A poll never waits for
//! anything but its own node (and its timeout), so a slow or hung node delays no other.
//!
//! The transport is injected ([`Transport`]): the real one opens [`Link`]s (SSH, local child,
//! command); tests under paused time give in-process fakes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use ugro_types::view::SampleView;
use ugro_types::{Kind, Sample, Timestamp, Unreachable};

use crate::link::{Link, LinkSpec, PollError};

/// A boxed, sendable future (the transports are trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The link settings a reload may change without reconnecting: timeout, reconnect backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Per-poll timeout.
    pub timeout: Duration,
    /// Shortest reconnect backoff.
    pub reconnect_min: Duration,
    /// Longest reconnect backoff.
    pub reconnect_max: Duration,
}

/// One node's connection, owned by its polling task.
pub trait NodeLink: Send {
    /// One poll: the reply line, or why there is none (the link applies its timeout).
    fn poll(&mut self) -> BoxFuture<'_, Result<String, PollError>>;
    /// New timing (SIGHUP); the connection stays.
    fn set_timing(&mut self, t: Timing);
    /// Ends the probe and the connection.
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Opens node links.
pub trait Transport: Send + Sync {
    /// A link for `spec` that connects on its first poll.
    fn open(&self, spec: LinkSpec, timing: Timing) -> Box<dyn NodeLink>;
}

/// The real transports: SSH sessions, local children, commands ([`Link`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTransport;

impl Transport for SystemTransport {
    fn open(&self, spec: LinkSpec, t: Timing) -> Box<dyn NodeLink> {
        Box::new(Link::new(spec, t.timeout, t.reconnect_min, t.reconnect_max))
    }
}

impl NodeLink for Link {
    fn poll(&mut self) -> BoxFuture<'_, Result<String, PollError>> {
        Box::pin(Link::poll(self))
    }
    fn set_timing(&mut self, t: Timing) {
        Link::set_timing(self, t.timeout, t.reconnect_min, t.reconnect_max);
    }
    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(Link::close(*self))
    }
}

/// A finished poll, as the polling task reports it.
#[derive(Debug)]
pub struct Done {
    /// The node's slot.
    pub idx: usize,
    /// The reply, or why there is none.
    pub result: Result<String, PollError>,
    /// How long the poll took.
    pub elapsed: Duration,
}

/// A node's polling task: the sender asks for a poll (capacity one: a node never has two in
/// flight), dropping it ends the task after the poll in flight, closing the link.
pub fn start_worker(
    idx: usize,
    mut link: Box<dyn NodeLink>,
    mut timing: watch::Receiver<Timing>,
    done: mpsc::UnboundedSender<Done>,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    timing.mark_unchanged();
    let handle = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            if timing.has_changed().unwrap_or(false) {
                let t = *timing.borrow_and_update();
                link.set_timing(t);
            }
            let start = tokio::time::Instant::now();
            let result = link.poll().await;
            let elapsed = start.elapsed();
            if done
                .send(Done {
                    idx,
                    result,
                    elapsed,
                })
                .is_err()
            {
                break;
            }
        }
        link.close().await;
    });
    (tx, handle)
}

/// The sample a node that produced none stands for.
pub fn unreachable_line(node: &str, ts: Timestamp, e: &PollError) -> String {
    let mut s = Sample::new(node, ts);
    s.unreachable = Some(Unreachable {
        cause: e.cause().to_owned(),
        message: e.message(),
    });
    serde_json::to_string(&s).unwrap_or_default()
}

/// Checks a probe reply: a current-schema sample; its `node` is set to the configured name.
/// Returns the line and whether it shows jobs running (see [`active`]).
pub fn accept_reply(node: &str, line: &str, util_threshold: u32) -> Result<(String, bool), String> {
    let h = ugro_types::parse_header(line).map_err(|e| format!("bad reply: {e}"))?;
    if h.kind != Kind::Sample {
        return Err(format!("probe answered a {} record", h.kind.as_str()));
    }
    let line = if h.node == node {
        line.to_owned()
    } else {
        let fixed = ugro_types::io::set_field(line, "node", node.into())
            .map_err(|e| format!("bad reply: {e}"))?;
        String::from_utf8(fixed).map_err(|e| format!("bad reply: {e}"))?
    };
    let sample = SampleView::parse(&line).map_err(|e| format!("bad reply: {e}"))?;
    let busy = active(&sample, util_threshold);
    Ok((line, busy))
}

/// Whether a sample shows jobs running: training processes, or a GPU at or above
/// `util_threshold` percent. (Health is the scorer's business, not this.)
pub fn active(s: &SampleView<'_>, util_threshold: u32) -> bool {
    let training = s.processes.as_ref().is_some_and(|p| !p.training.is_empty());
    let busy_gpu = s.gpu.as_ref().is_some_and(|g| {
        g.devices
            .iter()
            .any(|d| d.utilization_pct.is_some_and(|u| u >= util_threshold))
    });
    training || busy_gpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_sample_has_cause_and_no_sections() {
        let l = unreachable_line("n1", Timestamp(0), &PollError::Ssh("refused".into()));
        let s = SampleView::parse(&l).unwrap();
        let u = s.unreachable.clone().unwrap();
        assert_eq!((u.cause.as_str(), u.message.as_str()), ("ssh", "refused"));
        assert!(s.gpu.is_none() && s.host.is_none());
        assert!(!active(&s, 10));
    }

    #[test]
    fn replies_are_checked_and_renamed_to_the_configured_node() {
        let ok = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"localhost","x":1}"#;
        let (line, busy) = accept_reply("gpu-7", ok, 10).unwrap();
        assert!(!busy);
        let h = ugro_types::parse_header(&line).unwrap();
        assert_eq!(h.node, "gpu-7");
        assert!(line.contains(r#""x":1"#), "{line}");
        assert!(accept_reply("n", "not json", 10).is_err());
        let stats = r#"{"v":1,"kind":"stats","ts":"2026-11-28T00:00:00Z","node":"n"}"#;
        assert!(accept_reply("n", stats, 10).unwrap_err().contains("stats"));
        let future = r#"{"v":9,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#;
        assert!(accept_reply("n", future, 10).is_err());
        let bad_section =
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","gpu":7}"#;
        assert!(accept_reply("n", bad_section, 10).is_err());
    }

    #[test]
    fn training_or_busy_gpus_mean_active() {
        let busy = |body: &str| {
            let line = format!(
                r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n",{body}}}"#
            );
            accept_reply("n", &line, 10).unwrap().1
        };
        assert!(!busy(
            r#""gpu":{"status":"ok","devices":[{"index":0,"utilization_pct":3}]},"processes":{"training":[]}"#
        ));
        assert!(busy(
            r#""gpu":{"status":"ok","devices":[{"index":0,"utilization_pct":95}]}"#
        ));
        assert!(busy(
            r#""processes":{"training":[{"pid":1,"command":"python","matched_by":"nvml"}]}"#
        ));
    }
}
