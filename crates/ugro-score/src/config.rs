//! The score configuration: weights, state thresholds and the per-rule thresholds, from YAML
//! (`-c FILE`), then flags on top.

mod ranges;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use ugro_support::config::{ConfigError, load_yaml};

use crate::policy::XidPolicy;

/// Component weights. They must be non-negative and sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// GPU component.
    pub gpu: f64,
    /// System component.
    pub system: f64,
    /// Network component.
    pub network: f64,
    /// Process component.
    pub process: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            gpu: 0.4,
            system: 0.3,
            network: 0.2,
            process: 0.1,
        }
    }
}

impl Weights {
    /// `(name, value)` pairs in a fixed order.
    pub fn pairs(&self) -> [(&'static str, f64); 4] {
        [
            ("gpu", self.gpu),
            ("system", self.system),
            ("network", self.network),
            ("process", self.process),
        ]
    }

    /// Sets one weight by name.
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), String> {
        match name {
            "gpu" => self.gpu = value,
            "system" => self.system = value,
            "network" => self.network = value,
            "process" => self.process = value,
            _ => {
                return Err(format!(
                    "unknown weight {name:?} (expected gpu, system, network, process)"
                ));
            }
        }
        Ok(())
    }

    /// Checks the weights: `Err((field, message))` naming the bad value.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, w) in self.pairs() {
            if !w.is_finite() || w < 0.0 {
                return Err((
                    format!("weights.{name}"),
                    format!("weight {name}={w} is negative or not a number; weights must be >= 0"),
                ));
            }
        }
        let sum: f64 = self.pairs().iter().map(|(_, w)| w).sum();
        if (sum - 1.0).abs() > 1e-6 {
            let list = self
                .pairs()
                .iter()
                .map(|(n, w)| format!("{n}={w}"))
                .collect::<Vec<_>>()
                .join(" ");
            return Err((
                "weights".into(),
                format!("weights must sum to 1, got {sum} ({list})"),
            ));
        }
        Ok(())
    }
}

/// State thresholds on the total.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateThresholds {
    /// Below this: critical.
    pub critical: f64,
    /// Below this: degraded.
    pub degraded: f64,
}

impl Default for StateThresholds {
    fn default() -> Self {
        StateThresholds {
            critical: 40.0,
            degraded: 70.0,
        }
    }
}

/// Which sections the score cannot do without: a required section that is missing makes the
/// state `unknown`; an optional one leaves its component out and the total is taken over the
/// remaining weights.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Require {
    /// `gpu` section with NVML data (status not `absent`, at least one device).
    pub gpu: bool,
    /// `host` section.
    pub host: bool,
    /// `network` section.
    pub network: bool,
    /// `processes` section.
    pub process: bool,
}

impl Default for Require {
    fn default() -> Self {
        Require {
            gpu: true,
            host: true,
            network: false,
            process: false,
        }
    }
}

/// GPU rule thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuRules {
    /// Slowdown temperature used when the sample does not carry `temperature_slowdown_c`.
    pub temperature_slowdown_default_c: f64,
    /// Deductions start when the GPU is closer than this to its slowdown temperature.
    pub temperature_margin_c: f64,
    /// Deduction at (and beyond) the slowdown temperature; it grows linearly to it.
    pub temperature_deduction: f64,
    /// Power draw above `power_limit_w * (1 + power_over_limit_pct / 100)` is a fault.
    pub power_over_limit_pct: f64,
    /// Deduction for power over the limit.
    pub power_deduction: f64,
    /// Utilisation at or above which a GPU counts as busy (SW power cap is normal, PCIe must
    /// run at full gen and width).
    pub busy_utilization_pct: u32,
    /// Deduction for `hw_slowdown`, `hw_thermal_slowdown`, `hw_power_brake_slowdown` each.
    pub hw_throttle_deduction: f64,
    /// Deduction for `sw_thermal_slowdown`.
    pub sw_thermal_deduction: f64,
    /// Deduction for `sw_power_cap` on a GPU that is not busy (at high utilisation it is normal).
    pub sw_power_cap_idle_deduction: f64,
    /// Deduction for a row remap pending.
    pub remap_pending_deduction: f64,
    /// Deduction for uncorrected ECC errors counted over the board's life (volatile ones are fatal).
    pub ecc_aggregate_deduction: f64,
    /// Corrected ECC errors since the driver loaded at or above which `ecc_corrected_volatile`
    /// costs `ecc_corrected_warn_deduction`.
    pub ecc_corrected_warn: u64,
    /// Deduction at `ecc_corrected_warn`.
    pub ecc_corrected_warn_deduction: f64,
    /// Corrected ECC errors at or above which the deduction is `ecc_corrected_high_deduction`
    /// and the action hardware_inspection.
    pub ecc_corrected_high: u64,
    /// Deduction at `ecc_corrected_high`.
    pub ecc_corrected_high_deduction: f64,
    /// Deduction for a recovery action of drain_p2p (the others are hard fails).
    pub recovery_drain_p2p_deduction: f64,
    /// Deduction for a busy GPU's PCIe link below its max generation.
    pub pcie_gen_deduction: f64,
    /// Deduction for a busy GPU's PCIe link below its max width.
    pub pcie_width_deduction: f64,
    /// Deduction for growth of the PCIe replay counter since the node's previous sample, below
    /// DCGM's rate limit.
    pub replay_growth_deduction: f64,
    /// Deduction for a replay rate above DCGM's limit (`pcie_replay_rate`, see `trends`).
    pub replay_high_deduction: f64,
    /// Weight of the worst GPU in the GPU component: `worst_weight * min + (1 - worst_weight) * mean`.
    /// 1.0 makes the component the worst GPU's score.
    pub worst_weight: f64,
}

