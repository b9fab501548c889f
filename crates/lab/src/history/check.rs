//! A whole history: split into one register per segment and per journey status, each searched
//! on its own budget ([`super::search`]); the journey versions checked across registers; and for
//! every register no order explains, the shortest window of its history that is unexplainable by
//! itself, whatever state it started from.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::Serialize;

use super::model::{Interval, RegisterOp, Timed, WriteOutcome, window_ends};
use super::search::{Verdict, linearize};
use super::{Answer, Call, Initial, Operation};
use flyrtech_core::JourneyVersion;
use flyrtech_core::Target;
use flyrtech_core::ids::JourneyId;
use flyrtech_core::status::{JourneyStatus, SegmentStatus, Status};

/// What the check of a whole history found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The verdict: not linearizable when any violation was found, else undecided when any
    /// register's search ran out of budget, else linearizable.
    pub verdict: Verdict,
    /// Operations in the history.
    pub operations: usize,
    /// Registers (segment or journey statuses) checked, by verdict.
    pub registers: Counts,
    /// Journeys checked whole (every read one snapshot: [`super::snapshot`]), by verdict; a
    /// journey with a register no order explains is not checked whole again.
    pub journeys: Counts,
    /// What no order explains.
    pub violations: Vec<Violation>,
}

/// Registers by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub linearizable: usize,
    pub not_linearizable: usize,
    pub undecided: usize,
}

impl Counts {
    /// Registers checked.
    pub fn total(&self) -> usize {
        self.linearizable + self.not_linearizable + self.undecided
    }

    /// The share of registers the search decided (1 when there were none).
    pub fn decided(&self) -> f64 {
        match self.total() {
            0 => 1.0,
            #[allow(clippy::cast_precision_loss)]
            n => (n - self.undecided) as f64 / n as f64,
        }
    }
}

impl Report {
    /// The share of the checks (registers, then journeys whole) the search decided within its
    /// budget (1 when there were none).
    pub fn decided(&self) -> f64 {
        let total = self.registers.total() + self.journeys.total();
        match total {
            0 => 1.0,
            #[allow(clippy::cast_precision_loss)]
            n => (n - self.registers.undecided - self.journeys.undecided) as f64 / n as f64,
        }
    }
}

/// One thing no order explains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub journey: JourneyId,
    /// `segment SEG-1`, `journey`, or `version`.
    pub register: String,
    /// What is wrong, in a sentence.
    pub reason: String,
    /// The operations (indices into the history) of the shortest window that shows it.
    pub window: Vec<usize>,
    /// For a register: the states it can have been in when the window began, given every
    /// operation that completed before (empty for a version or snapshot violation).
    pub states_before: Vec<String>,
}

