//! The domain without Redis: the sample data round trip and the transition table through the
//! aggregate.

use flyrtech_core::{
    Applied, DomainError, JourneyFile, JourneyStatus, JourneyVersion, SegmentStatus, Status,
    StatusChange,
};
use flyrtech_tests::{ApplyNow, journey, sample_journeys_json, segment_id, unique_id};
use rstest::rstest;

#[test]
fn sample_data_round_trips_to_equal_json() {
    let original: serde_json::Value = serde_json::from_str(sample_journeys_json()).unwrap();
    let parsed: JourneyFile = serde_json::from_str(sample_journeys_json()).unwrap();
    let written = serde_json::to_value(&parsed).unwrap();
    assert_eq!(written, original);
    assert_eq!(parsed.journeys.len(), 3);
    assert_eq!(parsed.journeys[0].total_price.cents(), 85_050);
}

#[test]
fn every_applied_change_bumps_the_version_by_one_and_no_op_does_not() {
    let mut j = journey(&unique_id("DOM"), 2);
    let depart = StatusChange::Segment {
        segment_id: segment_id(0),
        status: SegmentStatus::Departed,
    };
    assert_eq!(
        j.apply_now(&depart),
        Ok(Applied::Changed {
            version: JourneyVersion::new(1)
        })
    );
    assert_eq!(j.apply_now(&depart), Ok(Applied::Unchanged));
    let start = StatusChange::Journey {
        status: JourneyStatus::InProgress,
    };
    assert_eq!(
        j.apply_now(&start),
        Ok(Applied::Changed {
            version: JourneyVersion::new(2)
        })
    );
    assert_eq!(j.version, JourneyVersion::new(2));
}

#[rstest]
#[case(&[SegmentStatus::Departed], SegmentStatus::Scheduled)]
#[case(&[SegmentStatus::Departed, SegmentStatus::Arrived], SegmentStatus::Departed)]
#[case(&[SegmentStatus::Cancelled], SegmentStatus::Boarding)]
fn a_refused_transition_leaves_the_journey_unchanged(
    #[case] path: &[SegmentStatus],
    #[case] then: SegmentStatus,
) {
    let mut j = journey(&unique_id("DOM"), 1);
    let first = *path.last().unwrap();
    for &step in path {
        j.apply_now(&StatusChange::Segment {
            segment_id: segment_id(0),
            status: step,
        })
        .unwrap();
    }
    let before = j.clone();
    let err = j
        .apply_now(&StatusChange::Segment {
            segment_id: segment_id(0),
            status: then,
        })
        .unwrap_err();
    assert!(
        matches!(err, DomainError::InvalidTransition { from, to, .. } if from == first.as_str() && to == then.as_str()),
        "{err}"
    );
    assert_eq!(j, before);
}

#[test]
fn a_missing_segment_is_a_typed_error() {
    let mut j = journey(&unique_id("DOM"), 1);
    let err = j
        .apply_now(&StatusChange::Segment {
            segment_id: segment_id(7),
            status: SegmentStatus::Departed,
        })
        .unwrap_err();
    assert!(matches!(err, DomainError::SegmentNotFound { .. }), "{err}");
}

#[test]
fn a_cancelled_walk_is_refused_in_the_terminal_journey_state() {
    let mut j = journey(&unique_id("DOM"), 0);
    for s in [JourneyStatus::InProgress, JourneyStatus::Completed] {
        j.apply_now(&StatusChange::Journey { status: s }).unwrap();
    }
    assert!(
        j.apply_now(&StatusChange::Journey {
            status: JourneyStatus::Cancelled
        })
        .is_err()
    );
    assert_eq!(
        j.apply_now(&StatusChange::Journey {
            status: JourneyStatus::Completed
        }),
        Ok(Applied::Unchanged)
    );
}
