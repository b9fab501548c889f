//! Whether a worker's dependencies answer, and how it waits for one that does not.
//!
//! # What it guarantees
//! A long-running worker (`relay`, `project`) never exits because a dependency went away: a
//! restarted PostgreSQL, a NATS node killed, a Redis failing over. It marks the dependency
//! unreachable ([`Dependencies::down`]), waits a [`Backoff`] (exponential, full jitter, capped
//! at [`Backoff::CAP`]) and tries again, for as long as it runs; the first success marks it
//! reachable again and resets the backoff. What it had not committed is redone by the usual
//! rules (an unacknowledged message is redelivered, an outbox entry stays pending), so a
//! restart costs time, never a change.
//!
//! Operators see it three ways: the `dependency_reachable{dependency}` gauge (the
//! `FlyrtechDependencyUnreachable` alert), `GET /ready` beside the worker's metrics (503 with
//! the dependency and its last error while one is unreachable), and a warning per failure.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::RngExt;
use serde::Serialize;

/// Something a worker cannot work without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    /// The journeys' Redis (the outbox).
    Redis,
    /// NATS JetStream, the bus.
    Nats,
    /// PostgreSQL, the projection.
    Postgres,
}

impl Dependency {
    /// Its name, as the gauge's label and `/ready` give it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
            Self::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is known of one dependency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyState {
    /// Whether its last use succeeded.
    pub reachable: bool,
    /// Why its last use failed, while it is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `GET /ready` of a worker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `ready`, or `unavailable` while a dependency is unreachable.
    pub status: &'static str,
    /// Each dependency the worker watches.
    pub dependencies: BTreeMap<Dependency, DependencyState>,
}

impl Readiness {
    /// Whether every dependency is reachable.
    pub fn ready(&self) -> bool {
        self.dependencies.values().all(|d| d.reachable)
    }
}

/// The dependencies one worker watches, shared by its tasks and its `/ready`.
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    states: Arc<Mutex<BTreeMap<Dependency, DependencyState>>>,
}

impl Dependencies {
    /// Watches `dependencies`, each unreachable ("not connected yet") until its first success.
    pub fn watch(dependencies: &[Dependency]) -> Self {
        let watched = Self::default();
        for &dependency in dependencies {
            watched.set(dependency, Some("not connected yet".to_owned()));
        }
        watched
    }

    /// `dependency` answered.
    pub fn up(&self, dependency: Dependency) {
        self.set(dependency, None);
    }

    /// `dependency` failed with `error`.
    pub fn down(&self, dependency: Dependency, error: &dyn fmt::Display) {
        self.set(dependency, Some(error.to_string()));
    }

    fn set(&self, dependency: Dependency, error: Option<String>) {
        let reachable = error.is_none();
        metrics::gauge!("dependency_reachable", "dependency" => dependency.name())
            .set(if reachable { 1.0 } else { 0.0 });
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dependency, DependencyState { reachable, error });
    }

    /// What `/ready` answers now.
    pub fn readiness(&self) -> Readiness {
        let dependencies = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut readiness = Readiness {
            status: "ready",
            dependencies,
        };
        if !readiness.ready() {
            readiness.status = "unavailable";
        }
        readiness
    }
}

/// The wait between two attempts to reach a dependency: exponential from [`Backoff::BASE`],
/// capped at [`Backoff::CAP`], each delay drawn uniformly below its bound (full jitter), so
/// that the workers of a fleet do not all knock at a restarted server in step.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The bound of the first wait.
    pub const BASE: Duration = Duration::from_millis(100);
    /// The longest wait: a dependency back is noticed within it.
    pub const CAP: Duration = Duration::from_secs(5);

    /// The bound of the next wait: `BASE · 2^failures`, at most [`Backoff::CAP`].
    pub fn bound(&self) -> Duration {
        Self::BASE
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::CAP)
    }

    /// The next wait, drawn below [`Backoff::bound`]; counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        let bound = self.bound();
        self.failures = self.failures.saturating_add(1);
        rand::rng().random_range(Duration::ZERO..=bound)
    }

    /// A success: the next failure waits little again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_and_a_success_resets_it() {
        let mut backoff = Backoff::default();
        let mut bounds = Vec::new();
        for _ in 0..10 {
            let bound = backoff.bound();
            bounds.push(bound);
            assert!(backoff.next_delay() <= bound);
        }
        assert_eq!(bounds[0], Backoff::BASE);
        assert_eq!(bounds[1], Backoff::BASE * 2);
        assert_eq!(bounds[5], Duration::from_millis(3_200));
        assert_eq!(bounds[6], Backoff::CAP);
        assert_eq!(bounds[9], Backoff::CAP);
        backoff.reset();
        assert_eq!(backoff.bound(), Backoff::BASE);
    }

    #[test]
    fn ready_only_while_every_dependency_answers() {
        let deps = Dependencies::watch(&[Dependency::Nats, Dependency::Postgres]);
        let first = deps.readiness();
        assert_eq!(first.status, "unavailable");
        assert_eq!(
            first.dependencies[&Dependency::Nats].error.as_deref(),
            Some("not connected yet")
        );
        deps.up(Dependency::Nats);
        deps.up(Dependency::Postgres);
        assert_eq!(deps.readiness().status, "ready");
        deps.down(Dependency::Postgres, &"connection closed");
        let lost = deps.readiness();
        assert_eq!(lost.status, "unavailable");
        assert!(lost.dependencies[&Dependency::Nats].reachable);
        let postgres = &lost.dependencies[&Dependency::Postgres];
        assert!(!postgres.reachable);
        assert_eq!(postgres.error.as_deref(), Some("connection closed"));
        let json = serde_json::to_value(&lost).expect("readiness as JSON");
        assert_eq!(json["dependencies"]["postgres"]["reachable"], false);
    }
}
