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
//!   announcing it) is bounded by the TTLs. An entry whose chat has a change
//!   under way (jobs pending, no memory yet, a coming deletion announced
//!   within `read_cache.ttl_ms`, for a read's answer an acceptance announced
//!   within that long, or this gateway's NATS connection back within that
//!   long) is used at most `ttl_ms` after it
//!   was read or installed: its change is expected any moment, and the event
//!   that would announce it may be lost. An entry of a settled chat is used
//!   up to `read_cache.settled_ttl_ms`: a change of such a chat is announced
//!   twice, by the gateway that accepts its update (or that deletes it,
//!   before it does: [`MemoryChanged::deleting`]) and by the commit's event,
//!   so it stays stale that long only if both are lost (docs/architecture.md
//!   lists those cases);
//! - the expiry sweep announces nothing either: no entry is used past the
//!   `expires_at` memory-store answered with it (when the sweep may purge
//!   the chat).
//!
//! Bounded by `read_cache.capacity` entries (0 turns the cache off).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

use chat_memory_proto::jobs::v1::MemoryChanged;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};
use chat_memory_proto::v1::Freshness;

mod marks;
use marks::Mark;

/// The `[read_cache]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ReadCacheSettings {
    /// Chats cached (memories and known-absent chats); 0 turns the cache off.
    pub capacity: usize,
    /// Longest an entry is used after it was read from memory-store or
    /// installed from a commit's event while its chat has jobs pending (or a
    /// deletion announced as coming): the bound on staleness when the event
    /// of a change under way could not be published at all.
    pub ttl_ms: u64,
    /// Longest an entry of a settled chat (a memory with no job pending, no
    /// acceptance or deletion announced within `ttl_ms`) is used: every change
    /// of such a chat is announced before it can be seen, so this bounds
    /// what a lost announcement together with another failure leaves
    /// (docs/architecture.md). A value below `ttl_ms` means `ttl_ms`; an
    /// agent whose turns are further apart reads its chat from memory-store
    /// again.
    pub settled_ttl_ms: u64,
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
            settled_ttl_ms: 60_000,
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
    /// How long after `read_at` the entry is used (the short TTL, or the
    /// settled one).
    ttl: Duration,
    /// When memory-store's expiry sweep may purge the chat (which announces
    /// nothing): the entry is not used from then on.
    expires: Option<Instant>,
}

impl Entry {
    /// An entry of what was read (or committed) `read_ago`, usable for `ttl`
    /// from then, and until `expires_at` at the latest.
    fn new(
        known: Known,
        expires_at: Option<&chat_memory_proto::Timestamp>,
        read_ago: Duration,
        ttl: Duration,
    ) -> Self {
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
            read_at: now.checked_sub(read_ago).unwrap_or(now),
            ttl,
            expires,
        }
    }

    fn expired(&self) -> bool {
        self.read_at.elapsed() > self.ttl || self.expires.is_some_and(|at| Instant::now() >= at)
    }
}

impl Known {
    /// No job of the chat is pending, as this answer says. A chat with no
    /// memory is never settled: memory-store's NOT_FOUND does not say
    /// whether its first job is queued.
    fn settled(&self) -> bool {
        match self {
            Self::Absent => false,
            Self::Memory(m) => m.freshness.as_ref().is_some_and(|f| f.pending_jobs == 0),
        }
    }
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
    /// Chat -> what was learnt of it (bounded by four times the capacity;
    /// see [`marks_cache`]).
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
    settled_ttl: Duration,
    /// This gateway's NATS connection is down: no event can arrive, so
    /// nothing is answered or stored until it is back.
    disconnected: AtomicBool,
    /// Until then nothing stored is settled: the connection came back, and
    /// the change subscription is renewed just after the client reports it
    /// (an event published in between is lost, and no number may reveal it
    /// soon).
    reconnected_until: Mutex<Option<Instant>>,
}

/// The drop marks: more than entries, and kept in the order they were last
/// written (a mark evicted early lets a late event install, or a read store,
/// what only the TTLs then bound). Half the room is for recent marks:
/// quick_cache's default keeps 97 % of it for marks written twice, so once
/// full a new mark (a deletion's, say) was evicted after about 3 % of the room
/// in newer marks (12 % of `read_cache.capacity`); now it outlives about half
/// the room (twice `read_cache.capacity`).
fn marks_cache(capacity: usize) -> quick_cache::sync::Cache<String, Mark> {
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(capacity)
        .weight_capacity(u64::try_from(capacity).unwrap_or(u64::MAX))
        .hot_allocation(MARKS_HOT_ALLOCATION)
        .build();
    match options {
        Ok(options) => quick_cache::sync::Cache::with_options(
            options,
            quick_cache::UnitWeighter,
            quick_cache::DefaultHashBuilder::default(),
            quick_cache::sync::DefaultLifecycle::default(),
        ),
        // Cannot happen (both capacities are set); the default shape then.
        Err(_) => quick_cache::sync::Cache::new(capacity),
    }
}

/// The share of the marks' room kept for marks written more than once.
const MARKS_HOT_ALLOCATION: f64 = 0.5;

