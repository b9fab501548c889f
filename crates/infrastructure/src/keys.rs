//! Every Redis key name the service uses, built in one place.
//!
//! Keys that must change atomically with a journey carry the journey id as a cluster hash tag
//! (`{JRN-001}`), so that they live in the journey's slot and one MULTI/EXEC or one script can
//! touch them all without CROSSSLOT. Journey ids cannot contain braces (see
//! `flyrtech_core::ids`), so a tag cannot be forged or broken.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `journey:{ID}` | string | the journey as one JSON document (document strategies) |
//! | `journey:{ID}:hash` | hash | the journey as per-segment fields (`hash` strategy) |
//! | `journey:{ID}:fence` | string | the newest fencing token minted for the journey (`redlock`) |
//! | `lock:journey:{ID}` | string | the Redlock lock, on the lock masters |
//! | `journeys:index` | set | every journey id (its own slot; see `document.rs`) |
//! | `cache:KEY` | string | the general-purpose cache, isolated from everything above |

use flyrtech_core::{CacheKey, JourneyId};

/// The JSON document of a journey.
pub fn journey_document(id: &JourneyId) -> String {
    format!("journey:{{{id}}}")
}

/// The per-segment hash of a journey (`hash` strategy).
pub fn journey_hash(id: &JourneyId) -> String {
    format!("journey:{{{id}}}:hash")
}

/// The fencing counter of a journey: same slot as the journey.
pub fn journey_fence(id: &JourneyId) -> String {
    format!("journey:{{{id}}}:fence")
}

/// The distributed lock of a journey, on the lock masters.
pub fn journey_lock(id: &JourneyId) -> String {
    format!("lock:journey:{{{id}}}")
}

/// The set of all journey ids.
pub const JOURNEY_INDEX: &str = "journeys:index";

/// A cache entry. The `cache:` prefix is the whole isolation: no journey key starts with it.
pub fn cache_entry(key: &CacheKey) -> String {
    format!("cache:{}", key.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journey_keys_share_the_journey_hash_tag() {
        let id = JourneyId::parse("JRN-001").expect("valid id");
        for key in [journey_document(&id), journey_hash(&id), journey_fence(&id)] {
            assert!(key.contains("{JRN-001}"), "{key}");
        }
    }

    #[test]
    fn cache_keys_cannot_reach_journeys() {
        let key = CacheKey::parse("journey:{JRN-001}").expect("valid cache key");
        assert_eq!(cache_entry(&key), "cache:journey:{JRN-001}");
    }
}
