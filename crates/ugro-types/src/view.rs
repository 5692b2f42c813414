//! Typed, borrowed views of records: what a tool reads of a line, without building the rest.
//!
//! The owned types ([`crate::Sample`], [`crate::Score`], [`crate::Transition`], [`crate::Alert`])
//! are what tools *write*. A filter that reads 100 000 lines a second instead deserialises each
//! line straight into one of these views: strings borrow from the line ([`Text`]), and fields
//! the view does not name are skipped by serde_json without being built. Every view checks the
//! header the same way ([`crate::record::check_header`]).
//!
//! Which view to use:
//!
//! | reading | view | one pass over the line |
//! | --- | --- | --- |
//! | a sample's sections, to score it | [`SampleView`] (+ [`GpuSectionView`], [`GpuView`]) | `serde_json::from_str` |
//! | any record downstream of ugro-score: header, score, breaker annotation, unreachable | [`RecordView`] | [`RecordView::parse`] |
//! | the same, deciding only on state and action | `RecordView<'_, ScoreHead, IgnoredAny>` | [`RecordView::parse`] |
//! | a `transition` record's body | [`TransitionView`] | [`TransitionView::parse`] |
//! | a `fleet` record's body | [`FleetView`] | [`FleetView::parse`] |
//! | an `alert` record | [`AlertView`] | [`AlertView::parse`] |
//! | ugro-watch's `stats`: can it write its state | [`WatcherStateView`] | [`WatcherStateView::parse`] |
//!
//! [`RecordView`] carries the kind, so a reader parses it first and reads the body of the rarer
//! kinds (transition, fleet, alert) from the same line only when the kind says so: samples, by
//! far the most lines, cost one pass. [`ScoreView`] and [`ReasonView`] are the `score` object;
//! [`BreakerView`] the `breaker` annotation.
//!
//! Values from a newer vocabulary do not reject a line where the reader does not decide on
//! them: a reason code is kept as [`crate::ReasonCode::Other`], an unknown score action is kept
//! as text ([`ScoreView::action`]) or read as absent ([`ScoreHead::action`]), an unknown
//! component reads as absent.
//!
//! [`IgnoredAny`]: serde::de::IgnoredAny

mod alert;
mod record;
mod sample;
mod score;
mod text;
pub(crate) mod unique;

pub use alert::AlertView;
pub use record::{BreakerView, FleetView, RecordView, TransitionView, WatcherStateView};
pub use sample::{GpuSectionView, GpuView, SampleView, ThrottleReasons};
pub use score::{ReasonView, ScoreHead, ScoreView};
pub use text::Text;

/// Reads a string as `T` (a unit enum) when it names one of `T`'s values, as `None` otherwise:
/// for values a newer build may add and this reader does not decide on.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::value::{Error, StrDeserializer};
    let v: Option<Text<'de>> = Option::deserialize(d)?;
    Ok(v.and_then(|s| T::deserialize(StrDeserializer::<Error>::new(&s)).ok()))
}
