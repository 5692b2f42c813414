//! Reason codes: the machine-readable `code` of each deduction in a score.
//!
//! `ugro-score` emits them and `ugro-alert`'s rules match on them, so both use this one enum.
//! On the wire a code is a snake_case string (`xid_fatal`); a code this build does not know
//! (from a newer scorer) is kept verbatim as [`ReasonCode::Other`] and written back unchanged,
//! so mixed versions pass records through without loss. Each code belongs to at most one
//! [`ReasonFamily`], which is what alert rules match on; an unknown code gets its family from
//! its name (see [`ReasonFamily::from_name`]), so a new code in a known family still lands.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The families alert rules group codes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonFamily {
    /// The node or a peer could not be reached.
    Unreachable,
    /// An XID event (fatal, warning or application).
    Xid,
    /// Row remapping pending or failed.
    RowRemap,
    /// Uncorrected ECC errors.
    Ecc,
    /// Temperature, including thermal slowdown.
    Thermal,
    /// Clock slowdown other than thermal (hardware slowdown, power brake).
    Throttle,
    /// PCIe link below its maximum, or replays growing.
    Pcie,
    /// Something expected is not there: a GPU lost or missing, a section or interface missing.
    Missing,
}

impl ReasonFamily {
    /// The name in snake case (the `family` label of `ugro_node_reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonFamily::Unreachable => "unreachable",
            ReasonFamily::Xid => "xid",
            ReasonFamily::RowRemap => "row_remap",
            ReasonFamily::Ecc => "ecc",
            ReasonFamily::Thermal => "thermal",
            ReasonFamily::Throttle => "throttle",
            ReasonFamily::Pcie => "pcie",
            ReasonFamily::Missing => "missing",
        }
    }

    /// The family of a code by its name: the rule that gives unknown codes a family, and that
    /// the known codes' declared families agree with (a test checks every one). Case does not
    /// matter; the first match in this order wins (`gpu_sw_thermal_slowdown` is thermal).
    pub fn from_name(code: &str) -> Option<ReasonFamily> {
        let c = code.to_ascii_lowercase();
        let has = |s: &str| c.contains(s);
        Some(if has("unreachable") {
            ReasonFamily::Unreachable
        } else if has("xid") {
            ReasonFamily::Xid
        } else if has("remap") {
            ReasonFamily::RowRemap
        } else if has("ecc") {
            ReasonFamily::Ecc
        } else if has("temp") || has("thermal") {
            ReasonFamily::Thermal
        } else if has("throttl") || has("slowdown") || has("power_brake") {
            ReasonFamily::Throttle
        } else if has("pcie") {
            ReasonFamily::Pcie
        } else if has("lost") || has("missing") || has("fallen") {
            ReasonFamily::Missing
        } else {
            return None;
        })
    }
}

/// Declares the codes once: the enum, their wire names and their families.
macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal $(in $family:ident)?; )*) => {
        /// A deduction's code. Serialised as its snake_case name; see the module docs for
        /// unknown codes.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ReasonCode {
            $( $(#[$doc])* $variant, )*
            /// A code this build does not know, kept verbatim so that it round-trips. Never
            /// holds a known code's name: [`ReasonCode::parse`] maps those to their variant.
            Other(String),
        }

        impl ReasonCode {
            /// Every code this build knows, in declaration order.
            pub const KNOWN: &'static [ReasonCode] = &[$(ReasonCode::$variant,)*];

            /// The wire name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ReasonCode::$variant => $name,)*
                    ReasonCode::Other(s) => s,
                }
            }

            /// The code for a wire name; an unknown one is [`ReasonCode::Other`].
            pub fn parse(name: &str) -> ReasonCode {
                match name {
                    $($name => ReasonCode::$variant,)*
                    other => ReasonCode::Other(other.to_owned()),
                }
            }

            /// The family alert rules match on, if any.
            pub fn family(&self) -> Option<ReasonFamily> {
                match self {
                    $(ReasonCode::$variant => reason_codes!(@family $($family)?),)*
                    ReasonCode::Other(s) => ReasonFamily::from_name(s),
                }
            }
        }
    };
    (@family) => { None };
    (@family $f:ident) => { Some(ReasonFamily::$f) };
}

