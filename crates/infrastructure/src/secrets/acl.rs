//! Least privilege in Redis: the `ACL SETUSER` line each of the service's roles needs, and
//! nothing more. A role gets the key patterns it reads or writes, the channels it uses, and the
//! commands it sends, by name, including those its Lua scripts call (Redis checks a script's
//! commands against the caller's permissions). No `@dangerous`, no `CONFIG`, no `KEYS`, no
//! `FLUSHALL`, no key outside the service's names ([`crate::keys`]).
//!
//! `flyrtech redis-acl` prints these lines; the suite runs every strategy's store and the relay
//! as such a user on a real Redis and checks what it may not do.

use std::fmt::Write;

/// Who connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve`: the journeys, their outbox, the index, the dataset record, the cache, the
    /// journey quota's counts; with
    /// `locks`, Redlock's lock keys and release channels (the `redlock` strategy).
    Serve {
        /// The strategy takes Redlock locks.
        locks: bool,
    },
    /// `relay`: the outbox partitions, their leases and parked entries, the `events` stream.
    Relay,
    /// `migrate`: every journey in both layouts, the index and the dataset record.
    Migrate,
    /// `import-legacy`: reads the original's `journey:*` keys and writes ours.
    ImportLegacy,
    /// `audit`: reads the journeys and the `events` stream.
    Audit,
}

/// Sent by every role: connecting (RESP3 `HELLO`; redis-rs' `CLIENT SETINFO` is left out: Redis
/// 7.0 does not know it, and on 7.2+ its refusal is ignored by the client and only logged),
/// finding the deployment's shape and what the engine can do (`INFO`, `CLUSTER SLOTS`,
/// `CLUSTER INFO`, `COMMAND INFO`), scripts, and the replica-confirmed writes (`WAIT`, `INCR` of
/// the replication marker). `WAITAOF` is not in the line: Redis 7.0 rejects a grant of a command
/// it does not know; a `--wait-aof` deployment (Redis 7.2+, Valkey) adds `+waitaof`.
const CONNECT: &[&str] = &[
    "ping",
    "hello",
    "auth",
    "info",
    "command|info",
    "cluster|slots",
    "cluster|info",
    "readonly",
    "evalsha",
    "script|load",
    "time",
    "wait",
    "multi",
    "exec",
    "discard",
];

const JOURNEYS: &[&str] = &[
    "get",
    "set",
    "del",
    "exists",
    "incr",
    "incrby",
    "pexpire",
    "hget",
    "hmget",
    "hset",
    "hgetall",
    "hsetnx",
    "sadd",
    "smembers",
    "scard",
    "srandmember",
    "sscan",
    "xadd",
];

/// The cache's scripts: the index (a sorted set) and the owners' counts (hashes).
const CACHE: &[&str] = &[
    "zadd",
    "zcard",
    "zrem",
    "zrangebyscore",
    "zremrangebyscore",
    "zscore",
    "hincrby",
    "hdel",
];

/// `serve` watches the outbox's backlog (`XLEN` of each partition, `XRANGE` for the oldest).
const BACKLOG: &[&str] = &["xlen", "xrange"];

const OPTIMISTIC: &[&str] = &["watch", "unwatch"];

/// Redlock: the release script publishes on the lock's channel (`SPUBLISH`, sharded, on a
/// cluster), waiters subscribe.
const LOCKS: &[&str] = &[
    "publish",
    "spublish",
    "subscribe",
    "unsubscribe",
    "ssubscribe",
    "sunsubscribe",
];

const RELAY: &[&str] = &[
    "get",
    "set",
    "del",
    "incr",
    "hgetall",
    "xreadgroup",
    "xack",
    "xdel",
    "xautoclaim",
    "xpending",
    "xgroup|create",
    "xrange",
    "xlen",
    "xadd",
    "xtrim",
    "xinfo|groups",
    "xinfo|stream",
];

/// The migration also clears the record's `migrating_to` when it is done (`HDEL`), and asks
/// whether a hash is already in the compact form (`HEXISTS`, a resumed run's precheck,
/// `crate::store::conversion`).
const MIGRATE: &[&str] = &["hdel", "hexists"];

const AUDIT: &[&str] = &[
    "get", "hget", "hgetall", "exists", "smembers", "scard", "sscan", "xrange", "xlen",
];

impl Role {
    /// The key patterns (`~`), channels (`&`) and commands (`+`) of this role.
    fn grants(self) -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
        let journeys = vec!["journey:*", "journeys:*", "outbox:*", "replication:*"];
        match self {
            Self::Serve { locks } => {
                let mut keys = journeys;
                // The cache, and the per-client journey quota's counts.
                keys.extend(["cache:*", "quota:*"]);
                let mut commands = [JOURNEYS, CACHE, OPTIMISTIC, BACKLOG].concat();
                let mut channels = Vec::new();
                if locks {
                    keys.push("lock:*");
                    channels.push("lock:*");
                    commands.extend_from_slice(LOCKS);
                }
                (keys, channels, commands)
            }
            Self::Relay => (
                vec!["outbox:*", "events", "journeys:dataset", "replication:*"],
                Vec::new(),
                RELAY.to_vec(),
            ),
            Self::Migrate => (
                journeys,
                Vec::new(),
                [JOURNEYS, OPTIMISTIC, MIGRATE].concat(),
            ),
            Self::ImportLegacy => (journeys, Vec::new(), [JOURNEYS, &["scan"][..]].concat()),
            Self::Audit => (
                vec!["journey:*", "journeys:*", "events"],
                Vec::new(),
                AUDIT.to_vec(),
            ),
        }
    }

    /// The `ACL SETUSER` line for `user`, whose password the operator sets (`>PASSWORD` is a
    /// placeholder: the service never sees or prints one).
    pub fn setuser(self, user: &str) -> String {
        let (keys, channels, commands) = self.grants();
        let mut line = format!("ACL SETUSER {user} reset on >PASSWORD resetchannels -@all");
        for command in CONNECT.iter().chain(&commands) {
            let _ = write!(line, " +{command}");
        }
        for key in keys {
            let _ = write!(line, " ~{key}");
        }
        for channel in channels {
            let _ = write!(line, " &{channel}");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_line_grants_what_an_attacker_wants() {
        for role in [
            Role::Serve { locks: true },
            Role::Serve { locks: false },
            Role::Relay,
            Role::Migrate,
            Role::ImportLegacy,
            Role::Audit,
        ] {
            let line = role.setuser("svc");
            assert!(line.starts_with("ACL SETUSER svc reset on >PASSWORD resetchannels -@all"));
            for forbidden in [
                "+@",
                "allcommands",
                "allkeys",
                "+flushall",
                "+config",
                "+keys",
                "~* ",
                "+acl",
                "+debug",
                "+shutdown",
            ] {
                assert!(!line.contains(forbidden), "{role:?}: {forbidden} in {line}");
            }
        }
        assert!(Role::Serve { locks: true }.setuser("s").contains("&lock:*"));
        assert!(!Role::Serve { locks: false }.setuser("s").contains("&"));
    }
}
