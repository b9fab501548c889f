//! Several projectors sharing a partitioned stream, each partition leased through a PostgreSQL
//! advisory lock.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use flyrtech_core::BusError;
use tokio_postgres::Client;

use crate::events::nats::JetStream;

use super::ProjectionError;
use super::apply::AppliedBatch;
use super::gaps::Gaps;
use super::projector::{
    ProjectorSettings, ProjectorStats, PullConsumer, durable_consumer, fetch_and_apply, fill_gaps,
    prepare_schema,
};
use super::schema::namespace;

/// How often a [`PartitionedProjector`] counts the projectors and takes or gives up partitions.
pub const BALANCE_EVERY: Duration = Duration::from_secs(1);

/// One of several projectors sharing a partitioned stream (`crate::events::nats`, "Partitions")
/// without anyone assigning the partitions.
///
/// # Leases
/// A projector owns a partition while its PostgreSQL session holds the advisory lock of that
/// partition (`pg_try_advisory_lock(<partitions namespace>, <partition>)`, the namespace derived
/// from the consumer's name), and fetches only from the partition's own durable JetStream
/// consumer (`<consumer>-p<partition>`, filtered on `journeys.<partition>.>`). Every projector
/// also holds a member lock (`<members namespace>, <random id>`) for as long as its session
/// lives, so the live projectors are counted from `pg_locks`, with no table to clean up.
///
/// Every [`BALANCE_EVERY`] a projector computes its fair share, `ceil(partitions / projectors)`:
/// above it, it gives up its highest partitions (between batches, so it holds no unacknowledged
/// message of them); below it, it takes free partitions. Shutting down ends the session, which
/// releases every lock. A projector that dies (SIGKILL, a lost machine) loses its session with
/// its process: PostgreSQL drops its locks when the connection closes, and within a balance
/// period the others take its partitions over; the changes it had fetched but not committed are
/// redelivered by JetStream after the consumer's `ack_wait` ([`ProjectorSettings::ack_wait`]).
///
/// # Why a takeover applies nothing twice and skips nothing
/// The leases only share the work; correctness stays with the projection's rules (module docs):
/// a change applied by the dead projector is in `processed_events` (a redelivery is a
/// duplicate), one it had not committed is redelivered, and a journey's versions are applied
/// in order whatever order they arrive in. Two projectors briefly fetching one partition (a
/// session that PostgreSQL has not yet noticed is gone) is therefore safe too.
#[derive(Debug)]
pub struct PartitionedProjector {
    bus: JetStream,
    /// One session: it holds the leases and applies the changes.
    client: Client,
    settings: ProjectorSettings,
    members_namespace: i32,
    partitions_namespace: i32,
    owned: BTreeMap<u32, PullConsumer>,
    /// Where the round robin over the owned partitions continues.
    next: u32,
    balanced_at: Option<std::time::Instant>,
    gaps: Gaps,
    stats: ProjectorStats,
}

