//! The integration suite: one test binary, one module per concern, every behaviour test
//! parameterised over every strategy (and over single server and cluster where that applies).
#![allow(clippy::unwrap_used, unreachable_pub)]

use rstest_reuse::{self, template};

/// Every strategy, once. Adding a strategy is one line here, and every test that applies this
/// template runs against it.
#[template]
#[rstest::rstest]
#[case::naive(flyrtech_infrastructure::Strategy::Naive)]
#[case::local_lock(flyrtech_infrastructure::Strategy::LocalLock)]
#[case::optimistic(flyrtech_infrastructure::Strategy::Optimistic)]
#[case::redlock(flyrtech_infrastructure::Strategy::Redlock)]
#[case::lua(flyrtech_infrastructure::Strategy::Lua)]
#[case::hash(flyrtech_infrastructure::Strategy::Hash)]
fn every_strategy(#[case] strategy: flyrtech_infrastructure::Strategy) {}

/// Every strategy that loses no update within one service instance (all but `naive`).
/// Tests over several instances also skip `local-lock` (see `Strategy::is_correct_across_instances`).
#[template]
#[rstest::rstest]
#[case::local_lock(flyrtech_infrastructure::Strategy::LocalLock)]
#[case::optimistic(flyrtech_infrastructure::Strategy::Optimistic)]
#[case::redlock(flyrtech_infrastructure::Strategy::Redlock)]
#[case::lua(flyrtech_infrastructure::Strategy::Lua)]
#[case::hash(flyrtech_infrastructure::Strategy::Hash)]
fn every_correct_strategy(#[case] strategy: flyrtech_infrastructure::Strategy) {}

/// Every strategy that loses nothing however many instances run (all but the two controls).
#[template]
#[rstest::rstest]
#[case::optimistic(flyrtech_infrastructure::Strategy::Optimistic)]
#[case::redlock(flyrtech_infrastructure::Strategy::Redlock)]
#[case::lua(flyrtech_infrastructure::Strategy::Lua)]
#[case::hash(flyrtech_infrastructure::Strategy::Hash)]
fn every_strategy_across_instances(#[case] strategy: flyrtech_infrastructure::Strategy) {}

mod cache;
mod contract;
mod documents;
mod domain;
mod events;
mod failover;
mod hostile;
mod http;
mod http_ops;
mod import;
mod incident;
mod lab;
mod migration;
mod nemesis;
mod outbox;
mod phantoms;
mod projection;
mod properties;
mod redlock;
mod reliability;
mod retention;
mod rooms;
mod security;
mod verify;
mod wait_aof;
