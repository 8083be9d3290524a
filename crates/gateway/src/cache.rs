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
//!   ([`MemoryCache::apply_event`]): an acceptance was announced whose stream
//!   sequence the commit neither applied nor counts as pending (a job its
//!   pending count does not hold: registrations need not come in stream
//!   order), a failure was announced of a job it counts as pending, an
//!   acceptance or failure was announced without its sequence (an older
//!   release) within the TTL, a commit of the same or a later version was
//!   announced before it or is held here already (events of different
//!   publishers arrive in any order), the chat's deletion was announced (its
//!   versions start over), or the commit is older than the TTL (an event held
//!   up on its way); so an agent's read after its update was applied is
//!   answered here;
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
                .map_or(Some(now), |left| now.checked_add(left))
        });
        // Too far ahead to represent: no bound but the TTL.
        let expires = expires.flatten();
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
    /// Stream sequences of the chat's jobs announced accepted.
    accepted: Seqs,
    /// Stream sequences of the chat's jobs announced failed for good.
    failed: Seqs,
    /// The highest version a commit of the chat was announced with.
    version: i64,
    /// The chat's deletion was announced or made here.
    deleted: bool,
    /// An acceptance or failure was announced without its sequence (a process
    /// of an older release): no commit is installed before this.
    unordered_until: Option<Instant>,
}

/// The most recent stream sequences of one kind (a few; the rest are
/// summarised by the highest one let go).
#[derive(Debug, Clone, Copy, Default)]
struct Seqs {
    /// 0: an empty slot.
    recent: [u64; 8],
    /// The highest sequence no longer in `recent`.
    let_go_through: u64,
}

impl Seqs {
    fn note(&mut self, seq: u64) {
        if seq == 0 || self.recent.contains(&seq) {
            return;
        }
        if let Some(slot) = self.recent.iter_mut().find(|s| **s == 0) {
            *slot = seq;
            return;
        }
        if let Some(lowest) = self.recent.iter_mut().min() {
            self.let_go_through = self.let_go_through.max(*lowest);
            *lowest = seq;
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.recent.iter().copied().filter(|s| *s != 0)
    }
}

impl Mark {
    /// Whether a commit's answer (`applied` through this sequence, `pending`
    /// the sequences it counts) holds every acceptance and failure announced
    /// so far: each announced acceptance is applied, pending or failed, and
    /// no announced failure is still counted as pending.
    fn agrees_with(&self, applied: u64, pending: &[u64], now: Instant) -> bool {
        let counted = |seq: u64| {
            seq <= applied || pending.contains(&seq) || self.failed.recent.contains(&seq)
        };
        self.unordered_until.is_none_or(|until| now >= until)
            && self.accepted.let_go_through <= applied
            && self.accepted.iter().all(counted)
            && !self.failed.iter().any(|seq| pending.contains(&seq))
            && !pending.iter().any(|seq| *seq <= self.failed.let_go_through)
    }
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
        self.drop_and_mark(chat_id, |_, _| None);
    }