impl PartitionedProjector {
    /// Joins the projectors of `settings.consumer` on `bus`: makes sure the schema and every
    /// partition's consumer exist, and takes the member lock. Partitions are taken by the first
    /// [`PartitionedProjector::step`].
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL fails; [`BusError::Unavailable`] (inside
    /// [`ProjectionError::Bus`]) when JetStream does.
    pub async fn join(
        bus: &JetStream,
        client: Client,
        settings: ProjectorSettings,
    ) -> Result<Self, ProjectionError> {
        prepare_schema(&client).await?;
        let members_namespace = namespace(&format!("flyrtech:{}:members", settings.consumer));
        let partitions_namespace = namespace(&format!("flyrtech:{}:partitions", settings.consumer));
        // A member id no live projector holds: try until one is free.
        loop {
            let id = rand::random::<i32>() & i32::MAX;
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&members_namespace, &id],
                )
                .await?;
            if row.get::<_, bool>(0) {
                break;
            }
        }
        let projector = Self {
            bus: bus.clone(),
            client,
            settings,
            members_namespace,
            partitions_namespace,
            owned: BTreeMap::new(),
            next: 0,
            balanced_at: None,
            gaps: Gaps::default(),
            stats: ProjectorStats::default(),
        };
        for partition in 0..bus.partitions() {
            projector.consumer(partition).await?;
        }
        Ok(projector)
    }

    /// The durable consumer of one partition, created if absent.
    async fn consumer(&self, partition: u32) -> Result<PullConsumer, ProjectionError> {
        let name = format!("{}-p{partition}", self.settings.consumer);
        let filter = self.bus.partition_subjects(partition);
        durable_consumer(&self.bus, &name, filter, &self.settings).await
    }

    /// Totals so far.
    pub fn stats(&self) -> &ProjectorStats {
        &self.stats
    }

    /// Whether its PostgreSQL session is gone (the server restarted, the connection dropped):
    /// its leases went with the session, so this projector can apply nothing more and must
    /// be replaced by one that joins again.
    pub fn session_lost(&self) -> bool {
        self.client.is_closed()
    }

    /// The partitions this projector owns now.
    pub fn owned(&self) -> Vec<u32> {
        self.owned.keys().copied().collect()
    }

    /// Counts the projectors and takes or gives up partitions to hold its fair share.
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL or JetStream fails.
    pub async fn balance(&mut self) -> Result<(), ProjectionError> {
        // The advisory locks of a namespace held now (two-key locks: objsubid 2).
        const HELD: &str = "SELECT pid, objid::int8 FROM pg_locks WHERE locktype = 'advisory' \
                            AND classid = $1::int8::oid AND objsubid = 2 AND granted";
        let members = self
            .client
            .query(HELD, &[&i64::from(self.members_namespace)])
            .await?
            .iter()
            .map(|row| row.get::<_, i32>(0))
            .collect::<HashSet<i32>>()
            .len();
        let partitions = self.bus.partitions();
        let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
        let share = usize::try_from(partitions.div_ceil(members)).unwrap_or(usize::MAX);
        while self.owned.len() > share {
            let Some((partition, _)) = self.owned.pop_last() else {
                break;
            };
            self.client
                .query_one(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[
                        &self.partitions_namespace,
                        &i32::try_from(partition).unwrap_or(0),
                    ],
                )
                .await?;
            tracing::info!(partition, share, members, "gave up a partition");
        }
        if self.owned.len() < share {
            let held: HashSet<i64> = self
                .client
                .query(HELD, &[&i64::from(self.partitions_namespace)])
                .await?
                .iter()
                .map(|row| row.get(1))
                .collect();
            // Start somewhere different in each projector, so that they do not all race for
            // partition 0 first.
            let start = rand::random::<u32>() % partitions.max(1);
            for k in 0..partitions {
                if self.owned.len() >= share {
                    break;
                }
                let partition = (start + k) % partitions;
                if held.contains(&i64::from(partition)) {
                    continue;
                }
                let taken: bool = self
                    .client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, $2)",
                        &[
                            &self.partitions_namespace,
                            &i32::try_from(partition).unwrap_or(0),
                        ],
                    )
                    .await?
                    .get(0);
                if taken {
                    let consumer = self.consumer(partition).await?;
                    self.owned.insert(partition, consumer);
                    tracing::info!(partition, share, members, "took a partition");
                }
            }
        }
        metrics::gauge!("projector_owned_partitions").set(self.owned.len() as f64);
        self.balanced_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Balances when it is time, then fetches and applies one batch of the next owned
    /// partition in turn; answers what it applied (empty when that partition had nothing, or
    /// when this projector owns none: then it waits `idle_wait` first).
    ///
    /// # Errors
    /// [`ProjectionError`]: nothing of the batch was committed or acknowledged (JetStream
    /// redelivers it).
    pub async fn step(&mut self) -> Result<AppliedBatch, ProjectionError> {
        if self
            .balanced_at
            .is_none_or(|at| at.elapsed() >= BALANCE_EVERY)
        {
            self.balance().await?;
        }
        let Some((&partition, consumer)) = self
            .owned
            .range(self.next..)
            .next()
            .or_else(|| self.owned.iter().next())
        else {
            tokio::time::sleep(self.settings.idle_wait).await;
            return Ok(AppliedBatch::default());
        };
        self.next = partition + 1;
        // Each owned partition waits its share of the idle wait, so a round over them all
        // takes about one idle wait when the bus is quiet.
        let count = u32::try_from(self.owned.len()).unwrap_or(u32::MAX).max(1);
        let wait = (self.settings.idle_wait / count).max(Duration::from_millis(10));
        let mut applied = fetch_and_apply(
            consumer,
            &mut self.client,
            self.settings.batch,
            wait,
            &mut self.stats,
        )
        .await?;
        let owned = &self.owned;
        fill_gaps(
            &mut self.gaps,
            &self.bus,
            &mut self.client,
            |p| owned.contains_key(&p),
            self.settings.gap_after,
            &mut self.stats,
            &mut applied,
        )
        .await;
        Ok(applied)
    }

    /// Whether every partition's consumer has delivered everything and nothing awaits an
    /// acknowledgement (all partitions, owned by this projector or not).
    ///
    /// # Errors
    /// [`ProjectionError::Bus`] when JetStream cannot say.
    pub async fn caught_up(&mut self) -> Result<bool, ProjectionError> {
        for partition in 0..self.bus.partitions() {
            let name = format!("{}-p{partition}", self.settings.consumer);
            let info = self
                .bus
                .stream()
                .consumer_info(&name)
                .await
                .map_err(|e| BusError::unavailable("cannot read the consumer's state", e))?;
            if info.num_pending != 0 || info.num_ack_pending != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
