//! The gateway's side of the audit log: exactly one row per public call.
//!
//! Each call gets a request id (a UUIDv7) that is also the row's audit id, so
//! a retried write never adds a second row. The row is made durable before the
//! answer goes out, at one of two points ([`DurablePoint`]):
//! - `outbox` (default): the JetStream audit outbox (`job_queue::audit_outbox`)
//!   acknowledges it, as it acknowledges an accepted update (rows of
//!   concurrent calls share one message, [`batch`]); [`relay`] then
//!   moves rows to memory-store in batches (one statement per batch), normally
//!   within milliseconds. A row the outbox acknowledged survives the gateway
//!   dying: any gateway replica relays it. A read costs one NATS round trip
//!   instead of a Postgres commit and its WAL flush. An accepted update's row
//!   needs no message of its own: it goes out in the job message, whose
//!   acknowledgement is the acceptance, and memory-store stores it with the
//!   job's registration ([`Facts::audited_with_job`]); after a failed
//!   registration the same row ([`Facts::prepared`]) goes the usual way too
//!   (docs/security.md);
//! - `store`: memory-store commits it (group-committed with concurrent rows).
//!
//! Each point is the other's fallback. Only when both refuse is a row lost: it
//! is then logged whole at error level (no content in it) and counted
//! (`chat_memory_audit_rows_total{result="lost"}`, alert `ChatMemoryAuditRowsLost`), and
//! a successful read (or watch opening) is refused instead of answered unaudited
//! ([`AuditError`], [`Action::answers_only_audited`]).
//! Rows carry ids, the action, the status code name and the trace id: never
//! message content.

pub mod batch;
pub mod relay;

use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use tonic::Code;
use uuid::Uuid;

use chat_memory_proto::store::RecordAuditRequest;
use chat_memory_proto::time::to_timestamp;
use chat_memory_proto::v1::AuditEntry;
use job_queue::QueueSettings;

use service_kit::telemetry::grpc::code_name;

use crate::StoreClient;
use crate::metrics::audit_row;

/// What a row records as the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Update,
    Read,
    Status,
    Delete,
    Denied,
    Audit,
    /// A WatchMemory stream opened.
    Watch,
    /// A WatchMemory stream ended (its row has its own audit id).
    WatchEnd,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Read => "read",
            Self::Status => "status",
            Self::Delete => "delete",
            Self::Denied => "denied",
            Self::Audit => "audit",
            Self::Watch => "watch",
            Self::WatchEnd => "watch_end",
        }
    }

    /// Whether a successful call of this kind is refused when its row is lost
    /// ([`AuditError`]): a memory is never handed out unaudited. Every other
    /// call keeps its answer: an accepted update stays accepted, a refusal
    /// stays a refusal (the lost row is logged and counted).
    pub fn answers_only_audited(self) -> bool {
        match self {
            Self::Read | Self::Watch => true,
            Self::Update
            | Self::Status
            | Self::Delete
            | Self::Denied
            | Self::Audit
            | Self::WatchEnd => false,
        }
    }
}

/// The facts of one call, filled in as the handler learns them.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The public (un-namespaced) chat id, once validated.
    pub chat_id: String,
    pub job_id: String,
    pub detail: String,
    /// The call's row is already stored: it went out in the accepted job's
    /// message (`UpdateJob.accept_audit`) and memory-store stored it with the
    /// job's registration.
    pub audited_with_job: bool,
    /// The row prepared before the call's outcome was known (an update's, sent
    /// with its job): the row written keeps its id and time (see
    /// [`Row::entry`]), so a copy stored from the job message is the same row.
    pub prepared: Option<AuditEntry>,
}

/// One row about to be written.
#[derive(Debug, Clone)]
pub struct Row {
    pub request_id: Uuid,
    pub tenant: String,
    pub user: String,
    pub action: Action,
    pub outcome: Code,
    pub facts: Facts,
}

