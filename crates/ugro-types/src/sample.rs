//! The `sample` record: one node's metrics at one instant, as `ugro-probe` writes it.
//!
//! Every measured value is an `Option`: a value the host cannot provide is left out of the
//! line, and the section's `absent` map says why (`"fan_speed": "not supported"`). A value is
//! never invented: 0 always means a real reading of zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Kind, Score, Timestamp};

/// Field name → why it is absent.
pub type Absent = BTreeMap<String, String>;

/// NVML clock-event (throttle) reason bits, in nvml.h order, with the names `throttle_reasons`
/// uses on the wire. The probe reads the bit mask with them; the metrics renderer writes both
/// the names (ugro's series) and the mask (DCGM's `DCGM_FI_DEV_CLOCKS_EVENT_REASONS`).
pub const THROTTLE_BITS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// Key in a device's `absent` map (and, for unattributed XIDs, the section's) saying how many
/// older XIDs were left out of the list: `"N more XID events not listed (…)"`.
pub const XIDS_TRUNCATED: &str = "xids_truncated";

/// Key in the GPU section's `absent` map for unattributed XIDs left out of the list.
pub const UNATTRIBUTED_TRUNCATED: &str = "unattributed_xids_truncated";

/// How many XIDs a truncation note ([`XIDS_TRUNCATED`], [`UNATTRIBUTED_TRUNCATED`]) says were
/// left out of the list: its leading number, 0 without a note.
pub fn truncated_count(note: Option<&String>) -> usize {
    note.and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn is_empty_map(m: &Absent) -> bool {
    m.is_empty()
}

/// A probe's output for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Schema version.
    pub v: u32,
    /// Always [`Kind::Sample`].
    pub kind: Kind,
    /// When the sample was taken.
    pub ts: Timestamp,
    /// Node name.
    pub node: String,
    /// Set by a remote collector (ugro-watch) when the node could not be reached; then the
    /// sections are absent and the score is `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<Unreachable>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSection>,
    /// Host CPU, memory, disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostSection>,
    /// Interfaces, InfiniBand ports, peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSection>,
    /// Training processes and process-table health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<ProcessSection>,
    /// How long each collector took and whether it finished.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::limits::items"
    )]
    pub collectors: Vec<CollectorRun>,
    /// Collectors that failed or ran out of time. A failed collector's section is absent.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::limits::items"
    )]
    pub errors: Vec<CollectorError>,
    /// Added by `ugro-score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
}

/// Why a node produced no data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    /// What failed: `ssh`, `timeout`, `probe`.
    pub cause: String,
    /// The error as the transport reported it.
    pub message: String,
}

/// One collector's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorRun {
    /// `gpu`, `xid`, `host`, `network`, `processes`.
    pub name: String,
    /// Wall time it took, in milliseconds.
    pub duration_ms: f64,
    /// Whether it finished within its budget without error.
    pub ok: bool,
}

/// A collector that failed or timed out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectorError {
    /// Collector name.
    pub collector: String,
    /// What went wrong.
    pub error: String,
    /// How long it ran before failing or being abandoned, in milliseconds.
    pub duration_ms: f64,
    /// True when it was abandoned because it exceeded its time budget.
    #[serde(default)]
    pub timed_out: bool,
}

/// Whether the GPU section can be trusted, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuStatus {
    /// NVML answered and every expected GPU is present.
    Ok,
    /// No NVML on this host (no driver, library not found): not a GPU node, or a broken install.
    Absent,
    /// NVML is installed but failed (init error, driver/library mismatch, GPU lost during enumeration).
    Failed,
    /// NVML works but fewer GPUs are visible than expected (`--expect-gpus`).
    Missing,
}

/// The GPU section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSection {
    /// See [`GpuStatus`].
    pub status: GpuStatus,
    /// Why the status is not `ok` (the loader's or NVML's own message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// GPUs the configuration expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u32>,
    /// GPUs NVML reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<u32>,
    /// NVIDIA (vendor 0x10de) display-class (0x03xx) PCI functions under
    /// `/sys/bus/pci/devices`, counted without NVML, so a GPU that dropped out of NVML (or a
    /// driver that does not load) is still visible by comparison with `found`. Absent, with
    /// `absent.pci_devices`, when sysfs cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_devices: Option<u32>,
    /// Driver version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// CUDA driver API version, e.g. `13.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// Where the readings came from: `nvml` or `fixture:<file>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// One entry per visible GPU.
    #[serde(default, deserialize_with = "crate::limits::gpus")]
    pub devices: Vec<Gpu>,
    /// XID lines from the kernel log that could not be attached to a visible GPU.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::limits::items"
    )]
    pub unattributed_xids: Vec<Xid>,
    /// Section-wide readings that could not be made (`xids` when the kernel log is
    /// unreadable), with the reason; per-GPU gaps are in each device's `absent`.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub absent: Absent,
}

