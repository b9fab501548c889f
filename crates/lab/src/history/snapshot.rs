//! A journey checked whole: its version, its status and every segment's status as one state, so
//! that a GET is judged as the one snapshot it is.
//!
//! Checked register by register, a read is split into one read per register, and each may be
//! placed at its own instant: a read that saw two segments from different moments (a torn read),
//! or a version-1 answer showing two changes, passes. Here a read must equal the whole state at
//! one point, a change must be answered with the version it made (the one before plus one), a
//! no-op with the version it found, and a 412 with the version it was refused at. The search is
//! the same as the registers' ([`super::search`]), over this model; [`super::check()`] runs it for
//! each journey whose registers were explained one by one (a register no order explains is
//! already a violation, found faster and with a shorter window).

use super::model::{Interval, window_ends};
use super::search::{Model, Verdict, search};
use super::{Answer, Call, Initial, Operation, Snapshot};
use flyrtech_core::ids::SegmentId;
use flyrtech_core::status::{JourneyStatus, SegmentStatus, Status, Transition};

/// A journey's whole state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    pub version: u64,
    pub status: JourneyStatus,
    /// In the order of [`JourneyModel::segments`].
    pub segments: Vec<SegmentStatus>,
}

/// A status change of one register of the journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The journey's own status.
    Journey(JourneyStatus),
    /// A segment's status (by its index in [`JourneyModel::segments`]).
    Segment(usize, SegmentStatus),
}

/// What a write was answered, with the version an answer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 `changed: true`, at this version.
    Changed(u64),
    /// 200 `changed: false`: the state already was the target, at this version.
    Unchanged(u64),
    /// 409 invalid-transition.
    Refused,
    /// No definite answer.
    Unknown,
}

/// One operation on the journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JourneyOp {
    /// A status change and its answer.
    Write { change: Change, outcome: Outcome },
    /// A read that saw the snapshot of this index ([`JourneyModel::reads`]).
    Read(usize),
    /// A 412: at its linearization point the journey was at this version, and nothing changed.
    VersionWas(u64),
}

/// The sequential model of one journey.
#[derive(Debug, Clone)]
pub struct JourneyModel {
    /// The segments, in a fixed order.
    pub segments: Vec<SegmentId>,
    /// What each read saw.
    pub reads: Vec<State>,
}

impl JourneyModel {
    fn segment(&self, id: &SegmentId) -> Option<usize> {
        self.segments.iter().position(|s| s == id)
    }

    /// The state `snapshot` shows, when it names exactly this journey's segments.
    pub fn state(&self, snapshot: &Snapshot) -> Option<State> {
        if snapshot.segments.len() != self.segments.len() {
            return None;
        }
        let segments = self
            .segments
            .iter()
            .map(|id| snapshot.segments.get(id).copied())
            .collect::<Option<Vec<_>>>()?;
        Some(State {
            version: snapshot.version.get(),
            status: snapshot.status,
            segments,
        })
    }
}

/// The transition from `from` to `to`, and the register after it.
fn transition<S: Status>(from: S, to: S) -> Result<Transition, ()> {
    from.transition_to(to)
}

impl Model for JourneyModel {
    type State = State;
    type Op = JourneyOp;

    fn step(&self, op: &JourneyOp, state: &State) -> Option<State> {
        match *op {
            JourneyOp::Read(i) => (self.reads.get(i)? == state).then(|| state.clone()),
            JourneyOp::VersionWas(v) => (state.version == v).then(|| state.clone()),
            JourneyOp::Write { change, outcome } => {
                let moved = match change {
                    Change::Journey(to) => transition(state.status, to),
                    Change::Segment(i, to) => transition(*state.segments.get(i)?, to),
                };
                let changed = || {
                    let mut next = state.clone();
                    next.version += 1;
                    match change {
                        Change::Journey(to) => next.status = to,
                        Change::Segment(i, to) => next.segments[i] = to,
                    }
                    next
                };
                match (moved, outcome) {
                    (Ok(Transition::Change), Outcome::Changed(v)) if v == state.version + 1 => {
                        Some(changed())
                    }
                    (Ok(Transition::Change), Outcome::Unknown) => Some(changed()),
                    (Ok(Transition::NoOp), Outcome::Unchanged(v)) if v == state.version => {
                        Some(state.clone())
                    }
                    (Ok(Transition::NoOp), Outcome::Unknown)
                    | (Err(()), Outcome::Refused | Outcome::Unknown) => Some(state.clone()),
                    _ => None,
                }
            }
        }
    }

    fn unknown_class(&self, op: &JourneyOp) -> Option<usize> {
        let JourneyOp::Write {
            change,
            outcome: Outcome::Unknown,
        } = op
        else {
            return None;
        };
        let journey = JourneyStatus::ALL.len();
        match change {
            Change::Journey(to) => JourneyStatus::ALL.iter().position(|s| s == to),
            Change::Segment(i, to) => SegmentStatus::ALL
                .iter()
                .position(|s| s == to)
                .map(|p| journey + i * SegmentStatus::ALL.len() + p),
        }
    }

