//! dcgm-exporter's names and labels for the readings both have (`--metric-names dcgm`), so a
//! stock DCGM dashboard or alert works unchanged on ugro's data.
//!
//! Labels are dcgm-exporter's (4.x, `etc/default-counters.csv` with its default label set):
//! `gpu` (index), `UUID`, `pci_bus_id`, `device` (`nvidia<index>`), `modelName`, `Hostname`
//! (the node name), and `DCGM_FI_DRIVER_VERSION` when the sample has the driver version.
//! Units are DCGM's: framebuffer in MiB, power in W, temperature in °C. Differences that
//! follow from what a sample is: `DCGM_FI_DEV_XID_ERRORS` is the last XID within the probe's
//! lookback window (DCGM keeps the last one since it started), with the code in `err_code`
//! but without `err_msg`; `DCGM_FI_DEV_FB_FREE` is total minus used (NVML's v1 memory info,
//! which counts reserved memory as used).

use ugro_types::sample::THROTTLE_BITS;
use ugro_types::{Gpu, GpuSection, Sample};

use crate::catalog::*;
use crate::expo::{Exposition, Labels};

const MIB: u64 = 1 << 20;

fn labels(s: &Sample, g: &GpuSection, d: &Gpu) -> Labels {
    let idx = d.index.to_string();
    Labels::new()
        .with("gpu", &idx)
        .with("UUID", d.uuid.as_deref().unwrap_or(""))
        .with("pci_bus_id", d.pci_bus_id.as_deref().unwrap_or(""))
        .with("device", &format!("nvidia{idx}"))
        .with("modelName", d.name.as_deref().unwrap_or(""))
        .with("Hostname", &s.node)
        .and_opt("DCGM_FI_DRIVER_VERSION", g.driver_version.as_deref())
}

fn u(x: Option<u64>) -> Option<f64> {
    x.map(|v| v as f64)
}

/// Every GPU of `s` under DCGM's names.
pub(crate) fn sample(e: &mut Exposition, s: &Sample) {
    let Some(g) = &s.gpu else { return };
    let xids_read = !g.absent.contains_key("xids");
    for d in &g.devices {
        let l = labels(s, g, d);
        readings(e, &l, d);
        memory_health(e, &l, d);
        if xids_read && !d.absent.contains_key("xids") {
            // The list is in log order: the last one is the most recent.
            let last = d.xids.last().map_or(0, |x| x.code);
            let code = last.to_string();
            e.set(&DCGM_XID, &l.and("err_code", &code), Some(f64::from(last)));
        }
    }
}

fn readings(e: &mut Exposition, l: &Labels, d: &Gpu) {
    e.set(&DCGM_GPU_UTIL, l, d.utilization_pct.map(f64::from));
    e.set(
        &DCGM_MEM_COPY_UTIL,
        l,
        d.memory_utilization_pct.map(f64::from),
    );
    e.set(
        &DCGM_FB_USED,
        l,
        d.memory_used_bytes.map(|b| (b / MIB) as f64),
    );
    let free = d
        .memory_total_bytes
        .zip(d.memory_used_bytes)
        .map(|(t, used)| (t.saturating_sub(used) / MIB) as f64);
    e.set(&DCGM_FB_FREE, l, free);
    e.set(&DCGM_GPU_TEMP, l, d.temperature_c.map(f64::from));
    e.set(&DCGM_POWER, l, d.power_w);
    let mask = d.throttle_reasons.as_ref().map(|active| {
        THROTTLE_BITS
            .iter()
            .filter(|(_, name)| active.iter().any(|a| a == name))
            .fold(0u64, |m, (bit, _)| m | bit) as f64
    });
    e.set(&DCGM_CLOCK_EVENTS, l, mask);
    e.set(
        &DCGM_PCIE_REPLAY,
        l,
        u(d.pcie.and_then(|p| p.replay_counter)),
    );
}

fn memory_health(e: &mut Exposition, l: &Labels, d: &Gpu) {
    if let Some(ecc) = &d.ecc {
        e.set(&DCGM_ECC_SBE_VOL, l, u(ecc.corrected_volatile));
        e.set(&DCGM_ECC_DBE_VOL, l, u(ecc.uncorrected_volatile));
        e.set(&DCGM_ECC_SBE_AGG, l, u(ecc.corrected_aggregate));
        e.set(&DCGM_ECC_DBE_AGG, l, u(ecc.uncorrected_aggregate));
    }
    if let Some(r) = &d.remapped_rows {
        e.set(&DCGM_ROWS_UNC, l, u(r.uncorrectable));
        e.set(&DCGM_ROWS_COR, l, u(r.correctable));
        e.flag(&DCGM_REMAP_FAILURE, l, r.failure);
        e.flag(&DCGM_REMAP_PENDING, l, r.pending);
    }
}
