//! What the store's unit tests build journeys from: one journey of two segments, in the
//! original service's JSON.

#![allow(clippy::unwrap_used)]

use flyrtech_core::Journey;

/// `JRN-1`: confirmed, two scheduled segments `SEG-1` and `SEG-2` at 10.50 each.
pub(crate) fn journey() -> Journey {
    let segment = |n: u32| {
        format!(
            r#"{{"segmentId":"SEG-{n}","origin":"MAD","destination":"BCN",
               "departureTime":"2025-12-15T08:00:00Z","arrivalTime":"2025-12-15T09:30:00Z",
               "flightNumber":"IB{n}","carrier":"Iberia","status":"Scheduled","price":10.50}}"#
        )
    };
    serde_json::from_str(&format!(
        r#"{{"id":"JRN-1","passengerName":"A","passengerEmail":"a@example.com",
           "bookingDate":"2025-12-01T10:30:00Z","status":"Confirmed","totalPrice":21.00,
           "segments":[{},{}],"metadata":{{"k":"v"}}}}"#,
        segment(1),
        segment(2)
    ))
    .unwrap()
}
