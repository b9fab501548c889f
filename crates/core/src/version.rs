//! The version of a journey: how many changes it has had. Every layout stores it, every answer
//! carries it, and `If-Match` compares it; it depends on nothing else in the domain.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many changes have been applied to a journey since it was created. Grows by exactly one
/// with every applied change; a journey as created is at version 0.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct JourneyVersion(u64);

impl JourneyVersion {
    /// The version of a journey nobody has changed yet.
    pub const INITIAL: Self = Self(0);

    /// Wraps a raw version number.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after one more change.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// Whether this is [`JourneyVersion::INITIAL`].
    pub fn is_initial(&self) -> bool {
        *self == Self::INITIAL
    }
}

impl fmt::Display for JourneyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_from_zero_and_print_as_numbers() {
        assert!(JourneyVersion::INITIAL.is_initial());
        assert!(!JourneyVersion::INITIAL.next().is_initial());
        assert_eq!(JourneyVersion::new(7).to_string(), "7");
        assert_eq!(JourneyVersion::new(7).next().get(), 8);
    }
}