impl Default for GpuRules {
    fn default() -> Self {
        GpuRules {
            // H200 (nvidia-smi -q on the reference node): T.Limit 87 C.
            temperature_slowdown_default_c: 87.0,
            temperature_margin_c: 10.0,
            temperature_deduction: 40.0,
            power_over_limit_pct: 5.0,
            power_deduction: 10.0,
            busy_utilization_pct: 50,
            hw_throttle_deduction: 40.0,
            sw_thermal_deduction: 10.0,
            sw_power_cap_idle_deduction: 5.0,
            remap_pending_deduction: 70.0,
            ecc_aggregate_deduction: 5.0,
            ecc_corrected_warn: 1_000,
            ecc_corrected_warn_deduction: 10.0,
            ecc_corrected_high: 100_000,
            ecc_corrected_high_deduction: 35.0,
            recovery_drain_p2p_deduction: 40.0,
            pcie_gen_deduction: 35.0,
            pcie_width_deduction: 35.0,
            replay_growth_deduction: 10.0,
            replay_high_deduction: 25.0,
            worst_weight: 0.8,
        }
    }
}

/// How history is kept (see `crate::history`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryRules {
    /// A node or GPU not seen for this long (record time, against the newest sample) is
    /// forgotten when the state is saved.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// A node showing fewer GPUs than the most it showed within this window is critical
    /// (`gpu_missing_since_seen`).
    #[serde(with = "humantime_serde")]
    pub gpu_count_window: Duration,
    /// How often (wall clock) a long run hands the state to its writer thread.
    #[serde(with = "humantime_serde")]
    pub persist_interval: Duration,
}

impl Default for HistoryRules {
    fn default() -> Self {
        HistoryRules {
            max_age: Duration::from_secs(7 * 86_400),
            gpu_count_window: Duration::from_secs(7 * 86_400),
            persist_interval: Duration::from_secs(30),
        }
    }
}

/// Trend (predictive) rules: each is a reason with `predicted: true`. A rate is the growth
/// from the oldest reading kept within its window to this sample, and needs readings at least
/// the rule's `min_span` apart: a GPU's first sample reports none.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrendRules {
    /// Points each predicted reason takes (pcie_replay_rate uses gpu.replay_high_deduction).
    pub deduction: f64,
    /// Corrected ECC errors per hour above which `ecc_corrected_rate` applies.
    pub ecc_corrected_per_hour: f64,
    /// Window of the corrected-ECC rate.
    #[serde(with = "humantime_serde")]
    pub ecc_window: Duration,
    /// Shortest span the corrected-ECC rate is taken over.
    #[serde(with = "humantime_serde")]
    pub ecc_min_span: Duration,
    /// DCGM's PCIe replay limit per lane and minute by link generation (Gen1 first):
    /// 10^-12 replays per bit at the lane's rate, ceil(limit x lanes) per minute.
    pub replay_per_lane_per_minute: Vec<f64>,
    /// Window of the replay rate.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// Shortest span the replay rate is taken over (DCGM: one minute).
    #[serde(with = "humantime_serde")]
    pub replay_min_span: Duration,
    /// New correctable remapped rows within `remap_window` at or above which
    /// `row_remap_correctable_growth` applies.
    pub remap_growth: u64,
    /// Window of the remapped-row growth.
    #[serde(with = "humantime_serde")]
    pub remap_window: Duration,
    /// Window of the temperature slope.
    #[serde(with = "humantime_serde")]
    pub temperature_window: Duration,
    /// Shortest span the slope is fitted over (at least three readings).
    #[serde(with = "humantime_serde")]
    pub temperature_min_span: Duration,
    /// A slope that reaches the slowdown temperature within this is `gpu_temperature_rising`.
    #[serde(with = "humantime_serde")]
    pub temperature_horizon: Duration,
    /// ...and only when it rose at least this much over the span (noise is not a trend).
    pub temperature_min_rise_c: f64,
    /// Window of the XID rate.
    #[serde(with = "humantime_serde")]
    pub xid_window: Duration,
    /// XID events (not application ones) per hour at or above which `xid_rate` applies.
    pub xid_per_hour: f64,
}

