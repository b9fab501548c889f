//! The checker on histories with known answers, and against an outside judge (stateright's
//! `LinearizabilityTester`) on random small ones.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use super::model::{RegisterOp, Timed, WriteOutcome};
use super::search::{Verdict, linearize};
use super::*;
use flyrtech_core::status::SegmentStatus::{self, *};
use flyrtech_core::status::{JourneyStatus, Status, Transition};

fn jid() -> JourneyId {
    JourneyId::parse("VFY-1").expect("id")
}

fn sid(n: u8) -> SegmentId {
    SegmentId::parse(format!("S{n}")).expect("id")
}

fn initial() -> Vec<Initial> {
    vec![Initial {
        journey: jid(),
        snapshot: Snapshot {
            version: JourneyVersion::INITIAL,
            status: JourneyStatus::Confirmed,
            segments: [(sid(1), Scheduled), (sid(2), Scheduled)].into(),
        },
    }]
}

fn set(
    process: u64,
    span: (u64, Option<u64>),
    segment: u8,
    to: SegmentStatus,
    answer: Answer,
) -> Operation {
    Operation {
        process,
        invoke: span.0,
        complete: span.1,
        call: Call::SetSegment {
            journey: jid(),
            segment: sid(segment),
            to,
            if_match: None,
        },
        answer,
    }
}

fn read(process: u64, span: (u64, u64), version: u64, seen: [SegmentStatus; 2]) -> Operation {
    Operation {
        process,
        invoke: span.0,
        complete: Some(span.1),
        call: Call::Read { journey: jid() },
        answer: Answer::Observed(Snapshot {
            version: JourneyVersion::new(version),
            status: JourneyStatus::Confirmed,
            segments: [(sid(1), seen[0]), (sid(2), seen[1])].into(),
        }),
    }
}

fn changed(v: u64) -> Answer {
    Answer::Changed {
        version: JourneyVersion::new(v),
    }
}

fn verdict(history: &[Operation]) -> Report {
    check(history, &initial(), 1_000_000)
}