reason_codes! {
    /// The probe could not reach the node.
    NodeUnreachable = "node_unreachable" in Unreachable;
    /// The sample has no section at all to score.
    NoData = "no_data";
    /// The host section is missing or its collector failed.
    HostDataMissing = "host_data_missing" in Missing;
    /// The GPU section is missing or its collector failed.
    GpuDataMissing = "gpu_data_missing" in Missing;
    /// The network section is missing or its collector failed.
    NetworkDataMissing = "network_data_missing" in Missing;
    /// The processes section is missing or its collector failed.
    ProcessesDataMissing = "processes_data_missing" in Missing;
    /// No NVML on a node that should have GPUs.
    GpuAbsent = "gpu_absent";
    /// NVML failed to initialise or answer.
    NvmlFailed = "nvml_failed";
    /// Fewer GPUs than expected.
    GpuMissing = "gpu_missing" in Missing;
    /// The GPU section has devices but no readings.
    GpuNoReadings = "gpu_no_readings";
    /// NVML reports no GPUs.
    GpuNone = "gpu_none";
    /// A GPU is lost (fallen off the bus).
    GpuLost = "gpu_lost" in Missing;
    /// Fewer GPUs than this node has shown within its recent history.
    GpuMissingSinceSeen = "gpu_missing_since_seen" in Missing;
    /// More NVIDIA GPUs on the PCI bus than NVML sees.
    GpuMissingFromNvml = "gpu_missing_from_nvml" in Missing;
    /// The driver's own recovery verdict (NVML's GPU recovery action) asks for something.
    GpuRecoveryAction = "gpu_recovery_action";
    /// NVML cannot query a GPU.
    GpuError = "gpu_error";
    /// GPU temperature close to its slowdown threshold.
    GpuTemperatureHigh = "gpu_temperature_high" in Thermal;
    /// Predicted: the temperature's slope reaches the slowdown threshold soon.
    GpuTemperatureRising = "gpu_temperature_rising" in Thermal;
    /// Power draw above the limit.
    GpuPowerOverLimit = "gpu_power_over_limit";
    /// Hardware clock slowdown.
    GpuHwSlowdown = "gpu_hw_slowdown" in Throttle;
    /// Software thermal slowdown.
    GpuSwThermalSlowdown = "gpu_sw_thermal_slowdown" in Thermal;
    /// Power-capped at low utilisation.
    GpuPowerCappedIdle = "gpu_power_capped_idle";
    /// Uncorrected volatile ECC errors.
    EccUncorrectedVolatile = "ecc_uncorrected_volatile" in Ecc;
    /// Uncorrected aggregate ECC errors.
    EccUncorrectedAggregate = "ecc_uncorrected_aggregate" in Ecc;
    /// Many corrected ECC errors since the driver loaded.
    EccCorrectedVolatile = "ecc_corrected_volatile" in Ecc;
    /// Predicted: corrected ECC errors per hour above the limit.
    EccCorrectedRate = "ecc_corrected_rate" in Ecc;
    /// Row remapping failed.
    RowRemapFailure = "row_remap_failure" in RowRemap;
    /// Row remapping pending (reset needed).
    RowRemapPending = "row_remap_pending" in RowRemap;
    /// Predicted: rows remapped for correctable errors are growing.
    RowRemapCorrectableGrowth = "row_remap_correctable_growth" in RowRemap;
    /// PCIe generation below its maximum under load.
    PcieGenLow = "pcie_gen_low" in Pcie;
    /// PCIe width below its maximum under load.
    PcieWidthLow = "pcie_width_low" in Pcie;
    /// PCIe replay counter growing, below DCGM's rate limit.
    PcieReplayGrowth = "pcie_replay_growth" in Pcie;
    /// Predicted: PCIe replays per minute above DCGM's limit for the link's generation and
    /// width.
    PcieReplayRate = "pcie_replay_rate" in Pcie;
    /// A fatal XID.
    XidFatal = "xid_fatal" in Xid;
    /// A warning XID.
    XidWarning = "xid_warning" in Xid;
    /// An application XID.
    XidApplication = "xid_application" in Xid;
    /// The same fatal XID on the same GPU again within the recurrence window.
    XidRecurring = "xid_recurring" in Xid;
    /// The same XID on the same GPU again after the policy's number of reboots.
    XidAfterReboots = "xid_after_reboots" in Xid;
    /// Predicted: XID events on one GPU per hour above the limit.
    XidRate = "xid_rate" in Xid;
    /// CPU saturated.
    CpuSaturated = "cpu_saturated";
    /// Available memory low.
    MemoryLow = "memory_low";
    /// Swap in use.
    SwapUsed = "swap_used";
    /// A disk nearly full.
    DiskFull = "disk_full";
    /// A file system nearly out of inodes.
    InodesFull = "inodes_full";
    /// Load high for the CPU count.
    LoadHigh = "load_high";
    /// A network interface without carrier.
    InterfaceDown = "interface_down";
    /// A required interface is not there.
    InterfaceMissing = "interface_missing" in Missing;
    /// An InfiniBand port not active.
    IbPortDown = "ib_port_down";
    /// An InfiniBand port below its configured minimum rate.
    IbRateLow = "ib_rate_low";
    /// A peer did not answer.
    PeerUnreachable = "peer_unreachable" in Unreachable;
    /// A peer answered slowly.
    PeerLatencyHigh = "peer_latency_high";
    /// Many zombie processes.
    Zombies = "zombies";
    /// Many processes in D state.
    DStateProcesses = "d_state_processes";
    /// A training process in D state.
    TrainingProcessDState = "training_process_d_state";
    /// A training process is a zombie.
    TrainingProcessZombie = "training_process_zombie";
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReasonCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ReasonCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Code;
        impl Visitor<'_> for Code {
            type Value = ReasonCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reason code string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReasonCode, E> {
                Ok(ReasonCode::parse(v))
            }
        }
        d.deserialize_str(Code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_through_json_as_its_name() {
        for code in ReasonCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ReasonCode = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, code);
            assert_eq!(ReasonCode::parse(code.as_str()), *code);
        }
    }

    #[test]
    fn known_names_are_unique() {
        let mut names: Vec<&str> = ReasonCode::KNOWN.iter().map(ReasonCode::as_str).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn an_unknown_code_is_kept_verbatim_and_written_back_unchanged() {
        let c: ReasonCode = serde_json::from_str(r#""nvlink_bridge_degraded""#).unwrap();
        assert_eq!(c, ReasonCode::Other("nvlink_bridge_degraded".into()));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#""nvlink_bridge_degraded""#
        );
        assert_eq!(c.family(), None);
    }

    #[test]
    fn an_escaped_name_decodes_to_its_variant() {
        let c: ReasonCode = serde_json::from_str(r#""xid\u005ffatal""#).unwrap();
        assert_eq!(c, ReasonCode::XidFatal);
    }

    #[test]
    fn declared_families_agree_with_the_naming_rule() {
        for code in ReasonCode::KNOWN {
            assert_eq!(
                code.family(),
                ReasonFamily::from_name(code.as_str()),
                "{code}"
            );
        }
    }

    #[test]
    fn an_unknown_code_in_a_known_family_gets_that_family() {
        for (name, family) in [
            ("xid_storm", ReasonFamily::Xid),
            ("GPU_Thermal_Margin_Low", ReasonFamily::Thermal),
            ("gpu_power_brake_active", ReasonFamily::Throttle),
            ("pcie_aer_errors", ReasonFamily::Pcie),
            ("gpu_fallen_off_bus", ReasonFamily::Missing),
            ("switch_unreachable", ReasonFamily::Unreachable),
        ] {
            assert_eq!(ReasonCode::parse(name).family(), Some(family), "{name}");
        }
    }

    #[test]
    fn a_non_string_code_is_an_error() {
        assert!(serde_json::from_str::<ReasonCode>("42").is_err());
    }

    #[test]
    fn the_schema_page_lists_every_code_under_its_family() {
        // SCHEMA.md (ugro(7)) is the contract operators read: it must not drift from the enum.
        let doc = crate::SCHEMA_DOC;
        let section = &doc[doc.find("## Reason codes").unwrap()..];
        let section = &section[..section.find("\n## ").unwrap()];
        for code in ReasonCode::KNOWN {
            let name = format!("`{code}`");
            let at = section
                .find(&name)
                .unwrap_or_else(|| panic!("{code} not in SCHEMA.md"));
            let item = section[..at].rfind("\n- ").unwrap();
            let label = section[item + 3..].split(':').next().unwrap();
            let want = match code.family() {
                None => "no family",
                Some(ReasonFamily::Unreachable) => "unreachable",
                Some(ReasonFamily::Missing) => "missing",
                Some(ReasonFamily::Xid) => "xid",
                Some(ReasonFamily::RowRemap) => "row remap",
                Some(ReasonFamily::Ecc) => "ecc",
                Some(ReasonFamily::Thermal) => "thermal",
                Some(ReasonFamily::Throttle) => "throttle",
                Some(ReasonFamily::Pcie) => "pcie",
            };
            assert_eq!(label, want, "{code}");
        }
    }
}
