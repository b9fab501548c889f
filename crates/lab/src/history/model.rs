//! One register's operations and what each answer says about the state it was applied to.

use flyrtech_core::status::{Status, Transition};

/// What one operation did to, or saw of, one register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp<S> {
    /// A status change to `to`, answered `outcome`.
    Write { to: S, outcome: WriteOutcome },
    /// A read that saw `saw`.
    Read { saw: S },
}

/// What a write was answered, as the model reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// It changed the state (200 `changed: true`).
    Changed,
    /// The state already was the target (200 `changed: false`).
    Unchanged,
    /// The table forbids it from the state (409).
    Refused,
    /// No definite answer: applied as the state allowed, or never.
    Unknown,
}

impl<S: Status> RegisterOp<S> {
    /// Applies the operation to `state` at its linearization point: the state after it, or
    /// `None` when its answer cannot have come from `state`.
    pub fn step(self, state: S) -> Option<S> {
        match self {
            Self::Read { saw } => (saw == state).then_some(state),
            Self::Write { to, outcome } => match (state.transition_to(to), outcome) {
                (Ok(Transition::Change), WriteOutcome::Changed | WriteOutcome::Unknown) => Some(to),
                (Ok(Transition::NoOp), WriteOutcome::Unchanged | WriteOutcome::Unknown)
                | (Err(()), WriteOutcome::Refused | WriteOutcome::Unknown) => Some(state),
                _ => None,
            },
        }
    }
}

/// One operation of a model with its interval: invoked at `invoke`, no later than `deadline`
/// (`u64::MAX` for an unknown write). `source` is its index in the whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval<O> {
    pub invoke: u64,
    pub deadline: u64,
    pub op: O,
    pub source: usize,
}

/// One register operation with its interval.
pub type Timed<S> = Interval<RegisterOp<S>>;

/// Where the search for a violation's shortest window may end: every distinct deadline in
/// order, then the end of the history (`u64::MAX`, also the deadline of an answer never given).
pub fn window_ends(deadlines: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut ends: Vec<u64> = deadlines.filter(|d| *d != u64::MAX).collect();
    ends.push(u64::MAX);
    ends.sort_unstable();
    ends.dedup();
    ends
}

#[cfg(test)]
mod tests {
    use super::*;
    use flyrtech_core::status::SegmentStatus::*;

    #[test]
    fn each_answer_constrains_the_state() {
        let changed = RegisterOp::Write {
            to: Delayed,
            outcome: WriteOutcome::Changed,
        };
        assert_eq!(changed.step(Scheduled), Some(Delayed));
        assert_eq!(changed.step(Delayed), None);
        assert_eq!(changed.step(Arrived), None);
        let unchanged = RegisterOp::Write {
            to: Delayed,
            outcome: WriteOutcome::Unchanged,
        };
        assert_eq!(unchanged.step(Delayed), Some(Delayed));
        assert_eq!(unchanged.step(Scheduled), None);
        let refused = RegisterOp::Write {
            to: Delayed,
            outcome: WriteOutcome::Refused,
        };
        assert_eq!(refused.step(Arrived), Some(Arrived));
        assert_eq!(refused.step(Scheduled), None);
        let unknown = RegisterOp::Write {
            to: Delayed,
            outcome: WriteOutcome::Unknown,
        };
        assert_eq!(unknown.step(Scheduled), Some(Delayed));
        assert_eq!(unknown.step(Arrived), Some(Arrived));
        assert_eq!(
            RegisterOp::Read { saw: Boarding }.step(Boarding),
            Some(Boarding)
        );
        assert_eq!(RegisterOp::Read { saw: Boarding }.step(Delayed), None);
    }
}