/// Namespace of the audit ids of `watch_end` rows (UUIDv5 of the request id).
const WATCH_END_NAMESPACE: Uuid = Uuid::from_u128(0x2f6b_0c1e_93d4_4a7b_8e55_c0a9_1d3e_7b42);

impl Row {
    /// The row as stored, timed now and carrying the current trace id. The
    /// time has Postgres's precision (microseconds), so a copy of the row that
    /// reaches it by another way (the job message, the outbox) is equal.
    ///
    /// A row prepared earlier ([`Facts::prepared`], an update's, sent with its
    /// job) keeps that row's id and time, with this row's outcome: a call has
    /// one key in `audit_log` whichever copy is stored first. (A publish whose
    /// acknowledgement was lost answers `UNAVAILABLE`, yet its message, and the
    /// OK row in it, may have been stored: the first copy stored wins.)
    pub fn entry(mut self) -> AuditEntry {
        let prepared = self.facts.prepared.take();
        let fresh = AuditEntry {
            audit_id: self.audit_id().to_string(),
            at: Some(to_timestamp(Utc::now().trunc_subsecs(6))),
            tenant: self.tenant,
            user: self.user,
            action: self.action.as_str().to_owned(),
            chat_id: self.facts.chat_id,
            job_id: self.facts.job_id,
            outcome: code_name(self.outcome).to_owned(),
            request_id: self.request_id.to_string(),
            trace_id: service_kit::telemetry::propagation::current_trace_id(),
            detail: self.facts.detail,
        };
        match prepared {
            Some(prepared) => AuditEntry {
                audit_id: prepared.audit_id,
                at: prepared.at,
                ..fresh
            },
            None => fresh,
        }
    }

    /// The row's audit id: the request id, except for the second row of a
    /// watch stream, whose id is derived from it (so a retry is still one row).
    pub fn audit_id(&self) -> Uuid {
        match self.action {
            Action::WatchEnd => Uuid::new_v5(&WATCH_END_NAMESPACE, self.request_id.as_bytes()),
            _ => self.request_id,
        }
    }
}

/// Neither memory-store nor the outbox took an audit row.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit row {audit_id} could not be recorded (memory-store: {store}; outbox: {outbox})")]
pub struct AuditError {
    pub audit_id: String,
    pub store: String,
    pub outbox: String,
}

/// Where a row went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// memory-store stored it.
    Stored,
    /// The outbox holds it until a relay hands it to memory-store.
    Outboxed,
    /// memory-store stored it with the accepted job's registration
    /// ([`Facts::audited_with_job`]).
    WithJob,
}

/// Where a row is made durable before the call answers (`[audit] durable_point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurablePoint {
    /// The JetStream audit outbox (acknowledged by NATS, as an accepted update
    /// is); the relay moves rows to Postgres in batches, normally within
    /// milliseconds. memory-store directly when NATS refuses.
    #[default]
    Outbox,
    /// memory-store (a Postgres commit with its WAL flush, group-committed);
    /// the outbox when memory-store refuses. Costs a flush per read.
    Store,
}

/// The `[audit]` settings of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    pub durable_point: DurablePoint,
}

/// Writes audit rows to the outbox or memory-store, each the other's
/// fallback; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    store: StoreClient,
    outbox: batch::OutboxBatcher,
    first: DurablePoint,
}

impl AuditSink {
    pub fn new(
        store: StoreClient,
        js: async_nats::jetstream::Context,
        queue: QueueSettings,
        settings: &AuditSettings,
    ) -> Self {
        Self {
            store,
            outbox: batch::OutboxBatcher::start(js, queue),
            first: settings.durable_point,
        }
    }

    /// Whether an accepted update's row goes out in its job message (the
    /// default, `outbox`: the job's acknowledgement makes it durable as the
    /// outbox's would); with `store` it must reach Postgres before the answer.
    pub fn carries_with_job(&self) -> bool {
        self.first == DurablePoint::Outbox
    }

