//! A versioned cache of memories in each gateway, kept fresh by change events.
//!
//! A plain `GetMemory` is answered from here when this gateway read the chat
//! from memory-store before and no change event for it has arrived since; the
//! caller's access is checked against the owner memory-store reported with
//! the memory (tenant from the namespaced key, then owner or tenant-wide
//! token), exactly as memory-store checks it, and a chat with no memory at all
//! is remembered as absent (NOT_FOUND for everyone). Every read is still
//! authenticated, rate-limited and audited: the cache only saves the
//! memory-store round trip.
//!
//! Freshness:
//! - every change event of a chat (a commit, a failed job, an acceptance, a
//!   deletion; `job_queue::changes`) drops its entry, on every gateway; the
//!   gateway that deletes a chat drops it before it answers;
//! - a read that started before a drop never stores what it read (each entry
//!   is stored only if no drop of its chat happened since the read began);
//! - events are numbered per publisher: a number skipped (an event lost on
//!   the way, or while this gateway was disconnected) drops everything;
//! - what no event can announce (a publisher that died between its commit and
//!   its event, a chat expiring) is bounded by `read_cache.ttl_ms`: no entry
//!   is used longer than that after it was read.
//!
//! Bounded by `read_cache.capacity` entries (0 turns the cache off).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};

/// The `[read_cache]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ReadCacheSettings {
    /// Chats cached (memories and known-absent chats); 0 turns the cache off.
    pub capacity: usize,
    /// Longest an entry is used after it was read from memory-store: the bound
    /// on staleness when a change event could not be published at all.
    pub ttl_ms: u64,
    /// memory-store read calls in flight at once for reads the cache does not
    /// answer (with the cache off, every read); reads that miss while all are
    /// busy go together in the next `GetMemories` call (up to
    /// `store_batches.max_batch`). One gathers the most (the least CPU per
    /// read); more let a slow call hold up fewer reads.
    pub store_calls_in_flight: usize,
}

impl Default for ReadCacheSettings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl_ms: 10_000,
            store_calls_in_flight: 1,
        }
    }
}

impl ReadCacheSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.store_calls_in_flight == 0 {
            return Err(SettingsError::invalid(
                "read_cache.store_calls_in_flight",
                "must be at least 1",
            ));
        }
        if self.capacity > 0 && self.ttl_ms == 0 {
            return Err(SettingsError::invalid(
                "read_cache.ttl_ms",
                "must be positive when the cache is on (capacity > 0)",
            ));
        }
        Ok(())
    }
}

/// What is known of a chat.
#[derive(Debug, Clone)]
enum Known {
    Memory(Arc<store_pb::GetMemoryResponse>),
    /// No memory at all (NOT_FOUND for every caller).
    Absent,
}

#[derive(Debug, Clone)]
struct Entry {
    known: Known,
    read_at: Instant,
}

/// What the cache answers for a read.
#[derive(Debug, Clone, PartialEq)]
pub enum Hit {
    Memory(Arc<store_pb::GetMemoryResponse>),
    /// NOT_FOUND, exactly as memory-store would answer it.
    NotFound,
}

/// The cache; share it behind an `Arc`.
pub struct MemoryCache {
    entries: Option<quick_cache::sync::Cache<String, Entry>>,
    /// Chat -> the drop count when it was last dropped (bounded by the same capacity).
    dropped: Option<quick_cache::sync::Cache<String, u64>>,
    /// Drops so far (every drop, and every full clear, counts one).
    drops: AtomicU64,
    /// Drop count of the last full clear: reads that began before it store nothing.
    cleared_at: AtomicU64,
    /// Last number seen per event publisher.
    publishers: Mutex<HashMap<String, u64>>,
    ttl: Duration,
}

