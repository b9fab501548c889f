//! `import-legacy`: the original service's Redis data (docs/migration.md, the legacy import: PascalCase JSON documents at
//! `journey:{id}`, the id list at `journey:ids`, cache entries beside them) brought into ours.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use flyrtech_core::{JourneyId, JourneyStatus, JourneyStore, SegmentStatus};
use flyrtech_infrastructure::dataset::legacy::{self, ImportOptions, ImportReport, StatusMap};
use flyrtech_infrastructure::{Layout, Redis, RedisJourneyStore, Strategy, dataset, keys};
use flyrtech_tests::{S, TestRedis, store};
use redis::AsyncCommands;
use rstest::rstest;

/// The contract's example journey, one line, with statuses in other cases.
const JRN_001: &str = r#"{"Id":"JRN-001","PassengerName":"John Smith","PassengerEmail":"john.smith@email.com","BookingDate":"2025-12-01T10:30:00Z","Status":"CONFIRMED","TotalPrice":850.50,"Segments":[{"SegmentId":"SEG-001-1","Origin":"MAD","Destination":"BCN","DepartureTime":"2025-12-15T08:00:00Z","ArrivalTime":"2025-12-15T09:30:00Z","FlightNumber":"IB3012","Carrier":"Iberia","Status":"departed","Price":425.25},{"SegmentId":"SEG-001-2","Origin":"BCN","Destination":"MAD","DepartureTime":"2025-12-20T18:00:00Z","ArrivalTime":"2025-12-20T19:30:00Z","FlightNumber":"IB3025","Carrier":"Iberia","Status":"Scheduled","Price":425.25}],"Metadata":{}}"#;

/// Non-ASCII text, a date with an offset, one with no zone, seven fractional digits, a price
/// with trailing zeros.
const JRN_002: &str = r#"{"Id":"JRN-002","PassengerName":"José Müller-Ñúñez","PassengerEmail":"jose@correo.es","BookingDate":"2025-12-01T11:30:00+01:00","Status":"InProgress","TotalPrice":1250.00,"Segments":[{"SegmentId":"SEG-002-1","Origin":"MAD","Destination":"LHR","DepartureTime":"2025-12-15T08:00:00","ArrivalTime":"2025-12-15T09:30:00.1234567Z","FlightNumber":"IB3166","Carrier":"Iberia Exprés","Status":"Scheduled","Price":0.10}],"Metadata":{"note":"ventana 😀","empty":""}}"#;

fn segment(id: &str, status: &str) -> String {
    format!(
        r#"{{"SegmentId":"{id}","Origin":"MAD","Destination":"BCN","DepartureTime":"2025-12-15T08:00:00Z","ArrivalTime":"2025-12-15T09:30:00Z","FlightNumber":"IB1","Carrier":"Iberia","Status":"{status}","Price":10.00}}"#
    )
}

fn document(id: &str, segments: &[String]) -> String {
    format!(
        r#"{{"Id":"{id}","PassengerName":"A B","PassengerEmail":"a@b.c","BookingDate":"2025-12-01T10:30:00Z","Status":"Confirmed","TotalPrice":10.00,"Segments":[{}],"Metadata":{{}}}}"#,
        segments.join(",")
    )
}

/// The original's keyspace, as its service would have left it.
fn fixtures() -> Vec<(String, String)> {
    vec![
        ("journey:JRN-001".into(), JRN_001.into()),
        ("journey:JRN-002".into(), JRN_002.into()),
        // A status nothing of ours is called.
        (
            "journey:JRN-003".into(),
            document("JRN-003", &[segment("S1", "Landed")]),
        ),
        // A segment id repeated.
        (
            "journey:JRN-004".into(),
            document("JRN-004", &[segment("S1", "Scheduled"), segment("S1", "Delayed")]),
        ),
        ("journey:JRN-005".into(), "{not json".into()),
        (
            "journey:JRN-006".into(),
            r#"{"Id":"JRN-006","PassengerName":"A","BookingDate":"2025-12-01T10:30:00Z","Status":"Confirmed","TotalPrice":1,"Segments":[],"Metadata":{}}"#.into(),
        ),
        // A key the list does not name, and one whose id our rules reject.
        (
            "journey:JRN-008".into(),
            document("JRN-008", &[segment("S1", "Boarding")]),
        ),
        (
            "journey:JRN 7".into(),
            document("JRN 7", &[segment("S1", "Scheduled")]),
        ),
        // The list names one id whose key is gone.
        (
            "journey:ids".into(),
            r#"["JRN-001","JRN-002","JRN-003","JRN-004","JRN-005","JRN-006","JRN-GONE"]"#.into(),
        ),
        // Cache entries of the original.
        (
            "demo:timestamp".into(),
            "Generated at 2025-12-01 10:30:00 UTC".into(),
        ),
        ("greeting".into(), "hello".into()),
    ]
}

