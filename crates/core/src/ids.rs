//! Validated identifiers.
//!
//! Ids end up inside Redis key names (`journey:{P}:JRN-001`), so they are restricted to characters
//! that cannot break a key: no braces (which would change the cluster hash tag), no colons, no
//! spaces. Validation happens once, at the edge; everything inside the service holds a valid id.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::input::InvalidInput;

/// Longest id accepted. Ids are keys, not documents.
pub const MAX_ID_LEN: usize = 64;

fn validate_id(kind: &'static str, raw: &str) -> Result<(), InvalidInput> {
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(InvalidInput::new(
            kind,
            format!("must be 1 to {MAX_ID_LEN} characters long"),
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(InvalidInput::new(
            kind,
            format!("contains {bad:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"),
        ));
    }
    // `.` and `..` are path segments with a meaning of their own: `/api/journeys/..` resolves to
    // `/api/` (RFC 3986, 5.2.4), so a journey so named could never be addressed.
    if raw.bytes().all(|b| b == b'.') && raw.len() <= 2 {
        return Err(InvalidInput::new(
            kind,
            "cannot be \".\" or \"..\", which URLs resolve as path steps",
        ));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `raw` as an id.
            ///
            /// # Errors
            /// [`InvalidInput`] when `raw` is empty, longer than [`MAX_ID_LEN`], or contains a
            /// character other than ASCII letters, digits, `-`, `_` and `.`.
            pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
                let raw = raw.into();
                validate_id($kind, &raw)?;
                Ok(Self(raw))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// Identifies a journey, e.g. `JRN-001`.
    JourneyId,
    "journey id"
);
id_type!(
    /// Identifies a segment within its journey, e.g. `SEG-001-1`.
    SegmentId,
    "segment id"
);

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("JRN-001")]
    #[case("a")]
    #[case("seg_1.2")]
    #[case("...")]
    #[case(".a")]
    fn accepts_key_safe_ids(#[case] raw: &str) {
        assert_eq!(
            JourneyId::parse(raw).map(|id| id.to_string()),
            Ok(raw.to_owned())
        );
    }

    #[rstest]
    #[case("")]
    #[case("JRN{1}")]
    #[case("a:b")]
    #[case("has space")]
    #[case("é")]
    #[case(".")]
    #[case("..")]
    fn rejects_ids_that_could_break_a_key(#[case] raw: &str) {
        assert!(SegmentId::parse(raw).is_err(), "{raw:?} was accepted");
    }

    #[test]
    fn rejects_overlong_ids() {
        assert!(JourneyId::parse("x".repeat(MAX_ID_LEN)).is_ok());
        assert!(JourneyId::parse("x".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
