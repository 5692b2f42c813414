//! A sample's sections as a scorer reads them, borrowing from the input line.
//!
//! `ugro-score`'s hot path deserialises each line straight into these types: strings borrow
//! from the line, fields a scorer does not read (names, bus ids, per-GPU processes, `absent`
//! maps, collector runs) are skipped without being built, so a line costs a scan rather than
//! dozens of allocations. [`SampleView::from_sample`] builds the same view over an owned
//! [`Sample`], so a scorer runs one set of rules on both.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::Text;
use crate::record::{RecordError, check_header};
use crate::{
    CollectorError, DeviceState, Ecc, Gpu, GpuStatus, HostSection, Kind, NetworkSection, Pcie,
    ProcessSection, RecoveryAction, RemappedRows, Sample, Timestamp, Unreachable, Xid,
};

/// A sample (or, on a line of another kind, its header) as a scorer reads it. The sections
/// keep the owned types ([`HostSection`] and so on) behind a `Cow`: borrowed from a
/// [`Sample`], owned when read from a line. A scored sample's `score` and `breaker` are not
/// read here: use [`super::RecordView`] on the same line for those.
#[derive(Debug, Deserialize)]
pub struct SampleView<'a> {
    /// Schema version.
    pub v: u32,
    /// Record kind (a line of another kind parses too, when its fields do not collide).
    pub kind: Kind,
    /// Observation time.
    pub ts: Timestamp,
    /// Node.
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    /// Why the node could not be probed, when it could not.
    #[serde(default)]
    pub unreachable: Option<Cow<'a, Unreachable>>,
    /// GPU section.
    #[serde(default, borrow)]
    pub gpu: Option<GpuSectionView<'a>>,
    /// Host section.
    #[serde(default)]
    pub host: Option<Cow<'a, HostSection>>,
    /// Network section.
    #[serde(default)]
    pub network: Option<Cow<'a, NetworkSection>>,
    /// Processes section.
    #[serde(default)]
    pub processes: Option<Cow<'a, ProcessSection>>,
    /// Collector errors.
    #[serde(default, deserialize_with = "crate::limits::cow_items")]
    pub errors: Cow<'a, [CollectorError]>,
    /// Whether a `score` key is there (even as `null`): a scorer then replaces it rather than
    /// splicing a second one in.
    #[serde(default, rename = "score", deserialize_with = "present")]
    pub has_score: bool,
}

/// The GPU section.
#[derive(Debug, Deserialize)]
pub struct GpuSectionView<'a> {
    /// Whether NVML answered.
    pub status: GpuStatus,
    /// Why not, when it did not.
    #[serde(default, borrow)]
    pub reason: Option<Text<'a>>,
    /// GPUs the node should have.
    #[serde(default)]
    pub expected: Option<u32>,
    /// GPUs found.
    #[serde(default)]
    pub found: Option<u32>,
    /// NVIDIA display-class PCI functions counted from sysfs.
    #[serde(default)]
    pub pci_devices: Option<u32>,
    /// The devices.
    #[serde(default, borrow, deserialize_with = "crate::limits::gpus")]
    pub devices: Vec<GpuView<'a>>,
    /// XIDs that could not be attributed to a device.
    #[serde(default, deserialize_with = "crate::limits::cow_items")]
    pub unattributed_xids: Cow<'a, [Xid]>,
}

/// One GPU: the readings a scorer decides on.
#[derive(Debug, Deserialize)]
pub struct GpuView<'a> {
    /// NVML index.
    pub index: u32,
    /// Device state.
    #[serde(default)]
    pub state: DeviceState,
    /// UUID.
    #[serde(default, borrow)]
    pub uuid: Option<Text<'a>>,
    /// Utilisation, percent.
    #[serde(default)]
    pub utilization_pct: Option<u32>,
    /// Temperature, °C.
    #[serde(default)]
    pub temperature_c: Option<u32>,
    /// Slowdown threshold, °C.
    #[serde(default)]
    pub temperature_slowdown_c: Option<u32>,
    /// Power draw, W.
    #[serde(default)]
    pub power_w: Option<f64>,
    /// Power limit, W.
    #[serde(default)]
    pub power_limit_w: Option<f64>,
    /// Active clock throttle reasons, as a set (no allocation per GPU).
    #[serde(default)]
    pub throttle_reasons: Option<ThrottleReasons>,
    /// ECC counters.
    #[serde(default)]
    pub ecc: Option<Ecc>,
    /// Remapped rows.
    #[serde(default)]
    pub remapped_rows: Option<RemappedRows>,
    /// The driver's recovery verdict (read from the line's text without allocating).
    #[serde(default, deserialize_with = "recovery_action")]
    pub recovery_action: Option<RecoveryAction>,
    /// PCIe link.
    #[serde(default)]
    pub pcie: Option<Pcie>,
    /// XIDs attributed to this GPU.
    #[serde(default, deserialize_with = "crate::limits::cow_items")]
    pub xids: Cow<'a, [Xid]>,
}

