//! A sample's readings under ugro's own names (what `ugro-probe --format prometheus` always
//! wrote). A value the sample does not have is not written: no series is better than a fake 0.

use ugro_types::sample::{THROTTLE_BITS, UNATTRIBUTED_TRUNCATED, XIDS_TRUNCATED, truncated_count};
use ugro_types::{
    DeviceState, Gpu, GpuSection, GpuStatus, HostSection, NetworkSection, ProcessSection, Sample,
};

use crate::catalog::*;
use crate::expo::{Exposition, Labels};

fn f<T: Into<f64>>(x: Option<T>) -> Option<f64> {
    x.map(Into::into)
}

fn u(x: Option<u64>) -> Option<f64> {
    x.map(|v| v as f64)
}

/// The labels every series of one GPU carries.
pub(crate) fn gpu_labels(node: &Labels, d: &Gpu) -> Labels {
    node.and("gpu", &d.index.to_string())
        .with("uuid", d.uuid.as_deref().unwrap_or(""))
}

/// Every probe reading in `s`.
pub(crate) fn sample(e: &mut Exposition, node: &Labels, s: &Sample) {
    e.set(&PROBE_TIMESTAMP, node, Some(s.ts.millis() as f64 / 1000.0));
    for c in &s.collectors {
        let l = node.and("collector", &c.name);
        // Microsecond resolution: the division would otherwise print binary noise (0.0018160000000000001).
        let secs = (c.duration_ms * 1000.0).round() / 1e6;
        e.set(&COLLECTOR_DURATION, &l, Some(secs));
        e.flag(&COLLECTOR_SUCCESS, &l, Some(c.ok));
    }
    if let Some(g) = &s.gpu {
        gpu_section(e, node, g);
    }
    if let Some(h) = &s.host {
        host(e, node, h);
    }
    if let Some(n) = &s.network {
        network(e, node, n);
    }
    if let Some(p) = &s.processes {
        processes(e, node, p);
    }
}

fn gpu_section(e: &mut Exposition, node: &Labels, g: &GpuSection) {
    for (st, name) in [
        (GpuStatus::Ok, "ok"),
        (GpuStatus::Absent, "absent"),
        (GpuStatus::Failed, "failed"),
        (GpuStatus::Missing, "missing"),
    ] {
        e.flag(&GPU_STATUS, &node.and("status", name), Some(g.status == st));
    }
    e.set(&GPU_FOUND, node, f(g.found));
    e.set(&GPU_PCI_DEVICES, node, f(g.pci_devices));
    e.set(&GPU_EXPECTED, node, f(g.expected));
    // Not reading the kernel log (unreadable, timed out, --no-xid) names `xids` in absent:
    // then there is no count at all, never a reassuring 0.
    let xids_read = !g.absent.contains_key("xids");
    let unattributed =
        g.unattributed_xids.len() + truncated_count(g.absent.get(UNATTRIBUTED_TRUNCATED));
    e.set(
        &GPU_UNATTRIBUTED_XIDS,
        node,
        xids_read.then_some(unattributed as f64),
    );
    for d in &g.devices {
        let gl = gpu_labels(node, d);
        info(e, &gl, g, d);
        readings(e, &gl, d);
        memory_health(e, &gl, d);
        pcie(e, &gl, d);
        xids(e, &gl, d, xids_read);
    }
}

fn info(e: &mut Exposition, gl: &Labels, g: &GpuSection, d: &Gpu) {
    let l = gl
        .and_opt("name", d.name.as_deref())
        .and_opt("pci_bus_id", d.pci_bus_id.as_deref())
        .and_opt("driver_version", g.driver_version.as_deref())
        .and_opt("cuda_version", g.cuda_version.as_deref());
    e.set(&GPU_INFO, &l, Some(1.0));
}

fn readings(e: &mut Exposition, gl: &Labels, d: &Gpu) {
    e.flag(&GPU_UP, gl, Some(d.state == DeviceState::Ok));
    e.set(&GPU_UTIL, gl, f(d.utilization_pct));
    e.set(&GPU_MEM_UTIL, gl, f(d.memory_utilization_pct));
    e.set(&GPU_MEM_USED, gl, u(d.memory_used_bytes));
    e.set(&GPU_MEM_TOTAL, gl, u(d.memory_total_bytes));
    e.set(&GPU_TEMP, gl, f(d.temperature_c));
    e.set(&GPU_TEMP_SLOWDOWN, gl, f(d.temperature_slowdown_c));
    e.set(&GPU_TEMP_SHUTDOWN, gl, f(d.temperature_shutdown_c));
    e.set(&GPU_POWER, gl, d.power_w);
    e.set(&GPU_POWER_LIMIT, gl, d.power_limit_w);
    if let Some(active) = &d.throttle_reasons {
        for (_, reason) in THROTTLE_BITS {
            let on = active.iter().any(|a| a == reason);
            e.flag(&GPU_THROTTLE, &gl.and("reason", reason), Some(on));
        }
    }
    e.flag(&GPU_PERSISTENCE, gl, d.persistence_mode);
    e.set(
        &GPU_PROCESSES,
        gl,
        d.processes.as_ref().map(|p| p.len() as f64),
    );
    e.set(
        &GPU_RECOVERY_ACTION,
        gl,
        d.recovery_action.map(|a| f64::from(a.nvml_value())),
    );
}

