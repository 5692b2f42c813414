//! What the scorer reads of a sample, borrowing from the input line.
//!
//! The hot path deserialises each line straight into these types: strings borrow from the
//! line, fields the scorer does not read (names, bus ids, processes, `absent` maps) are
//! skipped without being built, so a line costs a scan rather than dozens of allocations.
//! [`crate::Scorer::score_sample`] builds the same view over an owned
//! [`ugro_types::Sample`], so both paths run one set of rules.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use ugro_types::{
    CollectorError, DeviceState, Ecc, Gpu, GpuStatus, HostSection, Kind, NetworkSection, Pcie,
    ProcessSection, RemappedRows, Sample, Timestamp, Unreachable, Xid,
};

/// A sample as the scorer sees it.
#[derive(Debug, Deserialize)]
pub(crate) struct SampleView<'a> {
    pub v: u32,
    pub kind: Kind,
    pub ts: Timestamp,
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    #[serde(default)]
    pub unreachable: Option<Cow<'a, Unreachable>>,
    #[serde(default, borrow)]
    pub gpu: Option<GpuSectionView<'a>>,
    #[serde(default)]
    pub host: Option<Cow<'a, HostSection>>,
    #[serde(default)]
    pub network: Option<Cow<'a, NetworkSection>>,
    #[serde(default)]
    pub processes: Option<Cow<'a, ProcessSection>>,
    #[serde(default)]
    pub errors: Cow<'a, [CollectorError]>,
    /// Only whether the key is there (even as `null`): ugro-score then replaces it rather than
    /// splicing a second one in.
    #[serde(default, deserialize_with = "present")]
    pub score: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GpuSectionView<'a> {
    pub status: GpuStatus,
    #[serde(default, borrow)]
    pub reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub expected: Option<u32>,
    #[serde(default)]
    pub found: Option<u32>,
    #[serde(default, borrow, deserialize_with = "gpu_list")]
    pub devices: Vec<GpuView<'a>>,
    #[serde(default)]
    pub unattributed_xids: Cow<'a, [Xid]>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GpuView<'a> {
    pub index: u32,
    #[serde(default)]
    pub state: DeviceState,
    #[serde(default, borrow)]
    pub uuid: Option<Cow<'a, str>>,
    #[serde(default)]
    pub utilization_pct: Option<u32>,
    #[serde(default)]
    pub temperature_c: Option<u32>,
    #[serde(default)]
    pub temperature_slowdown_c: Option<u32>,
    #[serde(default)]
    pub power_w: Option<f64>,
    #[serde(default)]
    pub power_limit_w: Option<f64>,
    #[serde(default, borrow)]
    pub throttle_reasons: Option<Vec<Cow<'a, str>>>,
    #[serde(default)]
    pub ecc: Option<Ecc>,
    #[serde(default)]
    pub remapped_rows: Option<RemappedRows>,
    #[serde(default)]
    pub pcie: Option<Pcie>,
    #[serde(default)]
    pub xids: Cow<'a, [Xid]>,
}

impl<'a> GpuView<'a> {
    fn from_gpu(g: &'a Gpu) -> Self {
        GpuView {
            index: g.index,
            state: g.state,
            uuid: g.uuid.as_deref().map(Cow::Borrowed),
            utilization_pct: g.utilization_pct,
            temperature_c: g.temperature_c,
            temperature_slowdown_c: g.temperature_slowdown_c,
            power_w: g.power_w,
            power_limit_w: g.power_limit_w,
            throttle_reasons: g
                .throttle_reasons
                .as_ref()
                .map(|v| v.iter().map(|s| Cow::Borrowed(s.as_str())).collect()),
            ecc: g.ecc,
            remapped_rows: g.remapped_rows,
            pcie: g.pcie,
            xids: Cow::Borrowed(&g.xids),
        }
    }
}

/// JSON gives no length up front, so serde's Vec would grow 1, 2, 4, 8 for a typical node:
/// start at eight GPUs instead (one allocation per sample on the hot path).
fn gpu_list<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<GpuView<'a>>, D::Error> {
    struct List<'a>(std::marker::PhantomData<GpuView<'a>>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for List<'a> {
        type Value = Vec<GpuView<'a>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of GPUs")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(8).clamp(8, 64));
            while let Some(g) = seq.next_element()? {
                v.push(g);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(List(std::marker::PhantomData))
}

/// Called only when the key exists, so `"score": null` is `Some` too.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<IgnoredAny>, D::Error> {
    IgnoredAny::deserialize(d).map(Some)
}

impl<'a> SampleView<'a> {
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
                reason: g.reason.as_deref().map(Cow::Borrowed),
                expected: g.expected,
                found: g.found,
                devices: g.devices.iter().map(GpuView::from_gpu).collect(),
                unattributed_xids: Cow::Borrowed(&g.unattributed_xids),
            }),
            host: s.host.as_ref().map(Cow::Borrowed),
            network: s.network.as_ref().map(Cow::Borrowed),
            processes: s.processes.as_ref().map(Cow::Borrowed),
            errors: Cow::Borrowed(&s.errors),
            score: s.score.as_ref().map(|_| IgnoredAny),
        }
    }
}
