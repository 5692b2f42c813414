//! Prometheus text exposition (node_exporter textfile collector format).
//!
//! Names carry the `ugro_` prefix and their unit (`_bytes`, `_celsius`, `_watts`, `_seconds`,
//! `_percent`); counters end in `_total`. A value the sample does not have is not written:
//! no series is better than a fake 0. Every family gets HELP and TYPE once, with all its
//! series together, as `promtool check metrics` requires.

use std::fmt::Write;

use ugro_types::{DeviceState, GpuStatus, Sample};

use crate::gpu::THROTTLE_BITS;
use crate::xid::{UNATTRIBUTED_TRUNCATED, XIDS_TRUNCATED, truncated_count};

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    series: Vec<(String, f64)>,
}

#[derive(Default)]
struct Expo {
    families: Vec<Family>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Expo {
    fn add(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        l: String,
        v: f64,
    ) {
        if let Some(f) = self.families.iter_mut().find(|f| f.name == name) {
            f.series.push((l, v));
        } else {
            self.families.push(Family {
                name,
                help,
                kind,
                series: vec![(l, v)],
            });
        }
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, l: String, v: Option<f64>) {
        if let Some(v) = v {
            self.add(name, "gauge", help, l, v);
        }
    }

    fn counter(&mut self, name: &'static str, help: &'static str, l: String, v: Option<f64>) {
        if let Some(v) = v {
            self.add(name, "counter", help, l, v);
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for (l, v) in &f.series {
                let _ = writeln!(out, "{}{} {}", f.name, l, fmt_value(*v));
            }
        }
        out
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn b(x: bool) -> f64 {
    if x { 1.0 } else { 0.0 }
}

fn f<T: Into<f64>>(x: Option<T>) -> Option<f64> {
    x.map(Into::into)
}

fn u(x: Option<u64>) -> Option<f64> {
    x.map(|v| v as f64)
}

/// Renders one sample.
pub fn render(s: &Sample) -> String {
    let mut e = Expo::default();
    let node = s.node.as_str();
    let nl = || labels(&[("node", node)]);

    e.gauge(
        "ugro_probe_timestamp_seconds",
        "When the sample was taken, seconds since the Unix epoch.",
        nl(),
        Some(s.ts.millis() as f64 / 1000.0),
    );
    for c in &s.collectors {
        let l = labels(&[("node", node), ("collector", &c.name)]);
        e.gauge(
            "ugro_probe_collector_duration_seconds",
            "Wall time of each collector in the last sample.",
            l.clone(),
            // Microsecond resolution: the division would otherwise print binary noise (0.0018160000000000001).
            Some((c.duration_ms * 1000.0).round() / 1e6),
        );
        e.gauge(
            "ugro_probe_collector_success",
            "1 if the collector finished within its budget without error.",
            l,
            Some(b(c.ok)),
        );
    }

    if let Some(g) = &s.gpu {
        for st in [
            GpuStatus::Ok,
            GpuStatus::Absent,
            GpuStatus::Failed,
            GpuStatus::Missing,
        ] {
            let name = match st {
                GpuStatus::Ok => "ok",
                GpuStatus::Absent => "absent",
                GpuStatus::Failed => "failed",
                GpuStatus::Missing => "missing",
            };
            e.gauge(
                "ugro_gpu_status",
                "GPU section status: 1 for the current one of ok, absent, failed, missing.",
                labels(&[("node", node), ("status", name)]),
                Some(b(g.status == st)),
            );
        }
        e.gauge("ugro_gpu_found", "GPUs NVML reports.", nl(), f(g.found));
        e.gauge(
            "ugro_gpu_pci_devices",
            "NVIDIA display-class PCI functions in sysfs, counted without NVML.",
            nl(),
            f(g.pci_devices),
        );
        e.gauge(
            "ugro_gpu_expected",
            "GPUs the configuration expects.",
            nl(),
            f(g.expected),
        );
        // Not reading the kernel log (unreadable, timed out, --no-xid) names `xids` in
        // absent: then there is no count at all, never a reassuring 0.
        let xids_read = !g.absent.contains_key("xids");
        e.gauge(
            "ugro_gpu_unattributed_xid_events",
            "XID events in the lookback window that match no visible GPU.",
            nl(),
            xids_read.then(|| {
                (g.unattributed_xids.len() + truncated_count(g.absent.get(UNATTRIBUTED_TRUNCATED)))
                    as f64
            }),
        );
        for d in &g.devices {
            let idx = d.index.to_string();
            let uuid = d.uuid.clone().unwrap_or_default();
            let gl = || labels(&[("node", node), ("gpu", &idx), ("uuid", &uuid)]);
            e.gauge(
                "ugro_gpu_up",
                "1 if the GPU answered, 0 if lost or in error.",
                gl(),
                Some(b(d.state == DeviceState::Ok)),
            );
            e.gauge(
                "ugro_gpu_utilization_percent",
                "GPU utilisation.",
                gl(),
                f(d.utilization_pct),
            );
            e.gauge(
                "ugro_gpu_memory_utilization_percent",
                "Memory-controller utilisation.",
                gl(),
                f(d.memory_utilization_pct),
            );
            e.gauge(
                "ugro_gpu_memory_used_bytes",
                "Framebuffer memory in use.",
                gl(),
                u(d.memory_used_bytes),
            );
            e.gauge(
                "ugro_gpu_memory_total_bytes",
                "Framebuffer memory.",
                gl(),
                u(d.memory_total_bytes),
            );
            e.gauge(
                "ugro_gpu_temperature_celsius",
                "Core temperature.",
                gl(),
                f(d.temperature_c),
            );
            e.gauge(
                "ugro_gpu_temperature_slowdown_celsius",
                "Temperature at which the GPU slows down.",
                gl(),
                f(d.temperature_slowdown_c),
            );
            e.gauge(
                "ugro_gpu_temperature_shutdown_celsius",
                "Temperature at which the GPU shuts down.",
                gl(),
                f(d.temperature_shutdown_c),
            );
            e.gauge("ugro_gpu_power_watts", "Board power draw.", gl(), d.power_w);
            e.gauge(
                "ugro_gpu_power_limit_watts",
                "Enforced power limit.",
                gl(),
                d.power_limit_w,
            );
            if let Some(active) = &d.throttle_reasons {
                for (_, reason) in THROTTLE_BITS {
                    e.gauge(
                        "ugro_gpu_throttle_reason_active",
                        "1 if the clock-event (throttle) reason is active.",
                        labels(&[
                            ("node", node),
                            ("gpu", &idx),
                            ("uuid", &uuid),
                            ("reason", reason),
                        ]),
                        Some(b(active.iter().any(|a| a == reason))),
                    );
                }
            }
            if let Some(ecc) = &d.ecc {
                e.gauge(
                    "ugro_gpu_ecc_enabled",
                    "1 if ECC is enabled.",
                    gl(),
                    ecc.enabled.map(b),
                );
                for (kind, counter, v) in [
                    ("corrected", "volatile", ecc.corrected_volatile),
                    ("uncorrected", "volatile", ecc.uncorrected_volatile),
                    ("corrected", "aggregate", ecc.corrected_aggregate),
                    ("uncorrected", "aggregate", ecc.uncorrected_aggregate),
                ] {
                    e.counter(
                        "ugro_gpu_ecc_errors_total",
                        "ECC errors; volatile since driver load, aggregate over the board's life.",
                        labels(&[
                            ("node", node),
                            ("gpu", &idx),
                            ("uuid", &uuid),
                            ("type", kind),
                            ("counter", counter),
                        ]),
                        u(v),
                    );
                }
            }
            if let Some(r) = &d.remapped_rows {
                for (kind, v) in [
                    ("correctable", r.correctable),
                    ("uncorrectable", r.uncorrectable),
                ] {
                    e.gauge(
                        "ugro_gpu_remapped_rows",
                        "Rows remapped, by the kind of error that caused it.",
                        labels(&[
                            ("node", node),
                            ("gpu", &idx),
                            ("uuid", &uuid),
                            ("kind", kind),
                        ]),
                        u(v),
                    );
                }
                e.gauge(
                    "ugro_gpu_remap_pending",
                    "1 if a row remap is pending (GPU reset needed).",
                    gl(),
                    r.pending.map(b),
                );
                e.gauge(
                    "ugro_gpu_remap_failure",
                    "1 if a row remap failed (hardware service needed).",
                    gl(),
                    r.failure.map(b),
                );
            }
            e.gauge(
                "ugro_gpu_recovery_action",
                "NVML GPU recovery action: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, \
                 4 drain and reset.",
                gl(),
                d.recovery_action.map(|a| f64::from(a.nvml_value())),
            );
            if let Some(p) = &d.pcie {
                e.gauge(
                    "ugro_gpu_pcie_link_gen",
                    "Current PCIe generation.",
                    gl(),
                    f(p.generation),
                );
                e.gauge(
                    "ugro_gpu_pcie_link_gen_max",
                    "Maximum PCIe generation.",
                    gl(),
                    f(p.max_gen),
                );
                e.gauge(
                    "ugro_gpu_pcie_link_width_lanes",
                    "Current PCIe width.",
                    gl(),
                    f(p.width),
                );
                e.gauge(
                    "ugro_gpu_pcie_link_width_max_lanes",
                    "Maximum PCIe width.",
                    gl(),
                    f(p.max_width),
                );
                e.counter(
                    "ugro_gpu_pcie_replays_total",
                    "PCIe replay counter since driver load.",
                    gl(),
                    u(p.replay_counter),
                );
            }
            e.gauge(
                "ugro_gpu_persistence_mode",
                "1 if persistence mode is on.",
                gl(),
                d.persistence_mode.map(b),
            );
            e.gauge(
                "ugro_gpu_compute_processes",
                "Compute processes on the GPU.",
                gl(),
                d.processes.as_ref().map(|p| p.len() as f64),
            );
            e.gauge(
                "ugro_gpu_xid_events",
                "XID events for this GPU in the lookback window.",
                gl(),
                (xids_read && !d.absent.contains_key("xids"))
                    .then(|| (d.xids.len() + truncated_count(d.absent.get(XIDS_TRUNCATED))) as f64),
            );
        }
    }

    if let Some(h) = &s.host {
        e.gauge(
            "ugro_host_cpu_busy_percent",
            "Busy CPU share over the measurement window.",
            nl(),
            h.cpu_pct,
        );
        e.gauge("ugro_host_cpus", "Logical CPUs.", nl(), f(h.cpus));
        if let Some(l) = h.load {
            for (w, v) in [("1m", l[0]), ("5m", l[1]), ("15m", l[2])] {
                e.gauge(
                    "ugro_host_load_average",
                    "Load average.",
                    labels(&[("node", node), ("window", w)]),
                    Some(v),
                );
            }
        }
        e.gauge(
            "ugro_host_memory_total_bytes",
            "Physical memory.",
            nl(),
            u(h.memory_total_bytes),
        );
        e.gauge(
            "ugro_host_memory_available_bytes",
            "MemAvailable.",
            nl(),
            u(h.memory_available_bytes),
        );
        e.gauge(
            "ugro_host_swap_total_bytes",
            "Swap configured.",
            nl(),
            u(h.swap_total_bytes),
        );
        e.gauge(
            "ugro_host_swap_used_bytes",
            "Swap in use.",
            nl(),
            u(h.swap_used_bytes),
        );
        e.gauge(
            "ugro_host_uptime_seconds",
            "Seconds since boot.",
            nl(),
            u(h.uptime_s),
        );
        for d in &h.disks {
            let l = || {
                labels(&[
                    ("node", node),
                    ("mount", &d.mount),
                    ("fstype", d.fstype.as_deref().unwrap_or("")),
                ])
            };
            e.gauge(
                "ugro_disk_size_bytes",
                "Filesystem size.",
                l(),
                Some(d.total_bytes as f64),
            );
            e.gauge(
                "ugro_disk_used_bytes",
                "Filesystem space used.",
                l(),
                Some(d.used_bytes as f64),
            );
            e.gauge(
                "ugro_disk_available_bytes",
                "Filesystem space available to unprivileged users.",
                l(),
                Some(d.available_bytes as f64),
            );
            e.gauge(
                "ugro_disk_inodes_used_percent",
                "Inodes in use.",
                l(),
                d.inodes_used_pct,
            );
        }
    }

    if let Some(n) = &s.network {
        for i in &n.interfaces {
            let l = || labels(&[("node", node), ("interface", &i.name)]);
            e.gauge(
                "ugro_network_interface_up",
                "1 if the interface operstate is up.",
                l(),
                Some(b(i.oper_state == "up")),
            );
            e.gauge(
                "ugro_network_interface_carrier",
                "1 if carrier is detected.",
                l(),
                i.carrier.map(b),
            );
            e.gauge(
                "ugro_network_interface_speed_bits_per_second",
                "Link speed.",
                l(),
                i.speed_mbps.map(|m| m as f64 * 1e6),
            );
        }
        for p in &n.infiniband {
            let port = p.port.to_string();
            let l = || labels(&[("node", node), ("device", &p.device), ("port", &port)]);
            e.gauge(
                "ugro_infiniband_port_active",
                "1 if the port state is ACTIVE and the physical state LinkUp.",
                l(),
                Some(b(p.state == "ACTIVE" && p.phys_state == "LinkUp")),
            );
            e.gauge(
                "ugro_infiniband_port_rate_bits_per_second",
                "Port rate.",
                l(),
                p.rate_gbps.map(|r| r * 1e9),
            );
        }
        for p in &n.peers {
            let l = || labels(&[("node", node), ("target", &p.target)]);
            e.gauge(
                "ugro_peer_reachable",
                "1 if a TCP connection succeeded.",
                l(),
                Some(b(p.reachable)),
            );
            e.gauge(
                "ugro_peer_connect_latency_seconds",
                "TCP connect time.",
                l(),
                p.latency_ms.map(|m| m / 1000.0),
            );
        }
    }

    if let Some(p) = &s.processes {
        e.gauge(
            "ugro_processes",
            "Processes in the process table.",
            nl(),
            f(p.total),
        );
        e.gauge(
            "ugro_processes_zombie",
            "Zombie processes.",
            nl(),
            f(p.zombies),
        );
        e.gauge(
            "ugro_processes_uninterruptible",
            "Processes in D state.",
            nl(),
            f(p.d_state),
        );
        e.gauge(
            "ugro_training_processes",
            "Training processes (NVML compute processes and command-line matches).",
            nl(),
            Some(p.training.len() as f64),
        );
    }
    e.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ugro_types::{HostSection, Timestamp};

    #[test]
    fn families_have_help_and_type_once_and_values_are_not_invented() {
        let mut s = Sample::new("n\"1", Timestamp(1_000));
        s.host = Some(HostSection {
            cpu_pct: None,
            memory_total_bytes: Some(10),
            ..HostSection::default()
        });
        let text = render(&s);
        assert!(text.contains("# TYPE ugro_host_memory_total_bytes gauge"));
        assert!(text.contains("ugro_host_memory_total_bytes{node=\"n\\\"1\"} 10"));
        assert!(!text.contains("ugro_host_cpu_busy_percent"));
        assert_eq!(
            text.matches("# HELP ugro_probe_timestamp_seconds").count(),
            1
        );
    }

    fn gpu_sample(absent_xids: bool) -> Sample {
        let mut s = Sample::new("n1", Timestamp(1_000));
        let mut dev = ugro_types::Gpu {
            index: 0,
            ..ugro_types::Gpu::default()
        };
        let mut sec = ugro_types::GpuSection {
            status: GpuStatus::Ok,
            reason: None,
            expected: None,
            found: Some(1),
            pci_devices: None,
            driver_version: None,
            cuda_version: None,
            source: None,
            devices: Vec::new(),
            unattributed_xids: Vec::new(),
            absent: Default::default(),
        };
        if absent_xids {
            dev.absent
                .insert("xids".into(), "kernel log unreadable".into());
            sec.absent
                .insert("xids".into(), "kernel log unreadable".into());
        }
        sec.devices.push(dev);
        s.gpu = Some(sec);
        s
    }

    #[test]
    fn xid_counts_are_left_out_when_the_log_was_not_read() {
        let read = render(&gpu_sample(false));
        assert!(read.contains("ugro_gpu_xid_events{node=\"n1\",gpu=\"0\",uuid=\"\"} 0"));
        assert!(read.contains("ugro_gpu_unattributed_xid_events{node=\"n1\"} 0"));
        let unread = render(&gpu_sample(true));
        assert!(!unread.contains("ugro_gpu_xid_events"), "{unread}");
        assert!(
            !unread.contains("ugro_gpu_unattributed_xid_events"),
            "{unread}"
        );
        assert!(unread.contains("ugro_gpu_up{"));
    }

    #[test]
    fn xid_counts_include_events_left_out_of_a_capped_list() {
        let mut s = gpu_sample(false);
        let xid = ugro_types::Xid {
            code: 13,
            pci_bus_id: None,
            ts: None,
            message: None,
            boot_id: None,
            seq: None,
        };
        if let Some(g) = s.gpu.as_mut() {
            g.devices[0].xids = vec![xid.clone(); 70];
            g.unattributed_xids = vec![xid; 3];
            crate::xid::cap_xids(g, 64, &[]);
        }
        let text = render(&s);
        assert!(
            text.contains("ugro_gpu_xid_events{node=\"n1\",gpu=\"0\",uuid=\"\"} 70"),
            "{text}"
        );
        assert!(text.contains("ugro_gpu_unattributed_xid_events{node=\"n1\"} 3"));
    }
}
