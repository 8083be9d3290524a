//! Accepting an update: the workflow behind `UpdateMemory`, apart from gRPC.
//!
//! An update of a chat, on a writer's behalf ([`Acceptor::accept`]), goes
//! through these steps in order:
//! 1. **backpressure** ([`Backpressure::admit`]): refused while the queue is
//!    too deep;
//! 2. **ownership**: the first writer owns the chat (`ClaimChat`); a writer
//!    memory-store confirmed recently skips the round trip ([`OwnerCache`]).
//!    While memory-store is down the update is still accepted: memory-store
//!    checks ownership again before it applies the job;
//! 3. **job id** ([`job_id_for`]): derived from the chat and the idempotency
//!    key, so a retry is the same job;
//! 4. **publish** to the chat's subject on JetStream: the update is accepted
//!    (durable) once JetStream acknowledges it;
//! 5. **registration** (`RecordAccepted`, best effort): the job's status and
//!    its chat's pending count are visible at once; the worker registers the
//!    job if this fails. A key reused with other messages is refused here.
//!    The call's audit row rides in the job message (made durable by the
//!    same acknowledgement) and is stored with the registration; if that
//!    fails, the caller writes the same row through the audit sink (and the
//!    worker's begin may store the message's copy: the same row, no second);
//! 6. **deduplication**: a repeat JetStream recognised within its window, or
//!    memory-store recognised after it, is answered `deduplicated`. A keyed
//!    repeat is first compared with the job it repeats: with the message the
//!    stream still holds (so the check needs no memory-store), else with the
//!    digest memory-store registered; a repeat neither can check is refused
//!    UNAVAILABLE rather than answered unchecked;
//! 7. the acceptance is **announced** (a change event), which drops cached
//!    reads of the chat on every gateway.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::Access;
use chat_memory_proto::time::to_timestamp;
use chat_memory_proto::v1::{AuditEntry, ChatMessage};
use job_queue::digest::request_digest;
use job_queue::{JobPublisher, QueueError};

use crate::backpressure::Backpressure;
use crate::changes::ChangeAnnouncer;
use crate::error::GatewayError;
use crate::owners::OwnerCache;
use crate::store::{Registration, Store};
use crate::validation::FieldViolation;

/// Namespace of job ids derived from idempotency keys (UUIDv5).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_3f0e_8a2b_4c5d_9e7f_1a2b_3c4d_5e6f);

/// The job id of an update: derived from the namespaced chat and idempotency key
/// when there is one (so a retry maps to the same job, and two tenants' keys
/// never collide), else a fresh time-ordered UUIDv7.
pub fn job_id_for(namespaced_chat: &TenantChatId, idempotency_key: Option<&str>) -> Uuid {
    match idempotency_key {
        Some(key) => {
            let name = format!("{namespaced_chat}\u{0}{key}");
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())
        }
        None => Uuid::now_v7(),
    }
}

/// An update to accept: validated messages for one chat.
#[derive(Debug, Clone)]
pub struct Update {
    pub chat: TenantChatId,
    pub messages: Vec<ChatMessage>,
    pub idempotency_key: Option<String>,
    /// The call's audit row should the update be accepted (its job id is
    /// filled in here): it goes out in the job message. None when the row must
    /// reach Postgres before the answer (`audit.durable_point = store`).
    pub audit: Option<AuditEntry>,
}

/// An accepted update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub job_id: Uuid,
    /// A repeat of an update accepted before: no second job.
    pub deduplicated: bool,
    /// The call's audit row went out in the stored job message and memory-store
    /// stored it with the registration (not for a repeat, whose message is the
    /// first acceptance's, nor after a failed registration: the caller then
    /// writes the same row through the audit sink).
    pub audited_with_job: bool,
}

/// An update that was not accepted.
#[derive(Debug)]
pub struct Refused {
    /// The update's job id, when the refusal came after it was assigned (for
    /// the audit row).
    pub job_id: Option<Uuid>,
    pub error: GatewayError,
}

impl From<GatewayError> for Refused {
    fn from(error: GatewayError) -> Self {
        Self {
            job_id: None,
            error,
        }
    }
}

