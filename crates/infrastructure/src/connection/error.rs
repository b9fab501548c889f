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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: RedisError) -> String {
        match from_redis(err) {
            StoreError::Unavailable { message, .. } => message,
            other => panic!("not unavailable: {other:?}"),
        }
    }

    /// Every Redis failure is `Unavailable`, named for what went wrong: a timeout, the
    /// connection, or an error reply.
    #[test]
    fn a_redis_error_is_unavailable_and_says_why() {
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(message(timeout.into()), "Redis did not answer in time");
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no");
        assert_eq!(message(refused.into()), "Redis connection failed");
        let reply = RedisError::from((redis::ErrorKind::Client, "a reply", "ERR".to_owned()));
        assert_eq!(message(reply), "Redis returned an error");
    }
}
