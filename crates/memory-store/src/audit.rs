//! The audit log: append (idempotent on the audit id) and query per tenant.
//!
//! memory-store only stores what the gateway (one row per public call) and the
//! expiry sweep (one row per expired chat) report; it never derives rows from
//! content, and the table holds none.

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use uuid::Uuid;

use crate::{entity::audit_log, error::StoreError};

/// Every action the log knows (the table's CHECK constraint lists the same).
pub const ACTIONS: &[&str] = &[
    "update",
    "read",
    "status",
    "delete",
    "denied",
    "expire",
    "audit",
    "apply",
    "watch",
    "watch_end",
    "retention",
];

/// Longest accepted text field of a row: ids and short reasons only.
const MAX_FIELD_BYTES: usize = 512;

/// One row to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub audit_id: Uuid,
    pub at: DateTime<Utc>,
    pub tenant: String,
    pub user: String,
    pub action: String,
    pub chat_id: String,
    pub job_id: String,
    pub outcome: String,
    pub request_id: String,
    pub trace_id: String,
    pub detail: String,
}

impl AuditRecord {
    /// The row as `jsonb_to_recordset` reads it (audit batches, and the
    /// rows that travel with jobs in `jobs.rs`).
    pub(crate) fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "audit_id": self.audit_id,
            // Microseconds, truncated as a bound parameter is (Postgres keeps
            // no more, and would round a longer fraction): one call, one key.
            "at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "tenant": self.tenant,
            "user_id": self.user,
            "action": self.action,
            "chat_id": self.chat_id,
            "job_id": self.job_id,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "detail": self.detail,
        })
    }

    /// # Errors
    /// [`StoreError::InvalidArgument`] for an unknown action or an over-long field.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !ACTIONS.contains(&self.action.as_str()) {
            return Err(StoreError::invalid("entry.action", "unknown action"));
        }
        let fields = [
            ("entry.tenant", &self.tenant),
            ("entry.user", &self.user),
            ("entry.chat_id", &self.chat_id),
            ("entry.job_id", &self.job_id),
            ("entry.outcome", &self.outcome),
            ("entry.request_id", &self.request_id),
            ("entry.trace_id", &self.trace_id),
            ("entry.detail", &self.detail),
        ];
        for (field, value) in fields {
            if value.len() > MAX_FIELD_BYTES {
                return Err(StoreError::invalid(field, "too long"));
            }
        }
        Ok(())
    }
}

/// Which rows to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant: String,
    pub chat_id: Option<String>,
    pub user: Option<String>,
    pub action: Option<String>,
    pub before: Option<DateTime<Utc>>,
    pub limit: u64,
}

/// Appends `record`; false when a row with its id already exists (a retry).
///
/// # Errors
/// [`StoreError::InvalidArgument`] for a malformed record; database errors.
pub async fn record<C: ConnectionTrait>(db: &C, record: AuditRecord) -> Result<bool, StoreError> {
    record.validate()?;
    let id = record.audit_id;
    Ok(insert_returning_new(db, &[record]).await?.contains(&id))
}

/// Appends validated rows in one statement and one commit; returns how many
/// were new.
///
/// # Errors
/// [`StoreError`] when the statement fails (nothing is written then).
pub async fn record_batch(
    db: &DatabaseConnection,
    records: &[AuditRecord],
) -> Result<usize, StoreError> {
    Ok(insert_returning_new(db, records).await?.len())
}

/// Several rows in one statement whose text never changes (the rows are one
/// JSON parameter), so each connection prepares it once: a statement of one
/// `VALUES` tuple per row would be a new text, parsed and planned again, for
/// every batch size.
const INSERT_ROWS: &str = "INSERT INTO audit_log (audit_id, at, tenant, user_id, action, \
     chat_id, job_id, outcome, request_id, trace_id, detail) \
     SELECT x.audit_id, x.at, x.tenant, x.user_id, x.action, x.chat_id, x.job_id, x.outcome, \
            x.request_id, x.trace_id, x.detail \
       FROM jsonb_to_recordset($1) AS x(audit_id uuid, at timestamptz, tenant text, \
            user_id text, action text, chat_id text, job_id text, outcome text, \
            request_id text, trace_id text, detail text) \
     ON CONFLICT (audit_id, at) DO NOTHING \
     RETURNING audit_id";

/// Inserts valid rows in one statement (skipping ids already stored) and
/// returns the ids of the rows that were new.
///
/// # Errors
/// Database errors.
pub(crate) async fn insert_returning_new<C: ConnectionTrait>(
    db: &C,
    records: &[AuditRecord],
) -> Result<std::collections::HashSet<Uuid>, StoreError> {
    if records.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<serde_json::Value> = records.iter().map(AuditRecord::as_json).collect();
    let inserted = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            INSERT_ROWS,
            [serde_json::Value::Array(rows).into()],
        ))
        .await?;
    inserted
        .iter()
        .map(|row| Ok(row.try_get::<Uuid>("", "audit_id")?))
        .collect()
}

/// The tenant's rows matching `query`, newest first.
///
/// # Errors
/// Database errors.
pub async fn query(
    db: &DatabaseConnection,
    query: AuditQuery,
) -> Result<Vec<audit_log::Model>, StoreError> {
    let mut select =
        audit_log::Entity::find().filter(audit_log::COLUMN.tenant.eq(query.tenant.as_str()));
    if let Some(chat) = &query.chat_id {
        select = select.filter(audit_log::COLUMN.chat_id.eq(chat.as_str()));
    }
    if let Some(user) = &query.user {
        select = select.filter(audit_log::COLUMN.user_id.eq(user.as_str()));
    }
    if let Some(action) = &query.action {
        select = select.filter(audit_log::COLUMN.action.eq(action.as_str()));
    }
    if let Some(before) = query.before {
        select = select.filter(audit_log::COLUMN.at.lt(before));
    }
    Ok(select
        .order_by_desc(audit_log::Column::At)
        .limit(query.limit)
        .all(db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn a_rows_time_goes_to_postgres_truncated_to_the_microsecond_as_a_bound_parameter_would() {
        let at = Utc
            .timestamp_opt(1_765_000_000, 123_456_789)
            .single()
            .expect("a time");
        let record = AuditRecord {
            audit_id: Uuid::nil(),
            at,
            tenant: "t".into(),
            user: "u".into(),
            action: "read".into(),
            chat_id: "c".into(),
            job_id: String::new(),
            outcome: "OK".into(),
            request_id: "r".into(),
            trace_id: String::new(),
            detail: String::new(),
        };
        assert_eq!(record.as_json()["at"], "2025-12-06T05:46:40.123456Z");
        let whole = AuditRecord {
            at: Utc
                .timestamp_opt(1_765_000_000, 0)
                .single()
                .expect("a time"),
            ..record
        };
        assert_eq!(whole.as_json()["at"], "2025-12-06T05:46:40.000000Z");
    }
}