/// Taken before a memory-store read; the read's answer is stored only if
/// nothing about its chat changed since.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl MemoryCache {
    pub fn new(settings: &ReadCacheSettings) -> Self {
        let on = settings.capacity > 0;
        Self {
            entries: on.then(|| quick_cache::sync::Cache::new(settings.capacity)),
            dropped: on.then(|| marks_cache(settings.capacity.saturating_mul(4))),
            marking: Mutex::new(()),
            install_commits: settings.install_commits,
            drops: AtomicU64::new(0),
            cleared_at: AtomicU64::new(0),
            publishers: Mutex::new(HashMap::new()),
            ttl: Duration::from_millis(settings.ttl_ms),
            // A settled TTL below the short one means the short one.
            settled_ttl: Duration::from_millis(settings.settled_ttl_ms.max(settings.ttl_ms)),
            disconnected: AtomicBool::new(false),
            reconnected_until: Mutex::new(None),
        }
    }

    /// This gateway's NATS connection went down (`false`) or came back
    /// (`true`). Either way everything is dropped: events published meanwhile
    /// never arrive, and no publisher number may reveal them soon. While it
    /// is down, the cache answers nothing and keeps nothing.
    pub fn set_connected(&self, connected: bool) {
        if connected {
            *self
                .reconnected_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + self.ttl);
        }
        self.disconnected.store(!connected, Ordering::SeqCst);
        self.clear();
    }

    /// How long an entry of `known` (stored by a `read`, or installed from a
    /// commit's event) may be used: the settled TTL when its chat has no job
    /// pending, nothing under way was announced (`mark`: a coming deletion,
    /// or for a read an acceptance) and the connection did not just come
    /// back; else the short one.
    fn lifetime(&self, known: &Known, mark: Option<&Mark>, read: bool, now: Instant) -> Duration {
        let reconnected = self
            .reconnected_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| now < until);
        if known.settled() && mark.is_none_or(|m| m.settles(now, read)) && !reconnected {
            self.settled_ttl
        } else {
            self.ttl
        }
    }

    /// The answer for `access` reading `chat`, if cached and fresh.
    pub fn get(&self, chat: &TenantChatId, access: &Access) -> Option<Hit> {
        let entries = self.entries.as_ref()?;
        if self.disconnected.load(Ordering::SeqCst) {
            return None;
        }
        let entry = entries.get(chat.as_str())?;
        if entry.expired() {
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
        self.store(
            chat_id,
            ticket,
            Known::Memory(Arc::new(read.clone())),
            read.expires_at.as_ref(),
        );
    }

    /// Stores that `chat_id` has no memory at all, unless it changed since `ticket`.
    pub fn store_absent(&self, chat_id: &str, ticket: ReadTicket) {
        self.store(chat_id, ticket, Known::Absent, None);
    }

    fn store(
        &self,
        chat_id: &str,
        ticket: ReadTicket,
        known: Known,
        expires_at: Option<&chat_memory_proto::Timestamp>,
    ) {
        let (Some(entries), Some(dropped)) = (&self.entries, &self.dropped) else {
            return;
        };
        let changed_since = |at: u64| at > ticket.0;
        let dropped_since = || {
            dropped
                .get(chat_id)
                .is_some_and(|mark| changed_since(mark.dropped_at))
        };
        let mark = dropped.get(chat_id);
        if changed_since(self.cleared_at.load(Ordering::SeqCst))
            || mark.is_some_and(|m| changed_since(m.dropped_at))
            || self.disconnected.load(Ordering::SeqCst)
        {
            return;
        }
        let ttl = self.lifetime(&known, mark.as_ref(), true, Instant::now());
        entries.insert(
            chat_id.to_owned(),
            Entry::new(known, expires_at, Duration::ZERO, ttl),
        );
        // A drop or a full clear that raced with this insert: undo it (the
        // drop wins).
        if dropped_since() || changed_since(self.cleared_at.load(Ordering::SeqCst)) {
            entries.remove(chat_id);
        }
    }

    /// Drops what is known of `chat_id` (a test's stand-in for an event that
    /// installs nothing).
    #[cfg(test)]
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
        // How long ago the commit was (its memory's updated_at): an event
        // held up on its way installs nothing past the TTL, and its entry's
        // TTL counts from the commit.
        let age = event
            .memory
            .as_ref()
            .and_then(|m| m.updated_at.as_ref())
            .and_then(chat_memory_proto::time::from_timestamp)
            .map(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default());
        self.drop_and_mark(&event.chat_id, |mark, held_version| {
            let now = Instant::now();
            let installable = install && mark.admits(event, held_version, age, ttl, now);
            mark.note_event(event, now, ttl);
            let answer = store_pb::GetMemoryResponse {
                chat_id: event.chat_id.clone(),
                memory: event.memory.clone(),
                freshness: Some(Freshness {
                    last_applied_job_id: event.last_applied_job_id.clone(),
                    pending_jobs: event.pending_jobs?,
                }),
                owner_user: event.owner_user.clone(),
                expires_at: event.expires_at,
            };
            installable.then(|| (answer, age.unwrap_or_default()))
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
            let known = Known::Memory(Arc::new(memory));
            let ttl = self.lifetime(&known, Some(&mark), false, Instant::now());
            let entry = Entry::new(known, expires_at.as_ref(), age, ttl);
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

    /// How long the entry of `chat_id` is used after it was read or
    /// installed, if there is one.
    #[cfg(test)]
    pub(crate) fn lifetime_of(&self, chat_id: &str) -> Option<Duration> {
        self.entries.as_ref()?.get(chat_id).map(|e| e.ttl)
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
mod tests;
