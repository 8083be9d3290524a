//! Group commit of audit rows: the gateway writes one row per public call, and
//! each row must be durable before that call answers. One transaction (and one
//! WAL flush) per row made the audit insert the most expensive step of a read.
//! Here concurrent rows share a statement and a flush (`service_kit::gather`):
//! rows that arrive while [`WRITERS`] writes are busy go together in the next,
//! up to [`MAX_ROWS`]; each
//! caller still waits until its own row is committed, and learns whether it
//! was new. Under light load a batch is one row, so latency stays one insert.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use service_kit::gather::{BatchSettings, Gatherer};
use tracing::Instrument;

use crate::audit::{self, AuditRecord};
use crate::error::StoreError;

/// Most rows in one statement.
const MAX_ROWS: usize = 512;
/// Writes in flight: a batch can be written while the next one gathers.
const WRITERS: usize = 2;

/// Hands rows to the writes; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter(Gatherer<AuditRecord, bool, String>);

impl AuditWriter {
    /// Starts gathering on the current runtime; it ends when every
    /// `AuditWriter` clone is dropped.
    pub fn start(db: DatabaseConnection) -> Self {
        let write = Arc::new(move |records: Vec<AuditRecord>| {
            Box::pin(write_rows(db.clone(), records)) as _
        });
        Self(Gatherer::start(
            "audit_rows",
            write,
            &BatchSettings {
                max_batch: MAX_ROWS,
                max_in_flight: WRITERS,
                linger_ms: 0,
            },
        ))
    }

    /// Appends `record` (validated first) and waits until it is committed;
    /// false when a row with its id already existed (a retry).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a malformed record,
    /// [`StoreError::DatabaseUnavailable`] when the batch could not be written.
    pub async fn record(&self, record: AuditRecord) -> Result<bool, StoreError> {
        record.validate()?;
        self.0
            .call(record)
            .await
            .map_err(|e| StoreError::DatabaseUnavailable(sea_orm::DbErr::Custom(e)))
    }
}

/// One statement and commit for `records`; for each, whether it was new.
async fn write_rows(
    db: DatabaseConnection,
    records: Vec<AuditRecord>,
) -> Result<Vec<bool>, String> {
    let span = crate::db::span("record_audit_batch");
    span.record("db.operation.batch.size", records.len());
    match audit::insert_returning_new(&db, &records)
        .instrument(span)
        .await
    {
        Ok(inserted) => Ok(records
            .iter()
            .map(|r| inserted.contains(&r.audit_id))
            .collect()),
        Err(e) => {
            tracing::warn!(rows = records.len(), error = %e, "audit batch not written");
            Err(e.to_string())
        }
    }
}
