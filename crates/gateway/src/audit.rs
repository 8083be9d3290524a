//! The gateway's side of the audit log: exactly one row per public call.
//!
//! Each call gets a request id (a UUIDv7) that is also the row's audit id, so
//! a retried write never adds a second row. The row is written before the
//! answer goes out; when memory-store cannot take it, the row is queued and
//! retried in the background until it lands (the update itself only needs
//! JetStream, so accepting an update must not depend on memory-store being up).
//! Rows carry ids, the action and the status code name: never message content.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tonic::Code;
use uuid::Uuid;

use chat_memory_proto::store::RecordAuditRequest;
use chat_memory_proto::time::to_timestamp;
use chat_memory_proto::v1::AuditEntry;

use crate::StoreClient;

/// Rows waiting for memory-store, at most; beyond it a row is lost (and logged).
const RETRY_QUEUE: usize = 10_000;

/// What a row records as the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Update,
    Read,
    Status,
    Delete,
    Denied,
    Audit,
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

/// Writes audit rows to memory-store; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    store: StoreClient,
    retry: mpsc::Sender<AuditEntry>,
}

impl AuditSink {
    /// The sink and its background retry task (ends when every sink is dropped).
    pub fn new(store: StoreClient) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(RETRY_QUEUE);
        let task = tokio::spawn(retry_loop(store.clone(), rx));
        (Self { store, retry: tx }, task)
    }

    /// Writes `row` now, or queues it for retry when memory-store fails.
    pub async fn record(&self, row: Row) {
        let entry = AuditEntry {
            audit_id: row.request_id.to_string(),
            at: Some(to_timestamp(Utc::now())),
            tenant: row.tenant,
            user: row.user,
            action: row.action.as_str().to_owned(),
            chat_id: row.facts.chat_id,
            job_id: row.facts.job_id,
            outcome: code_name(row.outcome).to_owned(),
            request_id: row.request_id.to_string(),
            // Filled once tracing lands (issue: observability).
            trace_id: String::new(),
            detail: row.facts.detail,
        };
        let request = RecordAuditRequest {
            entry: Some(entry.clone()),
        };
        if let Err(status) = self.store.clone().record_audit(request).await {
            tracing::warn!(code = ?status.code(), audit_id = %entry.audit_id, "audit row not written; retrying in the background");
            if self.retry.try_send(entry).is_err() {
                tracing::error!("audit retry queue full: an audit row was lost");
            }
        }
    }
}

async fn retry_loop(store: StoreClient, mut rx: mpsc::Receiver<AuditEntry>) {
    while let Some(entry) = rx.recv().await {
        let mut backoff = Duration::from_millis(100);
        loop {
            let request = RecordAuditRequest {
                entry: Some(entry.clone()),
            };
            match store.clone().record_audit(request).await {
                Ok(_) => break,
                // A row memory-store refuses will never be accepted: log it whole (no content in it).
                Err(s) if s.code() == Code::InvalidArgument => {
                    tracing::error!(?entry, error = %s.message(), "audit row refused");
                    break;
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
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