/// The acceptance workflow and what it needs; shared by all requests.
pub struct Acceptor {
    pub publisher: JobPublisher,
    pub store: Store,
    /// Refuses updates while the queue is too deep; shared, it caches depths.
    pub backpressure: Arc<Backpressure>,
    /// Chats whose owner memory-store confirmed recently.
    pub owners: Arc<OwnerCache>,
    /// Acceptances are announced here (`job_queue::changes`).
    pub changes: ChangeAnnouncer,
}

impl Acceptor {
    /// Accepts `update` on behalf of `writer` (see the module's steps).
    ///
    /// # Errors
    /// [`Refused`]: RESOURCE_EXHAUSTED under backpressure, NOT_FOUND for a chat
    /// of another owner, INVALID_ARGUMENT (`idempotency_key`) for a key reused
    /// with other messages, the queue's errors.
    pub async fn accept(&self, writer: &Access, update: Update) -> Result<Accepted, Refused> {
        let Update {
            chat,
            messages,
            idempotency_key,
            audit,
        } = update;
        self.backpressure
            .admit()
            .await
            .map_err(|b| GatewayError::Backlogged {
                what: b.what,
                retry_after: b.retry_after,
            })?;
        self.claim(writer, &chat).await?;
        let job_id = job_id_for(&chat, idempotency_key.as_deref());
        let refused = |error| Refused {
            job_id: Some(job_id),
            error,
        };
        // A keyed update's digest: the same key with other messages is refused
        // below rather than answered "deduplicated" while its messages are dropped.
        let request_hash = idempotency_key
            .as_ref()
            .map(|_| request_digest(messages.iter()))
            .unwrap_or_default();
        let message_count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let accept_audit = audit.map(|audit| AuditEntry {
            job_id: job_id.to_string(),
            ..audit
        });
        let carries_audit = accept_audit.is_some();
        let job = UpdateJob {
            job_id: job_id.to_string(),
            chat_id: chat.into_string(),
            messages,
            accepted_at: Some(to_timestamp(Utc::now())),
            idempotency_key: idempotency_key.unwrap_or_default(),
            owner_user: writer.user.clone(),
            acts_for_tenant: writer.acts_for_tenant,
            accept_audit,
        };
        let published = self.publisher.publish(&job).await.map_err(|e| {
            refused(match e {
                QueueError::ChatBacklogged { depth, .. } => GatewayError::Backlogged {
                    what: format!("{depth} jobs queued for this chat"),
                    retry_after: self.backpressure.retry_after(),
                },
                other => GatewayError::from_queue(other),
            })
        })?;
        tracing::info!(job_id = %job.job_id, stream_seq = published.sequence, messages = message_count, duplicate = published.duplicate, "update accepted");
        // A keyed repeat JetStream recognised stored nothing: compare it with
        // the job it repeats while the stream still holds that one.
        let keyed_repeat = published.duplicate && !request_hash.is_empty();
        let checked_in_queue = if keyed_repeat {
            match self
                .repeats_queued_job(published.sequence, &job.job_id, &request_hash)
                .await
                .map_err(refused)?
            {
                Some(true) => true,
                Some(false) => return Err(refused(key_reused())),
                None => false,
            }
        } else {
            false
        };
        // The job is durable now. Registering it makes its status and the chat's
        // pending count visible at once; if memory-store is down, the worker
        // registers it when it runs, so the update is still accepted.
        // A repeat JetStream recognised stored no message of its own: its row
        // goes the audit sink's way, not with the registration.
        let carried = job.accept_audit.as_ref().filter(|_| !published.duplicate);
        let (repeated, registered) = match self
            .store
            .record_accepted(
                &job,
                published.sequence,
                message_count,
                request_hash,
                carried,
            )
            .await
        {
            Ok(Registration::Recorded { earlier_acceptance }) => (earlier_acceptance, true),
            // Past the duplicate window the reuse was published as a message
            // of its own: the worker skips it (KEY_REUSED) and dead-letters it,
            // a trace of a client reusing keys (runbooks/alert-dead-letters.md).
            Ok(Registration::KeyReused) => return Err(refused(key_reused())),
            // A keyed repeat whose first request left the queue is checked
            // only by memory-store: without it, it is not answered.
            Err(status) if keyed_repeat && !checked_in_queue => {
                return Err(refused(match GatewayError::from_store(status, "job") {
                    GatewayError::StoreUnavailable(s) => GatewayError::UnverifiedRepeat(s),
                    other => other,
                }));
            }
            Err(status) => {
                tracing::warn!(job_id = %job.job_id, code = ?status.code(), "could not register accepted job; the worker will");
                (false, false)
            }
        };
        // The chat's pending count changed: cached reads of it are dropped,
        // and a commit answered before this registration (neither applying
        // nor counting this sequence) is not cached.
        self.changes
            .announce(job_queue::changes::MemoryChanged {
                chat_id: job.chat_id,
                accepted_job_ids: vec![job.job_id],
                accepted_through_seq: published.sequence,
                ..Default::default()
            })
            .await;
        let deduplicated = published.duplicate || repeated;
        Ok(Accepted {
            job_id,
            deduplicated,
            // memory-store stored the carried row with this message's
            // registration. Otherwise the caller writes the same row (same id
            // and time) through the audit sink: a repeat beyond the duplicate
            // window finds its job row there already, so BeginJobs would not
            // store it; after a failed registration BeginJobs may store it
            // too, and the second insert of the same row adds nothing.
            audited_with_job: carries_audit && registered && !deduplicated,
        })
    }

