//! Proof by history: every answer a deployment gave, checked for linearizability.
//!
//! The fault tests check the final state; that cannot see what clients saw on the way (a read
//! older than an acknowledged write, a 409 judged on stale state, a change seen and then unseen,
//! a 200 for a write that never happened). Here a client records every operation (its
//! invocation, then its answer, or none), and the whole history is checked against the domain's
//! model, as Jepsen's Knossos and Porcupine do. Pure: no I/O, no clock; `flyrtech-lab verify` and the
//! fault suite record, this module judges.
//!
//! # The model
//! Each segment's status, and each journey's own status, is a register whose writes follow the
//! transition table ([`flyrtech_core::status`]):
//! - 200 `changed: true`: the change was allowed from the state, which is now the target;
//! - 200 `changed: false`: the state already was the target;
//! - 409 invalid-transition: the change is not allowed from the state (nothing changed);
//! - 412 (an `If-Match` that named another version): nothing changed;
//! - a 503 `replicas-missing` (refused before it was sent), a 429, another 4xx: nothing changed;
//! - any other 503, a timeout or no answer: unknown; it took effect at some point after its
//!   invocation (applying the change if the state allowed it), or never;
//! - a GET observes every register of its journey at one instant.
//!
//! The registers are independent (a segment's status never changes another's), so the history is
//! first checked register by register (P-compositionality, Horn and Kroening): the Wing-Gong
//! search with memoisation of (linearized set, state) (Lowe), bounded by a budget that answers
//! [`Verdict::Undecided`] rather than run on ([`search`]); and the versions on their own: no two
//! acknowledged changes of a journey carry the same version (a lost update), and the version a
//! client sees never goes back in real-time order. That split is fast and names the register at
//! fault, but it reads a GET as one read per register, each placed at an instant of its own, so a
//! torn read (two segments from different moments, a version-1 answer showing two changes) passes
//! it. So each journey whose registers pass is then checked whole ([`snapshot`]): one state with
//! its version and every status, each read equal to it at one point, each answered version the
//! one the change made.
//!
//! # Layout
//! - [`model`]: a register's operations and what each answer says about the state.
//! - [`search`]: the bounded search for a linearization under a model (a register, a journey).
//! - [`snapshot`]: a journey as one state, so that a read is one snapshot.
//! - [`check`](mod@check): a whole history: split per register, the version checks, the shortest window of
//!   a violation, the verdict.
//! - [`jepsen`]: the history as JSON lines in Jepsen's shape (`process`, `type`, `f`, `value`,
//!   `time`), for other checkers.

pub mod check;
pub mod jepsen;
pub mod model;
pub mod search;
pub mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use flyrtech_core::JourneyVersion;
use flyrtech_core::ids::{JourneyId, SegmentId};
use flyrtech_core::status::{JourneyStatus, SegmentStatus};

pub use check::{Report, Violation, check};
pub use search::Verdict;

/// One operation a client made: what it asked, when, and what it was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client process that made it; a process that got no answer makes no further
    /// operation (Jepsen's rule), so its operations never overlap.
    pub process: u64,
    /// When it was invoked: nanoseconds on one monotonic clock.
    pub invoke: u64,
    /// When its answer came; `None` for no answer (then it is [`Answer::Unknown`]).
    pub complete: Option<u64>,
    /// What was asked.
    pub call: Call,
    /// What was answered.
    pub answer: Answer,
}

impl Operation {
    /// When it can no longer take effect: its completion for a definite answer, never for an
    /// unknown one (a write the server kept working on may land after the client gave up).
    pub fn deadline(&self) -> u64 {
        match (&self.answer, self.complete) {
            (Answer::Unknown, _) | (_, None) => u64::MAX,
            (_, Some(t)) => t,
        }
    }

    /// The journey it concerns.
    pub fn journey(&self) -> &JourneyId {
        self.call.journey()
    }
}

impl Call {
    /// The journey it concerns.
    pub fn journey(&self) -> &JourneyId {
        match self {
            Self::SetSegment { journey, .. } | Self::SetJourney { journey, .. } => journey,
            Self::Read { journey } => journey,
        }
    }
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "f")]
pub enum Call {
    /// `PUT /api/journeys/{journey}/segments/{segment}/status`.
    SetSegment {
        journey: JourneyId,
        segment: SegmentId,
        to: SegmentStatus,
        /// `If-Match`, when sent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_match: Option<JourneyVersion>,
    },
    /// `PUT /api/journeys/{journey}/status`.
    SetJourney {
        journey: JourneyId,
        to: JourneyStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_match: Option<JourneyVersion>,
    },
    /// `GET /api/journeys/{journey}`.
    Read { journey: JourneyId },
}

/// What a client was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Answer {
    /// 200 `changed: true`, the journey now at `version`.
    Changed { version: JourneyVersion },
    /// 200 `changed: false`: it already was the target.
    Unchanged { version: JourneyVersion },
    /// 409 invalid-transition: the table forbids the change from the state.
    Refused,
    /// 412: `If-Match` named another version than `current`; nothing changed.
    PreconditionFailed { current: JourneyVersion },
    /// 200 for a read: the journey as it was.
    Observed(Snapshot),
    /// A definite refusal that changed nothing and says nothing of the state: a 409 from a
    /// strategy that gave up under contention, a 429, a 4xx.
    Failed { status: u16 },
    /// A 503 (but `replicas-missing`), a timeout, or no answer at all: it may have taken
    /// effect, or not.
    Unknown,
}

impl Answer {
    /// The journey version the answer names, if it names one.
    pub fn version(&self) -> Option<JourneyVersion> {
        match self {
            Self::Changed { version } | Self::Unchanged { version } => Some(*version),
            Self::PreconditionFailed { current } => Some(*current),
            Self::Observed(seen) => Some(seen.version),
            Self::Refused | Self::Failed { .. } | Self::Unknown => None,
        }
    }
}

/// A journey as a read saw it: what the model needs of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: JourneyVersion,
    pub status: JourneyStatus,
    pub segments: BTreeMap<SegmentId, SegmentStatus>,
}

/// What a journey was when the history began (the checker's initial state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initial {
    pub journey: JourneyId,
    pub snapshot: Snapshot,
}