    /// Drops what is known of `chat_id`, deleted here: nothing is installed
    /// for it from events any more (while its mark lasts), since its
    /// versions start over.
    pub fn drop_deleted(&self, chat_id: &str) {
        self.drop_and_mark(chat_id, |mark, _| {
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
        let ttl = self.ttl;
        self.drop_and_mark(&event.chat_id, |mark, held_version| {
            let now = Instant::now();
            let version = event.memory.as_ref().map(|m| m.version);
            // How long ago the commit was (its memory's updated_at): an event
            // held up on its way installs nothing past the TTL, and its
            // entry's TTL counts from the commit.
            let age = event
                .memory
                .as_ref()
                .and_then(|m| m.updated_at.as_ref())
                .and_then(chat_memory_proto::time::from_timestamp)
                .map(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default());
            let installable = install
                && !event.deleted
                && !mark.deleted
                && version.is_some_and(|v| v > mark.version && held_version.is_none_or(|h| v > h))
                && age.is_some_and(|age| age < ttl)
                && mark.agrees_with(event.applied_through_seq, &event.pending_seqs, now);
            if !event.accepted_job_ids.is_empty() {
                if event.accepted_through_seq == 0 {
                    mark.unordered_until = Some(now + ttl);
                }
                mark.accepted.note(event.accepted_through_seq);
            }
            if !event.failed_job_ids.is_empty() {
                if event.failed_job_seqs.is_empty() {
                    mark.unordered_until = Some(now + ttl);
                }
                for seq in &event.failed_job_seqs {
                    mark.failed.note(*seq);
                }
            }
            mark.version = mark.version.max(version.unwrap_or(0));
            mark.deleted |= event.deleted;
            let pending_jobs = event.pending_jobs?;
            let installed = installable.then(|| store_pb::GetMemoryResponse {
                chat_id: event.chat_id.clone(),
                memory: event.memory.clone(),
                freshness: Some(Freshness {
                    last_applied_job_id: event.last_applied_job_id.clone(),
                    pending_jobs,
                }),
                owner_user: event.owner_user.clone(),
                expires_at: event.expires_at,
            });
            installed.map(|answer| (answer, age.unwrap_or_default()))
        });
    }

    /// Drops `chat_id`'s entry, updates its mark with `note` (told the
    /// version of the memory the entry held, if any) and stores what `note`
    /// answers as the new entry (read that long ago), all while holding
    /// `marking`.
    fn drop_and_mark(
        &self,
        chat_id: &str,
        note: impl FnOnce(&mut Mark, Option<i64>) -> Option<(store_pb::GetMemoryResponse, Duration)>,
    ) {
        let (Some(entries), Some(dropped)) = (&self.entries, &self.dropped) else {
            return;
        };
        let _marking = self.marking.lock().unwrap_or_else(PoisonError::into_inner);
        let mut mark = dropped.get(chat_id).unwrap_or_default();
        mark.dropped_at = self.drops.fetch_add(1, Ordering::SeqCst) + 1;
        let held_version = entries.get(chat_id).and_then(|e| match &e.known {
            Known::Memory(m) => m.memory.as_ref().map(|m| m.version),
            Known::Absent => None,
        });
        let installed = note(&mut mark, held_version);
        dropped.insert(chat_id.to_owned(), mark);
        entries.remove(chat_id);
        if let Some((memory, age)) = installed {
            crate::metrics::read_cache("installed");
            let expires_at = memory.expires_at;
            let mut entry = Entry::new(Known::Memory(Arc::new(memory)), expires_at.as_ref());
            entry.read_at = entry.read_at.checked_sub(age).unwrap_or(entry.read_at);
            entries.insert(chat_id.to_owned(), entry);
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

    /// A commit's event for `chat` at `version`, committed now, the memory
    /// applied through stream sequence `applied` with the jobs at `pending`
    /// still pending.
    fn commit(chat: &str, version: i64, applied: u64, pending: &[u64]) -> MemoryChanged {
        MemoryChanged {
            chat_id: chat.into(),
            memory: Some(Memory {
                version,
                general_summary: format!("v{version}"),
                updated_at: Some(chat_memory_proto::time::to_timestamp(chrono::Utc::now())),
                ..Default::default()
            }),
            last_applied_job_id: format!("job-{version}"),
            applied_job_ids: vec![format!("job-{version}")],
            owner_user: "alice".into(),
            pending_jobs: Some(u32::try_from(pending.len()).unwrap_or(u32::MAX)),
            applied_through_seq: applied,
            pending_seqs: pending.to_vec(),
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

    fn failed(chat: &str, seq: u64) -> MemoryChanged {
        MemoryChanged {
            chat_id: chat.into(),
            failed_job_ids: vec![format!("job-at-{seq}")],
            failed_job_seqs: vec![seq],
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
        cache.apply_event(&commit("t/c", 1, 10, &[]));
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
        cache.apply_event(&commit("t/c", 2, 11, &[]));
        cache.store_memory("t/c", before, &memory("t/c", "alice", 1));
        assert_eq!(version_cached(&cache, "t/c"), Some((2, 0)));
    }

    #[test]
    fn an_acceptance_the_commit_did_not_count_keeps_it_out_in_either_order() {
        let cache = MemoryCache::new(&settings());
        // Announced first: the commit (applied through 10, nothing pending)
        // did not count 11.
        cache.apply_event(&accepted("t/a", 11));
        cache.apply_event(&commit("t/a", 1, 10, &[]));
        assert_eq!(version_cached(&cache, "t/a"), None);
        // Announced after the commit: it drops the installed entry.
        cache.apply_event(&commit("t/b", 1, 10, &[]));
        assert_eq!(version_cached(&cache, "t/b"), Some((1, 0)));
        cache.apply_event(&accepted("t/b", 11));
        assert_eq!(version_cached(&cache, "t/b"), None);
        // Acceptances the commit counted (applied, or pending) do not keep it out.
        cache.apply_event(&accepted("t/c", 10));
        cache.apply_event(&accepted("t/c", 12));
        cache.apply_event(&commit("t/c", 1, 10, &[12]));
        assert_eq!(version_cached(&cache, "t/c"), Some((1, 1)));
        // Registrations out of stream order: 12 was registered before the
        // commit, 11 after; the commit counts 12 only, so 11 keeps it out
        // although a higher sequence was counted.
        cache.apply_event(&accepted("t/d", 11));
        cache.apply_event(&commit("t/d", 1, 10, &[12]));
        assert_eq!(version_cached(&cache, "t/d"), None);
        // An acceptance announced by an older release (no sequence) keeps
        // every commit out for the TTL.
        cache.apply_event(&MemoryChanged {
            accepted_through_seq: 0,
            ..accepted("t/e", 11)
        });
        cache.apply_event(&commit("t/e", 1, 20, &[]));
        assert_eq!(version_cached(&cache, "t/e"), None);
    }

    #[test]
    fn a_failure_the_commit_still_counts_as_pending_keeps_it_out() {
        let cache = MemoryCache::new(&settings());
        // The job at 12 failed after the commit counted it pending; the
        // failure's event came first.
        cache.apply_event(&accepted("t/a", 12));
        cache.apply_event(&failed("t/a", 12));
        cache.apply_event(&commit("t/a", 1, 10, &[12]));
        assert_eq!(version_cached(&cache, "t/a"), None);
        // A commit after the failure no longer counts it.
        cache.apply_event(&commit("t/a", 2, 10, &[]));
        assert_eq!(version_cached(&cache, "t/a"), Some((2, 0)));
        // An older release's failure (no sequence) keeps commits out for the TTL.
        cache.apply_event(&MemoryChanged {
            failed_job_seqs: Vec::new(),
            ..failed("t/b", 12)
        });
        cache.apply_event(&commit("t/b", 1, 20, &[]));
        assert_eq!(version_cached(&cache, "t/b"), None);
    }

    #[test]
    fn a_late_event_deletions_and_events_without_a_pending_count_install_nothing() {
        let cache = MemoryCache::new(&settings());
        cache.apply_event(&commit("t/a", 2, 20, &[]));
        cache.apply_event(&commit("t/a", 1, 10, &[]));
        assert_eq!(
            version_cached(&cache, "t/a"),
            None,
            "version 2 was announced before"
        );
        cache.apply_event(&commit("t/a", 3, 30, &[]));
        assert_eq!(version_cached(&cache, "t/a"), Some((3, 0)));
        // A read stored version 5 before version 4's event arrived: the
        // event does not put the older version back.
        cache.drop_chat("t/r");
        cache.store_memory("t/r", cache.ticket(), &memory("t/r", "alice", 5));
        cache.apply_event(&commit("t/r", 4, 40, &[]));
        assert_eq!(version_cached(&cache, "t/r"), None);
        // A commit older than the TTL (an event held up on its way).
        let short = MemoryCache::new(&ReadCacheSettings {
            ttl_ms: 1_000,
            ..settings()
        });
        let mut old = commit("t/o", 1, 10, &[]);
        if let Some(m) = old.memory.as_mut() {
            m.updated_at = Some(chat_memory_proto::time::to_timestamp(
                chrono::Utc::now() - chrono::Duration::seconds(5),
            ));
        }
        short.apply_event(&old);
        assert_eq!(version_cached(&short, "t/o"), None);
        // A deletion, announced or made here: versions start over, so no
        // event installs the chat any more.
        cache.apply_event(&MemoryChanged {
            chat_id: "t/a".into(),
            deleted: true,
            ..Default::default()
        });
        cache.apply_event(&commit("t/a", 4, 40, &[]));
        assert_eq!(version_cached(&cache, "t/a"), None);
        cache.apply_event(&commit("t/b", 1, 10, &[]));
        cache.drop_deleted("t/b");
        cache.apply_event(&commit("t/b", 2, 20, &[]));
        assert_eq!(version_cached(&cache, "t/b"), None);
        // An older worker's event (no pending count) only drops.
        cache.apply_event(&MemoryChanged {
            pending_jobs: None,
            ..commit("t/c", 1, 10, &[])
        });
        assert_eq!(version_cached(&cache, "t/c"), None);
        // Installing turned off.
        let off = MemoryCache::new(&ReadCacheSettings {
            install_commits: false,
            ..settings()
        });
        off.apply_event(&commit("t/d", 1, 10, &[]));
        assert_eq!(version_cached(&off, "t/d"), None);
    }

    #[test]
    fn a_chat_keeps_its_newest_sequences_and_summarises_the_rest() {
        let mut seqs = Seqs::default();
        for seq in 1..=10 {
            seqs.note(seq);
        }
        seqs.note(10);
        let mut kept: Vec<u64> = seqs.iter().collect();
        kept.sort_unstable();
        assert_eq!(kept, (3..=10).collect::<Vec<_>>());
        assert_eq!(seqs.let_go_through, 2);
        let mark = Mark {
            accepted: seqs,
            ..Mark::default()
        };
        let now = Instant::now();
        assert!(mark.agrees_with(10, &[], now));
        assert!(mark.agrees_with(2, &[3, 4, 5, 6, 7, 8, 9, 10], now));
        assert!(
            !mark.agrees_with(1, &[2, 3, 4, 5, 6, 7, 8, 9, 10], now),
            "2 was let go: applied or pending cannot be told"
        );
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
            ..commit("t/event", 1, 10, &[])
        });
        assert_eq!(version_cached(&cache, "t/event"), None);
        cache.apply_event(&MemoryChanged {
            expires_at: at(60),
            ..commit("t/event", 2, 20, &[])
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