impl Default for TrendRules {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        TrendRules {
            deduction: 10.0,
            ecc_corrected_per_hour: 100.0,
            ecc_window: min(60),
            ecc_min_span: min(5),
            // DcgmHealthWatch.cpp (GetExpectedPcieReplayRate): Gen1..Gen6.
            replay_per_lane_per_minute: vec![0.15, 0.3, 0.48, 0.96, 1.92, 3.84],
            replay_window: min(10),
            replay_min_span: min(1),
            remap_growth: 1,
            remap_window: min(24 * 60),
            temperature_window: min(15),
            temperature_min_span: min(5),
            temperature_horizon: min(10),
            temperature_min_rise_c: 3.0,
            xid_window: min(60),
            xid_per_hour: 6.0,
        }
    }
}

/// System rule thresholds (percentages are 0–100).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemRules {
    /// CPU busy share at or above which `cpu_saturated` applies.
    pub cpu_pct_warn: f64,
    /// Deduction for a saturated CPU.
    pub cpu_deduction: f64,
    /// Available memory below this share of the total: warning deduction.
    pub memory_available_warn_pct: f64,
    /// Available memory below this share: critical deduction.
    pub memory_available_crit_pct: f64,
    /// Swap in use above this share of the swap: deduction.
    pub swap_used_warn_pct: f64,
    /// Disk (and inode) use at or above this: warning deduction.
    pub disk_used_warn_pct: f64,
    /// Disk (and inode) use at or above this: critical deduction.
    pub disk_used_crit_pct: f64,
    /// 5-minute load per CPU above this: warning deduction.
    pub load_per_cpu_warn: f64,
    /// 5-minute load per CPU above this: critical deduction.
    pub load_per_cpu_crit: f64,
    /// Warning-level deduction.
    pub warn_deduction: f64,
    /// Critical-level deduction.
    pub crit_deduction: f64,
    /// Filesystem types never scored (read-only images are always full).
    pub ignore_fstypes: Vec<String>,
}

