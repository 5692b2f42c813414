//! The `score` object that `ugro-score` adds to a sample.

use serde::{Deserialize, Serialize};

/// A node's discrete health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Score at or above the degraded threshold and no fatal condition.
    Healthy,
    /// Below the degraded threshold (default 70).
    Degraded,
    /// Below the critical threshold (default 40), or a fatal condition.
    Critical,
    /// The data the score needs is missing (node unreachable, sections absent).
    Unknown,
}

impl HealthState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Critical => "critical",
            HealthState::Unknown => "unknown",
        }
    }

    /// How bad it is for "worst state seen": unknown ranks between degraded and critical,
    /// as in the Monitoring Plugins guidelines.
    pub fn badness(self) -> u8 {
        match self {
            HealthState::Healthy => 0,
            HealthState::Degraded => 1,
            HealthState::Unknown => 2,
            HealthState::Critical => 3,
        }
    }

    /// The matching Monitoring Plugins status.
    pub fn plugin_status(self) -> crate::PluginStatus {
        match self {
            HealthState::Healthy => crate::PluginStatus::Ok,
            HealthState::Degraded => crate::PluginStatus::Warning,
            HealthState::Critical => crate::PluginStatus::Critical,
            HealthState::Unknown => crate::PluginStatus::Unknown,
        }
    }
}

/// What an operator (or automation) should do. Ordered from least to most drastic, so the
/// recommended action for a node is the maximum over its reasons.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do.
    #[default]
    None,
    /// Look at the network (links, peers).
    CheckNetwork,
    /// Look at the host (disk, memory, stuck processes).
    CheckHost,
    /// Restart the application; the hardware is fine.
    RestartApp,
    /// Reset the GPU (`nvidia-smi -r`) or reload the driver.
    ResetGpu,
    /// Reboot the node.
    Reboot,
    /// Take the node out and have the hardware inspected.
    HardwareInspection,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::CheckNetwork => "check_network",
            Action::CheckHost => "check_host",
            Action::RestartApp => "restart_app",
            Action::ResetGpu => "reset_gpu",
            Action::Reboot => "reboot",
            Action::HardwareInspection => "hardware_inspection",
        }
    }
}

/// The component a reason belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// GPUs.
    Gpu,
    /// Host CPU, memory, disks.
    System,
    /// Interfaces, InfiniBand, peers.
    Network,
    /// Training processes, zombies, D state.
    Process,
}

impl Component {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Gpu => "gpu",
            Component::System => "system",
            Component::Network => "network",
            Component::Process => "process",
        }
    }
}

/// One deduction, machine-readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable code, e.g. `gpu_temperature_high`, `xid_fatal`, `row_remap_pending`.
    pub code: crate::ReasonCode,
    /// Component it counts against.
    pub component: Component,
    /// GPU index, where it concerns one GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// The observed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The threshold it was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<serde_json::Value>,
    /// Points taken from the component (0–100).
    pub deduction: f64,
    /// True when this reason forces the state to critical whatever the total.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fatal: bool,
    /// True when this reason is a prediction from a trend (a rate or a slope over `window`)
    /// rather than a fault present now, so alerting can route it apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub predicted: bool,
    /// The span a rate or trend was measured over, as a humantime duration (`10m`), or the
    /// history window a count was taken in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// What to do about it.
    pub action: Action,
    /// For people.
    pub message: String,
}

/// Component scores, 0–100; absent where the section was absent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Components {
    /// GPU component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<f64>,
    /// System component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<f64>,
    /// Network component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<f64>,
    /// Process component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<f64>,
}

/// One GPU's own score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuScore {
    /// NVML index.
    pub index: u32,
    /// 0–100.
    pub score: f64,
}

/// The result of scoring one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Weighted total, 0–100; absent when the state is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// Discrete state.
    pub state: HealthState,
    /// Recommended action: the most drastic over all reasons.
    pub action: Action,
    /// Component scores.
    pub components: Components,
    /// Per-GPU scores.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::limits::gpus"
    )]
    pub gpus: Vec<GpuScore>,
    /// Every deduction.
    #[serde(default, deserialize_with = "crate::limits::reasons")]
    pub reasons: Vec<Reason>,
    /// One line for people.
    pub summary: String,
}
