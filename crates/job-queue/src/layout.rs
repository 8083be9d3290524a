//! Where a chat's jobs live on the stream.
//!
//! Every chat has its own subject, `<prefix>.jobs.<key>`, where `key` is the
//! 16-hex-digit FNV-1a 64 hash of the namespaced chat id (chat ids may hold
//! characters a subject cannot). A subject's messages are stored in
//! publish-acknowledgement order, so a chat's subject *is* its job queue, and the
//! per-subject optimistic concurrency of NATS 2.9
//! (`Nats-Expected-Last-Subject-Sequence`) lets publishers chain each job to the
//! one before it (see [`crate::publish`]). Two chats whose keys collide share a
//! chain: their jobs are then ordered among each other too, which costs
//! parallelism, never correctness.

/// FNV-1a 64 of the namespaced chat id. Fixed by its definition, so every
/// release and process maps a chat to the same subject (unlike `DefaultHasher`).
pub fn chat_key(chat_id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    chat_id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The subject of one chat's jobs: `<prefix>.jobs.<16 hex digits>`.
pub fn chat_subject(subject_prefix: &str, chat_id: &str) -> String {
    format!("{subject_prefix}.jobs.{:016x}", chat_key(chat_id))
}

/// The wildcard subject the jobs stream binds and the workers' consumer
/// filters: `<prefix>.jobs.*`.
pub fn stream_subjects(subject_prefix: &str) -> String {
    format!("{subject_prefix}.jobs.*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_always_maps_to_the_same_subject() {
        assert_eq!(
            chat_subject("p", "t/chat-42"),
            chat_subject("p", "t/chat-42")
        );
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; pinning it guards against a silent change.
        assert_eq!(chat_subject("p", "a"), "p.jobs.af63dc4c8601ec8c");
    }

    #[test]
    fn chat_subjects_are_single_tokens_whatever_the_chat_id() {
        for id in ["t/a.b", "t/*", "t/>", "t/with space", "t/ünïcode"] {
            let subject = chat_subject("chatmemory", id);
            let last = subject.rsplit('.').next().unwrap_or_default();
            assert_eq!(last.len(), 16, "{subject}");
            assert!(last.chars().all(|c| c.is_ascii_hexdigit()), "{subject}");
        }
    }

    #[test]
    fn different_chats_get_different_subjects() {
        let subjects: std::collections::HashSet<_> = (0..10_000)
            .map(|i| chat_subject("p", &format!("t/chat-{i}")))
            .collect();
        assert_eq!(subjects.len(), 10_000);
    }
}