/// Checks `history` from the journeys' states in `initial`, spending at most `budget` search
/// steps on each register. Operations on journeys not in `initial` are not checked.
pub fn check(history: &[Operation], initial: &[Initial], budget: u64) -> Report {
    let starts: HashMap<&JourneyId, &Initial> = initial.iter().map(|i| (&i.journey, i)).collect();
    let mut segments: BTreeMap<(JourneyId, flyrtech_core::SegmentId), Vec<Timed<SegmentStatus>>> =
        BTreeMap::new();
    let mut journeys: BTreeMap<JourneyId, Vec<Timed<JourneyStatus>>> = BTreeMap::new();
    for (source, op) in history.iter().enumerate() {
        if !starts.contains_key(op.journey()) {
            continue;
        }
        match (&op.call, &op.answer) {
            (Call::Read { journey }, Answer::Observed(seen)) => {
                for (segment, status) in &seen.segments {
                    segments
                        .entry((journey.clone(), segment.clone()))
                        .or_default()
                        .push(timed(RegisterOp::Read { saw: *status }, op, source));
                }
                journeys.entry(journey.clone()).or_default().push(timed(
                    RegisterOp::Read { saw: seen.status },
                    op,
                    source,
                ));
            }
            (
                Call::SetSegment {
                    journey,
                    segment,
                    to,
                    ..
                },
                answer,
            ) => {
                if let Some(outcome) = write_outcome(answer) {
                    segments
                        .entry((journey.clone(), segment.clone()))
                        .or_default()
                        .push(timed(RegisterOp::Write { to: *to, outcome }, op, source));
                }
            }
            (Call::SetJourney { journey, to, .. }, answer) => {
                if let Some(outcome) = write_outcome(answer) {
                    journeys.entry(journey.clone()).or_default().push(timed(
                        RegisterOp::Write { to: *to, outcome },
                        op,
                        source,
                    ));
                }
            }
            // A read with no answer constrains nothing.
            (Call::Read { .. }, _) => {}
        }
    }
    let mut counts = Counts::default();
    let mut violations = Vec::new();
    for ((journey, segment), ops) in segments {
        let Some(start) = starts[&journey].snapshot.segments.get(&segment) else {
            continue;
        };
        let target = Target::Segment(segment);
        violations.extend(register(
            ops,
            *start,
            budget,
            &mut counts,
            |window, states_before| Violation {
                journey: journey.clone(),
                register: target.to_string(),
                reason: "no order of these operations explains their answers".into(),
                window,
                states_before,
            },
        ));
    }
    for (journey, ops) in journeys {
        let start = starts[&journey].snapshot.status;
        violations.extend(register(
            ops,
            start,
            budget,
            &mut counts,
            |window, states_before| Violation {
                journey: journey.clone(),
                register: Target::Journey.to_string(),
                reason: "no order of these operations explains their answers".into(),
                window,
                states_before,
            },
        ));
    }
    violations.extend(versions(history, &starts));
    // Each journey whose registers were each explained, checked whole: a read is one snapshot.
    let mut whole = Counts::default();
    let broken: std::collections::BTreeSet<JourneyId> =
        violations.iter().map(|v| v.journey.clone()).collect();
    for start in initial {
        if broken.contains(&start.journey) {
            continue;
        }
        let Some((model, state, ops)) = super::snapshot::journey_history(start, history) else {
            continue;
        };
        match super::snapshot::check_journey(&model, &state, &ops, budget) {
            (Verdict::Linearizable, _) => whole.linearizable += 1,
            (Verdict::Undecided, _) => whole.undecided += 1,
            (Verdict::NotLinearizable, window) => {
                whole.not_linearizable += 1;
                violations.push(Violation {
                    journey: start.journey.clone(),
                    register: "snapshot".into(),
                    reason: "each register is explained alone, but no one order of the journey's \
                             operations explains every read as one snapshot and every version \
                             answered (a torn read)"
                        .into(),
                    window: window.unwrap_or_default(),
                    states_before: Vec::new(),
                });
            }
        }
    }
    let verdict = if !violations.is_empty() {
        Verdict::NotLinearizable
    } else if counts.undecided > 0 || whole.undecided > 0 {
        Verdict::Undecided
    } else {
        Verdict::Linearizable
    };
    Report {
        verdict,
        operations: history.len(),
        registers: counts,
        journeys: whole,
        violations,
    }
}

fn timed<S>(op: RegisterOp<S>, at: &Operation, source: usize) -> Timed<S> {
    Timed {
        invoke: at.invoke,
        deadline: at.deadline(),
        op,
        source,
    }
}

fn write_outcome(answer: &Answer) -> Option<WriteOutcome> {
    match answer {
        Answer::Changed { .. } => Some(WriteOutcome::Changed),
        Answer::Unchanged { .. } => Some(WriteOutcome::Unchanged),
        Answer::Refused => Some(WriteOutcome::Refused),
        Answer::Unknown => Some(WriteOutcome::Unknown),
        // 412 and other definite failures: nothing changed (a 412's version is checked with
        // the others).
        Answer::PreconditionFailed { .. } | Answer::Failed { .. } | Answer::Observed(_) => None,
    }
}

/// Checks one register; a violation (made by `violation` from its window) when no order
/// explains it.
fn register<S: Status + Hash>(
    mut ops: Vec<Timed<S>>,
    initial: S,
    budget: u64,
    counts: &mut Counts,
    violation: impl FnOnce(Vec<usize>, Vec<String>) -> Violation,
) -> Option<Violation> {
    ops.sort_by_key(|o| (o.invoke, o.source));
    let mut left = budget;
    match linearize(&ops, initial, &mut left) {
        Verdict::Linearizable => {
            counts.linearizable += 1;
            None
        }
        Verdict::Undecided => {
            counts.undecided += 1;
            None
        }
        Verdict::NotLinearizable => {
            counts.not_linearizable += 1;
            let window = shortest_window(&ops, initial, budget);
            let before = states_before(&ops, &window, initial, budget);
            Some(violation(window, before))
        }
    }
}