impl Default for SystemRules {
    fn default() -> Self {
        SystemRules {
            cpu_pct_warn: 98.0,
            cpu_deduction: 5.0,
            memory_available_warn_pct: 10.0,
            memory_available_crit_pct: 3.0,
            swap_used_warn_pct: 50.0,
            disk_used_warn_pct: 90.0,
            disk_used_crit_pct: 97.0,
            load_per_cpu_warn: 2.0,
            load_per_cpu_crit: 4.0,
            warn_deduction: 15.0,
            crit_deduction: 40.0,
            ignore_fstypes: ["squashfs", "iso9660", "udf", "erofs"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Network rule thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkRules {
    /// Interfaces never scored; a trailing `*` matches a prefix.
    pub ignore_interfaces: Vec<String>,
    /// Interfaces that must be present and up (scored even when administratively down).
    pub required_interfaces: Vec<String>,
    /// Deduction per interface without link.
    pub interface_deduction: f64,
    /// Deduction per InfiniBand port not ACTIVE / LinkUp.
    pub ib_port_deduction: f64,
    /// InfiniBand rate below this, Gbit/s, costs `ib_rate_deduction` (unset: not checked).
    pub ib_min_rate_gbps: Option<f64>,
    /// Deduction for a slow InfiniBand port.
    pub ib_rate_deduction: f64,
    /// Deduction per unreachable peer.
    pub peer_unreachable_deduction: f64,
    /// Peer TCP connect time above this, ms, costs `peer_latency_deduction`.
    pub peer_latency_warn_ms: f64,
    /// Deduction per slow peer.
    pub peer_latency_deduction: f64,
}

impl Default for NetworkRules {
    fn default() -> Self {
        NetworkRules {
            ignore_interfaces: [
                "lo", "docker*", "veth*", "virbr*", "br-*", "ifb*", "tun*", "tap*", "cali*",
                "flannel*", "cni*", "kube-*",
            ]
            .map(String::from)
            .to_vec(),
            required_interfaces: Vec::new(),
            interface_deduction: 25.0,
            ib_port_deduction: 30.0,
            ib_min_rate_gbps: None,
            ib_rate_deduction: 15.0,
            peer_unreachable_deduction: 30.0,
            peer_latency_warn_ms: 10.0,
            peer_latency_deduction: 5.0,
        }
    }
}

/// Process rule thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessRules {
    /// Zombies at or above this cost `zombie_deduction`.
    pub zombies_warn: u32,
    /// Deduction for many zombies.
    pub zombie_deduction: f64,
    /// D-state processes at or above this cost `d_state_deduction`.
    pub d_state_warn: u32,
    /// Deduction for many D-state processes.
    pub d_state_deduction: f64,
    /// Deduction per training process in D state (stuck I/O).
    pub training_d_deduction: f64,
    /// Deduction per training process that is a zombie (dead, not reaped).
    pub training_zombie_deduction: f64,
}

impl Default for ProcessRules {
    fn default() -> Self {
        ProcessRules {
            zombies_warn: 20,
            zombie_deduction: 5.0,
            d_state_warn: 5,
            d_state_deduction: 15.0,
            training_d_deduction: 10.0,
            training_zombie_deduction: 30.0,
        }
    }
}

/// The file format of `-c FILE`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    weights: Weights,
    thresholds: StateThresholds,
    require: Require,
    gpu: GpuRules,
    system: SystemRules,
    network: NetworkRules,
    process: ProcessRules,
    history: HistoryRules,
    trends: TrendRules,
    xid_policy: Option<PathBuf>,
    max_tracked_nodes: Option<usize>,
}

/// Everything the scorer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// Component weights.
    pub weights: Weights,
    /// State thresholds.
    pub thresholds: StateThresholds,
    /// Required sections.
    pub require: Require,
    /// GPU rules.
    pub gpu: GpuRules,
    /// System rules.
    pub system: SystemRules,
    /// Network rules.
    pub network: NetworkRules,
    /// Process rules.
    pub process: ProcessRules,
    /// How history is kept.
    pub history: HistoryRules,
    /// Trend (predictive) rules.
    pub trends: TrendRules,
    /// The merged XID policy.
    pub policy: XidPolicy,
    /// Nodes whose history (replay counters, XID events) the scorer keeps at most.
    pub max_tracked_nodes: usize,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            weights: Weights::default(),
            thresholds: StateThresholds::default(),
            require: Require::default(),
            gpu: GpuRules::default(),
            system: SystemRules::default(),
            network: NetworkRules::default(),
            process: ProcessRules::default(),
            history: HistoryRules::default(),
            trends: TrendRules::default(),
            policy: shipped_policy(),
            max_tracked_nodes: 100_000,
        }
    }
}

fn shipped_policy() -> XidPolicy {
    // The shipped file is checked by a unit test; an empty policy (every XID "unknown") is the
    // only fallback that cannot itself fail.
    XidPolicy::shipped().unwrap_or_else(|_| XidPolicy::empty())
}

impl ScoreConfig {
    /// Loads `path` (YAML) over the defaults; `None` gives the defaults. A relative
    /// `xid_policy:` is resolved against the config file's directory.
    pub fn load(path: Option<&Path>) -> Result<ScoreConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(ScoreConfig::default());
        };
        let (file, text): (ConfigFile, String) = load_yaml(path)?;
        let bad = |field: &str, msg: String| ConfigError::invalid(path, &text, field, msg);
        if let Err((field, msg)) = file.weights.validate() {
            return Err(bad(&field, msg));
        }
        check_thresholds(&file.thresholds).map_err(|(f, m)| bad(&f, m))?;
        ranges::check(&file.gpu, &file.system, &file.network, &file.process)
            .map_err(|(f, m)| bad(&f, m))?;
        let policy = match &file.xid_policy {
            Some(p) => {
                let p = if p.is_relative() {
                    path.parent().unwrap_or(Path::new(".")).join(p)
                } else {
                    p.clone()
                };
                XidPolicy::load_site(&p)?
            }
            None => XidPolicy::shipped()?,
        };
        Ok(ScoreConfig {
            weights: file.weights,
            thresholds: file.thresholds,
            require: file.require,
            gpu: file.gpu,
            system: file.system,
            network: file.network,
            process: file.process,
            history: file.history,
            trends: file.trends,
            policy,
            max_tracked_nodes: file.max_tracked_nodes.unwrap_or(100_000).max(1),
        })
    }
}