impl<'a> GpuView<'a> {
    fn from_gpu(g: &'a Gpu) -> Self {
        GpuView {
            index: g.index,
            state: g.state,
            uuid: g.uuid.as_deref().map(Text::from),
            utilization_pct: g.utilization_pct,
            temperature_c: g.temperature_c,
            temperature_slowdown_c: g.temperature_slowdown_c,
            power_w: g.power_w,
            power_limit_w: g.power_limit_w,
            throttle_reasons: g
                .throttle_reasons
                .as_ref()
                .map(|v| ThrottleReasons::from_names(v.iter().map(String::as_str))),
            ecc: g.ecc,
            remapped_rows: g.remapped_rows,
            recovery_action: g.recovery_action,
            pcie: g.pcie,
            xids: Cow::Borrowed(&g.xids),
        }
    }
}

/// A GPU's clock-event (throttle) reasons as a set of NVML's names, the view's form of
/// [`Gpu::throttle_reasons`]: read from the line without allocating. A name this build does not
/// know (a newer probe) is counted in [`ThrottleReasons::unknown`], not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThrottleReasons {
    bits: u16,
    unknown: u16,
}

impl ThrottleReasons {
    /// The names, in NVML's bit order (`nvmlClocksEventReason*`).
    pub const NAMES: [&'static str; 9] = [
        "gpu_idle",
        "applications_clocks_setting",
        "sw_power_cap",
        "hw_slowdown",
        "sync_boost",
        "sw_thermal_slowdown",
        "hw_thermal_slowdown",
        "hw_power_brake_slowdown",
        "display_clock_setting",
    ];

    /// `sw_power_cap`.
    pub const SW_POWER_CAP: u16 = 1 << 2;
    /// `hw_slowdown`.
    pub const HW_SLOWDOWN: u16 = 1 << 3;
    /// `sw_thermal_slowdown`.
    pub const SW_THERMAL_SLOWDOWN: u16 = 1 << 5;
    /// `hw_thermal_slowdown`.
    pub const HW_THERMAL_SLOWDOWN: u16 = 1 << 6;
    /// `hw_power_brake_slowdown`.
    pub const HW_POWER_BRAKE_SLOWDOWN: u16 = 1 << 7;

    /// Whether any of `bits` (the constants above, or-ed) is in the set.
    pub fn any(self, bits: u16) -> bool {
        self.bits & bits != 0
    }

    /// The known names among `bits` in the set, in NVML's bit order.
    pub fn names_of(self, bits: u16) -> impl Iterator<Item = &'static str> {
        ThrottleReasons {
            bits: self.bits & bits,
            unknown: 0,
        }
        .names()
    }

    fn bit(name: &str) -> Option<u16> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| 1 << i)
    }

    fn add(&mut self, name: &str) {
        match Self::bit(name) {
            Some(b) => self.bits |= b,
            None => self.unknown = self.unknown.saturating_add(1),
        }
    }

    /// The set of `names`.
    pub fn from_names<'n>(names: impl IntoIterator<Item = &'n str>) -> Self {
        let mut t = ThrottleReasons::default();
        for n in names {
            t.add(n);
        }
        t
    }

    /// Whether `name` is in the set.
    pub fn contains(self, name: &str) -> bool {
        Self::bit(name).is_some_and(|b| self.bits & b != 0)
    }

    /// The known names in the set, in NVML's bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.bits & (1 << i) != 0)
            .map(|(_, n)| *n)
    }

    /// Names in the line this build does not know.
    pub fn unknown(self) -> u16 {
        self.unknown
    }
}

impl<'de> Deserialize<'de> for ThrottleReasons {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name<'s>(&'s mut ThrottleReasons);
        impl<'de> serde::de::DeserializeSeed<'de> for Name<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_str(self)
            }
        }
        impl serde::de::Visitor<'_> for Name<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a throttle reason name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
                self.0.add(v);
                Ok(())
            }
        }
        struct Set;
        impl<'de> serde::de::Visitor<'de> for Set {
            type Value = ThrottleReasons;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of throttle reason names")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ThrottleReasons, A::Error> {
                let mut t = ThrottleReasons::default();
                while seq.next_element_seed(Name(&mut t))?.is_some() {}
                Ok(t)
            }
        }
        d.deserialize_seq(Set)
    }
}

