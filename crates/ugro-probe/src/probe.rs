//! One sample: every collector on its own thread under its own time budget.
//!
//! A collector that runs past its budget is abandoned (its thread is left to finish or hang on
//! its own), reported once in `errors` with `timed_out: true`, and its section is left out;
//! the others still emit. Should its answer arrive later, it is discarded: a section is never
//! filled by a collector the sample lists as abandoned. While an abandoned collector is still
//! running, later samples do not start another copy of it (a hung NFS `statvfs` or a wedged
//! driver must not pile up threads in resident mode): they report it as still running.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use ugro_types::{
    CollectorError, CollectorRun, Disk, GpuSection, GpuStatus, HostSection, NetworkSection, Sample,
    Timestamp,
};

use crate::boot::Boot;
use crate::gpu::{self, InitError, RawGpus};
use crate::host::{self, CpuConfig, CpuTracker};
use crate::procs::{self, Scan};
use crate::xid::{KmsgSource, XidRead, XidReader};

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
    /// The boot a replayed log (`--kmsg-file`, fixture `kmsg` lines) belongs to
    /// (`--boot-id`); `None`: this host's boot.
    pub boot_id: Option<String>,
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
    /// `/sys` (`--sys-root`): network interfaces, InfiniBand ports, the PCI GPU count.
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
    /// This host's boot id, read once: it cannot change while the process lives.
    host_boot: Result<String, String>,
    /// The boot the kernel log belongs to: the host's, or `--boot-id` for a replay.
    log_boot: Boot,
}

/// What a collector thread hands back.
enum Out {
    /// NVML readings, and the count of NVIDIA display functions on the PCI bus.
    Gpu(RawGpus, Result<u32, String>),
    /// Err carries the message and whether it is a permission problem.
    Xid(Result<XidRead, (String, bool)>),
    Host(HostSection),
    Disks(Vec<Disk>),
    Network(NetworkSection),
    Processes(Result<Scan, String>),
}

/// What the collectors that answered within their budgets gave.
#[derive(Default)]
struct Results {
    gpu: Option<(RawGpus, Result<u32, String>)>,
    xids: Option<Result<XidRead, String>>,
    /// Why the xid collector gave no answer, when it gave none.
    xid_missing: Option<String>,
    host: Option<HostSection>,
    disks: Option<Vec<Disk>>,
    network: Option<NetworkSection>,
    scan: Option<Scan>,
}

impl Results {
    /// Takes one collector's answer; false when the collector failed.
    fn accept(&mut self, sample: &mut Sample, name: &'static str, out: Out, ms: f64) -> bool {
        let mut fail = |error: String| {
            sample.errors.push(CollectorError {
                collector: name.into(),
                error,
                duration_ms: ms,
                timed_out: false,
            });
        };
        match out {
            Out::Gpu(raw, pci) => self.gpu = Some((raw, pci)),
            Out::Xid(Ok(r)) => self.xids = Some(Ok(r)),
            Out::Xid(Err((e, permission))) => {
                // An unreadable kernel log (dmesg_restrict without CAP_SYSLOG) is a property
                // of how the probe runs, not a failure: the GPUs say "xids" absent instead.
                if !permission {
                    fail(e.clone());
                }
                self.xids = Some(Err(e));
                return false;
            }
            Out::Host(h) => self.host = Some(h),
            Out::Disks(d) => self.disks = Some(d),
            Out::Network(n) => self.network = Some(n),
            Out::Processes(Ok(s)) => self.scan = Some(s),
            Out::Processes(Err(e)) => {
                fail(e);
                return false;
            }
        }
        true
    }
}

