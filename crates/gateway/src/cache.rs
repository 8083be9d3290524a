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
//! - a commit's event carries all that memory-store would answer right after
//!   it (the memory, the owner and the pending count, read in the commit's
//!   transaction), and installs it as the chat's entry, unless
//!   ([`MemoryCache::apply_event`]): an acceptance was announced with a stream
//!   sequence above the commit's `registered_through_seq` (a job its pending
//!   count does not hold), a commit of the same or a later version was
//!   announced before it (events of different publishers arrive in any
//!   order), or the chat's deletion was announced (its versions start over);
//!   so an agent's read after its update was applied is answered here;
//! - a read that started before a drop never stores what it read (each entry
//!   is stored only if no drop of its chat happened since the read began);
//! - events are numbered per publisher: a number skipped (an event lost on
//!   the way, or while this gateway was disconnected) drops everything;
//! - what no event can announce (a publisher that died between its commit and
//!   its event, a gateway that died between registering an acceptance and
//!   announcing it) is bounded by `read_cache.ttl_ms`: no entry is used
//!   longer than that after it was read or installed;
//! - the expiry sweep announces nothing either: no entry is used past the
//!   `expires_at` memory-store answered with it (when the sweep may purge
//!   the chat).
//!
//! Bounded by `read_cache.capacity` entries (0 turns the cache off).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

use chat_memory_proto::jobs::v1::MemoryChanged;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};
use chat_memory_proto::v1::Freshness;

/// The `[read_cache]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ReadCacheSettings {
    /// Chats cached (memories and known-absent chats); 0 turns the cache off.
    pub capacity: usize,
    /// Longest an entry is used after it was read from memory-store or
    /// installed from a commit's event: the bound on staleness when a change
    /// event could not be published at all.
    pub ttl_ms: u64,
    /// memory-store read calls in flight at once for reads the cache does not
    /// answer (with the cache off, every read); reads that miss while all are
    /// busy go together in the next `GetMemories` call (up to
    /// `store_batches.max_batch`). One gathers the most (the least CPU per
    /// read); more let a slow call hold up fewer reads.
    pub store_calls_in_flight: usize,
    /// A commit's change event installs the new memory as the chat's entry
    /// (false: it only drops the old one, and the next read goes to
    /// memory-store).
    pub install_commits: bool,
}

impl Default for ReadCacheSettings {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl_ms: 10_000,
            store_calls_in_flight: 1,
            install_commits: true,
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
    /// When memory-store's expiry sweep may purge the chat (which announces
    /// nothing): the entry is not used from then on.
    expires: Option<Instant>,
}

impl Entry {
    fn new(known: Known, expires_at: Option<&chat_memory_proto::Timestamp>) -> Self {
        let now = Instant::now();
        // Wall-clock time to this process's monotonic clock; a time already
        // past (or unreadable) makes the entry expired at once.
        let expires = expires_at.map(|at| {
            chat_memory_proto::time::from_timestamp(at)
                .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                .map_or(now, |left| now + left)
        });
        Self {
            known,
            read_at: now,
            expires,
        }
    }

    fn expired(&self, ttl: Duration) -> bool {
        self.read_at.elapsed() > ttl || self.expires.is_some_and(|at| Instant::now() >= at)
    }
}

/// What the cache answers for a read.
#[derive(Debug, Clone, PartialEq)]
pub enum Hit {
    Memory(Arc<store_pb::GetMemoryResponse>),
    /// NOT_FOUND, exactly as memory-store would answer it.
    NotFound,
}

/// What this gateway last learnt of a chat from its drops and change events,
/// kept after the entry is gone (so a late event installs nothing stale).
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    /// The drop count when the chat was last dropped.
    dropped_at: u64,
    /// The highest stream sequence an acceptance of the chat was announced with.
    accepted_through: u64,
    /// The highest version a commit of the chat was announced with.
    version: i64,
    /// The chat's deletion was announced or made here.
    deleted: bool,
}

/// The cache; share it behind an `Arc`.
pub struct MemoryCache {
    entries: Option<quick_cache::sync::Cache<String, Entry>>,
    /// Chat -> what was learnt of it (bounded by four times the capacity).
    dropped: Option<quick_cache::sync::Cache<String, Mark>>,
    /// Held while a mark is read and written again (events and deletions;
    /// reads only look).
    marking: Mutex<()>,
    install_commits: bool,
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
            marking: Mutex::new(()),
            install_commits: settings.install_commits,
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
        if entry.expired(self.ttl) {
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
        let entry = Entry::new(
            Known::Memory(Arc::new(read.clone())),
            read.expires_at.as_ref(),
        );
        self.store(chat_id, ticket, entry);
    }

    /// Stores that `chat_id` has no memory at all, unless it changed since `ticket`.
    pub fn store_absent(&self, chat_id: &str, ticket: ReadTicket) {
        self.store(chat_id, ticket, Entry::new(Known::Absent, None));
    }