    /// Whether the job the stream holds at `sequence` (job `job_id`) has the
    /// messages whose digest is `request_hash`; None when it has left the
    /// stream, so only memory-store's digest can tell.
    ///
    /// # Errors
    /// [`GatewayError::QueueUnavailable`] when the stream cannot be read: the
    /// repeat is not answered unchecked.
    async fn repeats_queued_job(
        &self,
        sequence: u64,
        job_id: &str,
        request_hash: &str,
    ) -> Result<Option<bool>, GatewayError> {
        match self.publisher.stored_job(sequence).await {
            Ok(Some(original)) if original.job_id == job_id => Ok(Some(
                request_digest(original.messages.iter()) == request_hash,
            )),
            Ok(Some(other)) => {
                tracing::warn!(stream_seq = sequence, found = %other.job_id, "a repeat's sequence holds another job; left to memory-store's check");
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(GatewayError::QueueUnavailable(e)),
        }
    }

    /// First writer owns the chat. While memory-store is down the update is
    /// still accepted; memory-store then checks ownership before applying it.
    /// A writer confirmed recently skips the round trip (see [`OwnerCache`]).
    async fn claim(&self, writer: &Access, chat: &TenantChatId) -> Result<(), GatewayError> {
        let who = writer_key(writer);
        if self.owners.confirmed(chat.as_str(), &who) {
            return Ok(());
        }
        match self.store.claim_chat(chat, writer).await {
            Ok(()) => self.owners.remember(chat.as_str(), &who),
            Err(GatewayError::StoreUnavailable(s)) => {
                tracing::warn!(code = ?s.code(), "ownership not checked now: memory-store unavailable");
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }
}

/// The refusal of a key reused for other messages.
fn key_reused() -> GatewayError {
    GatewayError::Invalid(FieldViolation {
        field: "idempotency_key".to_owned(),
        reason: "already used for a different request in this chat; \
                 send new messages with a new key"
            .to_owned(),
    })
}

/// Who writes, as far as ownership goes: the user, or the whole tenant for a
/// service token acting for it.
fn writer_key(writer: &Access) -> String {
    format!("{}\u{0}{}", writer.user, writer.acts_for_tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_idempotency_key_gives_the_same_job_id_per_tenant_and_chat() {
        let id = |s: &str| TenantChatId::parse(s).expect("valid");
        let (ta, tb, ua) = (id("t/a"), id("t/b"), id("u/a"));
        assert_eq!(job_id_for(&ta, Some("k1")), job_id_for(&ta, Some("k1")));
        assert_ne!(job_id_for(&ta, Some("k1")), job_id_for(&ta, Some("k2")));
        assert_ne!(job_id_for(&ta, Some("k1")), job_id_for(&tb, Some("k1")));
        assert_ne!(job_id_for(&ta, Some("k1")), job_id_for(&ua, Some("k1")));
        assert_ne!(job_id_for(&ta, None), job_id_for(&ta, None));
    }
}