/// Whether one GPU answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Answered.
    #[default]
    Ok,
    /// NVML says the GPU is lost / fallen off the bus (`GpuLost`).
    Lost,
    /// NVML returned an error for the handle itself.
    Error,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Gpu {
    /// NVML index.
    pub index: u32,
    /// Whether the device answered at all.
    #[serde(default)]
    pub state: DeviceState,
    /// `GPU-…` UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// PCI bus id, `00000000:00:06.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// GPU utilisation, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_pct: Option<u32>,
    /// Memory-controller utilisation, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization_pct: Option<u32>,
    /// Framebuffer memory in use, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Framebuffer memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Core temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<u32>,
    /// Temperature at which the GPU starts to slow down, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_slowdown_c: Option<u32>,
    /// Temperature at which the GPU shuts down, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_shutdown_c: Option<u32>,
    /// Board power draw, watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
    /// Enforced power limit, watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_w: Option<f64>,
    /// Current clock-event (throttle) reasons, NVML names in snake case: `gpu_idle`,
    /// `applications_clocks_setting`, `sw_power_cap`, `hw_slowdown`, `sync_boost`,
    /// `sw_thermal_slowdown`, `hw_thermal_slowdown`, `hw_power_brake_slowdown`,
    /// `display_clock_setting`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::limits::opt_items"
    )]
    pub throttle_reasons: Option<Vec<String>>,
    /// ECC error counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc: Option<Ecc>,
    /// Row remapping (Ampere and later; NVML fields 142–145).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remapped_rows: Option<RemappedRows>,
    /// The driver's own verdict on what this GPU needs (NVML field 230,
    /// `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`, the field DCGM's driver-health watch reads).
    /// Absent, with `absent.recovery_action`, where the board or driver does not provide it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_action: Option<RecoveryAction>,
    /// PCIe link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie: Option<Pcie>,
    /// Persistence mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_mode: Option<bool>,
    /// Compute processes on this GPU.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::limits::opt_items"
    )]
    pub processes: Option<Vec<GpuProcess>>,
    /// XIDs the kernel logged for this GPU within the probe's lookback window.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::limits::items"
    )]
    pub xids: Vec<Xid>,
    /// Fields this GPU does not provide, with the reason (`not supported`, an NVML error).
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub absent: Absent,
}

/// ECC counters. `None` where the board or mode does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ecc {
    /// Whether ECC is enabled now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Corrected since the last driver load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_volatile: Option<u64>,
    /// Uncorrected since the last driver load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrected_volatile: Option<u64>,
    /// Corrected over the board's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_aggregate: Option<u64>,
    /// Uncorrected over the board's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrected_aggregate: Option<u64>,
}

/// Row-remapping state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RemappedRows {
    /// Rows remapped for correctable errors (field 142).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctable: Option<u64>,
    /// Rows remapped for uncorrectable errors (field 143).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrectable: Option<u64>,
    /// A remap is pending: the GPU needs a reset (field 144).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
    /// A remap failed: the GPU needs hardware service (field 145).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<bool>,
}

/// NVML's GPU recovery action (`nvmlDeviceGpuRecoveryAction_t`), in snake case on the wire.
/// A value this build does not know is kept as `unknown_N` (N the NVML value) rather than
/// dropped: a newer driver asking for something is still visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RecoveryAction {
    /// `NVML_GPU_RECOVERY_ACTION_NONE` (0): nothing to do.
    None,
    /// `NVML_GPU_RECOVERY_ACTION_GPU_RESET` (1): the GPU needs a reset.
    GpuReset,
    /// `NVML_GPU_RECOVERY_ACTION_NODE_REBOOT` (2): the node needs a reboot.
    NodeReboot,
    /// `NVML_GPU_RECOVERY_ACTION_DRAIN_P2P` (3): peer-to-peer traffic must be drained, then
    /// the field read again.
    DrainP2p,
    /// `NVML_GPU_RECOVERY_ACTION_DRAIN_AND_RESET` (4): running at reduced capacity; drain the
    /// work, then reset.
    DrainAndReset,
    /// A value this build does not name.
    Unknown(u32),
}