/// Taken before a memory-store read; the read's answer is stored only if
/// nothing about its chat changed since.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl MemoryCache {
    pub fn new(settings: &ReadCacheSettings) -> Self {
        let on = settings.capacity > 0;
        Self {
            entries: on.then(|| quick_cache::sync::Cache::new(settings.capacity)),
            // More drop marks than entries: a mark evicted early only lets a
            // read store what it read, which the TTL still bounds.
            dropped: on.then(|| quick_cache::sync::Cache::new(settings.capacity.saturating_mul(4))),
            drops: AtomicU64::new(0),
            cleared_at: AtomicU64::new(0),
            publishers: Mutex::new(HashMap::new()),
            ttl: Duration::from_millis(settings.ttl_ms),
        }
    }

    /// The answer for `access` reading `chat`, if cached and fresh.
    pub fn get(&self, chat: &TenantChatId, access: &Access) -> Option<Hit> {
        let entries = self.entries.as_ref()?;
        let entry = entries.get(chat.as_str())?;
        if entry.read_at.elapsed() > self.ttl {
            // Expired: free its place for a fresh entry (an entry stored
            // meanwhile is newer and stays).
            entries.remove_if(chat.as_str(), |e| e.read_at == entry.read_at);
            return None;
        }
        Some(match entry.known {
            Known::Absent => Hit::NotFound,
            Known::Memory(memory) => {
                let in_namespace = chat.in_tenant(&access.tenant);
                let owner = memory.owner_user.as_str();
                let may_use = owner.is_empty() || access.acts_for_tenant || owner == access.user;
                if in_namespace && may_use {
                    Hit::Memory(memory)
                } else {
                    Hit::NotFound
                }
            }
        })
    }

    /// Taken before reading `chat_id` from memory-store.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.drops.load(Ordering::SeqCst))
    }

    /// Stores what memory-store answered, unless the chat changed since `ticket`.
    pub fn store_memory(
        &self,
        chat_id: &str,
        ticket: ReadTicket,
        read: &store_pb::GetMemoryResponse,
    ) {
        self.store(chat_id, ticket, Known::Memory(Arc::new(read.clone())));
    }

    /// Stores that `chat_id` has no memory at all, unless it changed since `ticket`.
    pub fn store_absent(&self, chat_id: &str, ticket: ReadTicket) {
        self.store(chat_id, ticket, Known::Absent);
    }

    fn store(&self, chat_id: &str, ticket: ReadTicket, known: Known) {
        let (Some(entries), Some(dropped)) = (&self.entries, &self.dropped) else {
            return;
        };
        let changed_since = |at: u64| at > ticket.0;
        if changed_since(self.cleared_at.load(Ordering::SeqCst))
            || dropped.get(chat_id).is_some_and(changed_since)
        {
            return;
        }
        entries.insert(
            chat_id.to_owned(),
            Entry {
                known,
                read_at: Instant::now(),
            },
        );
        // A drop that raced with this insert: undo it (the drop wins).
        if dropped.get(chat_id).is_some_and(changed_since) {
            entries.remove(chat_id);
        }
    }

    /// Drops what is known of `chat_id` (a change event, or a local deletion).
    pub fn drop_chat(&self, chat_id: &str) {
        let (Some(entries), Some(dropped)) = (&self.entries, &self.dropped) else {
            return;
        };
        let at = self.drops.fetch_add(1, Ordering::SeqCst) + 1;
        dropped.insert(chat_id.to_owned(), at);
        entries.remove(chat_id);
    }

    /// Drops everything (a lost event: which chat it was about is unknown).
    pub fn clear(&self) {
        let Some(entries) = &self.entries else { return };
        let at = self.drops.fetch_add(1, Ordering::SeqCst) + 1;
        self.cleared_at.store(at, Ordering::SeqCst);
        entries.clear();
    }

    /// Notes an event's publisher number; clears the cache when one was skipped.
    /// Returns whether a gap was found.
    pub fn note_sequence(&self, publisher: &str, seq: u64) -> bool {
        if publisher.is_empty() || seq == 0 {
            return false;
        }
        let gap = {
            let mut seen = self
                .publishers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let gap = seen.get(publisher).is_some_and(|last| seq > last + 1);
            let last = seen.entry(publisher.to_owned()).or_insert(seq);
            *last = (*last).max(seq);
            gap
        };
        if gap {
            tracing::warn!(
                publisher,
                seq,
                "change events were missed; the read cache is cleared"
            );
            crate::metrics::read_cache("cleared");
            self.clear();
        }
        gap
    }

    /// Entries now (for tests and the RSS figure).
    pub fn len(&self) -> usize {
        self.entries
            .as_ref()
            .map_or(0, quick_cache::sync::Cache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_memory_proto::v1::Memory;

    fn settings() -> ReadCacheSettings {
        ReadCacheSettings {
            capacity: 100,
            ttl_ms: 60_000,
            ..ReadCacheSettings::default()
        }
    }

    fn memory(chat: &str, owner: &str, version: i64) -> store_pb::GetMemoryResponse {
        store_pb::GetMemoryResponse {
            chat_id: chat.into(),
            memory: Some(Memory {
                version,
                ..Default::default()
            }),
            freshness: None,
            owner_user: owner.into(),
        }
    }

    fn id(namespaced: &str) -> TenantChatId {
        TenantChatId::parse(namespaced).expect("a namespaced test id")
    }

    fn access(tenant: &str, user: &str, acts_for_tenant: bool) -> Access {
        Access {
            tenant: tenant.into(),
            user: user.into(),
            acts_for_tenant,
        }
    }

    #[test]
    fn a_cached_memory_is_answered_only_to_who_memory_store_would_answer() {
        let cache = MemoryCache::new(&settings());
        cache.store_memory("t/c", cache.ticket(), &memory("t/c", "alice", 3));
        let hit = Hit::Memory(Arc::new(memory("t/c", "alice", 3)));
        assert_eq!(
            cache.get(&id("t/c"), &access("t", "alice", false)),
            Some(hit.clone())
        );
        assert_eq!(cache.get(&id("t/c"), &access("t", "svc", true)), Some(hit));
        assert_eq!(
            cache.get(&id("t/c"), &access("t", "bob", false)),
            Some(Hit::NotFound)
        );
        // Another tenant (whose namespace never holds this key anyway).
        assert_eq!(
            cache.get(&id("t/c"), &access("u", "alice", true)),
            Some(Hit::NotFound)
        );
        assert_eq!(
            cache.get(&id("t/other"), &access("t", "alice", false)),
            None
        );
    }

    #[test]
    fn no_memory_store_call_in_flight_is_refused_naming_the_field() {
        let none = ReadCacheSettings {
            store_calls_in_flight: 0,
            ..ReadCacheSettings::default()
        };
        let refused = none.validate().err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("read_cache.store_calls_in_flight")),
            "{refused:?}"
        );
        assert!(ReadCacheSettings::default().validate().is_ok());
    }

    #[test]
    fn a_change_drops_the_entry_and_a_read_begun_before_it_stores_nothing() {
        let cache = MemoryCache::new(&settings());
        let before = cache.ticket();
        cache.drop_chat("t/c"); // a commit's event arrives while the read is on its way
        cache.store_memory("t/c", before, &memory("t/c", "alice", 1));
        assert_eq!(cache.get(&id("t/c"), &access("t", "alice", false)), None);
        // A read begun after the drop is stored.
        cache.store_memory("t/c", cache.ticket(), &memory("t/c", "alice", 2));
        assert!(
            cache
                .get(&id("t/c"), &access("t", "alice", false))
                .is_some()
        );
        cache.drop_chat("t/c");
        assert_eq!(cache.get(&id("t/c"), &access("t", "alice", false)), None);
    }

    #[test]
    fn an_absent_chat_is_not_found_for_everyone_until_it_changes() {
        let cache = MemoryCache::new(&settings());
        cache.store_absent("t/new", cache.ticket());
        assert_eq!(
            cache.get(&id("t/new"), &access("t", "anyone", false)),
            Some(Hit::NotFound)
        );
        cache.drop_chat("t/new");
        assert_eq!(cache.get(&id("t/new"), &access("t", "anyone", false)), None);
    }

    #[test]
    fn a_skipped_event_number_clears_everything_and_old_reads_store_nothing() {
        let cache = MemoryCache::new(&settings());
        let old = cache.ticket();
        cache.store_memory("t/a", cache.ticket(), &memory("t/a", "u", 1));
        assert!(!cache.note_sequence("w1", 1));
        assert!(!cache.note_sequence("w1", 2));
        assert!(cache.get(&id("t/a"), &access("t", "u", false)).is_some());
        assert!(cache.note_sequence("w1", 4), "3 was skipped");
        assert!(cache.is_empty());
        cache.store_memory("t/b", old, &memory("t/b", "u", 1));
        assert_eq!(cache.get(&id("t/b"), &access("t", "u", false)), None);
        // Another publisher's first number is not a gap.
        assert!(!cache.note_sequence("w2", 57));
    }

    #[test]
    fn an_entry_older_than_the_ttl_is_not_used_and_capacity_zero_caches_nothing() {
        let cache = MemoryCache::new(&ReadCacheSettings {
            capacity: 100,
            ttl_ms: 1,
            ..ReadCacheSettings::default()
        });
        cache.store_memory("t/c", cache.ticket(), &memory("t/c", "u", 1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get(&id("t/c"), &access("t", "u", false)), None);
        assert!(cache.is_empty(), "an expired entry gives up its place");
        let off = MemoryCache::new(&ReadCacheSettings {
            capacity: 0,
            ttl_ms: 0,
            ..ReadCacheSettings::default()
        });
        off.store_memory("t/c", off.ticket(), &memory("t/c", "u", 1));
        assert_eq!(off.get(&id("t/c"), &access("t", "u", false)), None);
    }
}
