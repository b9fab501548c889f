//! Property tests on real Redis.
//!
//! 1. Random concurrent schedules of segment and journey updates, on distinct and on the same
//!    targets, spread over 1 to 3 service instances: every acknowledged change gets its own
//!    version, exactly 1..=n; the final status of every target is the one set by its last
//!    acknowledged change (so none is lost, and where writers collide the survivor was
//!    acknowledged); refused changes leave no trace.
//! 2. The `lua` strategy's cjson round trip: what comes out of the script decodes to exactly
//!    what went in, except the changed fields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use flyrtech_core::{
    Journey, JourneyStatus, JourneyStore, JourneyVersion, Money, Segment, SegmentId, SegmentStatus,
    Status, StatusChange, StoreError, UpdateOutcome,
};
use flyrtech_infrastructure::{RedisJourneyStore, Strategy};
use flyrtech_lab::history::{self, Answer, Call, Initial, Operation, Snapshot, Verdict};
use flyrtech_tests::{S, TestRedis, journey, segment_id, store, store_delayed, unique_id};
use proptest::collection::{btree_map, vec};
use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof};
use proptest::strategy::Strategy as _;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rstest_reuse::apply;
use tokio::sync::Barrier;

use crate::every_correct_strategy;

const SEGMENTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Segment(usize),
    Journey,
}

#[derive(Debug, Clone)]
struct Op {
    instance: usize,
    target: Target,
    status: usize,
}

impl Op {
    fn change(&self) -> StatusChange {
        match self.target {
            Target::Segment(i) => StatusChange::Segment {
                segment_id: segment_id(i),
                status: SegmentStatus::ALL[self.status % SegmentStatus::ALL.len()],
            },
            Target::Journey => StatusChange::Journey {
                status: JourneyStatus::ALL[self.status % JourneyStatus::ALL.len()],
            },
        }
    }
}

fn schedule() -> impl proptest::strategy::Strategy<Value = (usize, Vec<Op>)> {
    let target = prop_oneof![
        (0..SEGMENTS).prop_map(Target::Segment),
        Just(Target::Journey)
    ];
    (
        1..=3usize,
        vec(
            (0..3usize, target, 0..6usize).prop_map(|(instance, target, status)| Op {
                instance,
                target,
                status,
            }),
            1..12,
        ),
    )
}

fn status_of(journey: &Journey, target: Target) -> &'static str {
    match target {
        Target::Segment(i) => journey.segments[i].status.as_str(),
        Target::Journey => journey.status.as_str(),
    }
}

/// What one schedule did: the journey as created and as stored at the end, and each
/// operation's answer with when it was sent and answered (nanoseconds from the start).
type Ran = (
    Journey,
    Journey,
    Vec<(u64, u64, Result<UpdateOutcome, StoreError>)>,
);

async fn run_schedule(stores: &[Arc<RedisJourneyStore>], ops: &[Op]) -> Result<Ran, TestCaseError> {
    let id = unique_id("PROP");
    let initial = journey(&id, SEGMENTS);
    stores[0]
        .create(&initial)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let barrier = Arc::new(Barrier::new(ops.len()));
    let clock = std::time::Instant::now();
    let tasks: Vec<_> = ops
        .iter()
        .map(|op| {
            let (store, barrier, id, change) = (
                Arc::clone(&stores[op.instance % stores.len()]),
                Arc::clone(&barrier),
                id.clone(),
                op.change(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let ns = || u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let sent = ns();
                let answer = store.update(&id, &change, None).await;
                (sent, ns(), answer)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| TestCaseError::fail(e.to_string()))?);
    }
    let state = stores[0]
        .get(&id)
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok((initial, state, results))
}

/// Every answer of the schedule explained by one order (the history checker: a refusal must
/// be what the state called for, a no-op must find the target already set, a version each), and
/// the final state the last acknowledged change of each target.
fn check_schedule(ops: &[Op], ran: &Ran) -> Result<(), TestCaseError> {
    let (initial, state, results) = ran;
    let mut history = Vec::new();
    let mut applied: Vec<(u64, &Op)> = Vec::new();
    for (process, (op, (sent, answered, result))) in ops.iter().zip(results).enumerate() {
        let answer = match result {
            Ok(o) if o.changed => {
                applied.push((o.version.get(), op));
                Answer::Changed { version: o.version }
            }
            Ok(o) => Answer::Unchanged { version: o.version },
            Err(StoreError::Rejected(_)) => Answer::Refused,
            Err(StoreError::Conflict { .. }) => Answer::Failed { status: 409 },
            Err(other) => return Err(TestCaseError::fail(format!("unexpected error {other}"))),
        };
        let call = match op.change() {
            StatusChange::Segment { segment_id, status } => Call::SetSegment {
                journey: initial.id.clone(),
                segment: segment_id,
                to: status,
                if_match: None,
            },
            StatusChange::Journey { status } => Call::SetJourney {
                journey: initial.id.clone(),
                to: status,
                if_match: None,
            },
            other => return Err(TestCaseError::fail(format!("not in a schedule: {other:?}"))),
        };
        history.push(Operation {
            process: process as u64,
            invoke: *sent,
            complete: Some(*answered),
            call,
            answer,
        });
    }
    history.sort_by_key(|o| (o.invoke, o.process));
    let start = Initial {
        journey: initial.id.clone(),
        snapshot: Snapshot {
            version: initial.version,
            status: initial.status,
            segments: initial
                .segments
                .iter()
                .map(|s| (s.segment_id.clone(), s.status))
                .collect(),
        },
    };
    let report = history::check(&history, &[start], 1_000_000);
    prop_assert_eq!(report.verdict, Verdict::Linearizable, "{:?}", report);
    applied.sort_by_key(|(v, _)| *v);
    let versions: Vec<u64> = applied.iter().map(|(v, _)| *v).collect();
    let expected: Vec<u64> = (1..=u64::try_from(applied.len()).unwrap()).collect();
    prop_assert_eq!(
        &versions,
        &expected,
        "each acknowledged change must get its own version"
    );
    prop_assert_eq!(
        state.version,
        JourneyVersion::new(u64::try_from(applied.len()).unwrap())
    );
    for target in (0..SEGMENTS).map(Target::Segment).chain([Target::Journey]) {
        let want = applied
            .iter()
            .rev()
            .find(|(_, op)| op.target == target)
            .map_or(status_of(initial, target), |(_, op)| {
                op.change().target_status()
            });
        prop_assert_eq!(
            status_of(state, target),
            want,
            "{:?}: the last acknowledged change must stand",
            target
        );
    }
    Ok(())
}

#[apply(every_correct_strategy)]
fn concurrent_schedules_lose_no_acknowledged_update(#[case] strategy: Strategy) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let redis = TestRedis::single();
    let max_instances = if strategy.is_correct_across_instances() {
        3
    } else {
        1
    };
    let stores: Vec<Arc<RedisJourneyStore>> = runtime.block_on(async {
        let mut v = Vec::new();
        for _ in 0..max_instances {
            v.push(Arc::new(
                store_delayed(&redis.connect().await, strategy, Duration::from_millis(1)).await,
            ));
        }
        v
    });
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&schedule(), |(instances, ops)| {
            let stores = &stores[..instances.min(max_instances)];
            let ran = runtime.block_on(run_schedule(stores, &ops))?;
            check_schedule(&ops, &ran)
        })
        .unwrap_or_else(|e| panic!("{strategy}: {e}\n{}", redis.logs()));
}

