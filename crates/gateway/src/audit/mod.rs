//! The gateway's side of the audit log: exactly one row per public call.
//!
//! Each call gets a request id (a UUIDv7) that is also the row's audit id, so
//! a retried write never adds a second row. The row is written before the
//! answer goes out, to memory-store directly; when memory-store cannot take it,
//! the row goes to the audit outbox on JetStream (`job_queue::audit_outbox`)
//! and [`relay`] moves it to memory-store when it is back. A row the outbox
//! acknowledged survives the gateway dying: any gateway replica relays it.
//! Accepting an update only needs JetStream, so it never depends on memory-store.
//!
//! Only when both memory-store and JetStream refuse is a row lost: it is then
//! logged whole at error level (no content in it) and counted
//! (`chat_memory_audit_rows_total{result="lost"}`, alert `AuditRowsLost`), and
//! a successful read is refused instead of answered unaudited ([`AuditError`]).
//! Rows carry ids, the action, the status code name and the trace id: never
//! message content.

pub mod relay;

use bytes::Bytes;
use chrono::Utc;
use prost::Message as _;
use tonic::Code;
use uuid::Uuid;

use chat_memory_proto::store::RecordAuditRequest;
use chat_memory_proto::time::to_timestamp;
use chat_memory_proto::v1::AuditEntry;
use job_queue::QueueSettings;

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
}

/// The facts of one call, filled in as the handler learns them.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The public (un-namespaced) chat id, once validated.
    pub chat_id: String,
    pub job_id: String,
    pub detail: String,
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
}

/// Writes audit rows to memory-store, or to the outbox; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    store: StoreClient,
    js: async_nats::jetstream::Context,
    queue: QueueSettings,
}

impl AuditSink {
    pub fn new(
        store: StoreClient,
        js: async_nats::jetstream::Context,
        queue: QueueSettings,
    ) -> Self {
        Self { store, js, queue }
    }

    /// Writes `row` to memory-store, else to the outbox.
    ///
    /// # Errors
    /// [`AuditError`] when both refused; the row is then logged and counted as lost.
    pub async fn record(&self, row: Row) -> Result<Recorded, AuditError> {
        let entry = AuditEntry {
            audit_id: row.audit_id().to_string(),
            at: Some(to_timestamp(Utc::now())),
            tenant: row.tenant,
            user: row.user,
            action: row.action.as_str().to_owned(),
            chat_id: row.facts.chat_id,
            job_id: row.facts.job_id,
            outcome: code_name(row.outcome).to_owned(),
            request_id: row.request_id.to_string(),
            trace_id: service_kit::telemetry::propagation::current_trace_id(),
            detail: row.facts.detail,
        };
        let request = RecordAuditRequest {
            entry: Some(entry.clone()),
        };
        let store_error = match self.store.clone().record_audit(request).await {
            Ok(_) => {
                audit_row("stored");
                return Ok(Recorded::Stored);
            }
            Err(status) => status,
        };
        let payload = Bytes::from(entry.encode_to_vec());
        match job_queue::audit_outbox::publish_row(&self.js, &self.queue, &entry.audit_id, payload)
            .await
        {
            Ok(_) => {
                tracing::warn!(code = ?store_error.code(), audit_id = %entry.audit_id, "memory-store did not take the audit row; it waits in the audit outbox");
                audit_row("outboxed");
                Ok(Recorded::Outboxed)
            }
            Err(outbox_error) => {
                // The last record of the row is this log line (it holds no content).
                tracing::error!(?entry, store = %store_error.message(), outbox = %outbox_error, "audit row lost: neither memory-store nor the outbox took it");
                audit_row("lost");
                Err(AuditError {
                    audit_id: entry.audit_id,
                    store: store_error.message().to_owned(),
                    outbox: outbox_error.to_string(),
                })
            }
        }
    }
}

/// The canonical upper-case name of a gRPC status code, as audit rows store it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
