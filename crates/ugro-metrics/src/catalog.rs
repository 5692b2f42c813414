//! Every metric family ugro writes: name, type, labels, what it comes from, and its HELP text.
//! The renderers write only these, and contrib/README.md's table is checked against this list
//! (a test fails on drift), so the names dashboards and rules use are defined in one place.

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Can go up and down.
    Gauge,
    /// Only goes up (resets when the source restarts).
    Counter,
}

/// Where a family's values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The sample, as ugro-probe wrote it.
    Probe,
    /// The `score` object ugro-score added.
    Score,
    /// The `breaker` annotation or the latest `transition` record.
    Breaker,
    /// `alert` records from ugro-alert.
    Alert,
    /// The watcher's own view of each node's polls (ugro-watch's endpoint).
    Poll,
    /// The watcher itself (ugro-watch's endpoint).
    Watcher,
    /// dcgm-exporter's name for a probe reading (`--metric-names dcgm`).
    Dcgm,
}

impl Source {
    /// For the documentation table.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Probe => "probe",
            Source::Score => "score",
            Source::Breaker => "breaker",
            Source::Alert => "alert",
            Source::Poll => "watch (per node)",
            Source::Watcher => "watch (itself)",
            Source::Dcgm => "probe, DCGM name",
        }
    }
}

/// One metric family.
#[derive(Debug)]
pub struct Metric {
    /// Metric name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Label names, in the order they are written (some are left out where the value is
    /// unknown: `gpu` on a node-wide reason, for instance).
    pub labels: &'static [&'static str],
    /// Where the values come from.
    pub source: Source,
    /// HELP text.
    pub help: &'static str,
}

macro_rules! catalog {
    ($( $id:ident: $kind:ident $name:literal [$($l:literal),*] $src:ident $help:literal; )*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $help)]
            pub static $id: Metric = Metric {
                name: $name,
                kind: Kind::$kind,
                labels: &[$($l),*],
                source: Source::$src,
                help: $help,
            };
        )*
        /// Every family, in documentation order.
        pub static CATALOG: &[&Metric] = &[$(&$id),*];
    };
}