impl RecoveryAction {
    /// The action for NVML's value.
    pub fn from_nvml(v: u32) -> Self {
        match v {
            0 => RecoveryAction::None,
            1 => RecoveryAction::GpuReset,
            2 => RecoveryAction::NodeReboot,
            3 => RecoveryAction::DrainP2p,
            4 => RecoveryAction::DrainAndReset,
            n => RecoveryAction::Unknown(n),
        }
    }

    /// NVML's value.
    pub fn nvml_value(self) -> u32 {
        match self {
            RecoveryAction::None => 0,
            RecoveryAction::GpuReset => 1,
            RecoveryAction::NodeReboot => 2,
            RecoveryAction::DrainP2p => 3,
            RecoveryAction::DrainAndReset => 4,
            RecoveryAction::Unknown(n) => n,
        }
    }
}

impl std::fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryAction::None => f.write_str("none"),
            RecoveryAction::GpuReset => f.write_str("gpu_reset"),
            RecoveryAction::NodeReboot => f.write_str("node_reboot"),
            RecoveryAction::DrainP2p => f.write_str("drain_p2p"),
            RecoveryAction::DrainAndReset => f.write_str("drain_and_reset"),
            RecoveryAction::Unknown(n) => write!(f, "unknown_{n}"),
        }
    }
}

impl From<RecoveryAction> for String {
    fn from(a: RecoveryAction) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for RecoveryAction {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        RecoveryAction::from_name(&s)
    }
}

impl RecoveryAction {
    /// The action for its wire name (`gpu_reset`, `unknown_7`).
    pub fn from_name(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => RecoveryAction::None,
            "gpu_reset" => RecoveryAction::GpuReset,
            "node_reboot" => RecoveryAction::NodeReboot,
            "drain_p2p" => RecoveryAction::DrainP2p,
            "drain_and_reset" => RecoveryAction::DrainAndReset,
            other => match other.strip_prefix("unknown_").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 4 => RecoveryAction::Unknown(n),
                _ => return Err(format!("unknown recovery action {other:?}")),
            },
        })
    }
}

/// PCIe link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Pcie {
    /// Current link generation (`gen` on the wire).
    #[serde(rename = "gen", default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Maximum generation of the GPU and system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gen: Option<u32>,
    /// Current link width (lanes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Maximum width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    /// PCIe replay counter (monotonic since driver load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_counter: Option<u64>,
}

/// A compute process on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Process id (in the host's pid namespace).
    pub pid: u32,
    /// GPU memory it uses, bytes; absent where NVML cannot tell (e.g. under MIG without privileges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_bytes: Option<u64>,
}

/// One XID event from the kernel log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xid {
    /// The XID number.
    pub code: u32,
    /// PCI bus id as the driver printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    /// When the kernel logged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    /// The rest of the driver's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The boot the event was logged in (`/proc/sys/kernel/random/boot_id`). With `seq` it
    /// identifies the event: the same kernel record read by two probes, by a restarted probe
    /// or by a later cron run carries the same pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The record's `/dev/kmsg` sequence number within that boot. Absent for lines without a
    /// kmsg header (plain `dmesg` lines in a replay file): such an event has no identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl Xid {
    /// `(boot_id, seq)`, when both are known: the same kernel record always gives the same
    /// pair, whoever read it and whenever.
    pub fn identity(&self) -> Option<(&str, u64)> {
        Some((self.boot_id.as_deref()?, self.seq?))
    }
}