/// Checks `critical <= degraded`, both within 0–100.
pub fn check_thresholds(t: &StateThresholds) -> Result<(), (String, String)> {
    for (name, v) in [("critical", t.critical), ("degraded", t.degraded)] {
        if !(0.0..=100.0).contains(&v) {
            return Err((
                format!("thresholds.{name}"),
                format!("{name}={v} is outside 0..=100"),
            ));
        }
    }
    if t.critical > t.degraded {
        return Err((
            "thresholds.critical".into(),
            format!("critical={} is above degraded={}", t.critical, t.degraded),
        ));
    }
    Ok(())
}

/// Parses `--weights gpu=0.4,system=0.3,...` into `w` (unnamed weights keep their value).
pub fn parse_weights_flag(spec: &str, w: &mut Weights) -> Result<(), String> {
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("--weights: {part:?} is not NAME=VALUE"))?;
        let v: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("--weights: {}={value} is not a number", name.trim()))?;
        w.set(name.trim(), v)
            .map_err(|e| format!("--weights: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("score.yaml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn the_example_file_states_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("score.example.yaml");
        assert_eq!(ScoreConfig::load(Some(&p)).unwrap(), ScoreConfig::default());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = ScoreConfig::load(None).unwrap();
        assert_eq!(
            c.weights,
            Weights {
                gpu: 0.4,
                system: 0.3,
                network: 0.2,
                process: 0.1
            }
        );
        assert_eq!(c.thresholds.critical, 40.0);
        assert_eq!(c.thresholds.degraded, 70.0);
        assert!(c.weights.validate().is_ok());
    }

    #[test]
    fn weights_not_summing_to_one_name_file_line_and_value() {
        let (_d, p) = write("thresholds:\n  critical: 30\nweights:\n  gpu: 0.5\n  system: 0.3\n");
        let e = ScoreConfig::load(Some(&p)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("score.yaml:3: weights:"), "{msg}");
        assert!(msg.contains("gpu=0.5"), "{msg}");
        assert_eq!(e.exit(), ugro_types::Exit::Config);
    }

    #[test]
    fn negative_weight_is_named_with_its_line() {
        let (_d, p) =
            write("weights:\n  gpu: 0.6\n  system: -0.1\n  network: 0.4\n  process: 0.1\n");
        let msg = ScoreConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(msg.contains("score.yaml:3: weights.system:"), "{msg}");
        assert!(msg.contains("system=-0.1"), "{msg}");
    }

    #[test]
    fn unknown_key_and_bad_type_are_refused_with_line() {
        let (_d, p) = write("gpu:\n  busy_utilization_pct: 50\n  hotness: 3\n");
        let msg = ScoreConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(msg.contains("score.yaml:3:"), "{msg}");
        let (_d, p) = write("system:\n  disk_used_warn_pct: lots\n");
        let msg = ScoreConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(
            msg.contains("score.yaml:2: system.disk_used_warn_pct"),
            "{msg}"
        );
    }

    #[test]
    fn relative_xid_policy_is_found_next_to_the_config() {
        let (d, p) = write("xid_policy: site-xid.yaml\n");
        std::fs::write(
            d.path().join("site-xid.yaml"),
            "xids:\n  13:\n    severity: fatal\n",
        )
        .unwrap();
        let c = ScoreConfig::load(Some(&p)).unwrap();
        assert_eq!(
            c.policy.rule(13).0.severity,
            crate::policy::XidSeverity::Fatal
        );
    }

    #[test]
    fn weights_flag_overrides_named_weights_only() {
        let mut w = Weights::default();
        parse_weights_flag("gpu=0.5, system=0.2", &mut w).unwrap();
        assert_eq!(w.gpu, 0.5);
        assert_eq!(w.system, 0.2);
        assert_eq!(w.network, 0.2);
        assert!(
            parse_weights_flag("gpu=x", &mut w)
                .unwrap_err()
                .contains("gpu=x")
        );
        assert!(parse_weights_flag("cpu=1", &mut w).is_err());
    }
}
