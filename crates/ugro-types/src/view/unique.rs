//! One rule for repeated members, in every tool: a record that names a top-level member twice
//! (`{"score":…,"score":…}`, two `node`s) is rejected. JSON leaves the meaning of a repeated
//! name open and parsers disagree (serde keeps the last or refuses, jq keeps the last), so a
//! record whose stages could each read a different value is refused where it enters.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::Text;

/// Wraps a JSON object's members so that a repeated name is an error. Names are compared as
/// decoded (`"k\u0069nd"` is `kind`); a record has a dozen members, so a list beats a set.
pub(crate) struct Unique<'de, A> {
    inner: A,
    seen: Vec<Text<'de>>,
}

impl<'de, A: MapAccess<'de>> Unique<'de, A> {
    pub(crate) fn new(inner: A) -> Self {
        Unique {
            inner,
            seen: Vec::with_capacity(16),
        }
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Unique<'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let Some(name) = self.inner.next_key::<Text<'de>>()? else {
            return Ok(None);
        };
        if self.seen.iter().any(|s| *s == *name) {
            return Err(de::Error::custom(format_args!(
                "member {:?} appears twice (a record names each member once)",
                &*name
            )));
        }
        let key = match &name.0 {
            std::borrow::Cow::Borrowed(b) => {
                seed.deserialize(de::value::BorrowedStrDeserializer::<A::Error>::new(b))
            }
            std::borrow::Cow::Owned(o) => {
                seed.deserialize(de::value::StrDeserializer::<A::Error>::new(o))
            }
        }?;
        self.seen.push(name);
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A deserializer for one JSON object whose top-level members must be unique: hands the
/// visitor a [`Unique`] map whatever the visitor asked for (a derived struct asks for a
/// struct).
pub(crate) struct UniqueKeys<D>(pub(crate) D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for UniqueKeys<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Wrap(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct Wrap<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(Unique::new(map))
    }
}
