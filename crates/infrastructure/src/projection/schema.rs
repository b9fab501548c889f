//! The projection's PostgreSQL session and its tables.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::ProjectionError;

/// The schema, applied at start-up when its tables are missing.
pub const SCHEMA_SQL: &str = include_str!("../../../../docs/outbox/SCHEMA.sql");

/// The tables `flyrtech project` needs.
const TABLES: [&str; 6] = [
    "processed_events",
    "journey_positions",
    "held_events",
    "projected_journeys",
    "projected_segments",
    "status_history",
];

/// Connects to PostgreSQL (`postgres://user@host:port/db`); the connection is driven by a task
/// of its own until the client is dropped.
///
/// # Errors
/// [`ProjectionError::Postgres`] when the server cannot be reached.
pub async fn connect(url: &str) -> Result<Client, ProjectionError> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// The mark [`SCHEMA_SQL`] leaves on `processed_events` (its table comment): a database without
/// it was made by an earlier schema, and gets the file again, which adds what it lacks.
const SCHEMA_MARK: &str = "flyrtech projection schema 2";

/// Applies [`SCHEMA_SQL`] when any of its consumer tables is missing, or the database was made
/// by an earlier schema (no [`SCHEMA_MARK`]); answers whether it did.
///
/// # Errors
/// [`ProjectionError::Postgres`].
pub async fn ensure_schema(client: &Client) -> Result<bool, ProjectionError> {
    let missing = || async {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM unnest($1::text[]) AS t(name) \
                         WHERE to_regclass(t.name) IS NULL) \
                      + CASE WHEN obj_description(to_regclass('processed_events'), 'pg_class') \
                                  IS NOT DISTINCT FROM $2 THEN 0 ELSE 1 END",
                &[&TABLES.to_vec(), &SCHEMA_MARK],
            )
            .await?;
        Ok::<i64, ProjectionError>(row.get(0))
    };
    if missing().await? == 0 {
        return Ok(false);
    }
    // Projectors started together would each create the tables, and PostgreSQL's CREATE ...
    // IF NOT EXISTS is not safe against a concurrent one (a duplicate key in its catalog): one
    // at a time, under a session lock that a dead projector's session releases.
    let lock = namespace("flyrtech:schema");
    client
        .execute("SELECT pg_advisory_lock($1)", &[&i64::from(lock)])
        .await?;
    let applied = match missing().await {
        Ok(0) => Ok(false),
        Ok(_) => client
            .batch_execute(SCHEMA_SQL)
            .await
            .map(|()| true)
            .map_err(Into::into),
        Err(e) => Err(e),
    };
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&i64::from(lock)])
        .await?;
    applied
}

/// A positive lock namespace for `name` (FNV-1a, as the partitions).
pub(super) fn namespace(name: &str) -> i32 {
    let n = crate::events::nats::partition_of(name, i32::MAX.unsigned_abs());
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start-up check looks for the mark the file leaves: a file that forgot to set it
    /// would be applied at every start, one that set another would never be.
    #[test]
    fn the_schema_file_leaves_the_mark_start_up_looks_for() {
        assert!(
            SCHEMA_SQL.contains(&format!(
                "COMMENT ON TABLE processed_events IS '{SCHEMA_MARK}';"
            )),
            "docs/outbox/SCHEMA.sql must end by marking the database with {SCHEMA_MARK:?}"
        );
    }
}
