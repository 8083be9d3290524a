//! Chats whose owner this gateway confirmed recently, so an update to one's own
//! chat skips the `ClaimChat` round trip to memory-store.
//!
//! Safe to be stale: the cache only ever *skips* the gateway's early check.
//! memory-store checks (or claims) the owner again before it applies a job
//! (`BeginJobs`), and never applies another user's job. A deletion forgets
//! the chat: at once through this gateway, when its change event arrives
//! through any other (`changes.rs`); missed change events forget every chat.
//! `ttl_secs` bounds only what no event announces (an event lost with its
//! publisher). What a stale entry can cause: in that window, after the chat
//! was deleted and claimed by another user, the former owner's update is
//! accepted and then ends FAILED instead of being refused with NOT_FOUND at
//! once (docs/security.md).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

/// `[ownership_cache]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OwnershipCacheSettings {
    /// Chats remembered (0 turns the cache off: every update claims).
    pub capacity: usize,
    /// How long a confirmed owner is trusted.
    pub ttl_secs: u64,
}

impl Default for OwnershipCacheSettings {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl_secs: 600,
        }
    }
}

impl OwnershipCacheSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.capacity > 0 && self.ttl_secs == 0 {
            return Err(SettingsError::invalid(
                "ownership_cache.ttl_secs",
                "must be positive when the cache is on (capacity > 0)",
            ));
        }
        Ok(())
    }
}

/// The cache: namespaced chat id -> (who, when confirmed).
pub struct OwnerCache {
    cache: Option<quick_cache::sync::Cache<String, (String, Instant)>>,
    ttl: Duration,
}

impl OwnerCache {
    pub fn new(settings: &OwnershipCacheSettings) -> Self {
        Self {
            cache: (settings.capacity > 0)
                .then(|| quick_cache::sync::Cache::new(settings.capacity)),
            ttl: Duration::from_secs(settings.ttl_secs),
        }
    }

    /// Whether `who` was confirmed as allowed to write `chat` within the TTL.
    pub fn confirmed(&self, chat: &str, who: &str) -> bool {
        self.cache
            .as_ref()
            .and_then(|c| c.get(chat))
            .is_some_and(|(owner, at)| owner == who && at.elapsed() < self.ttl)
    }

    /// Records that memory-store just let `who` write `chat`.
    pub fn remember(&self, chat: &str, who: &str) {
        if let Some(c) = &self.cache {
            c.insert(chat.to_owned(), (who.to_owned(), Instant::now()));
        }
    }

    /// Forgets `chat` (deleted, through this gateway or another).
    pub fn forget(&self, chat: &str) {
        if let Some(c) = &self.cache {
            c.remove(chat);
        }
    }

    /// Forgets every chat (change events were missed: a deletion may be among them).
    pub fn clear(&self) {
        if let Some(c) = &self.cache {
            c.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_owner_is_trusted_only_for_that_writer_and_until_forgotten() {
        let cache = OwnerCache::new(&OwnershipCacheSettings::default());
        assert!(!cache.confirmed("t/c", "alice"));
        cache.remember("t/c", "alice");
        assert!(cache.confirmed("t/c", "alice"));
        assert!(!cache.confirmed("t/c", "bob"));
        cache.forget("t/c");
        assert!(!cache.confirmed("t/c", "alice"));
    }

    #[test]
    fn an_entry_expires_after_its_ttl() {
        let cache = OwnerCache::new(&OwnershipCacheSettings {
            capacity: 10,
            ttl_secs: 1,
        });
        let Some(inner) = &cache.cache else {
            panic!("the cache is on");
        };
        inner.insert(
            "t/c".to_owned(),
            ("alice".to_owned(), Instant::now() - Duration::from_secs(2)),
        );
        assert!(!cache.confirmed("t/c", "alice"));
    }

    #[test]
    fn capacity_zero_turns_the_cache_off() {
        let cache = OwnerCache::new(&OwnershipCacheSettings {
            capacity: 0,
            ttl_secs: 60,
        });
        cache.remember("t/c", "alice");
        assert!(!cache.confirmed("t/c", "alice"));
    }
}