/// The shortest window of `ops` (sorted by invocation) that no order explains: the earliest end
/// at which the history from `initial` is unexplainable, then the latest start from which the
/// window is unexplainable whatever state it began in (the operations before it can only have
/// chosen that state). Falls back to the whole prefix when the start state matters.
fn shortest_window<S: Status + Hash>(ops: &[Timed<S>], initial: S, budget: u64) -> Vec<usize> {
    let fails = |end: u64, start: u64, from: Option<S>| {
        let window: Vec<Timed<S>> = ops
            .iter()
            .filter(|o| o.invoke <= end && o.deadline >= start)
            .copied()
            .collect();
        let froms: Vec<S> = from.map_or_else(|| S::ALL.to_vec(), |s| vec![s]);
        froms.into_iter().all(|s| {
            let mut left = budget;
            linearize(&window, s, &mut left) == Verdict::NotLinearizable
        })
    };
    let ends = window_ends(ops.iter().map(|o| o.deadline));
    let end = ends[ends
        .partition_point(|&e| !fails(e, 0, Some(initial)))
        .min(ends.len() - 1)];
    let mut starts: Vec<u64> = ops.iter().map(|o| o.invoke).filter(|i| *i <= end).collect();
    starts.dedup();
    // The last start for which the window still fails from any state.
    let start = starts
        .partition_point(|&s| fails(end, s, None))
        .checked_sub(1)
        .map_or(0, |i| starts[i]);
    ops.iter()
        .filter(|o| o.invoke <= end && o.deadline >= start)
        .map(|o| o.source)
        .collect()
}

/// The states the register can have been in when `window` began: those a read placed after
/// every operation that completed before the window could have seen. A state whose search ran
/// out of budget is kept (it may be reachable).
fn states_before<S: Status + Hash>(
    ops: &[Timed<S>],
    window: &[usize],
    initial: S,
    budget: u64,
) -> Vec<String> {
    let start = ops
        .iter()
        .filter(|o| window.contains(&o.source))
        .map(|o| o.invoke)
        .min()
        .unwrap_or(0);
    let prefix: Vec<Timed<S>> = ops.iter().filter(|o| o.deadline < start).copied().collect();
    S::ALL
        .iter()
        .filter(|&&state| {
            let mut probe = prefix.clone();
            probe.push(Interval {
                invoke: start,
                deadline: start,
                op: RegisterOp::Read { saw: state },
                source: usize::MAX,
            });
            let mut left = budget;
            linearize(&probe, initial, &mut left) != Verdict::NotLinearizable
        })
        .map(|state| state.as_str().to_owned())
        .collect()
}

/// The journey versions: no two acknowledged changes of a journey at one version (the second
/// overwrote the first), and no version seen after a higher one had been answered, in real-time
/// order (a read older than an acknowledged write, a change seen and then unseen).
fn versions(history: &[Operation], starts: &HashMap<&JourneyId, &Initial>) -> Vec<Violation> {
    let mut by_journey: BTreeMap<&JourneyId, Vec<(usize, JourneyVersion)>> = BTreeMap::new();
    let mut changes: HashMap<(&JourneyId, JourneyVersion), usize> = HashMap::new();
    let mut found = Vec::new();
    for (source, op) in history.iter().enumerate() {
        let journey = op.journey();
        if !starts.contains_key(journey) {
            continue;
        }
        let version = match &op.answer {
            Answer::Changed { version } => {
                if let Some(first) = changes.insert((journey, *version), source) {
                    found.push(Violation {
                        journey: journey.clone(),
                        register: "version".into(),
                        reason: format!(
                            "two changes were acknowledged at version {version}: one of them \
                             was overwritten (a lost update)"
                        ),
                        window: vec![first, source],
                        states_before: Vec::new(),
                    });
                }
                *version
            }
            other => match other.version() {
                Some(version) => version,
                None => continue,
            },
        };
        by_journey
            .entry(journey)
            .or_default()
            .push((source, version));
    }
    for (journey, seen) in by_journey {
        let mut by_invoke = seen.clone();
        by_invoke.sort_by_key(|(s, _)| history[*s].invoke);
        let mut by_end = seen;
        by_end.sort_by_key(|(s, _)| history[*s].deadline());
        let mut done = 0;
        let mut highest: Option<(usize, JourneyVersion)> = None;
        for (source, version) in by_invoke {
            let invoked = history[source].invoke;
            while done < by_end.len() && history[by_end[done].0].deadline() < invoked {
                let (s, v) = by_end[done];
                if highest.is_none_or(|(_, h)| v > h) {
                    highest = Some((s, v));
                }
                done += 1;
            }
            if let Some((earlier, high)) = highest
                && version < high
            {
                found.push(Violation {
                    journey: journey.clone(),
                    register: "version".into(),
                    reason: format!(
                        "version {version} was answered after version {high} had been: the \
                         journey went back in time"
                    ),
                    window: vec![earlier, source],
                    states_before: Vec::new(),
                });
            }
        }
    }
    found
}