    fn classes(&self) -> usize {
        JourneyStatus::ALL.len() + self.segments.len() * SegmentStatus::ALL.len()
    }
}

/// One journey's history in this model: the model, its initial state and its operations (sorted
/// by invocation; `source` is the index in `history`). Operations that say nothing of the state
/// (a 429, a 4xx, a read without an answer) are left out, as are those naming a segment the
/// journey does not have.
pub fn journey_history(
    initial: &Initial,
    history: &[Operation],
) -> Option<(JourneyModel, State, Vec<Interval<JourneyOp>>)> {
    let mut model = JourneyModel {
        segments: initial.snapshot.segments.keys().cloned().collect(),
        reads: Vec::new(),
    };
    let start = model.state(&initial.snapshot)?;
    let mut ops = Vec::new();
    for (source, op) in history.iter().enumerate() {
        if op.journey() != &initial.journey {
            continue;
        }
        let journey_op = match (&op.call, &op.answer) {
            (Call::Read { .. }, Answer::Observed(seen)) => {
                let Some(state) = model.state(seen) else {
                    // A read that shows other segments than the journey has: no state explains it.
                    model.reads.push(State {
                        version: u64::MAX,
                        status: seen.status,
                        segments: Vec::new(),
                    });
                    ops.push(timed(op, source, JourneyOp::Read(model.reads.len() - 1)));
                    continue;
                };
                model.reads.push(state);
                JourneyOp::Read(model.reads.len() - 1)
            }
            (_, Answer::PreconditionFailed { current }) => JourneyOp::VersionWas(current.get()),
            (Call::SetSegment { segment, to, .. }, answer) => {
                let Some(i) = model.segment(segment) else {
                    continue;
                };
                let Some(outcome) = outcome(answer) else {
                    continue;
                };
                JourneyOp::Write {
                    change: Change::Segment(i, *to),
                    outcome,
                }
            }
            (Call::SetJourney { to, .. }, answer) => {
                let Some(outcome) = outcome(answer) else {
                    continue;
                };
                JourneyOp::Write {
                    change: Change::Journey(*to),
                    outcome,
                }
            }
            (Call::Read { .. }, _) => continue,
        };
        ops.push(timed(op, source, journey_op));
    }
    ops.sort_by_key(|o| (o.invoke, o.source));
    Some((model, start, ops))
}

fn timed(op: &Operation, source: usize, journey_op: JourneyOp) -> Interval<JourneyOp> {
    Interval {
        invoke: op.invoke,
        deadline: op.deadline(),
        op: journey_op,
        source,
    }
}

fn outcome(answer: &Answer) -> Option<Outcome> {
    match answer {
        Answer::Changed { version } => Some(Outcome::Changed(version.get())),
        Answer::Unchanged { version } => Some(Outcome::Unchanged(version.get())),
        Answer::Refused => Some(Outcome::Refused),
        Answer::Unknown => Some(Outcome::Unknown),
        Answer::PreconditionFailed { .. } | Answer::Failed { .. } | Answer::Observed(_) => None,
    }
}

/// Checks one journey's operations as one model; on a violation, a window of it (source
/// indices): the shortest prefix no order explains, from the latest start at which it still
/// fails from every state the journey was seen in (falling back to the whole prefix).
pub fn check_journey(
    model: &JourneyModel,
    start: &State,
    ops: &[Interval<JourneyOp>],
    budget: u64,
) -> (Verdict, Option<Vec<usize>>) {
    let mut left = budget;
    let verdict = search(model, ops, start.clone(), &mut left);
    if verdict != Verdict::NotLinearizable {
        return (verdict, None);
    }
    let fails = |window: &[Interval<JourneyOp>], from: &State| {
        let mut left = budget;
        search(model, window, from.clone(), &mut left) == Verdict::NotLinearizable
    };
    let ends = window_ends(ops.iter().map(|o| o.deadline));
    let prefix = |end: u64| -> Vec<Interval<JourneyOp>> {
        ops.iter().filter(|o| o.invoke <= end).copied().collect()
    };
    // The first end at which the prefix fails; the last (everything) is known to.
    let lo = ends[..ends.len() - 1].partition_point(|&e| !fails(&prefix(e), start));
    let end = ends[lo];
    let window = prefix(end);
    let mut seen: Vec<&State> = model.reads.iter().collect();
    seen.push(start);
    let mut starts: Vec<u64> = window.iter().map(|o| o.invoke).collect();
    starts.dedup();
    let from = starts.iter().rev().take(32).find(|s| {
        let later: Vec<Interval<JourneyOp>> = window
            .iter()
            .filter(|o| o.deadline >= **s)
            .copied()
            .collect();
        seen.iter().all(|state| fails(&later, state))
    });
    let from = from.copied().unwrap_or(0);
    let sources = window
        .iter()
        .filter(|o| o.deadline >= from)
        .map(|o| o.source)
        .collect();
    (Verdict::NotLinearizable, Some(sources))
}