    fn store(&self, chat_id: &str, ticket: ReadTicket, entry: Entry) {
        let (Some(entries), Some(dropped)) = (&self.entries, &self.dropped) else {
            return;
        };
        let changed_since = |at: u64| at > ticket.0;
        let dropped_since = || {
            dropped
                .get(chat_id)
                .is_some_and(|mark| changed_since(mark.dropped_at))
        };
        if changed_since(self.cleared_at.load(Ordering::SeqCst)) || dropped_since() {
            return;
        }
        entries.insert(chat_id.to_owned(), entry);
        // A drop that raced with this insert: undo it (the drop wins).
        if dropped_since() {
            entries.remove(chat_id);
        }
    }

    /// Drops what is known of `chat_id` (no event: a test's stand-in for one
    /// that installs nothing).
    pub fn drop_chat(&self, chat_id: &str) {
        self.drop_and_mark(chat_id, |_| None);
    }

    /// Drops what is known of `chat_id`, deleted here: nothing is installed
    /// for it from events any more (while its mark lasts), since its
    /// versions start over.
    pub fn drop_deleted(&self, chat_id: &str) {
        self.drop_and_mark(chat_id, |mark| {
            mark.deleted = true;
            None
        });
    }

    /// Drops what is known of the event's chat and notes what the event says
    /// of it; then installs a commit's memory as the chat's entry when the
    /// event holds all of `GetMemory`'s answer and nothing announced earlier
    /// is newer (see the module's "Freshness").
    pub fn apply_event(&self, event: &MemoryChanged) {
        let install = self.install_commits;
        self.drop_and_mark(&event.chat_id, |mark| {
            let version = event.memory.as_ref().map(|m| m.version);
            let installable = install
                && !event.deleted
                && !mark.deleted
                && mark.accepted_through <= event.registered_through_seq
                && version.is_some_and(|v| v > mark.version);
            mark.accepted_through = mark.accepted_through.max(event.accepted_through_seq);
            mark.version = mark.version.max(version.unwrap_or(0));
            mark.deleted |= event.deleted;
            let pending_jobs = event.pending_jobs?;
            installable.then(|| store_pb::GetMemoryResponse {
                chat_id: event.chat_id.clone(),
                memory: event.memory.clone(),
                freshness: Some(Freshness {
                    last_applied_job_id: event.last_applied_job_id.clone(),
                    pending_jobs,
                }),
                owner_user: event.owner_user.clone(),
                expires_at: event.expires_at,
            })
        });
    }

