//! One sample: every collector on its own thread under its own time budget.
//!
//! A collector that runs past its budget is abandoned (its thread is left to finish or hang on
//! its own), reported in `errors` with `timed_out: true`, and its section is left out; the
//! others still emit. While an abandoned collector is still running, later samples do not start
//! another copy of it (a hung NFS `statvfs` or a wedged driver must not pile up threads in
//! resident mode): they report it as still running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use ugro_types::{
    CollectorError, CollectorRun, Disk, GpuStatus, HostSection, NetworkSection, Sample, Timestamp,
    Xid,
};

use crate::gpu::{self, InitError, RawGpus};
use crate::host::{self, CpuConfig, CpuTracker};
use crate::procs::{self, Scan};
use crate::xid::{KmsgSource, XidReader};

/// Per-collector time budgets.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// NVML (first call includes `nvmlInit`).
    pub gpu: Duration,
    /// Kernel log.
    pub xid: Duration,
    /// CPU, memory, load.
    pub host: Duration,
    /// `statvfs` of every mount.
    pub disks: Duration,
    /// Interfaces, InfiniBand, peers.
    pub network: Duration,
    /// `/proc` walk.
    pub processes: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            gpu: Duration::from_secs(5),
            xid: Duration::from_secs(1),
            host: Duration::from_secs(1),
            disks: Duration::from_secs(2),
            network: Duration::from_secs(3),
            processes: Duration::from_secs(2),
        }
    }
}

impl Budgets {
    /// Sets one budget by collector name.
    pub fn set(&mut self, name: &str, d: Duration) -> bool {
        let slot = match name {
            "gpu" => &mut self.gpu,
            "xid" => &mut self.xid,
            "host" => &mut self.host,
            "disks" => &mut self.disks,
            "network" => &mut self.network,
            "processes" => &mut self.processes,
            _ => return false,
        };
        *slot = d;
        true
    }
}

/// Where GPU readings come from.
#[derive(Debug, Clone)]
pub enum GpuSource {
    /// NVML, initialised on first use and kept.
    Nvml,
    /// A recorded file.
    Fixture(PathBuf),
    /// Not collected (`--no-gpu`).
    Off,
}

/// Everything a probe needs, fixed for the process's life.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Node name for records.
    pub node: String,
    /// GPUs.
    pub gpu: GpuSource,
    /// `--expect-gpus`.
    pub expect_gpus: Option<u32>,
    /// Kernel log source; `None` disables XID collection.
    pub kmsg: Option<KmsgSource>,
    /// XID lookback.
    pub xid_lookback: Duration,
    /// CPU measurement.
    pub cpu: CpuConfig,
    /// Report network filesystems too.
    pub include_network_fs: bool,
    /// `host:port` peers.
    pub peers: Vec<String>,
    /// TCP connect timeout per peer.
    pub peer_timeout: Duration,
    /// Training command-line patterns.
    pub patterns: Vec<String>,
    /// Time budgets.
    pub budgets: Budgets,
    /// `/proc` (tests point it elsewhere).
    pub proc_root: PathBuf,
    /// `/sys`.
    pub sys_root: PathBuf,
}

enum NvmlState {
    Unopened,
    Open(Arc<Nvml>),
    Absent(InitError),
}

impl std::fmt::Debug for NvmlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NvmlState::Unopened => f.write_str("Unopened"),
            NvmlState::Open(_) => f.write_str("Open"),
            NvmlState::Absent(e) => write!(f, "Absent({e:?})"),
        }
    }
}

type Busy = Arc<Mutex<BTreeMap<&'static str, Instant>>>;

/// A probe that keeps NVML, the kernel-log reader and the CPU reading between samples.
#[derive(Debug)]
pub struct Probe {
    cfg: Arc<ProbeConfig>,
    nvml: Arc<Mutex<NvmlState>>,
    fixture: Option<Arc<RawGpus>>,
    xid: Arc<Mutex<Option<XidReader>>>,
    cpu: Arc<Mutex<CpuTracker>>,
    busy: Busy,
}

