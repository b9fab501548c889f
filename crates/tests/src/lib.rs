//! Test support shared by every integration test: real Redis servers on free loopback ports,
//! stores for any strategy, and journey fixtures.
//!
//! # Layout
//! - [`TestRedis`]: a private standalone server or 3-master cluster, killed on drop; every
//!   failure message carries the server log.
//! - [`store`] / [`store_with`]: a journey store for a strategy on a given Redis.
//! - [`journey`], [`sample_journeys_json`], [`unique_id`]: fixtures.
//! - [`STRATEGIES`]: every strategy, for rstest's `#[values]`.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flyrtech_core::{Journey, JourneyId, SegmentId};
use flyrtech_infrastructure::{
    LocalRedis, Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy,
};

pub use flyrtech_infrastructure::Strategy as S;

/// Where a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One standalone server.
    Single,
    /// A 3-master cluster.
    Cluster,
}

/// A private Redis deployment for one test.
#[derive(Debug)]
pub struct TestRedis {
    local: LocalRedis,
}

impl TestRedis {
    /// Starts a deployment of the given topology, or panics with the reason and the log.
    pub fn start(topology: Topology) -> Self {
        let local = match topology {
            Topology::Single => LocalRedis::standalone(),
            Topology::Cluster => LocalRedis::cluster(3),
        };
        match local {
            Ok(local) => Self { local },
            Err(e) => panic!("cannot start a test Redis ({topology:?}): {e}"),
        }
    }

    /// One standalone server.
    pub fn single() -> Self {
        Self::start(Topology::Single)
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        self.local.url()
    }

    /// A fresh connection handle, retrying the first connect briefly.
    pub async fn connect(&self) -> Redis {
        let settings = RedisSettings::new(self.url());
        let mut last = None;
        for _ in 0..50 {
            match Redis::connect(&settings).await {
                Ok(redis) => return redis,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "cannot connect to {}: {last:?}\n{}",
            self.url(),
            self.local.log_tail()
        );
    }

    /// The servers' logs, for assertion messages.
    pub fn logs(&self) -> String {
        self.local.log_tail()
    }
}

/// A store for `strategy` with no processing delay.
pub async fn store(redis: &Redis, strategy: Strategy) -> RedisJourneyStore {
    store_with(redis, StoreConfig::new(strategy)).await
}

/// A store with a custom configuration.
pub async fn store_with(redis: &Redis, config: StoreConfig) -> RedisJourneyStore {
    RedisJourneyStore::new(redis.clone(), &config)
        .await
        .unwrap()
}

/// A store with a processing delay between read and write.
pub async fn store_delayed(
    redis: &Redis,
    strategy: Strategy,
    delay: Duration,
) -> RedisJourneyStore {
    store_with(
        redis,
        StoreConfig {
            processing_delay: delay,
            ..StoreConfig::new(strategy)
        },
    )
    .await
}

/// A process-unique journey id with a readable prefix.
pub fn unique_id(prefix: &str) -> JourneyId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    JourneyId::parse(format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))).unwrap()
}

/// The segment id of segment `i` of a fixture journey.
pub fn segment_id(i: usize) -> SegmentId {
    flyrtech_api::lab::synthetic_segment_id(i).unwrap()
}

/// A confirmed journey with `segments` scheduled segments, the lab's synthetic journey.
pub fn journey(id: &JourneyId, segments: usize) -> Journey {
    flyrtech_api::lab::synthetic_journey(id, segments).unwrap()
}

/// The sample data shipped in `data/journeys.json`.
pub fn sample_journeys_json() -> &'static str {
    include_str!("../../../data/journeys.json")
}
