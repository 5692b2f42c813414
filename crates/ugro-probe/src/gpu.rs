//! GPU readings: the raw form NVML answers in (also the `--gpu-fixture` file format) and the one
//! conversion from raw readings to the sample's [`GpuSection`].
//!
//! NVML and fixtures meet at [`RawGpus`]: the NVML collector stores each call's result as a
//! [`Reading`] (`{"ok": value}` or `{"err": "NotSupported"}`, the NVML error's variant name), and a
//! fixture file is that same structure written by hand or recorded. Everything after that,
//! the "not supported means absent" rule, GPU-lost detection, the remapped-row field decoding,
//! throttle bit names, XID attachment and the `--expect-gpus` check, runs the same code for both.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use ugro_types::{
    DeviceState, Ecc, Gpu, GpuProcess, GpuSection, GpuStatus, Pcie, RecoveryAction, RemappedRows,
    Xid,
};

use crate::xid::{PciKey, attach_xids};

/// NVML field ids for row remapping (nvml.h `NVML_FI_DEV_REMAPPED_*`). nvml-wrapper has no
/// safe call for them, so they are read through `nvmlDeviceGetFieldValues`.
pub const FIELD_REMAPPED_COR: u32 = 142;
/// Rows remapped for uncorrectable errors.
pub const FIELD_REMAPPED_UNC: u32 = 143;
/// A remap is pending (non-zero = yes).
pub const FIELD_REMAPPED_PENDING: u32 = 144;
/// A remap failed (non-zero = yes).
pub const FIELD_REMAPPED_FAILURE: u32 = 145;
/// `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`: the driver's recovery verdict,
/// `nvmlDeviceGpuRecoveryAction_t` (0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain
/// and reset), the field DCGM's driver-health watch reads. NVML r570 and later; older drivers
/// and boards answer NotSupported (or InvalidArg for an id they do not know).
pub const FIELD_RECOVERY_ACTION: u32 = 230;

pub use ugro_types::sample::THROTTLE_BITS;

/// The result of one NVML query: the value, or the NVML error's variant name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reading<T> {
    /// The call succeeded.
    Ok(T),
    /// The call failed: `NotSupported`, `GpuLost`, `NoPermission`, `Unknown`, …
    Err(String),
}

/// Why NVML could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitError {
    /// `absent` (no library) or `failed` (library present, NVML/driver error).
    pub status: GpuStatus,
    /// The loader's or NVML's message.
    pub message: String,
}

/// Utilisation rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawUtilization {
    /// GPU busy, percent.
    pub gpu: u32,
    /// Memory controller busy, percent.
    pub memory: u32,
}

/// Framebuffer memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMemory {
    /// Allocated, bytes (NVML v2 `used`: excludes the driver's reservation).
    pub used: u64,
    /// Installed, bytes.
    pub total: u64,
}

/// A compute process as NVML lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawProcess {
    /// Host pid.
    pub pid: u32,
    /// GPU memory, bytes; absent when NVML reports "not available".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory_bytes: Option<u64>,
}

/// Everything read from one GPU. A field left out (only possible in a fixture) becomes
/// absent with the reason "not recorded".
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// NVML index.
    pub index: u32,
    /// Set when `device_by_index` itself failed (e.g. `GpuLost`); then nothing else was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle_error: Option<String>,
    /// Free text for people (fixtures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Reading<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Reading<String>>,
    /// `pci_info().bus_id`, e.g. `00000000:3B:00.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<Reading<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<Reading<RawUtilization>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Reading<RawMemory>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<Reading<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_slowdown_c: Option<Reading<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_shutdown_c: Option<Reading<u32>>,
    /// `power_usage()`, milliwatts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_mw: Option<Reading<u32>>,
    /// `enforced_power_limit()`, milliwatts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_limit_mw: Option<Reading<u32>>,
    /// `current_throttle_reasons()` as NVML's bit mask (see [`THROTTLE_BITS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_reasons: Option<Reading<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_enabled: Option<Reading<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_corrected_volatile: Option<Reading<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected_volatile: Option<Reading<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_corrected_aggregate: Option<Reading<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected_aggregate: Option<Reading<u64>>,
    /// `field_values_for` results by NVML field id (142–145 and 230 by default).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<u32, Reading<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_gen: Option<Reading<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_max_gen: Option<Reading<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_width: Option<Reading<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_max_width: Option<Reading<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_replay_counter: Option<Reading<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_mode: Option<Reading<bool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_processes: Option<Reading<Vec<RawProcess>>>,
}

