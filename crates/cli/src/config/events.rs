//! The events pipeline's options: `relay` ([`RelayArgs`], with [`BusArgs`], which `audit` shares)
//! and `project` ([`ProjectArgs`]), each also its file table (`[relay]`, `[project]`). Their
//! defaults are read from the settings types of the infrastructure they configure.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use flyrtech_infrastructure::events::publisher::Retention;
use flyrtech_infrastructure::events::relay::RelaySettings;
use flyrtech_infrastructure::keys;
use flyrtech_infrastructure::projection::ProjectorSettings;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::serve::millis;
use super::values::{MaxAge, parse_age};

/// Where the relay publishes (and `audit` reads).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct BusArgs {
    /// Publish to NATS JetStream at this URL (`nats://host:port`; stream `JOURNEY_EVENTS`,
    /// created if absent) instead of the Redis stream.
    #[arg(long, env = "FLYRTECH_BUS")]
    pub bus: Option<String>,
    /// Redis URL of the event bus [default: the journey Redis].
    #[arg(long, env = "FLYRTECH_EVENTS_URL")]
    pub events_url: Option<String>,
    /// The bus stream's name.
    #[arg(long, default_value = keys::EVENTS)]
    pub events_stream: String,
    /// Entries the Redis bus stream keeps once every consumer group has read the older ones.
    #[arg(long, alias = "events-retention", default_value_t = Retention::default().max_len)]
    pub bus_max_len: usize,
    /// Age past which Redis bus entries are trimmed once every consumer group has read them
    /// (`30s`, `15m`, `24h`, `7d`; `off` keeps them by length alone).
    #[arg(long, value_parser = parse_age, default_value_t = MaxAge(Retention::default().max_age))]
    pub bus_max_age: MaxAge,
    /// Entries beyond which the Redis bus stream is trimmed even if a consumer group has not
    /// read them (counted in `bus_trimmed_over_cap_total`, and logged).
    #[arg(long, default_value_t = Retention::default().hard_cap)]
    pub bus_hard_cap: usize,
    /// With --bus: the partition count to record if this relay creates the JetStream stream
    /// [default: 8]; an existing stream's count must be the same (changing it is a migration:
    /// docs/outbox/SCHEMA.md, "Partitions").
    #[arg(long)]
    pub partitions: Option<u32>,
    /// With --bus on a JetStream cluster: the stream's replicas (3 on three nodes: the loss of
    /// one loses nothing) [default: 1 for a new stream, an existing one's own count].
    #[arg(long)]
    pub bus_replicas: Option<usize>,
}

impl BusArgs {
    /// Connects to the Redis bus these flags name (the journey Redis unless `--events-url` says
    /// otherwise).
    ///
    /// # Errors
    /// [`flyrtech_core::StoreError`] when the bus cannot be reached.
    pub async fn redis(
        &self,
        journeys: &flyrtech_infrastructure::Redis,
    ) -> Result<flyrtech_infrastructure::Redis, flyrtech_core::StoreError> {
        match &self.events_url {
            Some(url) => {
                flyrtech_infrastructure::Redis::connect(
                    &flyrtech_infrastructure::RedisSettings::new(url.clone()),
                )
                .await
            }
            None => Ok(journeys.clone()),
        }
    }

    /// The bus stream's name.
    pub fn events_stream(&self) -> &str {
        &self.events_stream
    }

    /// The retention these flags name.
    pub fn retention(&self) -> Retention {
        Retention {
            max_len: self.bus_max_len,
            max_age: self.bus_max_age.0,
            hard_cap: self.bus_hard_cap.max(self.bus_max_len),
        }
    }
}

/// Options of `flyrtech relay`, and its `[relay]` table.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RelayArgs {
    /// Publish until the outbox is empty, then exit (instead of running until SIGTERM).
    #[arg(long)]
    pub drain: bool,
    /// Entries read and published per outbox shard batch.
    #[arg(long, default_value_t = RelaySettings::new().batch)]
    pub batch: usize,
    /// Outbox shards processed at once.
    #[arg(long, default_value_t = RelaySettings::new().parallel)]
    pub parallel: usize,
    /// Pending entries idle this long are claimed from a relay presumed dead, in milliseconds.
    #[arg(long, default_value_t = millis(RelaySettings::new().claim_idle))]
    pub claim_idle_ms: u64,
    /// How long an outbox shard's lease lasts, in milliseconds.
    #[arg(long, default_value_t = millis(RelaySettings::new().lease))]
    pub lease_ms: u64,
    /// Deliveries after which an entry that keeps failing is parked.
    #[arg(long, default_value_t = RelaySettings::new().max_deliveries)]
    pub max_deliveries: u64,
    /// Pause between sweeps that found nothing to publish, in milliseconds.
    #[arg(long, default_value_t = millis(RelaySettings::new().poll_interval))]
    pub poll_ms: u64,
    /// This relay's consumer name \[default: `relay-<pid>-<random>`\].
    #[arg(long)]
    pub consumer: Option<String>,
    /// Modelled bus latency between publishing a batch and acknowledging it, in milliseconds;
    /// for tests and the lab.
    #[arg(long, default_value_t = millis(RelaySettings::new().publish_delay))]
    pub publish_delay_ms: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Write what was published (published, redelivered, parked, batches, unconfirmed) as JSON
    /// here when the relay stops.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub bus: BusArgs,
}

