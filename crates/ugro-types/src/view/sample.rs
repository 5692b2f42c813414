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
    ProcessSection, RemappedRows, Sample, Timestamp, Unreachable, Xid,
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
    /// Active clock throttle reasons.
    #[serde(default, borrow, deserialize_with = "crate::limits::opt_items")]
    pub throttle_reasons: Option<Vec<Text<'a>>>,
    /// ECC counters.
    #[serde(default)]
    pub ecc: Option<Ecc>,
    /// Remapped rows.
    #[serde(default)]
    pub remapped_rows: Option<RemappedRows>,
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
                .map(|v| v.iter().map(|s| Text::from(s.as_str())).collect()),
            ecc: g.ecc,
            remapped_rows: g.remapped_rows,
            pcie: g.pcie,
            xids: Cow::Borrowed(&g.xids),
        }
    }
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
        assert_eq!(&*vg.unattributed_xids, &sg.unattributed_xids[..]);
        assert_eq!(vg.devices.len(), sg.devices.len());
        for (d, g) in vg.devices.iter().zip(&sg.devices) {
            assert_eq!((d.index, d.state), (g.index, g.state));
            assert_eq!(d.uuid.as_deref(), g.uuid.as_deref());
            assert_eq!(d.utilization_pct, g.utilization_pct);
            assert_eq!(d.temperature_c, g.temperature_c);
            assert_eq!(d.temperature_slowdown_c, g.temperature_slowdown_c);
            assert_eq!((d.power_w, d.power_limit_w), (g.power_w, g.power_limit_w));
            let tr: Option<Vec<&str>> = d
                .throttle_reasons
                .as_ref()
                .map(|t| t.iter().map(|x| &**x).collect());
            let want: Option<Vec<&str>> = g
                .throttle_reasons
                .as_ref()
                .map(|t| t.iter().map(String::as_str).collect());
            assert_eq!(tr, want);
            assert_eq!(
                (d.ecc, d.remapped_rows, d.pcie),
                (g.ecc, g.remapped_rows, g.pcie)
            );
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
        let tr = d.throttle_reasons.as_ref().unwrap();
        assert!(tr.iter().all(|t| matches!(t.0, Cow::Borrowed(_))));
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
