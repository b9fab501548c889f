//! Fair shares of what every client shares: per client (a verified key, else an address, see
//! [`Client`]), the journeys it creates, the cache entries it holds and its changes waiting in
//! the outbox.
//!
//! # The gap it closes
//! A rate limit bounds how fast a client asks, not what its requests leave behind. Within its
//! rate, one write key could create journeys until Redis' memory is gone, fill the cache's
//! 10,000 entries for everyone, or cycle one segment while no relay runs until the outbox
//! reaches its hard cap, after which every client's updates are `503 outbox-full`. Each quota
//! refuses that one client (with its own problem type) while the others go on:
//!
//! | quota | counted | refusal |
//! |---|---|---|
//! | journeys created (`--quota-journeys`) | in Redis, exactly ([`JourneyQuota`](flyrtech_infrastructure::store::quota::JourneyQuota)) | 507 `journey-quota` |
//! | cache entries held (`--quota-cache-entries`) | in Redis, by the cache's own script | 507 `cache-quota` |
//! | changes waiting in the outbox (`--quota-outbox-share`) | by this instance, estimated ([`OutboxShares`]) | 429 `outbox-quota` |
//!
//! # The outbox share, estimated
//! Which entries of the outbox are still waiting is known to the relay, not to the writer, and
//! the outbox does not record who wrote an entry. But it is published in order, and the
//! [`BacklogWatch`] knows the age of its oldest entry: every change this instance acknowledged
//! since then is still waiting, every change before it is published. So each client's
//! acknowledged changes are counted by the second they were made, and its share is the count
//! since the oldest waiting entry was written (minus the watch's measurement interval, so the
//! estimate never undercounts). A client's counts are kept in at most [`MAX_SPANS`] spans: when
//! a new second would exceed them, the two neighbours covering the shortest time merge, and a
//! span counts as waiting until its last second is published, so the estimate errs high, by at
//! most one span's changes. At most `max_clients` clients are tracked; past them, after a sweep
//! of the clients with nothing waiting, the others share one count. The estimate is this
//! instance's: a client spread over `n` instances may hold `n` shares.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flyrtech_cli::config::QuotaLimits;
use flyrtech_infrastructure::events::backlog::BacklogWatch;

use super::limit::Client;
use super::problem::ApiError;

/// Spans of time each client's changes are counted in, at most.
pub const MAX_SPANS: usize = 32;

/// Each client's acknowledged changes that may still wait in the outbox (see the module's
/// documentation for how they are estimated).
#[derive(Debug)]
pub struct OutboxShares {
    limit: u64,
    /// How old the watch's measurement may be.
    staleness: Duration,
    max_clients: usize,
    started: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    ledgers: HashMap<Client, Ledger>,
    /// When the table was last swept because it was full (seconds since start).
    swept_at: Option<u32>,
}

/// One client's changes, by span of seconds, oldest first.
#[derive(Debug, Default)]
struct Ledger {
    spans: VecDeque<Span>,
    waiting: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first: u32,
    last: u32,
    changes: u32,
}

impl Ledger {
    /// Forgets the spans published in full: those whose last second is before `cut`.
    fn forget_before(&mut self, cut: u32) {
        while let Some(span) = self.spans.front().copied() {
            if span.last >= cut {
                break;
            }
            self.waiting -= u64::from(span.changes);
            self.spans.pop_front();
        }
    }

    /// Counts `changes` at `second` (never before the last one counted).
    fn add(&mut self, second: u32, changes: u32) {
        if let Some(span) = self.spans.back_mut()
            && span.last == second
        {
            let added = span.changes.saturating_add(changes) - span.changes;
            span.changes += added;
            self.waiting += u64::from(added);
            return;
        }
        if self.spans.len() == MAX_SPANS {
            self.merge_shortest_pair();
        }
        self.spans.push_back(Span {
            first: second,
            last: second,
            changes,
        });
        self.waiting += u64::from(changes);
    }

    /// Merges the two neighbours that together cover the shortest time (the older pair on a
    /// tie), so the spans stay about equally long whatever the history.
    fn merge_shortest_pair(&mut self) {
        let Some(at) = (0..self.spans.len().saturating_sub(1))
            .min_by_key(|&i| self.spans[i + 1].last - self.spans[i].first)
        else {
            return;
        };
        let Some(next) = self.spans.remove(at + 1) else {
            return;
        };
        let span = &mut self.spans[at];
        let merged = span.changes.saturating_add(next.changes);
        // What saturation drops is no longer counted anywhere.
        self.waiting -= u64::from(span.changes) + u64::from(next.changes) - u64::from(merged);
        span.last = next.last;
        span.changes = merged;
    }
}