/// Host resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostSection {
    /// Busy CPU share over the measurement window, percent of all CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<f64>,
    /// The window `cpu_pct` was measured over, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_window_ms: Option<u64>,
    /// Logical CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// 1-, 5- and 15-minute load averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    /// Physical memory, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Memory available to new work (MemAvailable), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_bytes: Option<u64>,
    /// Swap configured, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_total_bytes: Option<u64>,
    /// Swap in use, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_used_bytes: Option<u64>,
    /// Seconds since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// This boot's id (`/proc/sys/kernel/random/boot_id`): changes at every boot, so a
    /// reader can tell a reboot (and a reset of volatile counters) between two samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Local filesystems.
    #[serde(default, deserialize_with = "crate::limits::items")]
    pub disks: Vec<Disk>,
    /// Fields that could not be read, with the reason.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub absent: Absent,
}

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// Mount point.
    pub mount: String,
    /// Filesystem type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// Size, bytes.
    pub total_bytes: u64,
    /// Used, bytes.
    pub used_bytes: u64,
    /// Available to unprivileged users, bytes.
    pub available_bytes: u64,
    /// Inodes in use, percent (absent for filesystems without a fixed inode table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used_pct: Option<f64>,
}

/// Network state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkSection {
    /// Non-loopback interfaces.
    #[serde(default, deserialize_with = "crate::limits::items")]
    pub interfaces: Vec<Interface>,
    /// InfiniBand ports from `/sys/class/infiniband`.
    #[serde(default, deserialize_with = "crate::limits::items")]
    pub infiniband: Vec<IbPort>,
    /// Configured peers.
    #[serde(default, deserialize_with = "crate::limits::items")]
    pub peers: Vec<Peer>,
    /// What could not be read, with the reason.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub absent: Absent,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// `operstate` from sysfs: `up`, `down`, `unknown`, …
    pub oper_state: String,
    /// Carrier detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<bool>,
    /// Link speed, Mbit/s (absent for virtual interfaces that report none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u64>,
}

/// One InfiniBand port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IbPort {
    /// HCA name, e.g. `mlx5_0`.
    pub device: String,
    /// Port number.
    pub port: u32,
    /// Logical state, e.g. `ACTIVE`.
    pub state: String,
    /// Physical state, e.g. `LinkUp`.
    pub phys_state: String,
    /// Rate, Gbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_gbps: Option<f64>,
}

/// Reachability of one configured peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// `host:port` as configured.
    pub target: String,
    /// Whether a TCP connection was established within the timeout.
    pub reachable: bool,
    /// TCP connect time, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why it was not reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Process-table health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessSection {
    /// Processes in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u32>,
    /// Zombie processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zombies: Option<u32>,
    /// Processes in uninterruptible sleep (D state): usually stuck I/O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_state: Option<u32>,
    /// Training processes.
    #[serde(default, deserialize_with = "crate::limits::items")]
    pub training: Vec<TrainingProcess>,
    /// What could not be read, with the reason.
    #[serde(default, skip_serializing_if = "is_empty_map")]
    pub absent: Absent,
}

/// A training process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingProcess {
    /// Process id.
    pub pid: u32,
    /// Command line (truncated to 256 bytes).
    pub command: String,
    /// Process state letter from /proc (`R`, `S`, `D`, `Z`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// GPU memory it holds, bytes, summed over GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_bytes: Option<u64>,
    /// GPU indices it runs on.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::limits::items"
    )]
    pub gpus: Vec<u32>,
    /// Why it counts as training: `nvml` (a GPU compute process) or `pattern:<p>`.
    pub matched_by: String,
}

impl Sample {
    /// An empty sample for `node` at `ts`; collectors fill the sections.
    pub fn new(node: impl Into<String>, ts: Timestamp) -> Self {
        Sample {
            v: crate::SCHEMA_VERSION,
            kind: Kind::Sample,
            ts,
            node: node.into(),
            unreachable: None,
            gpu: None,
            host: None,
            network: None,
            processes: None,
            collectors: Vec::new(),
            errors: Vec::new(),
            score: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn recovery_actions_round_trip_by_name_and_keep_unknown_values() {
        for v in 0..=6 {
            let a = RecoveryAction::from_nvml(v);
            assert_eq!(a.nvml_value(), v);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(serde_json::from_str::<RecoveryAction>(&json).unwrap(), a);
        }
        assert_eq!(
            serde_json::to_string(&RecoveryAction::DrainAndReset).unwrap(),
            "\"drain_and_reset\""
        );
        assert_eq!(RecoveryAction::from_nvml(5).to_string(), "unknown_5");
        // A named value cannot hide behind its number.
        assert!(serde_json::from_str::<RecoveryAction>("\"unknown_1\"").is_err());
        assert!(serde_json::from_str::<RecoveryAction>("\"reboot\"").is_err());
    }
}
