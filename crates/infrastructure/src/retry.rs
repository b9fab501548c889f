//! Bounded retries with exponential backoff and full jitter.
//!
//! Used wherever a strategy loses a race and tries again (an optimistic transaction aborted by
//! EXEC, a lock held by someone else, a write refused by fencing). "Full jitter" draws each
//! delay uniformly from zero to the exponential bound, which spreads the losers of one round
//! over the next instead of making them collide again in lockstep.

use std::time::{Duration, Instant};

use flyrtech_core::StoreError;
use rand::RngExt;

/// How hard a strategy tries before giving up with [`StoreError::Conflict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Upper bound of the first delay; doubles with every attempt.
    pub base_delay: Duration,
    /// Cap on the exponential bound.
    pub max_delay: Duration,
    /// No new attempt starts after this much time.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 200,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            deadline: Duration::from_secs(5),
        }
    }
}

/// Counts the attempts of one operation against a [`RetryPolicy`].
#[derive(Debug)]
pub(crate) struct Attempts {
    policy: RetryPolicy,
    started: Instant,
    made: u32,
}

impl Attempts {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            started: Instant::now(),
            made: 1,
        }
    }

    /// Attempts made so far (the current one included).
    pub(crate) fn made(&self) -> u32 {
        self.made
    }

    /// Waits before the next attempt, or answers the conflict error when the budget is spent.
    pub(crate) async fn backoff(&mut self) -> Result<(), StoreError> {
        if self.made >= self.policy.max_attempts || self.started.elapsed() >= self.policy.deadline {
            return Err(StoreError::Conflict {
                attempts: self.made,
            });
        }
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1 << self.made.min(16));
        let bound = exp.min(self.policy.max_delay);
        let delay = rand::rng().random_range(Duration::ZERO..=bound);
        tokio::time::sleep(delay).await;
        self.made += 1;
        Ok(())
    }
}
