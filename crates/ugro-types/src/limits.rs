//! The most items a record may hold in each list, checked while the line is read.
//!
//! Every tool's cost per record grows with its lists (GPUs, reasons, XIDs), and some of that
//! work compares items with each other; a corrupt or hostile line with 100 000 GPUs would
//! stall the pipeline of a whole fleet. So a list longer than its maximum is refused as the
//! line is parsed, before anything is built from the rest of it: the line is a bad line
//! (`line N: ...`, exit 65) and every other line goes through. The figures are far above any
//! real node (an H200 node has 8 GPUs, a dozen disks and interfaces) and are documented in
//! ugro(7), LIMITS.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// GPUs in one sample (`gpu.devices`), and GPU scores in one score.
pub const MAX_GPUS: usize = 256;
/// Items in any other list of a record: disks, interfaces, InfiniBand ports, peers,
/// processes, XIDs, collector runs and errors, throttle reasons.
pub const MAX_ITEMS: usize = 4096;
/// Reasons in one score.
pub const MAX_REASONS: usize = 4096;

/// A list of at most `N` items, refused at item `N + 1` (no more of it is read).
struct AtMost<T, const N: usize>(&'static str, PhantomData<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for AtMost<T, N> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {N} {}", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        // JSON gives no length up front: start at eight (one allocation for a typical node).
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(8).clamp(8, 64));
        while let Some(x) = seq.next_element()? {
            if v.len() == N {
                return Err(de::Error::custom(format_args!(
                    "more than {N} {} in one record (the documented maximum; see ugro(7), LIMITS)",
                    self.0
                )));
            }
            v.push(x);
        }
        Ok(v)
    }
}

fn at_most<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
    d: D,
    what: &'static str,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(AtMost::<T, N>(what, PhantomData))
}

/// `gpu.devices` (and a score's `gpus`): at most [`MAX_GPUS`].
pub fn gpus<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    at_most::<D, T, MAX_GPUS>(d, "GPUs")
}

/// A score's `reasons`: at most [`MAX_REASONS`].
pub fn reasons<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    at_most::<D, T, MAX_REASONS>(d, "reasons")
}

/// Any other list: at most [`MAX_ITEMS`].
pub fn items<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    at_most::<D, T, MAX_ITEMS>(d, "list items")
}

/// [`items`] for an optional list (`null` or absent is `None`).
pub fn opt_items<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    struct Opt<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Opt<T> {
        type Value = Option<Vec<T>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "null or a list of at most {MAX_ITEMS} items")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            items(d).map(Some)
        }
    }
    d.deserialize_option(Opt(PhantomData))
}

/// [`items`] for a list a view may borrow (read from a line it is always owned).
pub fn cow_items<'de, 'a, D, T>(d: D) -> Result<Cow<'a, [T]>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Clone,
{
    items(d).map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct L {
        #[serde(deserialize_with = "gpus")]
        g: Vec<u32>,
        #[serde(default, deserialize_with = "opt_items")]
        o: Option<Vec<u32>>,
    }

    fn list(n: usize) -> String {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn a_list_at_its_maximum_is_read_and_one_more_is_refused() {
        let ok: L = serde_json::from_str(&format!(r#"{{"g":{}}}"#, list(MAX_GPUS))).unwrap();
        assert_eq!((ok.g.len(), ok.o), (MAX_GPUS, None));
        let e = serde_json::from_str::<L>(&format!(r#"{{"g":{}}}"#, list(MAX_GPUS + 1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 256 GPUs"), "{e}");
        let o: L = serde_json::from_str(r#"{"g":[],"o":null}"#).unwrap();
        assert_eq!(o.o, None);
        let e = serde_json::from_str::<L>(&format!(r#"{{"g":[],"o":{}}}"#, list(MAX_ITEMS + 1)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 4096"), "{e}");
    }
}