    /// Drops `chat_id`'s entry, updates its mark with `note` and stores what
    /// `note` answers as the new entry, all while holding `marking`.
    fn drop_and_mark(
        &self,
        chat_id: &str,
        note: impl FnOnce(&mut Mark) -> Option<store_pb::GetMemoryResponse>,
    ) {
        let (Some(entries), Some(dropped)) = (&self.entries, &self.dropped) else {
            return;
        };
        let _marking = self.marking.lock().unwrap_or_else(PoisonError::into_inner);
        let mut mark = dropped.get(chat_id).unwrap_or_default();
        mark.dropped_at = self.drops.fetch_add(1, Ordering::SeqCst) + 1;
        let installed = note(&mut mark);
        dropped.insert(chat_id.to_owned(), mark);
        entries.remove(chat_id);
        if let Some(memory) = installed {
            crate::metrics::read_cache("installed");
            let expires_at = memory.expires_at;
            entries.insert(
                chat_id.to_owned(),
                Entry::new(Known::Memory(Arc::new(memory)), expires_at.as_ref()),
            );
        }
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
            expires_at: None,
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

    /// A commit's event for `chat` at `version`, answered with `pending`
    /// jobs and registered through stream sequence `through`.
    fn commit(chat: &str, version: i64, pending: u32, through: u64) -> MemoryChanged {
        MemoryChanged {
            chat_id: chat.into(),
            memory: Some(Memory {
                version,
                general_summary: format!("v{version}"),
                ..Default::default()
            }),
            last_applied_job_id: format!("job-{version}"),
            applied_job_ids: vec![format!("job-{version}")],
            owner_user: "alice".into(),
            pending_jobs: Some(pending),
            registered_through_seq: through,
            ..Default::default()
        }
    }

    fn accepted(chat: &str, seq: u64) -> MemoryChanged {
        MemoryChanged {
            chat_id: chat.into(),
            accepted_job_ids: vec![format!("job-at-{seq}")],
            accepted_through_seq: seq,
            ..Default::default()
        }
    }

    fn version_cached(cache: &MemoryCache, chat: &str) -> Option<(i64, u32)> {
        match cache.get(&id(chat), &access("t", "alice", false))? {
            Hit::Memory(m) => Some((
                m.memory.as_ref().map_or(0, |m| m.version),
                m.freshness.as_ref().map_or(u32::MAX, |f| f.pending_jobs),
            )),
            Hit::NotFound => None,
        }
    }

    #[test]
    fn a_commits_event_installs_its_memory_for_its_owner_only() {
        let cache = MemoryCache::new(&settings());
        cache.apply_event(&commit("t/c", 1, 0, 10));
        let Some(Hit::Memory(m)) = cache.get(&id("t/c"), &access("t", "alice", false)) else {
            panic!("the commit's memory was not installed");
        };
        assert_eq!(m.chat_id, "t/c");
        assert_eq!(m.owner_user, "alice");
        assert_eq!(
            m.memory.as_ref().map(|m| m.general_summary.as_str()),
            Some("v1")
        );
        let freshness = m.freshness.clone().expect("freshness");
        assert_eq!(
            (
                freshness.last_applied_job_id.as_str(),
                freshness.pending_jobs
            ),
            ("job-1", 0)
        );
        assert_eq!(
            cache.get(&id("t/c"), &access("t", "bob", false)),
            Some(Hit::NotFound)
        );
        // A read begun before the install stores nothing over it.
        let before = cache.ticket();
        cache.apply_event(&commit("t/c", 2, 0, 11));
        cache.store_memory("t/c", before, &memory("t/c", "alice", 1));
        assert_eq!(version_cached(&cache, "t/c"), Some((2, 0)));
    }

    #[test]
    fn an_acceptance_the_commit_did_not_count_keeps_it_out_in_either_order() {
        let cache = MemoryCache::new(&settings());
        // Announced first: the commit (registered through 10) did not count 11.
        cache.apply_event(&accepted("t/a", 11));
        cache.apply_event(&commit("t/a", 1, 0, 10));
        assert_eq!(version_cached(&cache, "t/a"), None);
        // Announced after the commit: it drops the installed entry.
        cache.apply_event(&commit("t/b", 1, 0, 10));
        assert_eq!(version_cached(&cache, "t/b"), Some((1, 0)));
        cache.apply_event(&accepted("t/b", 11));
        assert_eq!(version_cached(&cache, "t/b"), None);
        // An acceptance the commit counted (at or below its sequence) does not
        // keep a later commit out.
        cache.apply_event(&accepted("t/c", 10));
        cache.apply_event(&commit("t/c", 1, 1, 10));
        assert_eq!(version_cached(&cache, "t/c"), Some((1, 1)));
    }

    #[test]
    fn a_late_event_deletions_and_events_without_a_pending_count_install_nothing() {
        let cache = MemoryCache::new(&settings());
        cache.apply_event(&commit("t/a", 2, 0, 20));
        cache.apply_event(&commit("t/a", 1, 0, 10));
        assert_eq!(
            version_cached(&cache, "t/a"),
            None,
            "version 2 was announced before"
        );
        cache.apply_event(&commit("t/a", 3, 0, 30));
        assert_eq!(version_cached(&cache, "t/a"), Some((3, 0)));
        // A deletion, announced or made here: versions start over, so no
        // event installs the chat any more.
        cache.apply_event(&MemoryChanged {
            chat_id: "t/a".into(),
            deleted: true,
            ..Default::default()
        });
        cache.apply_event(&commit("t/a", 4, 0, 40));
        assert_eq!(version_cached(&cache, "t/a"), None);
        cache.apply_event(&commit("t/b", 1, 0, 10));
        cache.drop_deleted("t/b");
        cache.apply_event(&commit("t/b", 2, 0, 20));
        assert_eq!(version_cached(&cache, "t/b"), None);
        // An older worker's event (no pending count) only drops.
        cache.apply_event(&MemoryChanged {
            pending_jobs: None,
            ..commit("t/c", 1, 0, 10)
        });
        assert_eq!(version_cached(&cache, "t/c"), None);
        // Installing turned off.
        let off = MemoryCache::new(&ReadCacheSettings {
            install_commits: false,
            ..settings()
        });
        off.apply_event(&commit("t/d", 1, 0, 10));
        assert_eq!(version_cached(&off, "t/d"), None);
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
    fn no_entry_is_used_once_the_expiry_sweep_may_have_purged_its_chat() {
        let cache = MemoryCache::new(&settings());
        let at = |secs: i64| {
            Some(chat_memory_proto::time::to_timestamp(
                chrono::Utc::now() + chrono::Duration::seconds(secs),
            ))
        };
        let read = |chat: &str, expires_at| store_pb::GetMemoryResponse {
            expires_at,
            ..memory(chat, "alice", 1)
        };
        cache.store_memory("t/later", cache.ticket(), &read("t/later", at(60)));
        cache.store_memory("t/past", cache.ticket(), &read("t/past", at(-1)));
        assert_eq!(version_cached(&cache, "t/later").map(|v| v.0), Some(1));
        assert_eq!(version_cached(&cache, "t/past"), None);
        cache.apply_event(&MemoryChanged {
            expires_at: at(-1),
            ..commit("t/event", 1, 0, 10)
        });
        assert_eq!(version_cached(&cache, "t/event"), None);
        cache.apply_event(&MemoryChanged {
            expires_at: at(60),
            ..commit("t/event", 2, 0, 20)
        });
        assert_eq!(version_cached(&cache, "t/event"), Some((2, 0)));
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
