//! Group commit of audit rows: the gateway writes one row per public call, and
//! each row must be durable before that call answers. One transaction (and one
//! WAL flush) per row made the audit insert the most expensive step of a read.
//! Here concurrent rows share a statement and a flush: a few writer tasks each
//! take every row waiting (up to [`MAX_ROWS`]) and insert them together; each
//! caller still waits until its own row is committed, and learns whether it
//! was new. Under light load a batch is one row, so latency stays one insert.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::audit::{self, AuditRecord};
use crate::error::StoreError;

/// Most rows in one statement.
const MAX_ROWS: usize = 512;
/// Writer tasks: a batch can be written while the next one gathers.
const WRITERS: usize = 2;
/// Rows waiting for a writer before callers wait to enqueue (backpressure).
const QUEUE: usize = 8_192;

type Reply = oneshot::Sender<Result<bool, String>>;

/// Hands rows to the writers; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<(AuditRecord, Reply)>,
}

impl AuditWriter {
    /// Starts the writer tasks on the current runtime; they end when every
    /// `AuditWriter` clone is dropped.
    pub fn start(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(db.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Appends `record` (validated first) and waits until it is committed;
    /// false when a row with its id already existed (a retry).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a malformed record,
    /// [`StoreError::DatabaseUnavailable`] when the batch could not be written.
    pub async fn record(&self, record: AuditRecord) -> Result<bool, StoreError> {
        record.validate()?;
        let (reply, answer) = oneshot::channel();
        let gone = || {
            StoreError::DatabaseUnavailable(sea_orm::DbErr::Custom(
                "the audit writer stopped".to_owned(),
            ))
        };
        self.tx.send((record, reply)).await.map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|e| StoreError::DatabaseUnavailable(sea_orm::DbErr::Custom(e)))
    }
}

async fn write_batches(
    db: DatabaseConnection,
    rx: Arc<Mutex<mpsc::Receiver<(AuditRecord, Reply)>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_ROWS {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let (records, replies): (Vec<AuditRecord>, Vec<Reply>) = batch.into_iter().unzip();
        let ids: Vec<Uuid> = records.iter().map(|r| r.audit_id).collect();
        let span = crate::db::span("record_audit_batch");
        span.record("db.operation.batch.size", records.len());
        match audit::insert_returning_new(&db, records)
            .instrument(span)
            .await
        {
            Ok(inserted) => {
                for (id, reply) in ids.iter().zip(replies) {
                    let _ = reply.send(Ok(inserted.contains(id)));
                }
            }
            Err(e) => {
                tracing::warn!(rows = ids.len(), error = %e, "audit batch not written");
                let text = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(text.clone()));
                }
            }
        }
    }
}