#[test]
fn a_concurrent_read_may_see_either_side_of_a_write() {
    let history = [
        set(0, (0, Some(100)), 1, Delayed, changed(1)),
        read(1, (10, 20), 0, [Scheduled, Scheduled]),
        read(2, (30, 40), 1, [Delayed, Scheduled]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report:?}");
    assert_eq!(report.registers.total(), 3);
}

#[test]
fn a_read_older_than_an_acknowledged_write_is_a_stale_read() {
    let history = [
        set(0, (0, Some(10)), 1, Delayed, changed(1)),
        read(1, (20, 30), 1, [Scheduled, Scheduled]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.registers.not_linearizable, 1, "{report:?}");
    let violation = &report.violations[0];
    assert_eq!(violation.register, "segment S1");
    assert_eq!(violation.window, vec![0, 1]);
}

#[test]
fn a_lost_write_breaks_its_register_and_the_versions() {
    // Two writers of one journey both acknowledged at version 1 (the naive read-modify-write);
    // the state kept the second: the first segment's change is gone.
    let history = [
        set(0, (0, Some(10)), 1, Delayed, changed(1)),
        set(1, (1, Some(11)), 2, Boarding, changed(1)),
        read(2, (20, 30), 1, [Scheduled, Boarding]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let registers: Vec<&str> = report
        .violations
        .iter()
        .map(|v| v.register.as_str())
        .collect();
    assert!(registers.contains(&"segment S1"), "{report:?}");
    assert!(registers.contains(&"version"), "{report:?}");
}

#[test]
fn a_refusal_the_state_did_not_call_for_is_wrong() {
    // Scheduled -> Delayed is allowed: a 409 for it cannot have been judged on this state.
    let history = [set(0, (0, Some(10)), 1, Delayed, Answer::Refused)];
    assert_eq!(verdict(&history).verdict, Verdict::NotLinearizable);
    // Once Arrived (terminal) it is right.
    let history = [
        set(0, (0, Some(5)), 1, Departed, changed(1)),
        set(0, (6, Some(8)), 1, Arrived, changed(2)),
        set(0, (10, Some(20)), 1, Delayed, Answer::Refused),
    ];
    assert_eq!(verdict(&history).verdict, Verdict::Linearizable);
}

#[test]
fn an_unknown_write_may_land_late_or_never_but_not_be_seen_then_unseen() {
    let unknown = set(0, (0, None), 1, Delayed, Answer::Unknown);
    let never = [
        unknown.clone(),
        read(1, (50, 60), 0, [Scheduled, Scheduled]),
    ];
    assert_eq!(verdict(&never).verdict, Verdict::Linearizable);
    let late = [
        unknown.clone(),
        read(1, (50, 60), 0, [Scheduled, Scheduled]),
        read(1, (70, 80), 1, [Delayed, Scheduled]),
    ];
    assert_eq!(verdict(&late).verdict, Verdict::Linearizable);
    let unseen = [
        unknown,
        read(1, (50, 60), 1, [Delayed, Scheduled]),
        read(1, (70, 80), 1, [Scheduled, Scheduled]),
    ];
    let report = verdict(&unseen);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    // The window: the two reads and the write still in flight, not the whole history.
    assert_eq!(report.violations[0].window, vec![0, 1, 2]);
}

#[test]
fn the_window_is_the_shortest_stretch_no_order_explains() {
    let mut history = Vec::new();
    // Forty healthy round trips, then a stale read.
    for i in 0..40u64 {
        let to = if i % 2 == 0 { Delayed } else { Scheduled };
        history.push(set(0, (i * 10, Some(i * 10 + 5)), 1, to, changed(i + 1)));
    }
    history.push(set(0, (400, Some(405)), 1, Boarding, changed(41)));
    history.push(read(1, (410, 420), 41, [Scheduled, Scheduled]));
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let violation = report
        .violations
        .iter()
        .find(|v| v.register == "segment S1")
        .expect("the segment's violation");
    assert_eq!(violation.window, vec![40, 41], "{report:?}");
    // The fortieth write (Scheduled) completed before the window: the only state it can start in.
    assert_eq!(violation.states_before, vec!["Scheduled"], "{report:?}");
}

#[test]
fn versions_never_go_back_in_real_time() {
    let history = [
        read(0, (0, 10), 3, [Scheduled, Scheduled]),
        read(1, (20, 30), 2, [Scheduled, Scheduled]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.violations[0].register, "version");
    assert_eq!(report.violations[0].window, vec![0, 1]);
    // Overlapping, either order is possible.
    let history = [
        read(0, (0, 25), 3, [Scheduled, Scheduled]),
        read(1, (20, 30), 2, [Scheduled, Scheduled]),
    ];
    assert!(
        verdict(&history)
            .violations
            .iter()
            .all(|v| v.register != "version")
    );
}

#[test]
fn a_precondition_failure_changes_nothing_and_journey_status_is_a_register() {
    let history = [
        set(
            0,
            (0, Some(10)),
            1,
            Delayed,
            Answer::PreconditionFailed {
                current: JourneyVersion::INITIAL,
            },
        ),
        read(1, (20, 30), 0, [Scheduled, Scheduled]),
        Operation {
            process: 2,
            invoke: 40,
            complete: Some(50),
            call: Call::SetJourney {
                journey: jid(),
                to: JourneyStatus::Completed,
                if_match: None,
            },
            // Confirmed -> Completed skips InProgress: the 200 is wrong.
            answer: changed(1),
        },
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.violations[0].register, "journey");
}

#[test]
fn a_spent_budget_is_undecided() {
    // Fourteen overlapping changes back and forth and a read nobody can explain: the search
    // must try many orders before it can say so.
    let mut history: Vec<Operation> = (0..14)
        .map(|p| {
            let to = if p % 2 == 0 { Delayed } else { Scheduled };
            set(p, (p, Some(1000)), 1, to, changed(p + 1))
        })
        .collect();
    history.push(read(99, (100, 900), 0, [Boarding, Scheduled]));
    let report = check(&history, &initial(), 3);
    assert_eq!(report.verdict, Verdict::Undecided, "{report:?}");
    assert_eq!(report.registers.undecided, 1);
    assert_eq!(report.journeys.undecided, 1);
    assert!(report.decided() < 1.0);
    // With a little more, the register is still undecided, but the journey checked whole (the
    // versions pin the order) already shows what no order explains.
    let report = check(&history, &initial(), 50);
    assert_eq!(report.registers.undecided, 1, "{report:?}");
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report:?}");
    assert_eq!(
        check(&history, &initial(), 10_000_000).verdict,
        Verdict::NotLinearizable
    );
}

#[test]
fn a_history_round_trips_through_jepsen_lines() {
    let history = vec![
        set(0, (0, Some(10)), 1, Delayed, changed(1)),
        set(1, (2, Some(12)), 2, Arrived, Answer::Refused),
        set(
            2,
            (3, Some(9)),
            2,
            Delayed,
            Answer::PreconditionFailed {
                current: JourneyVersion::new(1),
            },
        ),
        set(3, (4, Some(20)), 2, Boarding, Answer::Unknown),
        set(4, (5, None), 1, Boarding, Answer::Unknown),
        read(5, (30, 40), 1, [Delayed, Scheduled]),
    ];
    let events = jepsen::events(&history);
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .collect();
    assert!(lines[0].contains(r#""type":"invoke""#), "{}", lines[0]);
    assert!(lines.iter().any(|l| l.contains(r#""type":"info""#)));
    assert!(lines.iter().any(|l| l.contains(r#""type":"fail""#)));
    let parsed: Vec<jepsen::Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let mut back = jepsen::operations(&parsed).expect("operations");
    back.sort_by_key(|o| o.process);
    assert_eq!(back, history);
}

/// A register as stateright's tester models it.
#[derive(Debug, Clone, PartialEq)]
struct Register(SegmentStatus);

#[derive(Debug, Clone)]
enum SpecOp {
    Write(SegmentStatus),
    Read,
}

#[derive(Debug, Clone, PartialEq)]
enum SpecRet {
    Changed,
    Unchanged,
    Refused,
    Saw(SegmentStatus),
}

impl SequentialSpec for Register {
    type Op = SpecOp;
    type Ret = SpecRet;
    fn invoke(&mut self, op: &SpecOp) -> SpecRet {
        match op {
            SpecOp::Read => SpecRet::Saw(self.0),
            SpecOp::Write(to) => match self.0.transition_to(*to) {
                Ok(Transition::Change) => {
                    self.0 = *to;
                    SpecRet::Changed
                }
                Ok(Transition::NoOp) => SpecRet::Unchanged,
                Err(()) => SpecRet::Refused,
            },
        }
    }
}

/// A random history of up to 3 clients on one register: each operation takes effect on a true
/// register at its invocation or at its answer (or, left unanswered, maybe never), and then
/// some answers are made up, so that both verdicts come up.
fn histories() -> impl Strategy<Value = Vec<(usize, bool, SpecOp, Option<SpecRet>)>> {
    let op = prop_oneof![
        (0..SegmentStatus::ALL.len()).prop_map(|i| SpecOp::Write(SegmentStatus::ALL[i])),
        Just(SpecOp::Read),
    ];
    let made_up = proptest::option::weighted(
        0.3,
        prop_oneof![
            Just(SpecRet::Changed),
            Just(SpecRet::Unchanged),
            Just(SpecRet::Refused),
            (0..SegmentStatus::ALL.len()).prop_map(|i| SpecRet::Saw(SegmentStatus::ALL[i])),
        ],
    );
    proptest::collection::vec((0..3usize, any::<bool>(), op, made_up), 1..12)
}

/// A client's operation between its invocation and its answer.
struct Pending {
    invoke: u64,
    op: SpecOp,
    /// What it returned, when it took effect at its invocation.
    early: Option<SpecRet>,
    /// The answer to give instead of the true one.
    made_up: Option<SpecRet>,
}

impl Pending {
    /// Its answer now: the made-up one if any (kept to what its kind can answer), else the one
    /// it got when it took effect, at its invocation or now.
    fn answer(self, truth: &mut Register) -> (u64, SpecOp, SpecRet) {
        let real = match self.early {
            Some(ret) => ret,
            None => truth.invoke(&self.op),
        };
        let ret = match (&self.op, self.made_up.unwrap_or(real)) {
            (SpecOp::Read, SpecRet::Saw(s)) => SpecRet::Saw(s),
            (SpecOp::Read, _) => SpecRet::Saw(truth.0),
            (SpecOp::Write(_), SpecRet::Saw(_)) => SpecRet::Refused,
            (_, r) => r,
        };
        (self.invoke, self.op, ret)
    }
}

/// The operation our model sees for an answered one.
fn answered(
    invoke: u64,
    at: u64,
    op: &SpecOp,
    ret: &SpecRet,
    source: usize,
) -> Timed<SegmentStatus> {
    let op = match (op, ret) {
        (SpecOp::Read, SpecRet::Saw(s)) => RegisterOp::Read { saw: *s },
        (SpecOp::Read, _) => unreachable!("a read answers what it saw"),
        (SpecOp::Write(to), r) => RegisterOp::Write {
            to: *to,
            outcome: match r {
                SpecRet::Changed => WriteOutcome::Changed,
                SpecRet::Unchanged => WriteOutcome::Unchanged,
                _ => WriteOutcome::Refused,
            },
        },
    };
    Timed {
        invoke,
        deadline: at,
        op,
        source,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_checker_agrees_with_stateright(plan in histories(), unanswered in 0..3usize) {
        // Each client invokes its next operation, and its answer comes when the client is
        // scheduled again; a client's last operation may stay unanswered (unknown).
        let mut truth = Register(Scheduled);
        let mut tester = LinearizabilityTester::new(Register(Scheduled));
        let mut in_flight: BTreeMap<usize, Pending> = BTreeMap::new();
        let mut ops: Vec<Timed<SegmentStatus>> = Vec::new();
        let mut clock = 0u64;
        for (client, early, op, made_up) in plan {
            clock += 1;
            if let Some(pending) = in_flight.remove(&client) {
                let (invoke, op, ret) = pending.answer(&mut truth);
                prop_assert!(tester.on_return(client, ret.clone()).is_ok());
                ops.push(answered(invoke, clock, &op, &ret, ops.len()));
                continue;
            }
            prop_assert!(tester.on_invoke(client, op.clone()).is_ok());
            let early = early.then(|| truth.invoke(&op));
            in_flight.insert(client, Pending { invoke: clock, op, early, made_up });
        }
        // Clients still waiting: the first `unanswered` stay unknown, the rest are answered.
        let mut left: Vec<_> = in_flight.into_iter().collect();
        let keep = left.len().min(unanswered);
        for (client, pending) in left.drain(keep..) {
            clock += 1;
            let (invoke, op, ret) = pending.answer(&mut truth);
            prop_assert!(tester.on_return(client, ret.clone()).is_ok());
            ops.push(answered(invoke, clock, &op, &ret, ops.len()));
        }
        for (_, pending) in left {
            if let SpecOp::Write(to) = pending.op {
                ops.push(Timed {
                    invoke: pending.invoke,
                    deadline: u64::MAX,
                    op: RegisterOp::Write { to, outcome: WriteOutcome::Unknown },
                    source: ops.len(),
                });
            }
        }
        ops.sort_by_key(|o| (o.invoke, o.source));
        let mut budget = 1_000_000;
        let ours = linearize(&ops, Scheduled, &mut budget);
        prop_assert_ne!(ours, Verdict::Undecided);
        prop_assert_eq!(ours == Verdict::Linearizable, tester.is_consistent(), "ops {:?}", ops);
    }
}

/// A version-1 answer showing two changes, read while the second change was in flight: each
/// register alone is explained (segment 1 was set, segment 2 may have been by then) and no
/// version went back; but version 1 never had both, so no one instant explains the read.
#[test]
fn a_read_showing_two_changes_at_one_version_is_torn() {
    let history = [
        set(1, (0, Some(10)), 1, Delayed, changed(1)),
        set(2, (20, Some(30)), 2, Delayed, changed(2)),
        read(3, (25, 35), 1, [Delayed, Delayed]),
        // After the violation, and not part of its window.
        read(4, (50, 60), 2, [Delayed, Delayed]),
    ];
    let report = verdict(&history);
    assert_eq!(report.registers.not_linearizable, 0, "{report:?}");
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report:?}");
    assert_eq!(report.violations.len(), 1, "{report:?}");
    assert_eq!(report.violations[0].register, "snapshot");
    assert_eq!(report.violations[0].window, vec![1, 2], "{report:?}");
    // The same read at version 2 is what the journey was once both were set.
    let fine = [
        history[0].clone(),
        history[1].clone(),
        read(3, (25, 35), 2, [Delayed, Delayed]),
    ];
    assert_eq!(verdict(&fine).verdict, Verdict::Linearizable);
}

/// A read that saw segment 1 from before the first change and segment 2 from after the second:
/// two moments, each register explained alone, no instant of the journey explains both.
#[test]
fn a_read_of_two_segments_from_different_moments_is_torn() {
    let history = [
        set(1, (0, Some(10)), 1, Delayed, changed(1)),
        set(2, (20, Some(30)), 2, Delayed, changed(2)),
        read(3, (5, 40), 1, [Scheduled, Delayed]),
    ];
    let report = verdict(&history);
    assert_eq!(report.registers.not_linearizable, 0, "{report:?}");
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report:?}");
    assert_eq!(report.violations[0].register, "snapshot");
    // Two operations suffice: version 1 is the first change's, which the read does not show.
    assert_eq!(report.violations[0].window, vec![0, 2], "{report:?}");
    assert_eq!(report.journeys.not_linearizable, 1);
    let fine = [
        history[0].clone(),
        history[1].clone(),
        read(3, (5, 40), 1, [Delayed, Scheduled]),
    ];
    assert_eq!(verdict(&fine).verdict, Verdict::Linearizable);
}

/// A journey of two segments and its version, as stateright's tester models it: the outside
/// judge of the whole-journey check.
#[derive(Debug, Clone, PartialEq)]
struct Whole {
    version: u64,
    segments: [SegmentStatus; 2],
}

#[derive(Debug, Clone)]
enum WholeOp {
    Write(usize, SegmentStatus),
    Read,
}

#[derive(Debug, Clone, PartialEq)]
enum WholeRet {
    Changed(u64),
    Unchanged(u64),
    Refused,
    Saw(u64, [SegmentStatus; 2]),
}

impl SequentialSpec for Whole {
    type Op = WholeOp;
    type Ret = WholeRet;
    fn invoke(&mut self, op: &WholeOp) -> WholeRet {
        match op {
            WholeOp::Read => WholeRet::Saw(self.version, self.segments),
            WholeOp::Write(i, to) => match self.segments[*i].transition_to(*to) {
                Ok(Transition::Change) => {
                    self.segments[*i] = *to;
                    self.version += 1;
                    WholeRet::Changed(self.version)
                }
                Ok(Transition::NoOp) => WholeRet::Unchanged(self.version),
                Err(()) => WholeRet::Refused,
            },
        }
    }
}

fn whole_status() -> impl Strategy<Value = SegmentStatus> {
    // Three statuses that can each be left for the others: many orders stay possible.
    prop_oneof![Just(Scheduled), Just(Delayed), Just(Boarding)]
}

/// As [`histories`], for the whole journey: up to 3 clients, each operation taking effect at its
/// invocation or its answer, and some answers made up (a version off by one, a torn read, a
/// wrong status) so that both verdicts come up.
fn whole_histories() -> impl Strategy<Value = Vec<(usize, bool, WholeOp, Option<WholeRet>)>> {
    let op = prop_oneof![
        (0..2usize, whole_status()).prop_map(|(i, s)| WholeOp::Write(i, s)),
        Just(WholeOp::Read),
    ];
    let made_up = proptest::option::weighted(
        0.15,
        prop_oneof![
            (0..4u64).prop_map(WholeRet::Changed),
            (0..4u64).prop_map(WholeRet::Unchanged),
            Just(WholeRet::Refused),
            (0..4u64, whole_status(), whole_status())
                .prop_map(|(v, a, b)| WholeRet::Saw(v, [a, b])),
        ],
    );
    proptest::collection::vec((0..3usize, any::<bool>(), op, made_up), 1..12)
}

/// The history operation for a client's call and answer.
fn whole_operation(
    process: u64,
    span: (u64, Option<u64>),
    op: &WholeOp,
    ret: Option<&WholeRet>,
) -> Operation {
    let answer = match ret {
        None => Answer::Unknown,
        Some(WholeRet::Changed(v)) => changed(*v),
        Some(WholeRet::Unchanged(v)) => Answer::Unchanged {
            version: JourneyVersion::new(*v),
        },
        Some(WholeRet::Refused) => Answer::Refused,
        Some(WholeRet::Saw(v, [a, b])) => Answer::Observed(Snapshot {
            version: JourneyVersion::new(*v),
            status: JourneyStatus::Confirmed,
            segments: [(sid(1), *a), (sid(2), *b)].into(),
        }),
    };
    let call = match op {
        WholeOp::Read => Call::Read { journey: jid() },
        WholeOp::Write(i, to) => Call::SetSegment {
            journey: jid(),
            segment: sid(u8::try_from(*i).expect("0 or 1") + 1),
            to: *to,
            if_match: None,
        },
    };
    Operation {
        process,
        invoke: span.0,
        complete: span.1,
        call,
        answer,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whole histories of a journey, reads included: `check` (registers, versions, then the
    /// journey whole) says linearizable exactly when stateright's tester of the sequential
    /// journey does.
    #[test]
    fn the_whole_journey_check_agrees_with_stateright(
        plan in whole_histories(),
        unanswered in 0..3usize,
    ) {
        let start = Whole { version: 0, segments: [Scheduled, Scheduled] };
        let mut truth = start.clone();
        let mut tester = LinearizabilityTester::new(start);
        // Per client: invocation time, the op, its early answer, a made-up answer.
        let mut in_flight: BTreeMap<usize, (u64, WholeOp, Option<WholeRet>, Option<WholeRet>)> =
            BTreeMap::new();
        let mut history = Vec::new();
        let mut clock = 0u64;
        let answer = |truth: &mut Whole, op: &WholeOp, early: Option<WholeRet>, made_up: Option<WholeRet>| {
            let real = early.unwrap_or_else(|| truth.invoke(op));
            match (op, made_up) {
                (WholeOp::Read, Some(r @ WholeRet::Saw(..))) => r,
                (WholeOp::Write(..), Some(r)) if !matches!(r, WholeRet::Saw(..)) => r,
                _ => real,
            }
        };
        for (client, early, op, made_up) in plan {
            clock += 1;
            if let Some((invoke, op, early, made_up)) = in_flight.remove(&client) {
                let ret = answer(&mut truth, &op, early, made_up);
                prop_assert!(tester.on_return(client, ret.clone()).is_ok());
                history.push(whole_operation(client as u64, (invoke, Some(clock)), &op, Some(&ret)));
                continue;
            }
            prop_assert!(tester.on_invoke(client, op.clone()).is_ok());
            let early = early.then(|| truth.invoke(&op));
            in_flight.insert(client, (clock, op, early, made_up));
        }
        let mut left: Vec<_> = in_flight.into_iter().collect();
        let keep = left.len().min(unanswered);
        for (client, (invoke, op, early, made_up)) in left.drain(keep..) {
            clock += 1;
            let ret = answer(&mut truth, &op, early, made_up);
            prop_assert!(tester.on_return(client, ret.clone()).is_ok());
            history.push(whole_operation(client as u64, (invoke, Some(clock)), &op, Some(&ret)));
        }
        // Still unanswered: unknown writes (an unanswered read constrains nothing, for both).
        for (client, (invoke, op, _, _)) in left {
            if matches!(op, WholeOp::Write(..)) {
                history.push(whole_operation(client as u64, (invoke, None), &op, None));
            }
        }
        history.sort_by_key(|o| (o.invoke, o.process));
        let initial = vec![Initial {
            journey: jid(),
            snapshot: Snapshot {
                version: JourneyVersion::INITIAL,
                status: JourneyStatus::Confirmed,
                segments: [(sid(1), Scheduled), (sid(2), Scheduled)].into(),
            },
        }];
        let report = check(&history, &initial, 1_000_000);
        prop_assert_ne!(report.verdict, Verdict::Undecided);
        prop_assert_eq!(
            report.verdict == Verdict::Linearizable,
            tester.is_consistent(),
            "history {:#?}\nreport {:?}", history, report
        );
    }
}

/// A history written with its starting states gives them back, from its lines alone; a journey
/// whose first operation is not a completed read has none.
#[test]
fn the_starting_states_travel_with_the_history() {
    let history = vec![
        set(1, (10, Some(20)), 1, Delayed, changed(1)),
        read(2, (15, 30), 1, [Delayed, Scheduled]),
    ];
    let lines: Vec<String> = jepsen::events_with_initial(&initial(), &history)
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .collect();
    let events: Vec<jepsen::Event> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let ops = jepsen::operations(&events).expect("operations");
    let (found, missing) = jepsen::initial_states(&ops);
    assert_eq!(found, initial());
    assert!(missing.is_empty());
    assert_eq!(check(&ops, &found, 1_000).verdict, Verdict::Linearizable);
    let (found, missing) = jepsen::initial_states(&history);
    assert!(found.is_empty());
    assert_eq!(missing, [jid()]);
}

/// The window of a violation is the shortest stretch no order explains: it starts at the last
/// operation it needs (an acknowledged write before it only chose its starting state) and ends
/// at the first answer that cannot be explained, whatever follows.
#[test]
fn a_violations_window_is_the_shortest_that_fails() {
    let history = [
        set(0, (0, Some(10)), 1, Delayed, changed(1)),
        read(1, (20, 30), 1, [Delayed, Scheduled]),
        read(2, (40, 50), 1, [Scheduled, Scheduled]),
        read(3, (60, 70), 1, [Delayed, Scheduled]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let violation = &report.violations[0];
    assert_eq!(violation.register, "segment S1");
    assert_eq!(violation.window, vec![1, 2]);
}

/// The counts say what was checked: each register (every segment, the journey's status, the
/// version) and each journey whole; with no budget nothing is decided.
#[test]
fn the_report_counts_every_check_and_what_was_decided() {
    let history = [
        set(0, (0, Some(100)), 1, Delayed, changed(1)),
        set(1, (10, Some(90)), 2, Boarding, changed(2)),
        read(2, (120, 130), 2, [Delayed, Boarding]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report:?}");
    assert_eq!(
        (report.registers.linearizable, report.registers.total()),
        (3, 3),
        "{report:?}"
    );
    assert_eq!(
        (report.journeys.linearizable, report.journeys.total()),
        (1, 1)
    );
    assert!((report.decided() - 1.0).abs() < f64::EPSILON);
    assert!((report.registers.decided() - 1.0).abs() < f64::EPSILON);
    let starved = check(&history, &initial(), 0);
    assert_eq!(starved.verdict, Verdict::Undecided, "{starved:?}");
    let undecided = starved.registers.undecided + starved.journeys.undecided;
    let total = starved.registers.total() + starved.journeys.total();
    assert!(undecided > 0 && undecided < total + 1, "{starved:?}");
    #[allow(clippy::cast_precision_loss)]
    let share = (total - undecided) as f64 / total as f64;
    assert!((starved.decided() - share).abs() < 1e-9, "{starved:?}");
    assert!(starved.decided() < 1.0);
    let counts = super::check::Counts {
        linearizable: 2,
        not_linearizable: 1,
        undecided: 1,
    };
    assert_eq!(counts.total(), 4);
    assert!((counts.decided() - 0.75).abs() < 1e-9);
    assert!((super::check::Counts::default().decided() - 1.0).abs() < f64::EPSILON);
}

/// The versions answered only go forward in real time: a read after two sequential changes
/// that answers the first one's version went back, even when every register it shows is
/// current (the highest version answered before it is what counts, not the first).
#[test]
fn a_version_answered_after_a_higher_one_went_back_in_time() {
    let history = [
        set(0, (0, Some(10)), 1, Delayed, changed(1)),
        set(1, (11, Some(20)), 2, Boarding, changed(2)),
        read(2, (30, 40), 1, [Delayed, Boarding]),
    ];
    let report = verdict(&history);
    let version = report
        .violations
        .iter()
        .find(|v| v.register == "version")
        .unwrap_or_else(|| panic!("no version violation: {report:?}"));
    assert_eq!(version.window, vec![1, 2]);
}

/// Operations that touch at one instant are concurrent: a read invoked as a change completes
/// may still see the state before it.
#[test]
fn operations_that_touch_are_concurrent() {
    let history = [
        set(0, (0, Some(10)), 1, Delayed, changed(1)),
        read(1, (10, 20), 0, [Scheduled, Scheduled]),
    ];
    let report = verdict(&history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report:?}");
}

/// A 412 names the version the journey was at: one it never was at then is caught by the
/// whole-journey check (each register alone has nothing to say about it).
#[test]
fn a_precondition_failure_must_name_a_version_the_journey_was_at() {
    let refused = |current: u64| Operation {
        process: 1,
        invoke: 20,
        complete: Some(30),
        call: Call::SetSegment {
            journey: jid(),
            segment: sid(2),
            to: Delayed,
            if_match: Some(JourneyVersion::INITIAL),
        },
        answer: Answer::PreconditionFailed {
            current: JourneyVersion::new(current),
        },
    };
    let first = set(0, (0, Some(10)), 1, Delayed, changed(1));
    let right = verdict(&[first.clone(), refused(1)]);
    assert_eq!(right.verdict, Verdict::Linearizable, "{right:?}");
    let wrong = verdict(&[first, refused(2)]);
    assert_eq!(wrong.verdict, Verdict::NotLinearizable, "{wrong:?}");
    assert_eq!(wrong.violations[0].register, "snapshot", "{wrong:?}");
}

/// Unknown writes are grouped by what they set (a segment's or the journey's status): writes
/// that set different things are never taken for one another, whichever segment or status.
#[test]
fn unknown_writes_of_different_targets_stay_apart() {
    let unknown = |process: u64, segment: u8, to: SegmentStatus| {
        set(process, (0, None), segment, to, Answer::Unknown)
    };
    let snapshot = |version: u64, status: JourneyStatus, seen: [SegmentStatus; 2]| Operation {
        process: 9,
        invoke: 100,
        complete: Some(110),
        call: Call::Read { journey: jid() },
        answer: Answer::Observed(Snapshot {
            version: JourneyVersion::new(version),
            status,
            segments: [(sid(1), seen[0]), (sid(2), seen[1])].into(),
        }),
    };
    let journey_unknown = Operation {
        process: 3,
        invoke: 0,
        complete: None,
        call: Call::SetJourney {
            journey: jid(),
            to: JourneyStatus::Cancelled,
            if_match: None,
        },
        answer: Answer::Unknown,
    };
    let journey_to = |process: u64, to: JourneyStatus| Operation {
        process,
        invoke: 0,
        complete: None,
        call: Call::SetJourney {
            journey: jid(),
            to,
            if_match: None,
        },
        answer: Answer::Unknown,
    };
    let histories = [
        // The journey, through two statuses.
        vec![
            journey_to(5, JourneyStatus::InProgress),
            journey_to(6, JourneyStatus::Completed),
            snapshot(2, JourneyStatus::Completed, [Scheduled, Scheduled]),
        ],
        // Two segments, each to its own status.
        vec![
            unknown(1, 1, Boarding),
            unknown(2, 2, Delayed),
            snapshot(2, JourneyStatus::Confirmed, [Boarding, Delayed]),
        ],
        // One segment, through two statuses.
        vec![
            unknown(1, 1, Delayed),
            unknown(2, 1, Boarding),
            snapshot(2, JourneyStatus::Confirmed, [Boarding, Scheduled]),
        ],
        // A segment and the journey itself.
        vec![
            unknown(1, 1, Delayed),
            journey_unknown,
            snapshot(2, JourneyStatus::Cancelled, [Delayed, Scheduled]),
        ],
    ];
    for history in histories {
        let report = verdict(&history);
        assert_eq!(
            report.verdict,
            Verdict::Linearizable,
            "{history:?}: {report:?}"
        );
    }
}

/// An `info` completion is an unknown outcome whatever its value says (Jepsen's clients put
/// an error there, not an answer).
#[test]
fn an_info_completion_is_unknown_whatever_its_value() {
    let write = set(1, (5, Some(9)), 1, Delayed, changed(1));
    let mut events = jepsen::events(std::slice::from_ref(&write));
    assert_eq!(events.len(), 2, "{events:?}");
    events[1].kind = jepsen::Kind::Info;
    events[1].value = serde_json::json!({"error": "timed out"});
    let back = jepsen::operations(&events).expect("operations");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].answer, Answer::Unknown);
    assert_eq!(back[0].complete, Some(9));
}

/// An unknown write takes effect at most once: one write of Scheduled cannot explain the
/// segment coming back to Scheduled twice.
#[test]
fn an_unknown_write_takes_effect_at_most_once() {
    let history = [
        set(1, (0, None), 1, Scheduled, Answer::Unknown),
        set(2, (0, Some(10)), 1, Delayed, changed(1)),
        read(3, (20, 30), 2, [Scheduled, Scheduled]),
        set(2, (40, Some(50)), 1, Delayed, changed(3)),
        read(3, (60, 70), 4, [Scheduled, Scheduled]),
    ];
    let report = verdict(&history);
    assert!(
        report.violations.iter().any(|v| v.register == "segment S1"),
        "{report:?}"
    );
    // One return to Scheduled is explained by it.
    let once = verdict(&history[..3]);
    assert_eq!(once.verdict, Verdict::Linearizable, "{once:?}");
}

/// The verdict is undecided when any check ran out of budget, a register's or the whole
/// journey's alone; the counts say which.
#[test]
fn a_check_out_of_budget_leaves_the_verdict_undecided() {
    let history = [
        set(0, (0, Some(100)), 1, Delayed, changed(1)),
        set(1, (0, Some(100)), 2, Boarding, changed(2)),
        read(2, (0, 100), 1, [Delayed, Scheduled]),
        read(3, (0, 100), 2, [Delayed, Boarding]),
        read(4, (0, 100), 1, [Scheduled, Boarding]),
    ];
    let starved = check(&history, &initial(), 0);
    assert_eq!(starved.verdict, Verdict::Undecided);
    assert_eq!(
        (starved.registers.undecided, starved.journeys.undecided),
        (3, 1)
    );
    // Enough for each register, not for the whole journey.
    let whole = check(&history, &initial(), 5);
    assert_eq!(
        (whole.registers.linearizable, whole.registers.undecided),
        (3, 0)
    );
    assert_eq!(whole.journeys.undecided, 1);
    assert_eq!(whole.verdict, Verdict::Undecided, "{whole:?}");
    // With enough, the torn read is found.
    assert_eq!(verdict(&history).verdict, Verdict::NotLinearizable);
}