/// One probe's worth of GPU readings: what NVML returned, or a fixture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpus {
    /// Free text for people (fixtures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Set when NVML could not be initialised; then nothing else is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_error: Option<InitError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<Reading<String>>,
    /// `sys_cuda_driver_version()`, e.g. 13000 for 13.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_driver_version: Option<Reading<i32>>,
    /// `device_count()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_count: Option<Reading<u32>>,
    /// One per index NVML reported.
    #[serde(default)]
    pub devices: Vec<RawDevice>,
    /// Fixtures only: kernel-log lines (`/dev/kmsg` records or bare `NVRM: Xid …` messages)
    /// replayed as if read from the kernel log at probe time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kmsg: Vec<String>,
}

/// What an NVML error name means for a field: `Some(reason)` for absent, plus whether it
/// says the GPU is gone.
fn absent_reason(err: &str) -> (String, bool) {
    match err {
        "NotSupported" => ("not supported".into(), false),
        "NoPermission" => ("no permission".into(), false),
        "GpuLost" => ("gpu lost".into(), true),
        "NotRecorded" => ("not recorded".into(), false),
        // An NVML that predates a field id rejects the id itself.
        "InvalidArg" => ("not supported by this driver (InvalidArg)".into(), false),
        other => (format!("nvml error: {other}"), false),
    }
}

/// Converts readings, recording absences and GPU-lost on the way.
struct Conv<'a> {
    gpu: &'a mut Gpu,
}

impl Conv<'_> {
    fn take<T: Clone>(&mut self, field: &str, r: &Option<Reading<T>>) -> Option<T> {
        self.take_for(&[field], r)
    }

    /// One NVML call that fills several schema fields: each is named in `absent`.
    fn take_for<T: Clone>(&mut self, fields: &[&str], r: &Option<Reading<T>>) -> Option<T> {
        match r {
            Some(Reading::Ok(v)) => Some(v.clone()),
            Some(Reading::Err(e)) => {
                let (reason, lost) = absent_reason(e);
                if lost {
                    self.gpu.state = DeviceState::Lost;
                }
                for f in fields {
                    self.gpu.absent.insert((*f).to_owned(), reason.clone());
                }
                None
            }
            None => {
                for f in fields {
                    self.gpu
                        .absent
                        .insert((*f).to_owned(), "not recorded".into());
                }
                None
            }
        }
    }

    fn field(&mut self, name: &str, raw: &RawDevice, id: u32) -> Option<u64> {
        let r = raw.fields.get(&id).cloned();
        self.take(name, &r)
    }
}

/// Throttle bit mask → schema names. Bits outside the known set are reported as
/// `unknown_0x…` rather than dropped, so a new driver's reason is still visible.
pub fn throttle_names(mask: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut known = 0u64;
    for (bit, name) in THROTTLE_BITS {
        known |= bit;
        if mask & bit != 0 {
            out.push(name.to_owned());
        }
    }
    let rest = mask & !known;
    if rest != 0 {
        out.push(format!("unknown_{rest:#x}"));
    }
    out
}