    /// Makes `row` durable at the configured point, else at the other one.
    /// A row that went out with its accepted job ([`Facts::audited_with_job`])
    /// is only counted.
    ///
    /// # Errors
    /// [`AuditError`] when both refused; the row is then logged and counted as lost.
    pub async fn record(&self, row: Row) -> Result<Recorded, AuditError> {
        if row.facts.audited_with_job {
            audit_row("with_job");
            return Ok(Recorded::WithJob);
        }
        let entry = row.entry();
        let (store_error, outbox_error) = match self.first {
            DurablePoint::Outbox => {
                let outbox_error = match self.to_outbox(&entry).await {
                    Ok(()) => {
                        audit_row("outboxed");
                        return Ok(Recorded::Outboxed);
                    }
                    Err(e) => e,
                };
                match self.to_store(&entry).await {
                    Ok(()) => {
                        tracing::warn!(error = %outbox_error, audit_id = %entry.audit_id, "the audit outbox did not take the row; memory-store stored it");
                        audit_row("stored");
                        return Ok(Recorded::Stored);
                    }
                    Err(store_error) => (store_error, outbox_error),
                }
            }
            DurablePoint::Store => {
                let store_error = match self.to_store(&entry).await {
                    Ok(()) => {
                        audit_row("stored");
                        return Ok(Recorded::Stored);
                    }
                    Err(e) => e,
                };
                match self.to_outbox(&entry).await {
                    Ok(()) => {
                        tracing::warn!(code = ?store_error.code(), audit_id = %entry.audit_id, "memory-store did not take the audit row; it waits in the audit outbox");
                        audit_row("outboxed");
                        return Ok(Recorded::Outboxed);
                    }
                    Err(outbox_error) => (store_error, outbox_error),
                }
            }
        };
        // The last record of the row is this log line (it holds no content).
        tracing::error!(?entry, store = %store_error.message(), outbox = %outbox_error, "audit row lost: neither memory-store nor the outbox took it");
        audit_row("lost");
        Err(AuditError {
            audit_id: entry.audit_id,
            store: store_error.message().to_owned(),
            outbox: outbox_error.to_string(),
        })
    }

    async fn to_outbox(&self, entry: &AuditEntry) -> Result<(), String> {
        self.outbox.publish(entry.clone()).await
    }

    async fn to_store(&self, entry: &AuditEntry) -> Result<(), tonic::Status> {
        let request = RecordAuditRequest {
            entry: Some(entry.clone()),
        };
        self.store.clone().record_audit(request).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_row_keeps_its_id_and_time_and_takes_the_calls_outcome() {
        let row = |outcome, prepared| Row {
            request_id: Uuid::now_v7(),
            tenant: "t".into(),
            user: "u".into(),
            action: Action::Update,
            outcome,
            facts: Facts {
                chat_id: "c".into(),
                job_id: "j".into(),
                prepared,
                ..Facts::default()
            },
        };
        let prepared = row(Code::Ok, None).entry();
        let refused = row(Code::Unavailable, Some(prepared.clone())).entry();
        assert_eq!(
            (&refused.audit_id, refused.at, refused.outcome.as_str()),
            (&prepared.audit_id, prepared.at, "UNAVAILABLE"),
            "one key per call, whichever copy is stored first"
        );
        let at = prepared.at.expect("a time");
        assert_eq!(at.nanos % 1_000, 0, "microseconds, as Postgres keeps them");
        let fresh = row(Code::Ok, None).entry();
        assert_ne!(fresh.audit_id, prepared.audit_id);
    }

    #[test]
    fn only_reads_and_watch_openings_are_refused_when_their_row_is_lost() {
        let cases = [
            (Action::Read, true),
            (Action::Watch, true),
            (Action::Update, false),
            (Action::Status, false),
            (Action::Delete, false),
            (Action::Denied, false),
            (Action::Audit, false),
            (Action::WatchEnd, false),
        ];
        for (action, refused) in cases {
            assert_eq!(action.answers_only_audited(), refused, "{action:?}");
        }
    }
}
