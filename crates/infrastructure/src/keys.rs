//! Every Redis key name the service uses, built in one place.
//!
//! # Outbox shards
//! Journeys are spread over [`OUTBOX_SHARDS`] fixed outbox shards (a journey's shard is the
//! CRC16 of its id, modulo the count). Every key that must change atomically with a journey
//! carries its shard's cluster hash tag, and so does the shard's outbox stream: a
//! journey's state, its fencing counter and its outbox entries all live in one slot, and one
//! MULTI/EXEC or one script can write them together on Redis Cluster without CROSSSLOT. The relay
//! reads the [`OUTBOX_SHARDS`] outbox streams by name: it never scans the keyspace.
//!
//! Each shard's tag is chosen so that its slot lies in the shard's share of the 16384
//! slots (shard `p` of `P` lands in slots `[p*16384/P, (p+1)*16384/P)`), so shards spread
//! evenly over the masters of a cluster whose slots are split evenly. The count is fixed for the
//! life of a deployment's data: changing it moves every journey to other keys (a migration).
//!
//! Journey ids cannot contain braces (see `flyrtech_core::ids`), so no id can forge or break a
//! tag.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `journey:{P}:ID` | string | the journey as one JSON document (document strategies) |
//! | `journey:{P}:ID:hash` | hash | the journey as per-segment fields (`hash` strategy) |
//! | `journey:{P}:ID:fence` | string | the newest fencing token minted for the journey (`redlock`) |
//! | `outbox:{P}` | stream | the shard's unpublished changes, consumer group `relay` |
//! | `outbox:{P}:parked` | stream | entries that kept failing, set aside with the reason |
//! | `outbox:{P}:lease` | string | which relay is processing the shard right now |
//! | `lock:journey:{ID}` | string | the Redlock lock, on the lock masters |
//! | `journeys:index` | set | every journey id (its own slot; see `document.rs`) |
//! | `journeys:dataset` | hash | the dataset's layout and any migration under way (see `dataset`) |
//! | `events` | stream | the default bus the relay publishes to (see `outbox::publisher`) |
//! | `cache:{c}:e:KEY` | string | a general-purpose cache entry, isolated from everything above; all in one slot |
//! | `cache:{c}:index` | sorted set | the cache's keys by expiry, so its entries can be counted and capped |
//! | `replication:{TAG}` | string | a counter each replica-confirmed batch increments, so that its `WAIT` covers a no-op too (see `crate::replication`); one per hash tag written |

use std::sync::OnceLock;

use flyrtech_core::{CacheKey, JourneyId};

/// How many outbox shards there are. Fixed: see the module docs.
pub const OUTBOX_SHARDS: usize = 256;

const SLOTS: usize = 16384;

/// What Redis Cluster hashes of a key: its hash tag (between the first `{` and the next `}`,
/// when not empty), or the whole key.
fn hashed_part(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            key[open + 1..]
                .find('}')
                .filter(|&len| len > 0)
                .map(|len| &key[open + 1..open + 1 + len])
        })
        .unwrap_or(key)
}

/// The cluster slot of a key (CRC16/XMODEM of its hash tag, or of the whole key without one).
pub fn slot(key: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hashed_part(key).as_bytes()) % SLOTS as u16
}

/// One outbox shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxShard(usize);

impl OutboxShard {
    /// The shard a journey belongs to.
    pub fn of(id: &JourneyId) -> Self {
        Self(
            usize::from(crc16::State::<crc16::XMODEM>::calculate(
                id.as_str().as_bytes(),
            )) % OUTBOX_SHARDS,
        )
    }

