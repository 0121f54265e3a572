//! Deserialization of `type`-tagged component tables that keeps the path of inner errors.
//!
//! serde's internally tagged enums buffer the table and lose where an inner error happened
//! (`processors.batch` instead of `processors.batch.timeout`). Here the inner struct is decoded
//! with its own path tracking and the inner path travels in the error message to `lib.rs`.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

/// Marks an error message that carries an inner path (`\u{1}`-separated, indexes as `#N`).
pub(crate) const PATH_MARK: char = '\u{0}';

/// Decodes a table whose `type` key picks the variant; `pick` maps the type to a decoder.
pub(crate) fn deserialize_tagged<'de, D, T>(
    d: D,
    kinds: &[&str],
    pick: impl FnOnce(
        &str,
        toml::Value,
    ) -> Option<Result<T, serde_path_to_error::Error<toml::de::Error>>>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let mut table = toml::Table::deserialize(d)?;
    let expected = kinds
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let kind = match table.remove("type") {
        Some(toml::Value::String(s)) => s,
        Some(_) => {
            return Err(D::Error::custom(format!(
                "{PATH_MARK}type{PATH_MARK}`type` must be a string, one of {expected}"
            )))
        }
        None => {
            return Err(D::Error::custom(format!(
                "missing `type`; expected one of {expected}"
            )))
        }
    };
    match pick(&kind, toml::Value::Table(table)) {
        None => Err(D::Error::custom(format!(
            "{PATH_MARK}type{PATH_MARK}unknown type `{kind}`, expected one of {expected}"
        ))),
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => {
            let path = e
                .path()
                .iter()
                .filter_map(|s| match s {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => Some(format!("#{index}")),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\u{1}");
            let inner = e.into_inner();
            Err(D::Error::custom(format!(
                "{PATH_MARK}{path}{PATH_MARK}{}",
                inner.message()
            )))
        }
    }
}

/// Decodes one variant's settings with path tracking.
pub(crate) fn inner<T: DeserializeOwned>(
    v: toml::Value,
) -> Result<T, serde_path_to_error::Error<toml::de::Error>> {
    serde_path_to_error::deserialize(v)
}

/// Implements `Deserialize` for a component enum from `"type" => Variant(Config)` pairs.
macro_rules! tagged_enum {
    ($enum:ident { $($kind:literal => $variant:ident),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::tagged::deserialize_tagged(d, &[$($kind),+], |kind, v| match kind {
                    $($kind => Some($crate::tagged::inner(v).map($enum::$variant)),)+
                    _ => None,
                })
            }
        }
    };
}
pub(crate) use tagged_enum;