type Job = Box<dyn FnOnce() -> Out + Send>;
type Done = (&'static str, Out, Duration);

/// One sample's collector threads, started under their budgets and waited for until each has
/// answered or run out of time.
struct Run<'a> {
    busy: &'a Busy,
    tx: mpsc::Sender<Done>,
    rx: mpsc::Receiver<Done>,
    pending: Vec<(&'static str, Instant, Duration)>,
    /// The mount the disk collector is examining, for its timeout message.
    current_mount: Arc<Mutex<String>>,
}

impl<'a> Run<'a> {
    fn new(busy: &'a Busy) -> Self {
        let (tx, rx) = mpsc::channel();
        Run {
            busy,
            tx,
            rx,
            pending: Vec::new(),
            current_mount: Arc::new(Mutex::new(String::new())),
        }
    }

    /// Starts `job` on its own thread, unless an earlier run of it still hangs.
    fn start(
        &mut self,
        sample: &mut Sample,
        res: &mut Results,
        name: &'static str,
        budget: Duration,
        job: Job,
    ) {
        let start = Instant::now();
        let mut not_run = |error: String, timed_out: bool| {
            if name == "xid" {
                let how = if timed_out {
                    "timed out"
                } else {
                    "not started"
                };
                res.xid_missing = Some(format!("xid collector {how}: {error}"));
            }
            sample.errors.push(CollectorError {
                collector: name.into(),
                error,
                duration_ms: 0.0,
                timed_out,
            });
        };
        if let Ok(mut b) = self.busy.lock() {
            if let Some(since) = b.get(name) {
                not_run(
                    format!(
                        "an earlier run is still going after {:.0} ms; not started again",
                        since.elapsed().as_secs_f64() * 1000.0
                    ),
                    true,
                );
                return;
            }
            b.insert(name, start);
        }
        let tx = self.tx.clone();
        let busy = self.busy.clone();
        let r = std::thread::Builder::new()
            .name(format!("ugro-{name}"))
            .spawn(move || {
                let out = job();
                if let Ok(mut b) = busy.lock() {
                    b.remove(name);
                }
                let _ = tx.send((name, out, start.elapsed()));
            });
        match r {
            Ok(_) => self.pending.push((name, start, budget)),
            Err(e) => {
                if let Ok(mut b) = self.busy.lock() {
                    b.remove(name);
                }
                not_run(format!("cannot start thread: {e}"), false);
            }
        }
    }

    /// Waits for every started collector. A collector past its budget is listed once in
    /// `errors` as timed out and its section left out; if its answer comes later (while
    /// others still run) it is discarded, so a section is never filled by a collector the
    /// sample says was abandoned.
    fn wait(self, sample: &mut Sample, res: &mut Results) {
        let Run {
            tx,
            rx,
            mut pending,
            current_mount,
            ..
        } = self;
        drop(tx);
        while !pending.is_empty() {
            let wait = pending
                .iter()
                .map(|(_, s, b)| (*s + *b).saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or_default();
            match rx.recv_timeout(wait) {
                Ok((name, out, took)) => {
                    let Some(i) = pending.iter().position(|(n, _, _)| *n == name) else {
                        continue; // already reported as timed out
                    };
                    let (_, _, budget) = pending.remove(i);
                    let ms = round3(took.as_secs_f64() * 1000.0);
                    if took >= budget {
                        time_out(sample, res, name, ms, budget, &current_mount);
                        continue;
                    }
                    let ok = res.accept(sample, name, out, ms);
                    sample.collectors.push(CollectorRun {
                        name: name.into(),
                        duration_ms: ms,
                        ok,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let (late, keep): (Vec<_>, Vec<_>) = pending
                        .into_iter()
                        .partition(|(_, s, b)| now.duration_since(*s) >= *b);
                    pending = keep;
                    for (name, start, budget) in late {
                        let ms = round3(start.elapsed().as_secs_f64() * 1000.0);
                        time_out(sample, res, name, ms, budget, &current_mount);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}

/// Records collector `name` as abandoned after `ms`: once in `collectors`, once in `errors`.
fn time_out(
    sample: &mut Sample,
    res: &mut Results,
    name: &'static str,
    ms: f64,
    budget: Duration,
    current_mount: &Mutex<String>,
) {
    // Budgets below a millisecond are legal (`--budget gpu=1us`): keep their fraction.
    let budget_ms = round3(budget.as_secs_f64() * 1000.0);
    let mut error = format!("exceeded its {budget_ms} ms budget; abandoned");
    if name == "disks"
        && let Ok(m) = current_mount.lock()
    {
        error = format!("{error} while examining {}", *m);
    }
    if name == "xid" {
        res.xid_missing = Some(format!(
            "xid collector timed out after {budget_ms} ms; kernel log not read"
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
        let host = Boot::of_host(&cfg.proc_root);
        let log_boot = Boot {
            id: cfg.boot_id.clone().map_or_else(|| host.id.clone(), Ok),
            start_ms: host.start_ms,
        };
        let xid = cfg
            .kmsg
            .clone()
            .map(|s| XidReader::new(s, cfg.xid_lookback, log_boot.clone()));
        let cpu = CpuTracker::new(cfg.cpu.clone());
        Ok(Probe {
            cfg: Arc::new(cfg),
            nvml: Arc::new(Mutex::new(NvmlState::Unopened)),
            fixture,
            xid: Arc::new(Mutex::new(xid)),
            cpu: Arc::new(Mutex::new(cpu)),
            busy: Arc::new(Mutex::new(BTreeMap::new())),
            host_boot: host.id,
            log_boot,
        })
    }

    /// Takes one sample stamped `now`.
    pub fn sample(&self, now: Timestamp) -> Sample {
        let mut sample = Sample::new(self.cfg.node.clone(), now);
        let mut res = Results::default();
        let mut run = Run::new(&self.busy);
        self.start_collectors(&mut run, &mut sample, &mut res, now);
        run.wait(&mut sample, &mut res);
        self.assemble(&mut sample, res, now);
        sample
    }

    fn start_collectors(
        &self,
        run: &mut Run<'_>,
        sample: &mut Sample,
        res: &mut Results,
        now: Timestamp,
    ) {
        let cfg = &self.cfg;
        if !matches!(cfg.gpu, GpuSource::Off) {
            let nvml = self.nvml.clone();
            let fixture = self.fixture.clone();
            let c = cfg.clone();
            let job: Job = Box::new(move || {
                let raw = collect_gpu(&nvml, fixture.as_deref());
                Out::Gpu(raw, crate::pci::count_nvidia_display(&c.sys_root))
            });
            run.start(sample, res, "gpu", cfg.budgets.gpu, job);
        }
        if cfg.kmsg.is_some() {
            let xid = self.xid.clone();
            let job: Job = Box::new(move || {
                let r = match xid.lock() {
                    Ok(mut g) => match g.as_mut() {
                        Some(reader) => reader
                            .read(now)
                            .map_err(|e| (e.to_string(), e.is_permission())),
                        None => Ok(XidRead::default()),
                    },
                    Err(_) => Err(("xid reader poisoned".into(), false)),
                };
                Out::Xid(r)
            });
            run.start(sample, res, "xid", cfg.budgets.xid, job);
        }
        let (cpu, c) = (self.cpu.clone(), cfg.clone());
        let job: Job = Box::new(move || {
            let mut h = HostSection::default();
            host::collect_basic(&mut h, &c.proc_root);
            if let Ok(mut t) = cpu.lock() {
                t.measure(&mut h, &c.proc_root);
            }
            Out::Host(h)
        });
        run.start(sample, res, "host", cfg.budgets.host, job);
        let (c, cur) = (cfg.clone(), run.current_mount.clone());
        let job: Job = Box::new(move || {
            let text =
                std::fs::read_to_string(c.proc_root.join("self/mountinfo")).unwrap_or_default();
            let mounts = host::parse_mountinfo(&text, c.include_network_fs);
            Out::Disks(host::collect_disks(&mounts, &cur))
        });
        run.start(sample, res, "disks", cfg.budgets.disks, job);
        let c = cfg.clone();
        let job: Job = Box::new(move || {
            Out::Network(crate::net::collect(&c.sys_root, &c.peers, c.peer_timeout))
        });
        run.start(sample, res, "network", cfg.budgets.network, job);
        let c = cfg.clone();
        let job: Job = Box::new(move || {
            Out::Processes(procs::scan(&c.proc_root, &c.patterns).map_err(|e| e.to_string()))
        });
        run.start(sample, res, "processes", cfg.budgets.processes, job);
    }

    /// Builds the sections from what answered in time.
    fn assemble(&self, sample: &mut Sample, mut res: Results, now: Timestamp) {
        if let Some(mut h) = res.host.take() {
            match res.disks.take() {
                Some(d) => h.disks = d,
                None => {
                    h.absent
                        .insert("disks".into(), "disk collector did not finish".into());
                }
            }
            match &self.host_boot {
                Ok(id) => h.boot_id = Some(id.clone()),
                Err(e) => {
                    h.absent.insert("boot_id".into(), e.clone());
                }
            }
            sample.host = Some(h);
        }
        sample.network = res.network.take();
        if let Some((raw, pci)) = res.gpu.take() {
            sample.gpu =
                Some(self.gpu_section(&raw, pci, res.xids.take(), res.xid_missing.take(), now));
        }
        if let Some(mut s) = res.scan.take() {
            if let Some(g) = &sample.gpu {
                procs::merge_gpu(&mut s, g, &self.cfg.proc_root);
            }
            sample.processes = Some(s.section);
        }
    }

    /// The GPU section: NVML's readings, the XIDs in the window, and why XIDs are missing
    /// when the log was not read.
    fn gpu_section(
        &self,
        raw: &RawGpus,
        pci: Result<u32, String>,
        xids: Option<Result<XidRead, String>>,
        xid_missing: Option<String>,
        now: Timestamp,
    ) -> GpuSection {
        let cfg = &self.cfg;
        let (mut all, older) = match &xids {
            Some(Ok(r)) => (r.xids.clone(), r.older.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        let log_boot_id = self.log_boot.id.as_ref().ok().map(String::as_str);
        all.extend(crate::xid::parse_fixture_lines(&raw.kmsg, now, log_boot_id));
        let source = match &cfg.gpu {
            GpuSource::Fixture(p) => format!("fixture:{}", p.display()),
            _ => "nvml".to_owned(),
        };
        let mut sec = gpu::convert(raw, &source, cfg.expect_gpus, all);
        match pci {
            Ok(n) => sec.pci_devices = Some(n),
            Err(e) => {
                sec.absent.insert("pci_devices".into(), e);
            }
        }
        // An empty XID list must never stand for "the log was not read": every way of
        // not reading it names itself in absent.xids, so a scorer or exporter can tell.
        let why =
            match &xids {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(format!("kernel log unreadable: {e}")),
                None if cfg.kmsg.is_some() => Some(xid_missing.unwrap_or_else(|| {
                    "xid collector did not finish; kernel log not read".to_owned()
                })),
                // --no-xid with recorded fixture lines: those are the log, replayed.
                None if !raw.kmsg.is_empty() => None,
                None => Some("xid collection disabled (--no-xid)".to_owned()),
            };
        match why {
            Some(why) => {
                for d in &mut sec.devices {
                    d.absent.insert("xids".into(), why.clone());
                }
                sec.absent.insert("xids".into(), why);
            }
            None => {
                if let Err(e) = &self.log_boot.id {
                    // Without a boot id an XID has no identity: say why once.
                    sec.absent.insert("xids.boot_id".into(), e.clone());
                }
            }
        }
        crate::xid::cap_xids(&mut sec, crate::xid::MAX_XIDS_LISTED, &older);
        sec
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
