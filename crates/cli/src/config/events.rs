//! The events pipeline's flags: `relay` ([`RelayArgs`], with [`BusArgs`], which `audit` shares)
//! and `project` ([`ProjectArgs`]). Each is also its file table (`[relay]`, `[project]`), and
//! `layered` puts the flags over it; the defaults are applied once, where the settings are made.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use flyrtech_infrastructure::events::publisher::Retention;
use flyrtech_infrastructure::events::relay::RelaySettings;
use flyrtech_infrastructure::keys;
use flyrtech_infrastructure::projection::ProjectorSettings;
use serde::Deserialize;

use super::ConfigError;
use super::values::{MaxAge, parse_age, parsed};

/// Where the relay publishes (and `audit` reads).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusArgs {
    /// Publish to NATS JetStream at this URL (`nats://host:port`; stream `JOURNEY_EVENTS`,
    /// created if absent) instead of the Redis stream.
    #[arg(long, env = "FLYRTECH_BUS")]
    pub bus: Option<String>,
    /// Redis URL of the event bus [default: the journey Redis].
    #[arg(long, env = "FLYRTECH_EVENTS_URL")]
    pub events_url: Option<String>,
    /// The bus stream's name [default: events].
    #[arg(long)]
    pub events_stream: Option<String>,
    /// Entries the Redis bus stream keeps once every consumer group has read the older ones
    /// [default: 1000000].
    #[arg(long, alias = "events-retention")]
    pub bus_max_len: Option<usize>,
    /// Age past which Redis bus entries are trimmed once every consumer group has read them
    /// (`30s`, `15m`, `24h`, `7d`; `off` keeps them by length alone) [default: 24h].
    #[arg(long, value_parser = parse_age)]
    #[serde(deserialize_with = "parsed")]
    pub bus_max_age: Option<MaxAge>,
    /// Entries beyond which the Redis bus stream is trimmed even if a consumer group has not
    /// read them (counted in `bus_trimmed_over_cap_total`, and logged) [default: 10000000].
    #[arg(long)]
    pub bus_hard_cap: Option<usize>,
    /// With --bus: the partition count to record if this relay creates the JetStream stream
    /// [default: 8]; an existing stream's count must be the same (changing it is a migration:
    /// docs/outbox/SCHEMA.md, "Partitions").
    #[arg(long)]
    pub partitions: Option<u32>,
}

impl BusArgs {
    /// These flags over `file`'s.
    pub fn layered(&self, file: &Self) -> Self {
        Self {
            bus: self.bus.clone().or_else(|| file.bus.clone()),
            events_url: self.events_url.clone().or_else(|| file.events_url.clone()),
            events_stream: self
                .events_stream
                .clone()
                .or_else(|| file.events_stream.clone()),
            bus_max_len: self.bus_max_len.or(file.bus_max_len),
            bus_max_age: self.bus_max_age.or(file.bus_max_age),
            bus_hard_cap: self.bus_hard_cap.or(file.bus_hard_cap),
            partitions: self.partitions.or(file.partitions),
        }
    }

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
        self.events_stream.as_deref().unwrap_or(keys::EVENTS)
    }

    /// The retention these flags name.
    pub fn retention(&self) -> Retention {
        let d = Retention::default();
        let max_len = self.bus_max_len.unwrap_or(d.max_len);
        Retention {
            max_len,
            max_age: self.bus_max_age.map_or(d.max_age, |age| age.0),
            hard_cap: self.bus_hard_cap.unwrap_or(d.hard_cap).max(max_len),
        }
    }
}