impl OutboxShares {
    /// Shares of `share` of the backlog's hard cap, as measured by `backlog`; `None` when the
    /// outbox has no hard cap (no share to take of it) or no share is configured.
    pub fn new(limits: &QuotaLimits, backlog: &BacklogWatch) -> Option<Self> {
        let share = limits.outbox_share?;
        let cap = backlog.limits().hard_cap?;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let limit = ((cap as f64 * share).ceil() as u64).max(1);
        Some(Self {
            limit,
            staleness: backlog.limits().every,
            max_clients: limits.max_clients.max(1),
            started: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    /// The changes one client may have waiting.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Refuses an update by `client` when its waiting changes have reached its share, the
    /// oldest entry of the outbox being `oldest_age` old (`None`: empty) at the last measurement.
    ///
    /// # Errors
    /// [`ApiError`] 429 `outbox-quota`, naming the client, its waiting changes and the share.
    pub fn admit(&self, client: &Client, oldest_age: Option<Duration>) -> Result<(), ApiError> {
        let now = self.now();
        let cut = self.cut(now, oldest_age);
        let waiting = {
            let mut table = self.lock();
            match table.ledgers.get_mut(client) {
                Some(ledger) => {
                    ledger.forget_before(cut);
                    ledger.waiting
                }
                None => table
                    .ledgers
                    .get(&Client::Overflow)
                    .map_or(0, |l| l.waiting),
            }
        };
        if waiting < self.limit {
            return Ok(());
        }
        metrics::counter!("http_quota_refused_total", "quota" => "outbox").increment(1);
        Err(ApiError::outbox_quota(format!(
            "{client} has about {waiting} changes waiting in the outbox for the relay, its share \
             of {} (--quota-outbox-share); other clients' updates are served. Retry once a \
             relay has published them; nothing was changed",
            self.limit
        )))
    }

    /// Counts one acknowledged change by `client`.
    pub fn record(&self, client: &Client, oldest_age: Option<Duration>) {
        let now = self.now();
        let cut = self.cut(now, oldest_age);
        let mut table = self.lock();
        let key = if table.ledgers.contains_key(client) || self.has_room(&mut table, now, cut) {
            client.clone()
        } else {
            Client::Overflow
        };
        let ledger = table.ledgers.entry(key).or_default();
        ledger.forget_before(cut);
        ledger.add(now, 1);
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.lock().ledgers.len()
    }

    /// Whether a client not yet tracked gets a ledger of its own: when the table is full, the
    /// clients with nothing waiting leave it first (at most once a second).
    fn has_room(&self, table: &mut Table, now: u32, cut: u32) -> bool {
        if table.ledgers.len() < self.max_clients {
            return true;
        }
        if table.swept_at != Some(now) {
            table.swept_at = Some(now);
            table.ledgers.retain(|_, ledger| {
                ledger.forget_before(cut);
                ledger.waiting > 0
            });
        }
        table.ledgers.len() < self.max_clients
    }

    /// The first second whose changes may still wait: the oldest waiting entry's, less the
    /// measurement's staleness and one second for rounding.
    fn cut(&self, now: u32, oldest_age: Option<Duration>) -> u32 {
        let back = oldest_age.unwrap_or_default() + self.staleness + Duration::from_secs(1);
        now.saturating_sub(u32::try_from(back.as_secs()).unwrap_or(u32::MAX))
    }

    fn now(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned table only means a panic mid-update of a count: keep counting.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(seconds: impl IntoIterator<Item = u32>) -> Ledger {
        let mut ledger = Ledger::default();
        for second in seconds {
            ledger.add(second, 1);
        }
        ledger
    }

    #[test]
    fn changes_of_one_second_share_a_span_and_published_spans_are_forgotten() {
        let mut ledger = ledger([3, 3, 3, 5, 8]);
        assert_eq!(ledger.spans.len(), 3);
        assert_eq!(ledger.waiting, 5);
        ledger.forget_before(5);
        assert_eq!(ledger.waiting, 2);
        ledger.forget_before(9);
        assert_eq!((ledger.waiting, ledger.spans.len()), (0, 0));
    }

    #[test]
    fn a_long_history_is_kept_in_bounded_spans_that_never_undercount() {
        let ledger = ledger(0..10_000);
        assert_eq!(ledger.spans.len(), MAX_SPANS);
        assert_eq!(ledger.waiting, 10_000);
        // Spans stay about equally long: the estimate of what waits since any second errs
        // high by at most about two spans' changes, never low.
        for cut in [1_000, 5_000, 9_000, 9_990] {
            let mut copy = Ledger {
                spans: ledger.spans.clone(),
                waiting: ledger.waiting,
            };
            copy.forget_before(cut);
            let exact = u64::from(10_000 - cut);
            assert!(
                copy.waiting >= exact,
                "cut {cut}: {} < {exact}",
                copy.waiting
            );
            assert!(
                copy.waiting <= exact + 2 * 10_000 / MAX_SPANS as u64,
                "cut {cut}: {} is far above {exact}",
                copy.waiting
            );
        }
    }
}