fn memory_health(e: &mut Exposition, gl: &Labels, d: &Gpu) {
    if let Some(ecc) = &d.ecc {
        e.flag(&GPU_ECC_ENABLED, gl, ecc.enabled);
        for (kind, vol, agg) in [
            ("corrected", ecc.corrected_volatile, ecc.corrected_aggregate),
            (
                "uncorrected",
                ecc.uncorrected_volatile,
                ecc.uncorrected_aggregate,
            ),
        ] {
            let l = gl.and("type", kind);
            e.set(&GPU_ECC_VOLATILE, &l, u(vol));
            e.set(&GPU_ECC_AGGREGATE, &l, u(agg));
        }
    }
    if let Some(r) = &d.remapped_rows {
        for (kind, v) in [
            ("correctable", r.correctable),
            ("uncorrectable", r.uncorrectable),
        ] {
            e.set(&GPU_REMAPPED_ROWS, &gl.and("kind", kind), u(v));
        }
        e.flag(&GPU_REMAP_PENDING, gl, r.pending);
        e.flag(&GPU_REMAP_FAILURE, gl, r.failure);
    }
}

fn pcie(e: &mut Exposition, gl: &Labels, d: &Gpu) {
    if let Some(p) = &d.pcie {
        e.set(&GPU_PCIE_GEN, gl, f(p.generation));
        e.set(&GPU_PCIE_GEN_MAX, gl, f(p.max_gen));
        e.set(&GPU_PCIE_WIDTH, gl, f(p.width));
        e.set(&GPU_PCIE_WIDTH_MAX, gl, f(p.max_width));
        e.set(&GPU_PCIE_REPLAYS, gl, u(p.replay_counter));
    }
}

fn xids(e: &mut Exposition, gl: &Labels, d: &Gpu, section_read: bool) {
    if !section_read || d.absent.contains_key("xids") {
        return;
    }
    let total = d.xids.len() + truncated_count(d.absent.get(XIDS_TRUNCATED));
    e.set(&GPU_XIDS, gl, Some(total as f64));
    // By code, over the listed events: those left out of a capped list have no code here.
    let mut codes: Vec<u32> = d.xids.iter().map(|x| x.code).collect();
    codes.sort_unstable();
    for chunk in codes.chunk_by(|a, b| a == b) {
        let l = gl.and("xid", &chunk[0].to_string());
        e.set(&GPU_XID_CODES, &l, Some(chunk.len() as f64));
    }
}

fn host(e: &mut Exposition, node: &Labels, h: &HostSection) {
    e.set(&HOST_CPU, node, h.cpu_pct);
    e.set(&HOST_CPUS, node, f(h.cpus));
    if let Some(l) = h.load {
        for (w, v) in [("1m", l[0]), ("5m", l[1]), ("15m", l[2])] {
            e.set(&HOST_LOAD, &node.and("window", w), Some(v));
        }
    }
    e.set(&HOST_MEM_TOTAL, node, u(h.memory_total_bytes));
    e.set(&HOST_MEM_AVAILABLE, node, u(h.memory_available_bytes));
    e.set(&HOST_SWAP_TOTAL, node, u(h.swap_total_bytes));
    e.set(&HOST_SWAP_USED, node, u(h.swap_used_bytes));
    e.set(&HOST_UPTIME, node, u(h.uptime_s));
    for d in &h.disks {
        let l = node
            .and("mount", &d.mount)
            .with("fstype", d.fstype.as_deref().unwrap_or(""));
        e.set(&DISK_SIZE, &l, Some(d.total_bytes as f64));
        e.set(&DISK_USED, &l, Some(d.used_bytes as f64));
        e.set(&DISK_AVAILABLE, &l, Some(d.available_bytes as f64));
        e.set(&DISK_INODES, &l, d.inodes_used_pct);
    }
}

fn network(e: &mut Exposition, node: &Labels, n: &NetworkSection) {
    for i in &n.interfaces {
        let l = node.and("interface", &i.name);
        e.flag(&IF_UP, &l, Some(i.oper_state == "up"));
        e.flag(&IF_CARRIER, &l, i.carrier);
        e.set(&IF_SPEED, &l, i.speed_mbps.map(|m| m as f64 * 1e6));
    }
    for p in &n.infiniband {
        let l = node
            .and("device", &p.device)
            .with("port", &p.port.to_string());
        e.flag(
            &IB_ACTIVE,
            &l,
            Some(p.state == "ACTIVE" && p.phys_state == "LinkUp"),
        );
        e.set(&IB_RATE, &l, p.rate_gbps.map(|r| r * 1e9));
    }
    for p in &n.peers {
        let l = node.and("target", &p.target);
        e.flag(&PEER_REACHABLE, &l, Some(p.reachable));
        e.set(&PEER_LATENCY, &l, p.latency_ms.map(|m| m / 1000.0));
    }
}

fn processes(e: &mut Exposition, node: &Labels, p: &ProcessSection) {
    e.set(&PROCS, node, f(p.total));
    e.set(&PROCS_ZOMBIE, node, f(p.zombies));
    e.set(&PROCS_D, node, f(p.d_state));
    e.set(&PROCS_TRAINING, node, Some(p.training.len() as f64));
}