enum Out {
    Gpu(RawGpus),
    /// Err carries the message and whether it is a permission problem.
    Xid(Result<Vec<Xid>, (String, bool)>),
    Host(HostSection),
    Disks(Vec<Disk>),
    Network(NetworkSection),
    Processes(Result<Scan, String>),
}

/// A collector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The `--gpu-fixture` file.
    #[error(transparent)]
    Fixture(#[from] gpu::FixtureError),
}

/// Opens NVML. Kept separate so the loader's message is exactly what the sample reports.
fn open_nvml() -> Result<Nvml, InitError> {
    Nvml::init().map_err(|e| crate::nvml::init_error(&e))
}

impl Probe {
    /// A probe for `cfg`; a fixture is read now so a bad file fails before any output.
    pub fn new(cfg: ProbeConfig) -> Result<Probe, ProbeError> {
        let fixture = match &cfg.gpu {
            GpuSource::Fixture(p) => Some(Arc::new(gpu::load_fixture(p)?)),
            _ => None,
        };
        let xid = cfg
            .kmsg
            .clone()
            .map(|s| XidReader::new(s, cfg.xid_lookback));
        let cpu = CpuTracker::new(cfg.cpu.clone());
        Ok(Probe {
            cfg: Arc::new(cfg),
            nvml: Arc::new(Mutex::new(NvmlState::Unopened)),
            fixture,
            xid: Arc::new(Mutex::new(xid)),
            cpu: Arc::new(Mutex::new(cpu)),
            busy: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Takes one sample stamped `now`.
    pub fn sample(&self, now: Timestamp) -> Sample {
        let mut sample = Sample::new(self.cfg.node.clone(), now);
        let (tx, rx) = mpsc::channel::<(&'static str, Out, Duration)>();
        let mut pending: Vec<(&'static str, Instant, Duration)> = Vec::new();
        let boot_ms = crate::xid::boot_time_ms();

        // Why XIDs were not read when the xid collector gives no answer this sample.
        let mut xid_missing: Option<String> = None;
        let mut spawn =
            |name: &'static str, budget: Duration, f: Box<dyn FnOnce() -> Out + Send>| {
                let start = Instant::now();
                if let Ok(mut b) = self.busy.lock() {
                    if let Some(since) = b.get(name) {
                        let error = format!(
                            "an earlier run is still going after {:.0} ms; not started again",
                            since.elapsed().as_secs_f64() * 1000.0
                        );
                        if name == "xid" {
                            xid_missing = Some(format!("xid collector timed out: {error}"));
                        }
                        sample.errors.push(CollectorError {
                            collector: name.into(),
                            error,
                            duration_ms: 0.0,
                            timed_out: true,
                        });
                        return;
                    }
                    b.insert(name, start);
                }
                let tx = tx.clone();
                let busy = self.busy.clone();
                let r = std::thread::Builder::new()
                    .name(format!("ugro-{name}"))
                    .spawn(move || {
                        let out = f();
                        if let Ok(mut b) = busy.lock() {
                            b.remove(name);
                        }
                        let _ = tx.send((name, out, start.elapsed()));
                    });
                match r {
                    Ok(_) => pending.push((name, start, budget)),
                    Err(e) => {
                        if let Ok(mut b) = self.busy.lock() {
                            b.remove(name);
                        }
                        if name == "xid" {
                            xid_missing = Some(format!("xid collector not started: {e}"));
                        }
                        sample.errors.push(CollectorError {
                            collector: name.into(),
                            error: format!("cannot start thread: {e}"),
                            duration_ms: 0.0,
                            timed_out: false,
                        });
                    }
                }
            };

        let cfg = &self.cfg;
        if !matches!(cfg.gpu, GpuSource::Off) {
            let nvml = self.nvml.clone();
            let fixture = self.fixture.clone();
            spawn(
                "gpu",
                cfg.budgets.gpu,
                Box::new(move || Out::Gpu(collect_gpu(&nvml, fixture.as_deref()))),
            );
        }
        if cfg.kmsg.is_some() {
            let xid = self.xid.clone();
            spawn(
                "xid",
                cfg.budgets.xid,
                Box::new(move || {
                    let r = match xid.lock() {
                        Ok(mut g) => match g.as_mut() {
                            Some(reader) => reader
                                .read(now, boot_ms)
                                .map_err(|e| (e.to_string(), e.is_permission())),
                            None => Ok(Vec::new()),
                        },
                        Err(_) => Err(("xid reader poisoned".into(), false)),
                    };
                    Out::Xid(r)
                }),
            );
        }
        {
            let cpu = self.cpu.clone();
            let c = cfg.clone();
            spawn(
                "host",
                cfg.budgets.host,
                Box::new(move || {
                    let mut h = HostSection::default();
                    host::collect_basic(&mut h, &c.proc_root);
                    if let Ok(mut t) = cpu.lock() {
                        t.measure(&mut h, &c.proc_root);
                    }
                    Out::Host(h)
                }),
            );
        }
        let current_mount = Arc::new(Mutex::new(String::new()));
        {
            let c = cfg.clone();
            let cur = current_mount.clone();
            spawn(
                "disks",
                cfg.budgets.disks,
                Box::new(move || {
                    let text = std::fs::read_to_string(c.proc_root.join("self/mountinfo"))
                        .unwrap_or_default();
                    let mounts = host::parse_mountinfo(&text, c.include_network_fs);
                    Out::Disks(host::collect_disks(&mounts, &cur))
                }),
            );
        }
        {
            let c = cfg.clone();
            spawn(
                "network",
                cfg.budgets.network,
                Box::new(move || {
                    Out::Network(crate::net::collect(&c.sys_root, &c.peers, c.peer_timeout))
                }),
            );
        }
        {
            let c = cfg.clone();
            spawn(
                "processes",
                cfg.budgets.processes,
                Box::new(move || {
                    Out::Processes(
                        procs::scan(&c.proc_root, &c.patterns).map_err(|e| e.to_string()),
                    )
                }),
            );
        }
        drop(tx);

        let mut raw_gpu = None;
        let mut xids: Option<Result<Vec<Xid>, String>> = None;
        let mut host_sec = None;
        let mut disks = None;
        let mut scan = None;
        while !pending.is_empty() {
            let wait = pending
                .iter()
                .map(|(_, s, b)| (*s + *b).saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or_default();
            match rx.recv_timeout(wait) {
                Ok((name, out, took)) => {
                    pending.retain(|(n, _, _)| *n != name);
                    let ms = took.as_secs_f64() * 1000.0;
                    let mut ok = true;
                    match out {
                        Out::Gpu(r) => raw_gpu = Some(r),
                        Out::Xid(r) => {
                            // An unreadable kernel log (dmesg_restrict without CAP_SYSLOG)
                            // is a property of how the probe runs, not a failure: the GPUs
                            // say "xids" absent with the reason instead.
                            if let Err((e, perm)) = &r {
                                ok = false;
                                if !perm {
                                    sample.errors.push(CollectorError {
                                        collector: name.into(),
                                        error: e.clone(),
                                        duration_ms: round3(ms),
                                        timed_out: false,
                                    });
                                }
                            }
                            xids = Some(r.map_err(|(e, _)| e));
                        }
                        Out::Host(h) => host_sec = Some(h),
                        Out::Disks(d) => disks = Some(d),
                        Out::Network(n) => sample.network = Some(n),
                        Out::Processes(r) => match r {
                            Ok(s) => scan = Some(s),
                            Err(e) => {
                                ok = false;
                                sample.errors.push(CollectorError {
                                    collector: name.into(),
                                    error: e,
                                    duration_ms: round3(ms),
                                    timed_out: false,
                                });
                            }
                        },
                    }
                    sample.collectors.push(CollectorRun {
                        name: name.into(),
                        duration_ms: round3(ms),
                        ok,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now_i = Instant::now();
                    let (late, keep): (Vec<_>, Vec<_>) = pending
                        .into_iter()
                        .partition(|(_, s, b)| now_i.duration_since(*s) >= *b);
                    pending = keep;
                    for (name, start, budget) in late {
                        let ms = round3(start.elapsed().as_secs_f64() * 1000.0);
                        let mut error =
                            format!("exceeded its {} ms budget; abandoned", budget.as_millis());
                        if name == "disks"
                            && let Ok(m) = current_mount.lock()
                        {
                            error = format!("{error} while examining {}", *m);
                        }
                        if name == "xid" {
                            xid_missing = Some(format!(
                                "xid collector timed out after {} ms; kernel log not read",
                                budget.as_millis()
                            ));
                        }
                        sample.collectors.push(CollectorRun {
                            name: name.into(),
                            duration_ms: ms,
                            ok: false,
                        });
                        sample.errors.push(CollectorError {
                            collector: name.into(),
                            error,
                            duration_ms: ms,
                            timed_out: true,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }

        if let Some(mut h) = host_sec {
            match disks {
                Some(d) => h.disks = d,
                None => {
                    h.absent
                        .insert("disks".into(), "disk collector did not finish".into());
                }
            }
            sample.host = Some(h);
        }
        let xid_list = match &xids {
            Some(Ok(v)) => v.clone(),
            _ => Vec::new(),
        };
        if let Some(raw) = raw_gpu {
            let mut all = xid_list;
            if !raw.kmsg.is_empty() {
                all.extend(crate::xid::parse_fixture_lines(&raw.kmsg, now));
            }
            let source = match &cfg.gpu {
                GpuSource::Fixture(p) => format!("fixture:{}", p.display()),
                _ => "nvml".to_owned(),
            };
            let mut sec = gpu::convert(&raw, &source, cfg.expect_gpus, all);
            // An empty XID list must never stand for "the log was not read": every way of
            // not reading it names itself in absent.xids, so a scorer or exporter can tell.
            let why = match &xids {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(format!("kernel log unreadable: {e}")),
                None if cfg.kmsg.is_some() => Some(xid_missing.take().unwrap_or_else(|| {
                    "xid collector did not finish; kernel log not read".to_owned()
                })),
                // --no-xid with recorded fixture lines: those are the log, replayed.
                None if !raw.kmsg.is_empty() => None,
                None => Some("xid collection disabled (--no-xid)".to_owned()),
            };
            if let Some(why) = why {
                for d in &mut sec.devices {
                    d.absent.insert("xids".into(), why.clone());
                }
                sec.absent.insert("xids".into(), why);
            }
            crate::xid::cap_xids(&mut sec, crate::xid::MAX_XIDS_LISTED);
            sample.gpu = Some(sec);
        }
        if let Some(mut s) = scan {
            if let Some(g) = &sample.gpu {
                procs::merge_gpu(&mut s, g, &cfg.proc_root);
            }
            sample.processes = Some(s.section);
        }
        sample
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn collect_gpu(nvml: &Mutex<NvmlState>, fixture: Option<&RawGpus>) -> RawGpus {
    if let Some(f) = fixture {
        return f.clone();
    }
    let handle = {
        let Ok(mut st) = nvml.lock() else {
            return RawGpus {
                init_error: Some(InitError {
                    status: GpuStatus::Failed,
                    message: "nvml state poisoned".into(),
                }),
                ..RawGpus::default()
            };
        };
        match &*st {
            NvmlState::Open(n) => n.clone(),
            NvmlState::Absent(e) => {
                return RawGpus {
                    init_error: Some(e.clone()),
                    ..RawGpus::default()
                };
            }
            NvmlState::Unopened => match open_nvml() {
                Ok(n) => {
                    let n = Arc::new(n);
                    *st = NvmlState::Open(n.clone());
                    n
                }
                Err(e) => {
                    // No library: do not retry every sample. A failing driver: retry next
                    // time, it may come back.
                    if e.status == GpuStatus::Absent {
                        *st = NvmlState::Absent(e.clone());
                    }
                    return RawGpus {
                        init_error: Some(e),
                        ..RawGpus::default()
                    };
                }
            },
        }
    };
    crate::nvml::collect(&handle)
}
