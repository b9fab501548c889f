//! Segment and journey statuses and the one transition table that governs them.
//!
//! The table lists, for each status, the statuses it may change to. Every other rule is derived
//! from it: whether a status is terminal, whether a change is allowed, and the set of statuses a
//! target may be reached from ([`Status::predecessors`]), which the in-Redis strategies receive as
//! script arguments so that Lua never holds a second, hand-copied table.
//!
//! Setting the status something already has is always accepted and changes nothing, terminal
//! states included. The table is documented in `docs/domain.md`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::input::InvalidInput;

/// The result of checking a status change against the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status already is the target: accepted, nothing changes, no version bump.
    NoOp,
    /// An allowed change.
    Change,
}

/// Behaviour shared by [`SegmentStatus`] and [`JourneyStatus`], all derived from
/// [`Status::TRANSITIONS`].
pub trait Status: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// What the status belongs to, for error messages (`segment status`).
    const KIND: &'static str;
    /// Every status, in declaration order.
    const ALL: &'static [Self];
    /// For each status, the statuses it may change to. A status with none is terminal.
    const TRANSITIONS: &'static [(Self, &'static [Self])];

    /// The canonical name, as it appears in JSON (`InProgress`).
    fn as_str(self) -> &'static str;

    /// The statuses this one may change to.
    fn successors(self) -> &'static [Self] {
        Self::TRANSITIONS
            .iter()
            .find(|(from, _)| *from == self)
            .map_or(&[], |(_, to)| to)
    }

    /// A terminal status accepts no further change.
    fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }

    /// Checks `self -> to` against the table.
    ///
    /// # Errors
    /// Returns `Err(())` when the table does not allow the change; the caller knows what is being
    /// changed and builds the typed error.
    #[allow(clippy::result_unit_err)]
    fn transition_to(self, to: Self) -> Result<Transition, ()> {
        if self == to {
            Ok(Transition::NoOp)
        } else if self.successors().contains(&to) {
            Ok(Transition::Change)
        } else {
            Err(())
        }
    }

    /// The statuses from which `self` may be reached (excluding `self`).
    fn predecessors(self) -> impl Iterator<Item = Self> {
        Self::ALL
            .iter()
            .copied()
            .filter(move |from| from.successors().contains(&self))
    }

    /// Parses a status name case-insensitively (`departed`, `Departed`, `DEPARTED`).
    ///
    /// # Errors
    /// [`InvalidInput`] naming the valid statuses when `raw` is none of them.
    fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.as_str().eq_ignore_ascii_case(raw.trim()))
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                InvalidInput::new(
                    Self::KIND,
                    format!(
                        "unknown status {raw:?}; expected one of {}",
                        valid.join(", ")
                    ),
                )
            })
    }
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, [$($variant:ident),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[non_exhaustive]
        pub enum $name { $(#[allow(missing_docs)] $variant),+ }

        impl $name {
            const VARIANTS: &'static [Self] = &[$(Self::$variant),+];
            fn name(self) -> &'static str {
                match self { $(Self::$variant => stringify!($variant)),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <Self as Status>::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <Self as Status>::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

status_enum!(
    /// The operational status of one flight segment.
    SegmentStatus,
    "segment status",
    [Scheduled, Delayed, Boarding, Departed, Arrived, Cancelled]
);

status_enum!(
    /// The commercial status of a whole journey.
    JourneyStatus,
    "journey status",
    [Pending, Confirmed, InProgress, Completed, Cancelled]
);

impl Status for SegmentStatus {
    const KIND: &'static str = "segment status";
    const ALL: &'static [Self] = Self::VARIANTS;
    const TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use SegmentStatus::*;
        &[
            (Scheduled, &[Delayed, Boarding, Departed, Cancelled]),
            (Delayed, &[Scheduled, Boarding, Departed, Cancelled]),
            (Boarding, &[Delayed, Departed, Cancelled]),
            (Departed, &[Arrived]),
            (Arrived, &[]),
            (Cancelled, &[]),
        ]
    };
    fn as_str(self) -> &'static str {
        self.name()
    }
}

impl Status for JourneyStatus {
    const KIND: &'static str = "journey status";
    const ALL: &'static [Self] = Self::VARIANTS;
    const TRANSITIONS: &'static [(Self, &'static [Self])] = {
        use JourneyStatus::*;
        &[
            (Pending, &[Confirmed, Cancelled]),
            (Confirmed, &[InProgress, Cancelled]),
            (InProgress, &[Completed, Cancelled]),
            (Completed, &[]),
            (Cancelled, &[]),
        ]
    };
    fn as_str(self) -> &'static str {
        self.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("departed", SegmentStatus::Departed)]
    #[case("DEPARTED", SegmentStatus::Departed)]
    #[case(" Boarding ", SegmentStatus::Boarding)]
    fn parses_case_insensitively(#[case] raw: &str, #[case] expected: SegmentStatus) {
        assert_eq!(raw.parse::<SegmentStatus>(), Ok(expected));
    }

    #[test]
    fn unknown_status_names_the_valid_ones() {
        let err = "Landed"
            .parse::<SegmentStatus>()
            .expect_err("Landed is not a status");
        assert!(err.reason.contains("Scheduled, Delayed"), "{err}");
        assert!("inprogres".parse::<JourneyStatus>().is_err());
    }

    #[test]
    fn every_status_has_exactly_one_row() {
        fn check<S: Status>() {
            for s in S::ALL {
                let rows = S::TRANSITIONS.iter().filter(|(f, _)| f == s).count();
                assert_eq!(rows, 1, "{s:?}");
            }
        }
        check::<SegmentStatus>();
        check::<JourneyStatus>();
    }

    #[rstest]
    #[case(SegmentStatus::Arrived)]
    #[case(SegmentStatus::Cancelled)]
    fn terminal_segment_statuses_accept_nothing_but_themselves(#[case] terminal: SegmentStatus) {
        assert!(terminal.is_terminal());
        for &to in SegmentStatus::ALL {
            let expected = if to == terminal {
                Ok(Transition::NoOp)
            } else {
                Err(())
            };
            assert_eq!(terminal.transition_to(to), expected, "{terminal} -> {to}");
        }
    }

    #[test]
    fn terminal_journey_statuses() {
        let terminal: Vec<_> = JourneyStatus::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [&JourneyStatus::Completed, &JourneyStatus::Cancelled]
        );
    }

    #[test]
    fn predecessors_invert_the_table() {
        for &to in SegmentStatus::ALL {
            for &from in SegmentStatus::ALL {
                let listed = to.predecessors().any(|p| p == from);
                let allowed = from.transition_to(to) == Ok(Transition::Change);
                assert_eq!(listed, allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn serde_uses_canonical_names() {
        let json = serde_json::to_string(&JourneyStatus::InProgress).expect("serialize");
        assert_eq!(json, "\"InProgress\"");
        let back: JourneyStatus = serde_json::from_str("\"inprogress\"").expect("deserialize");
        assert_eq!(back, JourneyStatus::InProgress);
    }
}
