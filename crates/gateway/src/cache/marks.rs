//! What a gateway remembers of a chat after its cache entry is gone: the
//! versions, deletions, acceptances and failures its change events
//! announced, which decide whether a commit's event may be installed
//! (see the module above, "Freshness").

use std::time::{Duration, Instant};

use chat_memory_proto::jobs::v1::MemoryChanged;

/// What this gateway last learnt of a chat from its drops and change events,
/// kept after the entry is gone (so a late event installs nothing stale).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mark {
    /// The drop count when the chat was last dropped.
    pub(super) dropped_at: u64,
    /// Stream sequences of the chat's jobs announced accepted.
    accepted: Seqs,
    /// Stream sequences of the chat's jobs announced failed for good.
    failed: Seqs,
    /// The highest version a commit of the chat was announced with.
    version: i64,
    /// The chat's deletion was announced or made here.
    pub(super) deleted: bool,
    /// An acceptance or failure was announced without its sequence (a process
    /// of an older release): no commit is installed before this.
    unordered_until: Option<Instant>,
    /// A deletion was announced as about to be committed: until then, what
    /// is stored of the chat (read or installed) is kept only for the short
    /// TTL (never settled).
    unsettled_until: Option<Instant>,
    /// An acceptance was announced: until then, what a read stores of the
    /// chat is kept only for the short TTL. A read's answer has a pending
    /// count but not which jobs it counts, and the job may not be registered
    /// yet (its gateway's registration failed; the worker registers it when
    /// it begins). A commit's event lists them, and is installed only if it
    /// accounts for every acceptance announced ([`Mark::agrees_with`]).
    accepted_until: Option<Instant>,
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

    /// Whether a commit's `event` may be installed over what is known: a
    /// whole answer (a pending count), no deletion, a version above every
    /// one announced and the one held (`held_version`), made less than `ttl`
    /// ago (`age`), and in agreement with every acceptance and failure
    /// announced ([`Mark::agrees_with`]).
    pub(super) fn admits(
        &self,
        event: &MemoryChanged,
        held_version: Option<i64>,
        age: Option<Duration>,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let version = event.memory.as_ref().map(|m| m.version);
        event.pending_jobs.is_some()
            && !event.deleted
            && !self.deleted
            && version.is_some_and(|v| v > self.version && held_version.is_none_or(|h| v > h))
            && age.is_some_and(|age| age < ttl)
            && self.agrees_with(event.applied_through_seq, &event.pending_seqs, now)
    }

    /// Notes what `event` announces: its acceptances' and failures' sequences
    /// (one without them, from an older release, keeps commits out for
    /// `ttl`), its version and a deletion.
    pub(super) fn note_event(&mut self, event: &MemoryChanged, now: Instant, ttl: Duration) {
        if !event.accepted_job_ids.is_empty() {
            if event.accepted_through_seq == 0 {
                self.unordered_until = Some(now + ttl);
            }
            self.accepted.note(event.accepted_through_seq);
        }
        if !event.failed_job_ids.is_empty() {
            if event.failed_job_seqs.is_empty() {
                self.unordered_until = Some(now + ttl);
            }
            for seq in &event.failed_job_seqs {
                self.failed.note(*seq);
            }
        }
        if let Some(memory) = &event.memory {
            self.version = self.version.max(memory.version);
        }
        if event.deleting {
            self.unsettled_until = Some(now + ttl);
        }
        if !event.accepted_job_ids.is_empty() {
            self.accepted_until = Some(now + ttl);
        }
        self.deleted |= event.deleted;
    }

    /// Whether what is stored of the chat now (by a read, or else by a
    /// commit's install) may be kept for the long TTL of settled chats: no
    /// coming deletion announced within the short TTL, nor, for a read, an
    /// acceptance.
    pub(super) fn settles(&self, now: Instant, read: bool) -> bool {
        let passed = |until: Option<Instant>| until.is_none_or(|until| now >= until);
        passed(self.unsettled_until) && (!read || passed(self.accepted_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
