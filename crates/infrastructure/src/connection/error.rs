//! Mapping Redis errors onto the store's error contract, by the client's classifiers rather than
//! by matching message strings.

use flyrtech_core::StoreError;
use redis::RedisError;

/// Maps a Redis error to [`StoreError`]. Connection trouble, timeouts and cluster churn are
/// `Unavailable`; a server-side error reply is also reported as `Unavailable`, with the reply in
/// the message, because nothing a caller sends can cause one.
pub(crate) fn from_redis(err: RedisError) -> StoreError {
    let (kind, message) = if err.is_timeout() {
        ("timeout", "Redis did not answer in time")
    } else if err.is_connection_refusal() || err.is_connection_dropped() || err.is_io_error() {
        ("connection", "Redis connection failed")
    } else if err.is_cluster_error() {
        ("cluster", "Redis Cluster is reconfiguring")
    } else {
        ("reply", "Redis returned an error")
    };
    crate::telemetry::redis_error(kind);
    StoreError::unavailable(message, err)
}

/// A stored value that could not be decoded.
pub(crate) fn corrupt(key: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// `?`-friendly conversion for Redis results.
pub(crate) trait RedisResultExt<T> {
    fn store_err(self) -> Result<T, StoreError>;
}

impl<T> RedisResultExt<T> for redis::RedisResult<T> {
    fn store_err(self) -> Result<T, StoreError> {
        self.map_err(from_redis)
    }
}

/// Decodes one reply of a pipeline that kept errors in place (`ignore_errors`).
pub(crate) fn decode<T: redis::FromRedisValue>(value: redis::Value) -> Result<T, StoreError> {
    match value {
        redis::Value::ServerError(e) => Err(from_redis(e.into())),
        v => redis::from_redis_value(v).map_err(|e| from_redis(e.into())),
    }
}