/// Options of `flyrtech relay`, and its `[relay]` table.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct RelayArgs {
    /// Publish until the outbox is empty, then exit (instead of running until SIGTERM).
    #[arg(long)]
    pub drain: bool,
    /// Entries read and published per outbox shard batch [default: 256].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Outbox shards processed at once [default: 8].
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Pending entries idle this long are claimed from a relay presumed dead, in milliseconds
    /// [default: 30000].
    #[arg(long)]
    pub claim_idle_ms: Option<u64>,
    /// How long an outbox shard's lease lasts, in milliseconds [default: 15000].
    #[arg(long)]
    pub lease_ms: Option<u64>,
    /// Deliveries after which an entry that keeps failing is parked [default: 5].
    #[arg(long)]
    pub max_deliveries: Option<u64>,
    /// Pause between sweeps that found nothing to publish, in milliseconds [default: 100].
    #[arg(long)]
    pub poll_ms: Option<u64>,
    /// This relay's consumer name (default: `relay-<pid>-<random>`).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Modelled bus latency between publishing a batch and acknowledging it, in milliseconds;
    /// for tests and the lab [default: 0].
    #[arg(long)]
    pub publish_delay_ms: Option<u64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    #[serde(flatten)]
    pub bus: BusArgs,
    /// Keys of the table that no flag has (serde cannot deny them through a flattened table).
    #[arg(skip)]
    #[serde(flatten)]
    pub unknown: BTreeMap<String, toml::Value>,
}

impl RelayArgs {
    /// These flags over `file`'s (the `[relay]` table).
    ///
    /// # Errors
    /// [`ConfigError::Value`] for a key of the table that is not a relay flag.
    pub fn layered(&self, file: &Self) -> Result<Self, ConfigError> {
        unknown_keys("relay", &file.unknown)?;
        Ok(Self {
            drain: self.drain || file.drain,
            batch: self.batch.or(file.batch),
            parallel: self.parallel.or(file.parallel),
            claim_idle_ms: self.claim_idle_ms.or(file.claim_idle_ms),
            lease_ms: self.lease_ms.or(file.lease_ms),
            max_deliveries: self.max_deliveries.or(file.max_deliveries),
            poll_ms: self.poll_ms.or(file.poll_ms),
            consumer: self.consumer.clone().or_else(|| file.consumer.clone()),
            publish_delay_ms: self.publish_delay_ms.or(file.publish_delay_ms),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            bus: self.bus.layered(&file.bus),
            unknown: BTreeMap::new(),
        })
    }