    /// Every shard, in order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..OUTBOX_SHARDS).map(Self)
    }

    /// The shard's number.
    pub fn index(self) -> usize {
        self.0
    }

    /// The shard's hash tag (without braces).
    pub fn tag(self) -> &'static str {
        static TAGS: OnceLock<Vec<String>> = OnceLock::new();
        let tags = TAGS.get_or_init(|| {
            (0..OUTBOX_SHARDS)
                .map(|p| {
                    let range = p * SLOTS / OUTBOX_SHARDS..(p + 1) * SLOTS / OUTBOX_SHARDS;
                    (0u32..)
                        .map(|k| format!("{p}.{k}"))
                        .find(|tag| range.contains(&usize::from(slot(tag))))
                        .unwrap_or_else(|| p.to_string())
                })
                .collect()
        });
        &tags[self.0]
    }

    /// The shard's outbox stream.
    pub fn outbox(self) -> String {
        format!("outbox:{{{}}}", self.tag())
    }

    /// Where the shard's poison entries are parked.
    pub fn parked(self) -> String {
        format!("outbox:{{{}}}:parked", self.tag())
    }

    /// The shard's processing lease.
    pub fn lease(self) -> String {
        format!("outbox:{{{}}}:lease", self.tag())
    }
}

impl std::fmt::Display for OutboxShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `journey:{P}:ID` and `suffix`, built in one exact allocation: every journey request names
/// its key, and `format!`'s machinery cost a hash `GET` 1,500 instructions for two of them.
fn journey_key(id: &JourneyId, suffix: &str) -> String {
    const PREFIX: &str = "journey:{";
    let (tag, id) = (OutboxShard::of(id).tag(), id.as_str());
    let mut key = String::with_capacity(PREFIX.len() + tag.len() + 2 + id.len() + suffix.len());
    for part in [PREFIX, tag, "}:", id, suffix] {
        key.push_str(part);
    }
    key
}

/// The JSON document of a journey.
pub fn journey_document(id: &JourneyId) -> String {
    journey_key(id, "")
}

/// The per-segment hash of a journey (`hash` strategy).
pub fn journey_hash(id: &JourneyId) -> String {
    journey_key(id, ":hash")
}

/// The fencing counter of a journey: same slot as the journey.
pub fn journey_fence(id: &JourneyId) -> String {
    journey_key(id, ":fence")
}

/// The outbox stream a journey's changes are recorded in: same slot as the journey.
pub fn journey_outbox(id: &JourneyId) -> String {
    OutboxShard::of(id).outbox()
}

/// The bus stream the default publisher writes to.
pub const EVENTS: &str = "events";

/// The distributed lock of a journey, on the lock masters.
pub fn journey_lock(id: &JourneyId) -> String {
    format!("lock:journey:{{{id}}}")
}

/// The set of all journey ids.
pub const JOURNEY_INDEX: &str = "journeys:index";

/// The record of the service dataset's layout (the dataset room's `journeys:dataset`).
pub const DATASET: &str = "journeys:dataset";

/// The fields of [`DATASET`].
pub(crate) mod dataset_field {
    /// The layout the journeys are in.
    pub(crate) const LAYOUT: &str = "layout";
    /// The layout a migration under way is moving them to.
    pub(crate) const MIGRATING_TO: &str = "migrating_to";
    /// The form new hashes are written in (`crate::store::hash_fields::WriteForm`).
    pub(crate) const HASH_FORM: &str = "hash_form";
}

/// The replication marker in `key`'s slot: a counter a replica-confirmed batch increments so
/// that its `WAIT` has a write of its own to wait for, after whatever the batch read. Keyed by
/// `key`'s hash tag (or the whole key without one), so there is one per shard, not one per
/// journey.
pub fn replication_marker(key: &str) -> String {
    format!("replication:{{{}}}", hashed_part(key))
}

/// A cache entry. The `cache:` prefix is the whole isolation: no journey key starts with it.
/// Every entry and the cache's index share the hash tag `{c}`, so the capped write is one
/// script on one slot (the cache is small: its entries are capped and expire).
pub fn cache_entry(key: &CacheKey) -> String {
    format!("cache:{{c}}:e:{}", key.as_str())
}

/// The cache's index: a sorted set of its keys, scored by when each expires (ms since the
/// epoch), which is what lets the cache count its entries and refuse past its cap.
pub const CACHE_INDEX: &str = "cache:{c}:index";

/// Each cache entry's owner, the client whose write it holds (a hash, key to owner), in the
/// cache's slot.
pub const CACHE_OWNERS: &str = "cache:{c}:owners";

/// How many cache entries each owner holds (a hash, owner to count), in the cache's slot: what
/// the per-client cache quota is checked against.
pub const CACHE_OWNED: &str = "cache:{c}:owned";

