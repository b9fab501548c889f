//! The metrics recorder's memory stays flat when nobody scrapes `/metrics`: its own
//! test binary, so that no other test's allocations move the process' resident size.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

const CHUNKS: usize = 10;
const PER_CHUNK: usize = 100_000;

/// Records a million histogram samples in chunks, letting `settle` run after each; returns the
/// resident growth from the end of the first chunk (warm-up) to the end of the last.
fn growth(recorder: &metrics_exporter_prometheus::PrometheusRecorder, settle: impl Fn()) -> u64 {
    let mut after_first = 0;
    for chunk in 0..CHUNKS {
        metrics::with_local_recorder(recorder, || {
            let histogram = metrics::histogram!("request_seconds", "route" => "/api/journeys");
            for i in 0..PER_CHUNK {
                #[allow(clippy::cast_precision_loss)]
                histogram.record(i as f64 / 1e6);
            }
        });
        settle();
        if chunk == 0 {
            after_first = resident();
        }
    }
    resident().saturating_sub(after_first)
}

#[test]
fn a_million_samples_without_a_scrape_leave_the_recorder_flat() {
    // With the upkeep the service runs: each chunk is drained before the next.
    let kept = PrometheusBuilder::new().build_recorder();
    let runs = flyrtech_api::http::keep_up(kept.handle(), Duration::from_millis(5));
    let with_upkeep = growth(&kept, || {
        let seen = runs.load(Ordering::Acquire);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Two more upkeeps: the second started after the chunk was recorded.
        while runs.load(Ordering::Acquire) < seen + 2 {
            assert!(Instant::now() < deadline, "the upkeep stopped running");
            std::thread::yield_now();
        }
    });
    // Without it (what a recorder from build_recorder() does by itself): every sample is kept.
    let unkept = PrometheusBuilder::new().build_recorder();
    let without_upkeep = growth(&unkept, || {});
    eprintln!(
        "resident growth over 900,000 samples: {with_upkeep} bytes with the upkeep, \
         {without_upkeep} without"
    );
    assert!(
        with_upkeep < 1 << 20,
        "the recorder grew {with_upkeep} bytes although its upkeep ran"
    );
    assert!(
        without_upkeep > 4 << 20,
        "without upkeep the samples should pile up ({without_upkeep} bytes): the test measures \
         nothing"
    );
}