/// One device's readings → the sample's [`Gpu`].
pub fn convert_device(raw: &RawDevice) -> Gpu {
    let mut gpu = Gpu {
        index: raw.index,
        ..Gpu::default()
    };
    if let Some(e) = &raw.handle_error {
        let (reason, lost) = absent_reason(e);
        gpu.state = if lost {
            DeviceState::Lost
        } else {
            DeviceState::Error
        };
        gpu.absent.insert("device".into(), reason);
        return gpu;
    }
    let mut c = Conv { gpu: &mut gpu };
    let uuid = c.take("uuid", &raw.uuid);
    let name = c.take("name", &raw.name);
    let pci = c.take("pci_bus_id", &raw.pci_bus_id);
    let util = c.take_for(
        &["utilization_pct", "memory_utilization_pct"],
        &raw.utilization,
    );
    let mem = c.take_for(&["memory_used_bytes", "memory_total_bytes"], &raw.memory);
    let temp = c.take("temperature_c", &raw.temperature_c);
    let slow = c.take("temperature_slowdown_c", &raw.temperature_slowdown_c);
    let shut = c.take("temperature_shutdown_c", &raw.temperature_shutdown_c);
    let power = c.take("power_w", &raw.power_mw);
    let limit = c.take("power_limit_w", &raw.power_limit_mw);
    let throttle = c.take("throttle_reasons", &raw.throttle_reasons);
    let ecc_enabled = c.take("ecc.enabled", &raw.ecc_enabled);
    let ecc = Ecc {
        enabled: ecc_enabled,
        corrected_volatile: c.take("ecc.corrected_volatile", &raw.ecc_corrected_volatile),
        uncorrected_volatile: c.take("ecc.uncorrected_volatile", &raw.ecc_uncorrected_volatile),
        corrected_aggregate: c.take("ecc.corrected_aggregate", &raw.ecc_corrected_aggregate),
        uncorrected_aggregate: c.take("ecc.uncorrected_aggregate", &raw.ecc_uncorrected_aggregate),
    };
    let remap = RemappedRows {
        correctable: c.field("remapped_rows.correctable", raw, FIELD_REMAPPED_COR),
        uncorrectable: c.field("remapped_rows.uncorrectable", raw, FIELD_REMAPPED_UNC),
        pending: c
            .field("remapped_rows.pending", raw, FIELD_REMAPPED_PENDING)
            .map(|v| v != 0),
        failure: c
            .field("remapped_rows.failure", raw, FIELD_REMAPPED_FAILURE)
            .map(|v| v != 0),
    };
    let pcie = Pcie {
        generation: c.take("pcie.gen", &raw.pcie_gen),
        max_gen: c.take("pcie.max_gen", &raw.pcie_max_gen),
        width: c.take("pcie.width", &raw.pcie_width),
        max_width: c.take("pcie.max_width", &raw.pcie_max_width),
        replay_counter: c.take("pcie.replay_counter", &raw.pcie_replay_counter),
    };
    let recovery = c
        .field("recovery_action", raw, FIELD_RECOVERY_ACTION)
        .map(|v| RecoveryAction::from_nvml(u32::try_from(v).unwrap_or(u32::MAX)));
    let persistence = c.take("persistence_mode", &raw.persistence_mode);
    let procs = c.take("processes", &raw.compute_processes);

    gpu.uuid = uuid;
    gpu.name = name;
    gpu.pci_bus_id = pci;
    gpu.utilization_pct = util.map(|u| u.gpu);
    gpu.memory_utilization_pct = util.map(|u| u.memory);
    gpu.memory_used_bytes = mem.map(|m| m.used);
    gpu.memory_total_bytes = mem.map(|m| m.total);
    gpu.temperature_c = temp;
    gpu.temperature_slowdown_c = slow;
    gpu.temperature_shutdown_c = shut;
    gpu.power_w = power.map(|mw| f64::from(mw) / 1000.0);
    gpu.power_limit_w = limit.map(|mw| f64::from(mw) / 1000.0);
    gpu.throttle_reasons = throttle.map(throttle_names);
    gpu.ecc = (ecc != Ecc::default()).then_some(ecc);
    gpu.remapped_rows = (remap != RemappedRows::default()).then_some(remap);
    gpu.recovery_action = recovery;
    gpu.pcie = (pcie != Pcie::default()).then_some(pcie);
    gpu.persistence_mode = persistence;
    gpu.processes = procs.map(|ps| {
        ps.into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_memory_bytes: p.used_memory_bytes,
            })
            .collect()
    });
    gpu
}

