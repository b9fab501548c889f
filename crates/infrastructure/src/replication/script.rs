//! A Lua script call that can travel either way a write goes: alone on the shared connection,
//! or in a replica-confirmed batch ([`crate::replication`]), where `Script::invoke_async` cannot
//! go (it sends on a connection of its choosing). Both load the script and send the call again
//! when Redis answers `NOSCRIPT` (a restart or a failover empties the script cache).

use redis::{Cmd, Script, ToRedisArgs};

/// A script and its source.
#[derive(Debug)]
pub(crate) struct LuaScript {
    script: Script,
    source: &'static str,
}

impl LuaScript {
    pub(crate) fn new(source: &'static str) -> Self {
        Self {
            script: Script::new(source),
            source,
        }
    }

    /// The script's SHA1, as `EVALSHA` takes it.
    pub(crate) fn hash(&self) -> &str {
        self.script.get_hash()
    }

    /// The source, for `SCRIPT LOAD`.
    pub(crate) fn source(&self) -> &'static str {
        self.source
    }

    /// `EVALSHA` of this script with `keys` (all in one slot) and `args`.
    pub(crate) fn call(&self, keys: &[String], args: impl ToRedisArgs) -> ScriptCmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.hash()).arg(keys.len()).arg(keys).arg(args);
        ScriptCmd {
            cmd,
            source: self.source,
            key: keys.first().cloned().unwrap_or_default(),
        }
    }
}

/// One `EVALSHA`, the source to load on `NOSCRIPT`, and the key whose slot it runs in.
#[derive(Debug, Clone)]
pub(crate) struct ScriptCmd {
    pub(crate) cmd: Cmd,
    pub(crate) source: &'static str,
    pub(crate) key: String,
}
