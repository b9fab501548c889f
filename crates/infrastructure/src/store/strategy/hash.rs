//! `hash`: the journey is a Redis hash with one field per segment status, so a status change
//! touches one field instead of rewriting the document.
//!
//! Layout of `journey:{P}:ID:hash` (documented in `docs/hash-layout.md`):
//!
//! | field | value |
//! |---|---|
//! | `version` | the journey version, an integer |
//! | `status` | the journey status |
//! | `journey` | JSON of the whole journey as written at creation (its statuses superseded by the fields) |
//! | `segment:<id>:status` | the segment's status |
//!
//! Hashes written before that compact form (`header`, `segments`, `segment:<id>`) are read and
//! updated too (`crate::store::hash_fields`).
//!
//! The race it closes: the update script (`scripts/hash_update.lua`) reads the one status, checks
//! the transition (allowed predecessors passed from Rust), sets it and increments `version`, all
//! atomically; writers of different segments no longer share a read-modify-write at all.
//! A missing segment answers "segment not found" and creates nothing. Reads are one HGETALL, a
//! consistent snapshot, assembled into a journey in Rust; the API's repeated reads ask for the
//! same fields by name (`HMGET`, [`Hash::read_selected`]), the same snapshot in half the reply.
//!
//! Cost: one round trip and O(1) server work per update, whatever the journey's size. The
//! processing delay is spent before the call. The layout differs from the document strategies':
//! switching a deployment to or from `hash` is `flyrtech migrate` (see `crate::store::layout` and
//! `docs/migration.md`).

use std::collections::HashMap;

use flyrtech_core::{Journey, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome};
use redis::AsyncCommands;

use crate::connection::error::RedisResultExt;
use crate::keys;
use crate::store::hash_fields;
use crate::store::hash_fields::FieldNames;
use crate::store::layout::Layout;
use crate::store::update_script::{ScriptCall, UpdateScript};
use crate::store::write::WriteContext;

/// Per-segment hash fields.
#[derive(Debug)]
pub struct Hash {
    ctx: WriteContext,
    update_script: UpdateScript,
}

impl Hash {
    pub(crate) fn new(ctx: WriteContext) -> Self {
        Self {
            ctx,
            update_script: UpdateScript::of(Layout::Hash),
        }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        self.update_script
            .update(&self.ctx, id, change, expected)
            .await
    }

    /// The exact script call an update sends.
    pub(crate) fn call(&self, id: &JourneyId, change: &StatusChange) -> ScriptCall {
        self.update_script.call(&self.ctx, id, change, None)
    }

    pub(crate) async fn read(&self, id: &JourneyId) -> Result<Journey, StoreError> {
        Self::decode_raw(id, &self.read_raw(id).await?)
    }

    /// The journey's fields as Redis sent them, undecoded: `HGETALL`'s reply itself, not yet
    /// turned into strings (a read the render memo has seen is compared as it came, and only a
    /// new one is converted and decoded: `crate::store::render`).
    pub(crate) async fn read_raw(&self, id: &JourneyId) -> Result<redis::Value, StoreError> {
        let fields: redis::Value = self
            .ctx
            .redis
            .shared()
            .hgetall(keys::journey_hash(id))
            .await
            .store_err()?;
        let empty = match &fields {
            redis::Value::Array(items) => items.is_empty(),
            redis::Value::Map(items) => items.is_empty(),
            redis::Value::Nil => true,
            _ => false,
        };
        if empty {
            return Err(StoreError::JourneyNotFound(id.clone()));
        }
        Ok(fields)
    }

    /// The values of the fields `names` (their `HMGET`, one atomic snapshot), or `None` when
    /// one is missing (the journey is gone, moved, or no longer has that field): then only a
    /// full read ([`Hash::read_raw`]) says what it is now.
    pub(crate) async fn read_selected(
        &self,
        names: &FieldNames,
    ) -> Result<Option<redis::Value>, StoreError> {
        let values: redis::Value = names
            .read()
            .query_async(&mut self.ctx.redis.shared())
            .await
            .store_err()?;
        let complete = matches!(&values, redis::Value::Array(items)
            if items.len() == names.as_slice().len()
                && items.iter().all(|v| matches!(v, redis::Value::BulkString(_))));
        Ok(complete.then_some(values))
    }

    /// Decodes the values of `names` as [`Hash::read_selected`] returns them.
    pub(crate) fn decode_selected(
        id: &JourneyId,
        names: &FieldNames,
        values: &redis::Value,
    ) -> Result<Journey, StoreError> {
        let key = keys::journey_hash(id);
        let values: Vec<String> = redis::from_redis_value_ref(values)
            .map_err(|e| crate::connection::error::corrupt(&key, e.to_string()))?;
        let fields: HashMap<&str, &str> = names
            .as_slice()
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(String::as_str))
            .collect();
        hash_fields::from_fields(&key, id, &fields)
    }

    /// Decodes fields as [`Hash::read_raw`] returns them.
    pub(crate) fn decode_raw(id: &JourneyId, fields: &redis::Value) -> Result<Journey, StoreError> {
        let key = keys::journey_hash(id);
        let fields: Vec<(String, String)> = redis::from_redis_value_ref(fields)
            .map_err(|e| crate::connection::error::corrupt(&key, e.to_string()))?;
        let fields: HashMap<&str, &str> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        hash_fields::from_fields(&key, id, &fields)
    }
}