/// The whole GPU section from raw readings, the XIDs seen in the lookback window and the
/// expected GPU count.
pub fn convert(raw: &RawGpus, source: &str, expected: Option<u32>, xids: Vec<Xid>) -> GpuSection {
    let mut sec = GpuSection {
        status: GpuStatus::Ok,
        reason: None,
        expected,
        found: None,
        pci_devices: None,
        driver_version: None,
        cuda_version: None,
        source: Some(source.to_owned()),
        devices: Vec::new(),
        unattributed_xids: Vec::new(),
        absent: Default::default(),
    };
    if let Some(e) = &raw.init_error {
        sec.status = e.status;
        sec.reason = Some(e.message.clone());
        // With no NVML nothing can be attached by bus id, but a fatal XID must still reach
        // the scorer.
        sec.unattributed_xids = xids;
        if e.status == GpuStatus::Absent && expected.is_some_and(|n| n > 0) {
            // A node configured for GPUs that has no NVML lost its driver: that is a failure,
            // not "not a GPU node".
            sec.status = GpuStatus::Failed;
            sec.found = Some(0);
        }
        return sec;
    }
    if let Some(Reading::Ok(v)) = &raw.driver_version {
        sec.driver_version = Some(v.clone());
    }
    if let Some(Reading::Ok(v)) = raw.cuda_driver_version {
        sec.cuda_version = Some(format!("{}.{}", v / 1000, (v % 1000) / 10));
    }
    match &raw.device_count {
        Some(Reading::Err(e)) => {
            sec.status = GpuStatus::Failed;
            sec.reason = Some(format!("device count: nvml error: {e}"));
            sec.unattributed_xids = xids;
            return sec;
        }
        Some(Reading::Ok(n)) => sec.found = Some(*n),
        None => sec.found = Some(u32::try_from(raw.devices.len()).unwrap_or(u32::MAX)),
    }
    sec.devices = raw.devices.iter().map(convert_device).collect();
    let keys: Vec<Option<PciKey>> = sec
        .devices
        .iter()
        .map(|d| d.pci_bus_id.as_deref().and_then(PciKey::parse))
        .collect();
    let (per_dev, rest) = attach_xids(&keys, xids);
    for (d, x) in sec.devices.iter_mut().zip(per_dev) {
        d.xids = x;
    }
    sec.unattributed_xids = rest;
    if let (Some(want), Some(found)) = (expected, sec.found)
        && found < want
    {
        sec.status = GpuStatus::Missing;
        sec.reason = Some(format!("{found} of {want} expected GPUs visible"));
    }
    sec
}

/// Reads a `--gpu-fixture` file.
pub fn load_fixture(path: &Path) -> Result<RawGpus, FixtureError> {
    let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FixtureError::Parse {
        path: path.to_owned(),
        cause: e.to_string(),
    })
}

