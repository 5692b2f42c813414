//! The NVML collector: one `Nvml` handle per process, every query stored as a [`Reading`].

use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, TemperatureSensor, TemperatureThreshold,
};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use ugro_types::GpuStatus;

use crate::gpu::{
    FIELD_RECOVERY_ACTION, FIELD_REMAPPED_COR, FIELD_REMAPPED_FAILURE, FIELD_REMAPPED_PENDING,
    FIELD_REMAPPED_UNC, InitError, RawDevice, RawGpus, RawMemory, RawProcess, RawUtilization,
    Reading,
};

/// The NVML error's variant name (`NotSupported`, `GpuLost`, …), the vocabulary
/// [`Reading::Err`] and fixtures use.
pub fn error_name(e: &NvmlError) -> String {
    let dbg = format!("{e:?}");
    match dbg.find('(') {
        Some(i) => dbg[..i].to_owned(),
        None => dbg,
    }
}

/// Sorts an init failure: no library (or a library without the NVML symbols) means "absent";
/// a library that loads but fails (`DriverNotLoaded`, `LibRmVersionMismatch`, `NoPermission`,
/// …) means "failed", because a GPU node with a broken driver must not look like a CPU node.
pub fn init_error(e: &NvmlError) -> InitError {
    let status = match e {
        NvmlError::LibloadingError(_)
        | NvmlError::FailedToLoadSymbol(_)
        | NvmlError::LibraryNotFound => GpuStatus::Absent,
        _ => GpuStatus::Failed,
    };
    let message = match e {
        NvmlError::LibloadingError(inner) => inner.to_string(),
        other => format!("{} ({})", other, error_name(other)),
    };
    InitError { status, message }
}

fn rd<T>(r: Result<T, NvmlError>) -> Option<Reading<T>> {
    Some(match r {
        Ok(v) => Reading::Ok(v),
        Err(e) => Reading::Err(error_name(&e)),
    })
}

fn sample_u64(v: SampleValue) -> Option<u64> {
    match v {
        SampleValue::U32(x) => Some(u64::from(x)),
        SampleValue::U64(x) => Some(x),
        SampleValue::I64(x) => u64::try_from(x).ok(),
        SampleValue::F64(x) if x >= 0.0 && x.is_finite() => Some(x as u64),
        SampleValue::F64(_) => None,
    }
}

/// Reads every default field of every GPU. `pcie_throughput` is deliberately not read: it
/// costs about 21 ms per call on an H200.
pub fn collect(nvml: &Nvml) -> RawGpus {
    let mut raw = RawGpus {
        driver_version: rd(nvml.sys_driver_version()),
        cuda_driver_version: rd(nvml.sys_cuda_driver_version()),
        ..RawGpus::default()
    };
    let n = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => {
            raw.device_count = rd::<u32>(Err(e));
            return raw;
        }
    };
    raw.device_count = Some(Reading::Ok(n));
    for index in 0..n {
        raw.devices.push(collect_device(nvml, index));
    }
    raw
}

fn collect_device(nvml: &Nvml, index: u32) -> RawDevice {
    let dev = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(e) => {
            return RawDevice {
                index,
                handle_error: Some(error_name(&e)),
                ..RawDevice::default()
            };
        }
    };
    let mut d = RawDevice {
        index,
        uuid: rd(dev.uuid()),
        name: rd(dev.name()),
        pci_bus_id: rd(dev.pci_info().map(|p| p.bus_id)),
        utilization: rd(dev.utilization_rates().map(|u| RawUtilization {
            gpu: u.gpu,
            memory: u.memory,
        })),
        memory: rd(dev.memory_info().map(|m| RawMemory {
            used: m.used,
            total: m.total,
        })),
        temperature_c: rd(dev.temperature(TemperatureSensor::Gpu)),
        temperature_slowdown_c: rd(dev.temperature_threshold(TemperatureThreshold::Slowdown)),
        temperature_shutdown_c: rd(dev.temperature_threshold(TemperatureThreshold::Shutdown)),
        power_mw: rd(dev.power_usage()),
        power_limit_mw: rd(dev.enforced_power_limit()),
        throttle_reasons: rd(dev.current_throttle_reasons().map(|t| t.bits())),
        ecc_enabled: rd(dev.is_ecc_enabled().map(|m| m.currently_enabled)),
        ecc_corrected_volatile: rd(
            dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
        ),
        ecc_uncorrected_volatile: rd(
            dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
        ),
        ecc_corrected_aggregate: rd(
            dev.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
        ),
        ecc_uncorrected_aggregate: rd(
            dev.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
        ),
        pcie_gen: rd(dev.current_pcie_link_gen()),
        pcie_max_gen: rd(dev.max_pcie_link_gen()),
        pcie_width: rd(dev.current_pcie_link_width()),
        pcie_max_width: rd(dev.max_pcie_link_width()),
        pcie_replay_counter: rd(dev.pcie_replay_counter().map(u64::from)),
        persistence_mode: rd(dev.is_in_persistent_mode()),
        compute_processes: rd(dev.running_compute_processes().map(|ps| {
            ps.into_iter()
                .map(|p| RawProcess {
                    pid: p.pid,
                    used_memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some(b),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect()
        })),
        ..RawDevice::default()
    };
    read_fields(
        &dev,
        &mut d,
        &[
            FIELD_REMAPPED_COR,
            FIELD_REMAPPED_UNC,
            FIELD_REMAPPED_PENDING,
            FIELD_REMAPPED_FAILURE,
        ],
    );
    // Its own call: a driver that rejects the whole request for an id it does not know must
    // not take the remapped-row readings down with it.
    read_fields(&dev, &mut d, &[FIELD_RECOVERY_ACTION]);
    d
}

/// One `nvmlDeviceGetFieldValues` call for `ids`, each answer stored by id.
fn read_fields(dev: &Device<'_>, d: &mut RawDevice, ids: &[u32]) {
    let fids: Vec<FieldId> = ids.iter().map(|&i| FieldId(i)).collect();
    match dev.field_values_for(&fids) {
        Ok(values) => {
            for (id, v) in ids.iter().zip(values) {
                let r = match v {
                    Ok(s) => match s.value {
                        Ok(val) => match sample_u64(val) {
                            Some(x) => Reading::Ok(x),
                            None => Reading::Err("UnexpectedValue".into()),
                        },
                        Err(e) => Reading::Err(error_name(&e)),
                    },
                    Err(e) => Reading::Err(error_name(&e)),
                };
                d.fields.insert(*id, r);
            }
        }
        Err(e) => {
            let name = error_name(&e);
            for id in ids {
                d.fields.insert(*id, Reading::Err(name.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_variant_names() {
        assert_eq!(error_name(&NvmlError::NotSupported), "NotSupported");
        assert_eq!(
            error_name(&NvmlError::FailedToLoadSymbol("x".into())),
            "FailedToLoadSymbol"
        );
    }

    #[test]
    fn init_errors_split_absent_from_failed() {
        assert_eq!(
            init_error(&NvmlError::LibraryNotFound).status,
            GpuStatus::Absent
        );
        assert_eq!(
            init_error(&NvmlError::DriverNotLoaded).status,
            GpuStatus::Failed
        );
        assert_eq!(
            init_error(&NvmlError::LibRmVersionMismatch).status,
            GpuStatus::Failed
        );
    }
}