catalog! {
    PROBE_TIMESTAMP: Gauge "ugro_probe_timestamp_seconds" ["node"] Probe
        "When the sample was taken, seconds since the Unix epoch.";
    COLLECTOR_DURATION: Gauge "ugro_probe_collector_duration_seconds" ["node", "collector"] Probe
        "Wall time of each collector in the last sample.";
    COLLECTOR_SUCCESS: Gauge "ugro_probe_collector_success" ["node", "collector"] Probe
        "1 if the collector finished within its budget without error.";
    GPU_STATUS: Gauge "ugro_gpu_status" ["node", "status"] Probe
        "GPU section status: 1 for the current one of ok, absent, failed, missing.";
    GPU_FOUND: Gauge "ugro_gpu_found" ["node"] Probe "GPUs NVML reports.";
    GPU_PCI_DEVICES: Gauge "ugro_gpu_pci_devices" ["node"] Probe
        "NVIDIA display-class PCI functions in sysfs, counted without NVML.";
    GPU_EXPECTED: Gauge "ugro_gpu_expected" ["node"] Probe "GPUs the configuration expects.";
    GPU_UNATTRIBUTED_XIDS: Gauge "ugro_gpu_unattributed_xid_events" ["node"] Probe
        "XID events in the lookback window that match no visible GPU.";
    GPU_INFO: Gauge "ugro_gpu_info"
        ["node", "gpu", "uuid", "name", "pci_bus_id", "driver_version", "cuda_version"] Probe
        "Always 1: the GPU's model, bus id, driver and CUDA versions as labels (those the sample has).";
    GPU_UP: Gauge "ugro_gpu_up" ["node", "gpu", "uuid"] Probe
        "1 if the GPU answered, 0 if lost or in error.";
    GPU_UTIL: Gauge "ugro_gpu_utilization_percent" ["node", "gpu", "uuid"] Probe
        "GPU utilisation.";
    GPU_MEM_UTIL: Gauge "ugro_gpu_memory_utilization_percent" ["node", "gpu", "uuid"] Probe
        "Memory-controller utilisation.";
    GPU_MEM_USED: Gauge "ugro_gpu_memory_used_bytes" ["node", "gpu", "uuid"] Probe
        "Framebuffer memory in use.";
    GPU_MEM_TOTAL: Gauge "ugro_gpu_memory_total_bytes" ["node", "gpu", "uuid"] Probe
        "Framebuffer memory.";
    GPU_TEMP: Gauge "ugro_gpu_temperature_celsius" ["node", "gpu", "uuid"] Probe
        "Core temperature.";
    GPU_TEMP_SLOWDOWN: Gauge "ugro_gpu_temperature_slowdown_celsius" ["node", "gpu", "uuid"] Probe
        "Temperature at which the GPU slows down.";
    GPU_TEMP_SHUTDOWN: Gauge "ugro_gpu_temperature_shutdown_celsius" ["node", "gpu", "uuid"] Probe
        "Temperature at which the GPU shuts down.";
    GPU_POWER: Gauge "ugro_gpu_power_watts" ["node", "gpu", "uuid"] Probe "Board power draw.";
    GPU_POWER_LIMIT: Gauge "ugro_gpu_power_limit_watts" ["node", "gpu", "uuid"] Probe
        "Enforced power limit.";
    GPU_THROTTLE: Gauge "ugro_gpu_throttle_reason_active" ["node", "gpu", "uuid", "reason"] Probe
        "1 if the clock-event (throttle) reason is active.";
    GPU_ECC_ENABLED: Gauge "ugro_gpu_ecc_enabled" ["node", "gpu", "uuid"] Probe
        "1 if ECC is enabled.";
    GPU_ECC_VOLATILE: Counter "ugro_gpu_ecc_volatile_errors_total" ["node", "gpu", "uuid", "type"] Probe
        "ECC errors since the driver was loaded, by type (corrected, uncorrected).";
    GPU_ECC_AGGREGATE: Counter "ugro_gpu_ecc_aggregate_errors_total" ["node", "gpu", "uuid", "type"] Probe
        "ECC errors over the board's life, by type (corrected, uncorrected).";
    GPU_REMAPPED_ROWS: Gauge "ugro_gpu_remapped_rows" ["node", "gpu", "uuid", "kind"] Probe
        "Rows remapped, by the kind of error that caused it.";
    GPU_REMAP_PENDING: Gauge "ugro_gpu_remap_pending" ["node", "gpu", "uuid"] Probe
        "1 if a row remap is pending (GPU reset needed).";
    GPU_REMAP_FAILURE: Gauge "ugro_gpu_remap_failure" ["node", "gpu", "uuid"] Probe
        "1 if a row remap failed (hardware service needed).";
    GPU_RECOVERY_ACTION: Gauge "ugro_gpu_recovery_action" ["node", "gpu", "uuid"] Probe
        "NVML GPU recovery action: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.";
    GPU_PCIE_GEN: Gauge "ugro_gpu_pcie_link_gen" ["node", "gpu", "uuid"] Probe
        "Current PCIe generation.";
    GPU_PCIE_GEN_MAX: Gauge "ugro_gpu_pcie_link_gen_max" ["node", "gpu", "uuid"] Probe
        "Maximum PCIe generation.";
    GPU_PCIE_WIDTH: Gauge "ugro_gpu_pcie_link_width_lanes" ["node", "gpu", "uuid"] Probe
        "Current PCIe width.";
    GPU_PCIE_WIDTH_MAX: Gauge "ugro_gpu_pcie_link_width_max_lanes" ["node", "gpu", "uuid"] Probe
        "Maximum PCIe width.";
    GPU_PCIE_REPLAYS: Counter "ugro_gpu_pcie_replays_total" ["node", "gpu", "uuid"] Probe
        "PCIe replay counter since driver load.";
    GPU_PERSISTENCE: Gauge "ugro_gpu_persistence_mode" ["node", "gpu", "uuid"] Probe
        "1 if persistence mode is on.";
    GPU_PROCESSES: Gauge "ugro_gpu_compute_processes" ["node", "gpu", "uuid"] Probe
        "Compute processes on the GPU.";
    GPU_XIDS: Gauge "ugro_gpu_xid_events" ["node", "gpu", "uuid"] Probe
        "XID events for this GPU in the lookback window.";
    GPU_XID_CODES: Gauge "ugro_gpu_xid_code_events" ["node", "gpu", "uuid", "xid"] Probe
        "Listed XID events for this GPU in the lookback window, by XID code.";
    HOST_CPU: Gauge "ugro_host_cpu_busy_percent" ["node"] Probe
        "Busy CPU share over the measurement window.";
    HOST_CPUS: Gauge "ugro_host_cpus" ["node"] Probe "Logical CPUs.";
    HOST_LOAD: Gauge "ugro_host_load_average" ["node", "window"] Probe "Load average.";
    HOST_MEM_TOTAL: Gauge "ugro_host_memory_total_bytes" ["node"] Probe "Physical memory.";
    HOST_MEM_AVAILABLE: Gauge "ugro_host_memory_available_bytes" ["node"] Probe "MemAvailable.";
    HOST_SWAP_TOTAL: Gauge "ugro_host_swap_total_bytes" ["node"] Probe "Swap configured.";
    HOST_SWAP_USED: Gauge "ugro_host_swap_used_bytes" ["node"] Probe "Swap in use.";
    HOST_UPTIME: Gauge "ugro_host_uptime_seconds" ["node"] Probe "Seconds since boot.";
    DISK_SIZE: Gauge "ugro_disk_size_bytes" ["node", "mount", "fstype"] Probe "Filesystem size.";
    DISK_USED: Gauge "ugro_disk_used_bytes" ["node", "mount", "fstype"] Probe
        "Filesystem space used.";
    DISK_AVAILABLE: Gauge "ugro_disk_available_bytes" ["node", "mount", "fstype"] Probe
        "Filesystem space available to unprivileged users.";
    DISK_INODES: Gauge "ugro_disk_inodes_used_percent" ["node", "mount", "fstype"] Probe
        "Inodes in use.";
    IF_UP: Gauge "ugro_network_interface_up" ["node", "interface"] Probe
        "1 if the interface operstate is up.";
    IF_CARRIER: Gauge "ugro_network_interface_carrier" ["node", "interface"] Probe
        "1 if carrier is detected.";
    IF_SPEED: Gauge "ugro_network_interface_speed_bits_per_second" ["node", "interface"] Probe
        "Link speed.";
    IB_ACTIVE: Gauge "ugro_infiniband_port_active" ["node", "device", "port"] Probe
        "1 if the port state is ACTIVE and the physical state LinkUp.";
    IB_RATE: Gauge "ugro_infiniband_port_rate_bits_per_second" ["node", "device", "port"] Probe
        "Port rate.";
    PEER_REACHABLE: Gauge "ugro_peer_reachable" ["node", "target"] Probe
        "1 if a TCP connection succeeded.";
    PEER_LATENCY: Gauge "ugro_peer_connect_latency_seconds" ["node", "target"] Probe
        "TCP connect time.";
    PROCS: Gauge "ugro_processes" ["node"] Probe "Processes in the process table.";
    PROCS_ZOMBIE: Gauge "ugro_processes_zombie" ["node"] Probe "Zombie processes.";
    PROCS_D: Gauge "ugro_processes_uninterruptible" ["node"] Probe "Processes in D state.";
    PROCS_TRAINING: Gauge "ugro_training_processes" ["node"] Probe
        "Training processes (NVML compute processes and command-line matches).";

    NODE_REACHABLE: Gauge "ugro_node_reachable" ["node"] Score
        "0 if the watcher could not reach the node for this record, else 1.";
    NODE_UNREACHABLE: Gauge "ugro_node_unreachable" ["node", "cause"] Score
        "1 while the node is unreachable, with the cause (ssh, timeout, probe); absent otherwise.";
    NODE_SCORE: Gauge "ugro_node_score" ["node"] Score
        "Weighted health score, 0-100; absent while the state is unknown.";
    NODE_COMPONENT_SCORE: Gauge "ugro_node_component_score" ["node", "component"] Score
        "Component score, 0-100 (gpu, system, network, process); absent for a missing section.";
    GPU_SCORE: Gauge "ugro_gpu_score" ["node", "gpu", "uuid"] Score "The GPU's own score, 0-100.";
    NODE_STATE: Gauge "ugro_node_state" ["node", "state"] Score
        "1 for the node's current state of healthy, degraded, critical, unknown; 0 for the others.";
    NODE_STATE_SEVERITY: Gauge "ugro_node_state_severity" ["node"] Score
        "The state as a number: 0 healthy, 1 degraded, 2 unknown, 3 critical (worst last).";
    NODE_ACTION: Gauge "ugro_node_action" ["node", "action"] Score
        "1 for the recommended action (the most drastic over the reasons), 0 for the others.";
    NODE_REASON: Gauge "ugro_node_reason"
        ["node", "code", "family", "component", "gpu", "fatal", "action"] Score
        "Points a reason takes from its component (summed over reasons with the same code, component and GPU).";

    BREAKER_STATE: Gauge "ugro_node_breaker_state" ["node", "state"] Breaker
        "1 for the node's circuit-breaker state (closed, open, half_open, disabled, forced_open, metrics_only), 0 for the others.";
    BREAKER_FAILURES: Gauge "ugro_node_breaker_consecutive_failures" ["node"] Breaker
        "Consecutive failures the breaker has counted.";
    BREAKER_NEXT_TRIAL: Gauge "ugro_node_breaker_next_trial_timestamp_seconds" ["node"] Breaker
        "When an open breaker allows its next trial, seconds since the Unix epoch.";

    ALERT_FIRING: Gauge "ugro_alert_firing" ["alertname", "severity", "node", "gpu"] Alert
        "1 for each alert ugro-alert has firing (node and gpu where the alert has them).";
    ALERT_SINCE: Gauge "ugro_alert_firing_since_timestamp_seconds" ["alertname", "severity", "node", "gpu"] Alert
        "When the firing alert's condition began (startsAt), seconds since the Unix epoch.";

    POLL_LAST: Gauge "ugro_node_last_poll_timestamp_seconds" ["node"] Poll
        "When the watcher last finished polling the node, seconds since the Unix epoch.";
    POLL_DURATION: Gauge "ugro_node_poll_duration_seconds" ["node"] Poll
        "How long the node's last poll took.";
    POLL_FAILURES: Counter "ugro_node_poll_failures_total" ["node"] Poll
        "Polls of the node that failed (unreachable, timed out, bad answer) since the watcher started.";

    WATCH_NODES: Gauge "ugro_watch_nodes" [] Watcher "Nodes the watcher is configured to poll.";
    WATCH_CYCLE: Gauge "ugro_watch_cycle_duration_seconds" [] Watcher
        "How long the last full polling cycle over all nodes took.";
    WATCH_POLLS: Counter "ugro_watch_polls_total" [] Watcher
        "Polls finished since the watcher started (rate() gives probes per second).";
    WATCH_FAILURES: Counter "ugro_watch_poll_failures_total" ["cause"] Watcher
        "Polls that failed, by cause (ssh, timeout, probe).";
    WATCH_LATENESS: Gauge "ugro_watch_poll_lateness_seconds" [] Watcher
        "The worst lateness, against its schedule, of a poll started since the previous render of /metrics.";
    WATCH_IN_FLIGHT: Gauge "ugro_watch_polls_in_flight" [] Watcher "Polls in flight.";
    WATCH_CONCURRENCY: Gauge "ugro_watch_concurrency_limit" [] Watcher
        "The current limit on polls in flight (halves after a cycle with many timeouts, grows back).";
    WATCH_SUPERSEDED: Counter "ugro_watch_pipeline_superseded_total" [] Watcher
        "Samples the pipeline never saw: replaced in its backlog by a newer sample of the same node while it was behind.";
    WATCH_STATE_UNWRITABLE: Gauge "ugro_watch_state_unwritable" [] Watcher
        "1 while the state directory or the breaker's or alert's state file cannot be written.";
    WATCH_QUEUE_DEPTH: Gauge "ugro_watch_queue_depth" ["queue"] Watcher
        "Entries waiting in each of the watcher's queues (pipeline, state, delivery, metrics).";
    WATCH_QUEUE_CAPACITY: Gauge "ugro_watch_queue_capacity" ["queue"] Watcher
        "Capacity of each of the watcher's queues bounded by a count (absent for those holding one entry per node or file).";
    WATCH_DELIVERY_QUEUE: Gauge "ugro_watch_delivery_queue_depth" ["receiver", "url"] Watcher
        "Notifications waiting in memory for each alert receiver (url: the Alertmanager instance).";
    WATCH_DELIVERY_SPOOLED: Gauge "ugro_watch_delivery_spooled" ["receiver", "url"] Watcher
        "Notifications in the spool waiting for delivery or a retry.";
    WATCH_DELIVERY: Counter "ugro_watch_delivery_notifications_total" ["receiver", "url", "outcome"] Watcher
        "Notifications by outcome: delivered, failed (refused for good), dropped (queue or spool full), superseded (by a newer one of the group), retried (attempts that failed and will be retried).";
    WATCH_RENDER: Gauge "ugro_watch_metrics_render_duration_seconds" [] Watcher
        "How long rendering the previous /metrics body took, on the endpoint's own thread.";
    WATCH_RSS: Gauge "process_resident_memory_bytes" [] Watcher
        "Resident memory of the watcher process.";

    DCGM_GPU_UTIL: Gauge "DCGM_FI_DEV_GPU_UTIL" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "GPU utilization (in %).";
    DCGM_MEM_COPY_UTIL: Gauge "DCGM_FI_DEV_MEM_COPY_UTIL" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Memory utilization (in %).";
    DCGM_FB_USED: Gauge "DCGM_FI_DEV_FB_USED" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Framebuffer memory used (in MiB).";
    DCGM_FB_FREE: Gauge "DCGM_FI_DEV_FB_FREE" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Framebuffer memory free (in MiB): total minus used.";
    DCGM_GPU_TEMP: Gauge "DCGM_FI_DEV_GPU_TEMP" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "GPU temperature (in C).";
    DCGM_POWER: Gauge "DCGM_FI_DEV_POWER_USAGE" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Power draw (in W).";
    DCGM_XID: Gauge "DCGM_FI_DEV_XID_ERRORS" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION", "err_code"] Dcgm
        "Value of the last XID error in the probe's lookback window (0: none).";
    DCGM_ECC_SBE_VOL: Counter "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Total number of single-bit (corrected) volatile ECC errors.";
    DCGM_ECC_DBE_VOL: Counter "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Total number of double-bit (uncorrected) volatile ECC errors.";
    DCGM_ECC_SBE_AGG: Counter "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Total number of single-bit (corrected) persistent ECC errors.";
    DCGM_ECC_DBE_AGG: Counter "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Total number of double-bit (uncorrected) persistent ECC errors.";
    DCGM_ROWS_UNC: Counter "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Number of remapped rows for uncorrectable errors.";
    DCGM_ROWS_COR: Counter "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Number of remapped rows for correctable errors.";
    DCGM_REMAP_FAILURE: Gauge "DCGM_FI_DEV_ROW_REMAP_FAILURE" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Whether remapping of rows has failed.";
    DCGM_REMAP_PENDING: Gauge "DCGM_FI_DEV_ROW_REMAP_PENDING" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Whether remapping of rows is pending.";
    DCGM_PCIE_REPLAY: Counter "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Total number of PCIe retries.";
    DCGM_CLOCK_EVENTS: Gauge "DCGM_FI_DEV_CLOCKS_EVENT_REASONS" ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"] Dcgm
        "Current clock event reasons (bitmask of DCGM_CLOCKS_EVENT_REASON_*, NVML's bits).";
}

/// The documentation table (contrib/README.md): one row per family.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| name | type | labels | from | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for m in CATALOG {
        let kind = match m.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
        let labels = if labels.is_empty() {
            "none".to_owned()
        } else {
            labels.join(" ")
        };
        out.push_str(&format!(
            "| `{}` | {kind} | {} | {} | {} |\n",
            m.name,
            labels,
            m.source.as_str(),
            m.help.replace('|', "/")
        ));
    }
    out
}

/// The family with this name.
pub fn by_name(name: &str) -> Option<&'static Metric> {
    CATALOG.iter().copied().find(|m| m.name == name)
}