/// The control: the same schedules against the original read-modify-write through two
/// instances, with its window held open a little longer; the check must catch a lost update
/// within the same number of schedules (a fixed seed, so the run is the same every time).
#[test]
fn the_schedules_catch_the_original_read_modify_write() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let redis = TestRedis::single();
    let stores: Vec<Arc<RedisJourneyStore>> = runtime.block_on(async {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(Arc::new(
                store_delayed(
                    &redis.connect().await,
                    Strategy::Naive,
                    Duration::from_millis(5),
                )
                .await,
            ));
        }
        v
    });
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        },
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let caught = runner.run(&schedule(), |(_, ops)| {
        let ran = runtime.block_on(run_schedule(&stores, &ops))?;
        check_schedule(&ops, &ran)
    });
    assert!(caught.is_err(), "24 schedules and no lost update caught");
}

fn text(max: usize) -> impl proptest::strategy::Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{1,{max}}}"))
        .unwrap()
        .prop_filter("non-blank", |s| !s.trim().is_empty())
}

pub(crate) fn arbitrary_journey() -> impl proptest::strategy::Strategy<Value = Journey> {
    let segment = (
        text(16),
        text(16),
        text(100),
        0i64..100_000_000_000_000,
        0i64..4_000_000_000,
    );
    (
        text(200),
        btree_map("[A-Za-z0-9]{1,12}", "\\PC{0,300}", 0..4),
        vec(segment, 0..4),
        0i64..100_000_000_000_000,
    )
        .prop_map(
            |(name, metadata, segments, total): (String, BTreeMap<String, String>, _, i64)| {
                let id = unique_id("CJSON");
                let mut j = journey(&id, 0);
                j.passenger_name = name;
                j.metadata = metadata;
                j.total_price = Money::from_cents(total).unwrap();
                j.segments = segments
                    .into_iter()
                    .enumerate()
                    .map(|(i, (origin, destination, carrier, cents, secs))| {
                        let departure = Utc.timestamp_opt(secs, 0).unwrap();
                        Segment {
                            segment_id: SegmentId::parse(format!("S{i}")).unwrap(),
                            origin,
                            destination,
                            departure_time: departure,
                            arrival_time: departure + chrono::Duration::minutes(95),
                            flight_number: "FT1".into(),
                            carrier,
                            status: SegmentStatus::Scheduled,
                            price: Money::from_cents(cents).unwrap(),
                        }
                    })
                    .collect();
                j
            },
        )
}

#[test]
fn the_lua_script_round_trips_the_document_exactly() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = TestRedis::single();
    let (store, conn) = runtime.block_on(async {
        let conn = redis.connect().await;
        (store(&conn, S::Lua).await, conn)
    });
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&arbitrary_journey(), |original| {
            runtime.block_on(async {
                store
                    .create(&original)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let change = StatusChange::Journey {
                    status: JourneyStatus::InProgress,
                };
                store
                    .update(&original.id, &change, None)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let raw: String = redis::cmd("GET")
                    .arg(flyrtech_infrastructure::keys::journey_document(
                        &original.id,
                    ))
                    .query_async(&mut conn.shared())
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let value: serde_json::Value =
                    serde_json::from_str(&raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(
                    value["segments"].is_array(),
                    "segments came out as {}",
                    value["segments"]
                );
                let mut expected = original.clone();
                expected.status = JourneyStatus::InProgress;
                expected.version = JourneyVersion::new(1);
                let decoded: Journey = serde_json::from_str(&raw)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {raw}")))?;
                prop_assert_eq!(decoded, expected);
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", redis.logs()));
}