async fn write_fixtures(source: &Redis) {
    let mut conn = source.shared();
    for (key, value) in fixtures() {
        let () = conn.set(key, value).await.unwrap();
    }
}

/// Every string key of the original's keyspace with its value (ours left out).
async fn legacy_keyspace(source: &Redis) -> BTreeMap<String, String> {
    let mut conn = source.shared();
    let keys: Vec<String> = conn.keys("*").await.unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        if key.contains('{') || key.starts_with("journeys:") || key.starts_with("outbox") {
            continue;
        }
        out.insert(key.clone(), conn.get(&key).await.unwrap());
    }
    out
}

async fn import(
    source: &Redis,
    target: &RedisJourneyStore,
    options: ImportOptions,
) -> ImportReport {
    legacy::import(source, target, &options, &|_, _| {})
        .await
        .unwrap()
}

fn options(map: &[&str]) -> ImportOptions {
    ImportOptions {
        statuses: StatusMap::parse(map).unwrap(),
        dry_run: false,
        concurrency: 4,
    }
}

fn id(raw: &str) -> JourneyId {
    JourneyId::parse(raw).unwrap()
}

#[rstest]
#[case::into_the_document_layout_of_the_same_redis(S::Lua, true)]
#[case::into_the_hash_layout_from_another_redis(S::Hash, false)]
#[tokio::test]
async fn imports_the_originals_journeys_and_reports_the_rest(
    #[case] strategy: Strategy,
    #[case] same_redis: bool,
) {
    let target_server = TestRedis::single();
    let source_server = TestRedis::single();
    let target = target_server.connect().await;
    let source = if same_redis {
        target.clone()
    } else {
        source_server.connect().await
    };
    write_fixtures(&source).await;
    let before = legacy_keyspace(&source).await;
    dataset::admit(&target, strategy).await.unwrap();
    let ours = store(&target, strategy).await;

    // A dry run reports and writes nothing.
    let dry = import(
        &source,
        &ours,
        ImportOptions {
            dry_run: true,
            ..options(&[])
        },
    )
    .await;
    assert_eq!(
        (dry.imported, dry.kept, dry.skipped.len()),
        (3, 0, 6),
        "{dry:?}"
    );
    assert!(ours.list_ids().await.unwrap().is_empty());

    let report = import(&source, &ours, options(&[])).await;
    assert_eq!(
        (report.listed, report.scanned, report.found),
        (7, 8, 9),
        "{report:?}"
    );
    assert_eq!((report.imported, report.kept), (3, 0), "{report:?}");
    assert!(!report.is_complete());
    let reasons: BTreeMap<&str, &str> = report
        .skipped
        .iter()
        .map(|s| (s.journey.as_str(), s.reason.as_str()))
        .collect();
    for (journey, reason) in [
        ("JRN-003", "unknown segment status \"Landed\""),
        ("JRN-004", "segment id S1 appears twice"),
        ("JRN-005", "not a journey document"),
        ("JRN-006", "missing field PassengerEmail"),
        ("JRN 7", "journey id"),
        ("JRN-GONE", "journey:JRN-GONE does not exist"),
    ] {
        assert!(
            reasons.get(journey).is_some_and(|r| r.contains(reason)),
            "{journey}: expected {reason:?} in {reasons:?}"
        );
    }
    assert_eq!(
        ours.list_ids().await.unwrap(),
        vec![id("JRN-001"), id("JRN-002"), id("JRN-008")]
    );

    // Field for field, in our layout.
    let one = ours.get(&id("JRN-001")).await.unwrap();
    assert_eq!(one.status, JourneyStatus::Confirmed);
    assert_eq!(one.segments[0].status, SegmentStatus::Departed);
    assert_eq!(one.total_price.to_string(), "850.50");
    assert_eq!(one.version.get(), 0);
    assert_eq!(
        one.booking_date,
        Utc.with_ymd_and_hms(2025, 12, 1, 10, 30, 0).unwrap()
    );
    let two = ours.get(&id("JRN-002")).await.unwrap();
    assert_eq!(two.passenger_name, "José Müller-Ñúñez");
    assert_eq!(two.segments[0].carrier, "Iberia Exprés");
    assert_eq!(two.booking_date, one.booking_date, "+01:00 is taken to UTC");
    assert_eq!(
        two.segments[0].departure_time,
        Utc.with_ymd_and_hms(2025, 12, 15, 8, 0, 0).unwrap(),
        "no zone is taken as UTC"
    );
    assert_eq!(
        two.segments[0].arrival_time.timestamp_subsec_nanos(),
        123_456_700
    );
    assert_eq!(two.total_price.to_string(), "1250.00");
    assert_eq!(two.segments[0].price.to_string(), "0.10");
    assert_eq!(two.metadata["note"], "ventana 😀");
    assert_eq!(two.metadata["empty"], "");
    let layout_of = |j: &JourneyId| {
        let target = target.clone();
        let (document, hash) = (keys::journey_document(j), keys::journey_hash(j));
        async move {
            let mut conn = target.shared();
            let d: bool = conn.exists(document).await.unwrap();
            let h: bool = conn.exists(hash).await.unwrap();
            (d, h)
        }
    };
    assert_eq!(
        layout_of(&id("JRN-001")).await,
        (
            strategy.layout() == Layout::Document,
            strategy.layout() == Layout::Hash
        )
    );

    // The source is exactly as it was: nothing written, nothing deleted, the cache untouched.
    assert_eq!(legacy_keyspace(&source).await, before);

    // A live update, then a re-run with the unknown status mapped: the update is kept, the
    // mapped journey comes in.
    ours.update_segment_status(
        &id("JRN-001"),
        &"SEG-001-2".parse().unwrap(),
        SegmentStatus::Delayed,
        None,
    )
    .await
    .unwrap();
    let rerun = import(&source, &ours, options(&["landed=Arrived"])).await;
    assert_eq!((rerun.imported, rerun.kept), (1, 3), "{rerun:?}");
    assert_eq!(rerun.skipped.len(), 5, "{rerun:?}");
    let updated = ours.get(&id("JRN-001")).await.unwrap();
    assert_eq!(updated.segments[1].status, SegmentStatus::Delayed);
    assert_eq!(updated.version.get(), 1);
    let three = ours.get(&id("JRN-003")).await.unwrap();
    assert_eq!(three.segments[0].status, SegmentStatus::Arrived);
    assert_eq!(three.segments[0].segment_id, "S1".parse().unwrap());

    // An imported journey's state is its starting point: the audit finds nothing lost.
    let imported = ours.list_ids().await.unwrap();
    let published =
        flyrtech_tests::assert_audit_clean(&target_server.url(), strategy, &imported).await;
    assert_eq!(published, 1);
}

#[test]
fn a_bad_status_map_is_refused() {
    assert!(StatusMap::parse(&["Landed"]).is_err());
    assert!(StatusMap::parse(&["=Arrived"]).is_err());
    assert!(StatusMap::parse(&["Landed=Arrived"]).is_ok());
}

#[tokio::test]
async fn a_cluster_is_not_the_originals_redis() {
    let cluster = TestRedis::start(flyrtech_tests::Topology::Cluster);
    let redis = cluster.connect().await;
    let ours = store(&redis, S::Lua).await;
    let err = legacy::import(&redis, &ours, &options(&[]), &|_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one Redis server"), "{err}");
}