/// A fixture that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Not readable.
    #[error("GPU fixture {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a fixture.
    #[error("GPU fixture {path}: {cause}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        cause: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T>(v: T) -> Option<Reading<T>> {
        Some(Reading::Ok(v))
    }

    fn healthy(index: u32) -> RawDevice {
        let mut fields = BTreeMap::new();
        for id in 142..=145 {
            fields.insert(id, Reading::Ok(0));
        }
        RawDevice {
            index,
            uuid: ok(format!("GPU-{index}")),
            name: ok("NVIDIA H200".into()),
            pci_bus_id: ok(format!("00000000:{:02X}:00.0", 0x18 + index)),
            utilization: ok(RawUtilization { gpu: 0, memory: 0 }),
            memory: ok(RawMemory {
                used: 0,
                total: 150_754_820_096,
            }),
            temperature_c: ok(38),
            power_mw: ok(79_694),
            power_limit_mw: ok(700_000),
            throttle_reasons: ok(1),
            fields,
            ..RawDevice::default()
        }
    }

    #[test]
    fn not_supported_becomes_absent_not_zero() {
        let mut d = healthy(0);
        d.temperature_slowdown_c = Some(Reading::Err("NotSupported".into()));
        let g = convert_device(&d);
        assert_eq!(g.temperature_slowdown_c, None);
        assert_eq!(g.absent["temperature_slowdown_c"], "not supported");
        assert_eq!(g.state, DeviceState::Ok);
        assert_eq!(g.power_w, Some(79.694));
    }

    #[test]
    fn gpu_lost_on_any_query_marks_the_device_lost() {
        let mut d = healthy(0);
        d.utilization = Some(Reading::Err("GpuLost".into()));
        assert_eq!(convert_device(&d).state, DeviceState::Lost);
        let d = RawDevice {
            index: 3,
            handle_error: Some("GpuLost".into()),
            ..RawDevice::default()
        };
        let g = convert_device(&d);
        assert_eq!(g.state, DeviceState::Lost);
        assert_eq!(g.uuid, None);
    }

    #[test]
    fn remapped_row_fields_decode_to_flags() {
        let mut d = healthy(0);
        d.fields.insert(FIELD_REMAPPED_PENDING, Reading::Ok(1));
        d.fields.insert(FIELD_REMAPPED_UNC, Reading::Ok(2));
        let r = convert_device(&d).remapped_rows.unwrap();
        assert_eq!(r.pending, Some(true));
        assert_eq!(r.failure, Some(false));
        assert_eq!(r.uncorrectable, Some(2));
    }

    #[test]
    fn recovery_action_field_decodes_and_is_absent_where_unsupported() {
        let mut d = healthy(0);
        for (v, want) in [
            (0, RecoveryAction::None),
            (1, RecoveryAction::GpuReset),
            (2, RecoveryAction::NodeReboot),
            (3, RecoveryAction::DrainP2p),
            (4, RecoveryAction::DrainAndReset),
            (7, RecoveryAction::Unknown(7)),
        ] {
            d.fields.insert(FIELD_RECOVERY_ACTION, Reading::Ok(v));
            assert_eq!(convert_device(&d).recovery_action, Some(want));
        }
        d.fields
            .insert(FIELD_RECOVERY_ACTION, Reading::Err("NotSupported".into()));
        let g = convert_device(&d);
        assert_eq!(g.recovery_action, None);
        assert_eq!(g.absent["recovery_action"], "not supported");
        assert_eq!(g.state, DeviceState::Ok);
        d.fields.remove(&FIELD_RECOVERY_ACTION);
        assert_eq!(convert_device(&d).absent["recovery_action"], "not recorded");
    }

    #[test]
    fn throttle_mask_names_include_unknown_bits() {
        assert_eq!(
            throttle_names(0x4 | 0x8),
            vec!["sw_power_cap", "hw_slowdown"]
        );
        assert_eq!(throttle_names(0x1000), vec!["unknown_0x1000"]);
        assert!(throttle_names(0).is_empty());
    }

    #[test]
    fn fewer_gpus_than_expected_is_missing() {
        let raw = RawGpus {
            device_count: ok(7),
            devices: (0..7).map(healthy).collect(),
            ..RawGpus::default()
        };
        let s = convert(&raw, "t", Some(8), Vec::new());
        assert_eq!(s.status, GpuStatus::Missing);
        assert_eq!(s.found, Some(7));
        let s = convert(&raw, "t", Some(7), Vec::new());
        assert_eq!(s.status, GpuStatus::Ok);
    }

    #[test]
    fn no_library_is_absent_unless_gpus_are_expected() {
        let raw = RawGpus {
            init_error: Some(InitError {
                status: GpuStatus::Absent,
                message: "libnvidia-ml.so: cannot open shared object file".into(),
            }),
            ..RawGpus::default()
        };
        let s = convert(&raw, "nvml", None, Vec::new());
        assert_eq!(s.status, GpuStatus::Absent);
        assert!(s.reason.unwrap().contains("libnvidia-ml"));
        assert_eq!(
            convert(&raw, "nvml", Some(8), Vec::new()).status,
            GpuStatus::Failed
        );
    }

    #[test]
    fn cuda_version_is_major_dot_minor() {
        let raw = RawGpus {
            cuda_driver_version: ok(12040),
            device_count: ok(0),
            ..RawGpus::default()
        };
        assert_eq!(
            convert(&raw, "t", None, Vec::new()).cuda_version.unwrap(),
            "12.4"
        );
    }
}
