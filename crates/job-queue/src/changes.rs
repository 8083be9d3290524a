//! Change events of chats' memories: `<prefix>.changes.<chat key>` on core NATS.
//!
//! After memory-store committed a change, the process that asked for it
//! publishes a [`MemoryChanged`]: the worker for an applied batch (with the new
//! memory) or a job that failed for good, the gateway for a deletion. Every
//! gateway subscribes to [`wildcard`] and feeds its read-your-writes waits and
//! watch streams from it, so neither polls memory-store.
//!
//! Events are not stored (core NATS, at most once): an event lost because its
//! publisher died right after the commit, or because NATS was unreachable, is
//! never a wrong answer, only a later one. Readers re-read memory-store
//! (which is the truth) on a gap in versions, and watch streams re-check on a
//! timer (see docs/architecture.md, "Change events").

use bytes::Bytes;
use prost::Message as _;

pub use chat_memory_proto::jobs::v1::MemoryChanged;

use crate::layout::chat_key;

/// The subject of one chat's change events.
pub fn subject(subject_prefix: &str, chat_id: &str) -> String {
    format!("{subject_prefix}.changes.{:016x}", chat_key(chat_id))
}

/// The subject every gateway subscribes to: all chats' change events.
pub fn wildcard(subject_prefix: &str) -> String {
    format!("{subject_prefix}.changes.*")
}

/// One process's change events, numbered: each gets this publisher's id and
/// the next number, so a subscriber can tell when it missed one.
pub struct Publisher {
    client: async_nats::Client,
    subject_prefix: String,
    id: String,
    /// The last number given. Held while an event is numbered and handed to
    /// the client, so events leave in their numbers' order: two tasks
    /// numbering events at once (two threads) could otherwise hand them over
    /// the other way round, and every gateway would see a gap and clear its
    /// cache.
    seq: tokio::sync::Mutex<u64>,
}

impl Publisher {
    /// A publisher with a fresh id (one per process lifetime).
    pub fn new(client: async_nats::Client, subject_prefix: impl Into<String>) -> Self {
        Self {
            client,
            subject_prefix: subject_prefix.into(),
            id: uuid::Uuid::now_v7().simple().to_string(),
            seq: tokio::sync::Mutex::new(0),
        }
    }

    /// Stamps `event` with this publisher's id and next number, and publishes it.
    ///
    /// # Errors
    /// The client's error when its outgoing buffer is closed or full.
    pub async fn publish(&self, mut event: MemoryChanged) -> Result<(), async_nats::PublishError> {
        event.publisher.clone_from(&self.id);
        let mut last = self.seq.lock().await;
        *last += 1;
        event.seq = *last;
        publish(&self.client, &self.subject_prefix, &event).await
    }

    /// As [`Publisher::publish`], then flushes the client's buffer onto the
    /// server's connection, all within `within`: for an event that must be on
    /// its way before the change it announces is made
    /// ([`MemoryChanged::deleting`]). (A flush does not wait for the server
    /// to process it; the bytes are in the socket, which delivers them even
    /// if this process dies next.)
    ///
    /// # Errors
    /// The event could not be handed over, the flush failed, or they did not
    /// finish within `within` (NATS unreachable or reconnecting).
    pub async fn publish_flushed(
        &self,
        event: MemoryChanged,
        within: std::time::Duration,
    ) -> Result<(), String> {
        let sent = async {
            self.publish(event).await.map_err(|e| e.to_string())?;
            self.client.flush().await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(within, sent)
            .await
            .map_err(|_| format!("not sent within {within:?}"))?
    }
}

/// Publishes `event` (fire and forget: core NATS buffers it and flushes it
/// within milliseconds).
///
/// # Errors
/// The client's error when its outgoing buffer is closed or full.
pub async fn publish(
    client: &async_nats::Client,
    subject_prefix: &str,
    event: &MemoryChanged,
) -> Result<(), async_nats::PublishError> {
    client
        .publish(
            subject(subject_prefix, &event.chat_id),
            Bytes::from(event.encode_to_vec()),
        )
        .await
}

/// Decodes an event's payload.
///
/// # Errors
/// The decode error of a payload that is not a [`MemoryChanged`].
pub fn decode(payload: &[u8]) -> Result<MemoryChanged, prost::DecodeError> {
    MemoryChanged::decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chats_change_subject_matches_the_wildcard_and_not_the_jobs_stream() {
        let s = subject("p", "t/chat");
        assert!(s.starts_with("p.changes."));
        assert_eq!(s.split('.').count(), 3, "{s}");
        assert_eq!(
            s.rsplit('.').next(),
            crate::layout::chat_subject("p", "t/chat")
                .rsplit('.')
                .next()
        );
        assert_eq!(wildcard("p"), "p.changes.*");
        assert!(!s.starts_with("p.jobs."));
    }

    #[test]
    fn an_event_survives_encoding() {
        let event = MemoryChanged {
            chat_id: "t/c".into(),
            deleted: true,
            ..Default::default()
        };
        assert_eq!(decode(&event.encode_to_vec()).ok(), Some(event));
    }
}