/// How many journeys each client has created (a hash, client to count): what the per-client
/// journey quota is checked against.
pub const JOURNEY_QUOTA: &str = "quota:journeys";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journey_keys_share_one_slot_with_the_outbox() {
        for raw in ["JRN-001", "JRN-002", "a", "x-123456"] {
            let id = JourneyId::parse(raw).expect("valid id");
            let keys = [
                journey_document(&id),
                journey_hash(&id),
                journey_fence(&id),
                journey_outbox(&id),
                OutboxShard::of(&id).parked(),
                OutboxShard::of(&id).lease(),
            ];
            let slots: Vec<u16> = keys
                .iter()
                .chain([&replication_marker(&journey_document(&id))])
                .map(|k| slot(k))
                .collect();
            assert!(slots.iter().all(|&s| s == slots[0]), "{keys:?} {slots:?}");
            let tag = OutboxShard::of(&id).tag();
            assert_eq!(journey_document(&id), format!("journey:{{{tag}}}:{raw}"));
            assert_eq!(journey_hash(&id), format!("journey:{{{tag}}}:{raw}:hash"));
            assert_eq!(journey_fence(&id), format!("journey:{{{tag}}}:{raw}:fence"));
        }
    }

    #[test]
    fn shards_spread_evenly_over_the_slot_space() {
        for p in OutboxShard::all() {
            let s = usize::from(slot(&p.outbox()));
            assert!(
                (p.index() * SLOTS / OUTBOX_SHARDS..(p.index() + 1) * SLOTS / OUTBOX_SHARDS)
                    .contains(&s),
                "shard {p} tag {} is in slot {s}",
                p.tag()
            );
        }
    }

    #[test]
    fn slot_matches_redis_for_known_keys() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{foo}bar"), 12182);
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot("{}foo"), 9500);
        assert_ne!(slot("{}foo"), slot("foo"));
    }

    #[test]
    fn an_untagged_key_has_its_marker_in_its_own_slot() {
        assert_eq!(
            slot(&replication_marker(JOURNEY_INDEX)),
            slot(JOURNEY_INDEX)
        );
    }

    #[test]
    fn cache_keys_cannot_reach_journeys() {
        let key = CacheKey::parse("journey:{JRN-001}").expect("valid cache key");
        assert_eq!(cache_entry(&key), "cache:{c}:e:journey:{JRN-001}");
        assert_eq!(slot(&cache_entry(&key)), slot(CACHE_INDEX));
        let index = CacheKey::parse("index").expect("valid cache key");
        assert_ne!(cache_entry(&index), CACHE_INDEX);
        for internal in [CACHE_OWNERS, CACHE_OWNED] {
            assert_eq!(slot(internal), slot(CACHE_INDEX));
            assert!(!internal.starts_with("cache:{c}:e:"));
        }
    }

    /// The hash tag is what lies between the first `{` and the next `}`, when not empty; the
    /// Redis Cluster specification's own examples.
    #[test]
    fn the_hashed_part_is_the_first_non_empty_tag_or_the_whole_key() {
        for (key, hashed) in [
            ("{user1000}.following", "user1000"),
            ("foo{}{bar}", "foo{}{bar}"),
            ("foo{{bar}}zap", "{bar"),
            ("foo{bar}{zap}", "bar"),
            ("plain", "plain"),
        ] {
            assert_eq!(hashed_part(key), hashed, "{key}");
        }
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
    }

    /// A shard prints as its number (the relay's metric labels and logs); a journey's lock is
    /// named for the journey, outside the journey's own keys.
    #[test]
    fn a_shard_prints_as_its_number_and_a_lock_as_its_journey() {
        let printed: Vec<String> = OutboxShard::all().map(|s| s.to_string()).collect();
        assert_eq!(printed.len(), OUTBOX_SHARDS);
        for (n, text) in printed.iter().enumerate() {
            assert_eq!(text, &n.to_string());
        }
        let id = JourneyId::parse("JRN-001").expect("valid id");
        assert_eq!(journey_lock(&id), "lock:journey:{JRN-001}");
    }
}