    /// The relay settings these flags describe, defaults for what none sets.
    ///
    /// # Errors
    /// [`flyrtech_core::InvalidInput`] for a zero batch size, parallelism or delivery bound.
    pub fn settings(&self) -> Result<RelaySettings, flyrtech_core::InvalidInput> {
        let d = RelaySettings::new();
        let ms = |flag: Option<u64>, default: Duration| flag.map_or(default, Duration::from_millis);
        let settings = RelaySettings {
            consumer: self.consumer.clone().unwrap_or(d.consumer),
            batch: self.batch.unwrap_or(d.batch),
            parallel: self.parallel.unwrap_or(d.parallel),
            claim_idle: ms(self.claim_idle_ms, d.claim_idle),
            lease: ms(self.lease_ms, d.lease),
            max_deliveries: self.max_deliveries.unwrap_or(d.max_deliveries),
            poll_interval: ms(self.poll_ms, d.poll_interval),
            publish_delay: ms(self.publish_delay_ms, d.publish_delay),
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
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Changes applied per transaction [default: 512].
    #[arg(long)]
    pub batch: Option<usize>,
    /// The durable consumer's name [default: projection].
    #[arg(long)]
    pub consumer: Option<String>,
    /// How long a delivered change may stay unacknowledged before JetStream redelivers it
    /// (a projector killed mid-batch: how long the rest of its last batch waits for whoever
    /// takes its partition over), in milliseconds [default: 5000].
    #[arg(long)]
    pub ack_wait_ms: Option<u64>,
    /// Serve Prometheus metrics on this address (`GET /metrics`): `projector_changes_total` by
    /// outcome, `projector_lag_seconds` (commit in Redis to commit here), and
    /// `projector_owned_partitions`.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl ProjectArgs {
    /// These flags over `file`'s (the `[project]` table).
    pub fn layered(&self, file: &Self) -> Self {
        Self {
            bus: self.bus.clone().or_else(|| file.bus.clone()),
            postgres: self.postgres.clone().or_else(|| file.postgres.clone()),
            drain: self.drain || file.drain,
            batch: self.batch.or(file.batch),
            consumer: self.consumer.clone().or_else(|| file.consumer.clone()),
            ack_wait_ms: self.ack_wait_ms.or(file.ack_wait_ms),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        }
    }

    /// The projector's settings, defaults for what none sets.
    ///
    /// # Errors
    /// [`ConfigError::Value`] for a zero batch.
    pub fn settings(&self) -> Result<ProjectorSettings, ConfigError> {
        let d = ProjectorSettings::default();
        let settings = ProjectorSettings {
            consumer: self.consumer.clone().unwrap_or(d.consumer),
            batch: self.batch.unwrap_or(d.batch),
            ack_wait: self.ack_wait_ms.map_or(d.ack_wait, Duration::from_millis),
            ..d
        };
        if settings.batch == 0 {
            return Err(ConfigError::Value {
                key: "batch",
                reason: "must be at least 1".into(),
            });
        }
        Ok(settings)
    }

    /// The bus and the database, which have no defaults.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the one no layer gives.
    pub fn endpoints(&self) -> Result<(&str, &str), ConfigError> {
        let missing = |key| ConfigError::Value {
            key,
            reason: "is required (a flag, its FLYRTECH_ variable, or the [project] table)".into(),
        };
        Ok((
            self.bus.as_deref().ok_or_else(|| missing("bus"))?,
            self.postgres
                .as_deref()
                .ok_or_else(|| missing("postgres"))?,
        ))
    }
}

fn unknown_keys(table: &str, keys: &BTreeMap<String, toml::Value>) -> Result<(), ConfigError> {
    match keys.keys().next() {
        None => Ok(()),
        Some(key) => Err(ConfigError::Value {
            key: "config file",
            reason: format!("unknown key {key:?} in [{table}]"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::config::tests::{args, file};

    fn common(text: &str) -> Settings {
        let f = file(text);
        Settings::resolve(&args(Some(f.path().to_owned()), None, None)).expect("settings")
    }

    #[test]
    fn the_relay_table_fills_what_flags_leave_open() {
        let settings = common(
            "[relay]\nbatch = 64\npoll_ms = 20\nbus_max_age = \"1h\"\nevents_stream = \"ev\"\n",
        );
        let flags = RelayArgs {
            batch: Some(32),
            ..RelayArgs::default()
        };
        let relay = flags.layered(&settings.file.relay).expect("layered");
        let made = relay.settings().expect("settings");
        assert_eq!(made.batch, 32);
        assert_eq!(made.poll_interval, Duration::from_millis(20));
        assert_eq!(made.parallel, RelaySettings::new().parallel);
        assert_eq!(
            relay.bus.retention().max_age,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(relay.bus.events_stream(), "ev");
        let unknown = common("[relay]\nbach = 64\n");
        let err = RelayArgs::default()
            .layered(&unknown.file.relay)
            .expect_err("a typo");
        assert!(err.to_string().contains("bach"), "{err}");
        let zero = RelayArgs {
            parallel: Some(0),
            ..RelayArgs::default()
        };
        assert!(zero.settings().is_err());
    }

    #[test]
    fn the_project_table_fills_what_flags_leave_open() {
        let settings = common(
            "[project]\nbus = \"nats://127.0.0.1:1\"\npostgres = \"postgres://u@h/db\"\nbatch = 9\n",
        );
        let project = ProjectArgs::default().layered(&settings.file.project);
        assert_eq!(
            project.endpoints().expect("endpoints"),
            ("nats://127.0.0.1:1", "postgres://u@h/db")
        );
        assert_eq!(project.settings().expect("settings").batch, 9);
        let err = ProjectArgs::default().endpoints().expect_err("no bus");
        assert!(err.to_string().contains("bus"), "{err}");
    }
}