/// `recovery_action` borrowed as text and named, so a GPU costs no allocation for it; an
/// unknown name rejects the line as the owned type does.
fn recovery_action<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<RecoveryAction>, D::Error> {
    struct Name;
    impl serde::de::Visitor<'_> for Name {
        type Value = RecoveryAction;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a recovery action name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RecoveryAction, E> {
            RecoveryAction::from_name(v).map_err(E::custom)
        }
    }
    // Called only when the key is there: null is absent, a string is read in place.
    struct Opt;
    impl<'de> serde::de::Visitor<'de> for Opt {
        type Value = Option<RecoveryAction>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a recovery action name or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_str(Name).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Called only when the key exists, so `"score": null` counts too.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

impl<'a> SampleView<'a> {
    /// Parses one line and checks its header. A line of another kind whose fields do not
    /// collide with a sample's parses too (check [`SampleView::kind`]).
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        let s = SampleView::from_line(line)?;
        check_header(s.v, &s.node)?;
        Ok(s)
    }

    /// Parses one line without checking its header. A member named twice rejects the line,
    /// whichever member it is (the one rule for repeated members, see `view::unique`), and
    /// lists longer than [`crate::limits`] allow are refused as they are read.
    pub fn from_line(line: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(line);
        let s = SampleView::deserialize(super::unique::UniqueKeys(&mut de))?;
        de.end()?;
        Ok(s)
    }

    /// The view over an owned sample (borrows everything).
    pub fn from_sample(s: &'a Sample) -> Self {
        SampleView {
            v: s.v,
            kind: s.kind,
            ts: s.ts,
            node: Cow::Borrowed(&s.node),
            unreachable: s.unreachable.as_ref().map(Cow::Borrowed),
            gpu: s.gpu.as_ref().map(|g| GpuSectionView {
                status: g.status,
                reason: g.reason.as_deref().map(Text::from),
                expected: g.expected,
                found: g.found,
                pci_devices: g.pci_devices,
                devices: g.devices.iter().map(GpuView::from_gpu).collect(),
                unattributed_xids: Cow::Borrowed(&g.unattributed_xids),
            }),
            host: s.host.as_ref().map(Cow::Borrowed),
            network: s.network.as_ref().map(Cow::Borrowed),
            processes: s.processes.as_ref().map(Cow::Borrowed),
            errors: Cow::Borrowed(&s.errors),
            has_score: s.score.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real H200 readings, as ugro-score's fixtures carry them (one sample line each).
    const FIXTURES: [&str; 2] = [
        include_str!("../../../ugro-score/fixtures/h200-busy.jsonl"),
        include_str!("../../../ugro-score/fixtures/h200-idle.jsonl"),
    ];

    /// Every field of the view says what the owned sample says.
    fn assert_agrees(v: &SampleView<'_>, s: &Sample) {
        assert_eq!((v.v, v.kind, v.ts, &*v.node), (s.v, s.kind, s.ts, &*s.node));
        assert_eq!(v.unreachable.as_deref(), s.unreachable.as_ref());
        assert_eq!(v.host.as_deref(), s.host.as_ref());
        assert_eq!(v.network.as_deref(), s.network.as_ref());
        assert_eq!(v.processes.as_deref(), s.processes.as_ref());
        assert_eq!(&*v.errors, &s.errors[..]);
        assert_eq!(v.has_score, s.score.is_some());
        let (Some(vg), Some(sg)) = (&v.gpu, &s.gpu) else {
            assert_eq!(v.gpu.is_some(), s.gpu.is_some());
            return;
        };
        assert_eq!(vg.status, sg.status);
        assert_eq!(vg.reason.as_deref(), sg.reason.as_deref());
        assert_eq!((vg.expected, vg.found), (sg.expected, sg.found));
        assert_eq!(vg.pci_devices, sg.pci_devices);
        assert_eq!(&*vg.unattributed_xids, &sg.unattributed_xids[..]);
        assert_eq!(vg.devices.len(), sg.devices.len());
        for (d, g) in vg.devices.iter().zip(&sg.devices) {
            assert_eq!((d.index, d.state), (g.index, g.state));
            assert_eq!(d.uuid.as_deref(), g.uuid.as_deref());
            assert_eq!(d.utilization_pct, g.utilization_pct);
            assert_eq!(d.temperature_c, g.temperature_c);
            assert_eq!(d.temperature_slowdown_c, g.temperature_slowdown_c);
            assert_eq!((d.power_w, d.power_limit_w), (g.power_w, g.power_limit_w));
            let want = g
                .throttle_reasons
                .as_ref()
                .map(|t| ThrottleReasons::from_names(t.iter().map(String::as_str)));
            assert_eq!(d.throttle_reasons, want);
            assert_eq!(
                (d.ecc, d.remapped_rows, d.pcie),
                (g.ecc, g.remapped_rows, g.pcie)
            );
            assert_eq!(d.recovery_action, g.recovery_action);
            assert_eq!(&*d.xids, &g.xids[..]);
        }
    }

    #[test]
    fn fixture_samples_read_the_same_through_the_view_as_through_the_owned_type() {
        for line in FIXTURES {
            let owned: Sample = serde_json::from_str(line).unwrap();
            assert!(owned.gpu.as_ref().is_some_and(|g| !g.devices.is_empty()));
            let v = SampleView::parse(line.trim_end()).unwrap();
            assert_agrees(&v, &owned);
            assert_agrees(&SampleView::from_sample(&owned), &owned);
        }
    }

    #[test]
    fn fixture_strings_borrow_from_the_line() {
        let v = SampleView::parse(FIXTURES[0].trim_end()).unwrap();
        assert!(matches!(v.node, Cow::Borrowed(_)));
        let d = &v.gpu.as_ref().unwrap().devices[0];
        assert!(matches!(d.uuid, Some(Text(Cow::Borrowed(_)))));
    }

    #[test]
    fn throttle_reasons_read_as_a_set_and_count_names_they_do_not_know() {
        let v = SampleView::parse(
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","gpu":{"status":"ok","devices":[{"index":0,"throttle_reasons":["hw_thermal_slowdown","sw_power_cap","hw_slowdown","fan_brake"]}]}}"#,
        )
        .unwrap();
        let t = v.gpu.unwrap().devices[0].throttle_reasons.unwrap();
        assert!(t.contains("hw_slowdown") && t.contains("sw_power_cap"));
        assert!(!t.contains("gpu_idle"));
        let names: Vec<&str> = t.names().collect();
        assert_eq!(
            names,
            ["sw_power_cap", "hw_slowdown", "hw_thermal_slowdown"]
        );
        assert_eq!(t.unknown(), 1);
    }

    #[test]
    fn recovery_actions_read_by_name_and_a_bad_name_rejects_the_line() {
        let line = |a: &str| {
            format!(
                r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","gpu":{{"status":"ok","pci_devices":8,"devices":[{{"index":0,"recovery_action":"{a}"}}]}}}}"#
            )
        };
        for (name, want) in [
            ("drain_and_reset", RecoveryAction::DrainAndReset),
            ("unknown_7", RecoveryAction::Unknown(7)),
        ] {
            let text = line(name);
            let v = SampleView::parse(&text).unwrap();
            let g = v.gpu.unwrap();
            assert_eq!(g.pci_devices, Some(8));
            assert_eq!(g.devices[0].recovery_action, Some(want));
        }
        let e = SampleView::parse(&line("reboot_please")).unwrap_err();
        assert!(e.to_string().contains("reboot_please"), "{e}");
    }

    #[test]
    fn a_line_nested_a_million_deep_is_refused_not_a_stack_overflow() {
        for open in ["[", "{\"a\":"] {
            let deep = format!(
                r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","extra":{}1}}"#,
                open.repeat(1_000_000)
            );
            assert!(SampleView::from_line(&deep).is_err());
        }
    }

    #[test]
    fn a_control_byte_in_a_member_the_view_skips_still_rejects_the_line() {
        let line = FIXTURES[0].lines().next().unwrap();
        let bad = line.replacen("NVIDIA H200", "NVIDIA\u{1} H200", 1);
        assert_ne!(bad, line);
        let e = SampleView::from_line(&bad).unwrap_err().to_string();
        assert!(e.to_lowercase().contains("control character"), "{e}");
    }

    #[test]
    fn errors_name_the_cause_and_column_on_one_line_without_the_line_itself() {
        let e = SampleView::from_line(
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","gpu":{"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("EOF") && e.contains("column"), "{e}");
        assert!(!e.contains('\n') && !e.contains("gpu"), "{e}");
        let e =
            SampleView::from_line(r#"{"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("missing field `v`"), "{e}");
    }

    #[test]
    fn a_score_key_is_seen_even_when_null() {
        let v = SampleView::parse(
            r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","score":null}"#,
        )
        .unwrap();
        assert!(v.has_score);
    }

    #[test]
    fn a_sample_from_a_newer_schema_is_refused() {
        let e =
            SampleView::parse(r#"{"v":7,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#)
                .unwrap_err();
        assert!(matches!(e, RecordError::FutureVersion { found: 7 }), "{e}");
    }

    #[test]
    fn a_sample_naming_a_member_twice_or_with_too_many_gpus_is_refused() {
        let line = FIXTURES[0].lines().next().unwrap();
        assert!(SampleView::from_line(line).is_ok());
        let twice = line.replacen('{', r#"{"operator":1,"operator":2,"#, 1);
        let e = SampleView::from_line(&twice).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        let gpus: Vec<String> = (0..=crate::limits::MAX_GPUS)
            .map(|i| format!(r#"{{"index":{i}}}"#))
            .collect();
        let many = format!(
            r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","gpu":{{"status":"ok","devices":[{}]}}}}"#,
            gpus.join(",")
        );
        let e = SampleView::from_line(&many).unwrap_err().to_string();
        assert!(e.contains("more than 256 GPUs"), "{e}");
    }
}