impl RelayArgs {
    /// The relay settings these options describe.
    ///
    /// # Errors
    /// [`flyrtech_core::InvalidInput`] for a zero batch size, parallelism or delivery bound.
    pub fn settings(&self) -> Result<RelaySettings, flyrtech_core::InvalidInput> {
        let d = RelaySettings::new();
        let settings = RelaySettings {
            consumer: self.consumer.clone().unwrap_or(d.consumer),
            batch: self.batch,
            parallel: self.parallel,
            claim_idle: Duration::from_millis(self.claim_idle_ms),
            lease: Duration::from_millis(self.lease_ms),
            max_deliveries: self.max_deliveries,
            poll_interval: Duration::from_millis(self.poll_ms),
            publish_delay: Duration::from_millis(self.publish_delay_ms),
            confirm: None,
        };
        if settings.batch == 0 || settings.parallel == 0 || settings.max_deliveries == 0 {
            return Err(flyrtech_core::InvalidInput::new(
                "relay",
                "--batch, --parallel and --max-deliveries must each be at least 1",
            ));
        }
        Ok(settings)
    }
}

/// Options of `flyrtech project`, and its `[project]` table.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ProjectArgs {
    /// The JetStream server the relay publishes to (`nats://host:port`).
    #[arg(long, env = "FLYRTECH_BUS")]
    pub bus: Option<String>,
    /// The projection's database (`postgres://user@host:port/db`); its tables are created from
    /// docs/outbox/SCHEMA.sql when missing.
    #[arg(long, env = "FLYRTECH_PROJECTION")]
    pub postgres: Option<String>,
    /// Stop once every change on the bus is projected (instead of running until SIGTERM).
    #[arg(long)]
    pub drain: bool,
    /// Changes applied per transaction.
    #[arg(long, default_value_t = ProjectorSettings::default().batch)]
    pub batch: usize,
    /// The durable consumer's name.
    #[arg(long, default_value_t = ProjectorSettings::default().consumer)]
    pub consumer: String,
    /// How long a delivered change may stay unacknowledged before JetStream redelivers it
    /// (a projector killed mid-batch: how long the rest of its last batch waits for whoever
    /// takes its partition over), in milliseconds. A change held three times as long for a
    /// predecessor that never came is looked for in the stream itself.
    #[arg(long, default_value_t = millis(ProjectorSettings::default().ack_wait))]
    pub ack_wait_ms: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`): `projector_changes_total` by
    /// outcome, `projector_lag_seconds` (commit in Redis to commit here), and
    /// `projector_owned_partitions`.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl ProjectArgs {
    /// The projector's settings.
    ///
    /// # Errors
    /// [`ConfigError::Value`] for a zero batch.
    pub fn settings(&self) -> Result<ProjectorSettings, ConfigError> {
        if self.batch == 0 {
            return Err(ConfigError::value("batch", "must be at least 1"));
        }
        Ok(ProjectorSettings {
            consumer: self.consumer.clone(),
            batch: self.batch,
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            gap_after: Duration::from_millis(self.ack_wait_ms.saturating_mul(3)),
            ..ProjectorSettings::default()
        })
    }

    /// The bus and the database, which have no defaults.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the one no layer gives.
    pub fn endpoints(&self) -> Result<(&str, &str), ConfigError> {
        let missing = |key| {
            ConfigError::value(
                key,
                "is required (a flag, its FLYRTECH_ variable, or the [project] table)",
            )
        };
        Ok((
            self.bus.as_deref().ok_or_else(|| missing("bus"))?,
            self.postgres
                .as_deref()
                .ok_or_else(|| missing("postgres"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{Command, parse};

    fn layered(argv: &[&str], text: &str) -> Result<RelayArgs, ConfigError> {
        match parse(&[&["relay"], argv].concat(), text)?.0 {
            Command::Relay(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_relay_table_fills_what_flags_leave_open() {
        let text =
            "[relay]\nbatch = 64\npoll_ms = 20\nbus_max_age = \"1h\"\nevents_stream = \"ev\"\n";
        let relay = layered(&["--batch=32"], text).expect("layered");
        let made = relay.settings().expect("settings");
        assert_eq!(made.batch, 32);
        assert_eq!(made.poll_interval, Duration::from_millis(20));
        assert_eq!(made.parallel, RelaySettings::new().parallel);
        assert_eq!(
            relay.bus.retention().max_age,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(relay.bus.events_stream(), "ev");
        let defaults = layered(&[], "").expect("defaults");
        assert_eq!(defaults.bus.retention(), Retention::default());
        assert_eq!(defaults.bus.events_stream(), keys::EVENTS);
        let err = layered(&[], "[relay]\nbach = 64\n").expect_err("a typo");
        assert!(err.to_string().contains("bach"), "{err}");
        let zero = layered(&["--parallel=0"], "").expect("parsed");
        assert!(zero.settings().is_err());
    }

    #[test]
    fn the_project_table_fills_what_flags_leave_open() {
        let text = "[project]\nbus = \"nats://127.0.0.1:1\"\npostgres = \"postgres://u@h/db\"\nbatch = 9\n";
        let Command::Project(project) = parse(&["project"], text).expect("layered").0 else {
            panic!("not project");
        };
        assert_eq!(
            project.endpoints().expect("endpoints"),
            ("nats://127.0.0.1:1", "postgres://u@h/db")
        );
        assert_eq!(project.settings().expect("settings").batch, 9);
        let Command::Project(bare) = parse(&["project"], "").expect("layered").0 else {
            panic!("not project");
        };
        let err = bare.endpoints().expect_err("no bus");
        assert!(err.to_string().contains("bus"), "{err}");
        let (made, d) = (
            bare.settings().expect("defaults"),
            ProjectorSettings::default(),
        );
        assert_eq!(
            (made.batch, made.ack_wait, made.consumer),
            (d.batch, d.ack_wait, d.consumer)
        );
    }
}
