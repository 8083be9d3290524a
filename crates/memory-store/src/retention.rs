//! Bounded data growth: a background pass, every `retention.sweep_interval_ms`,
//! that
//! - creates the `audit_log` partitions of today and the next
//!   `retention.partitions_ahead_days` days (rows outside every created day go
//!   to the DEFAULT partition, never refused);
//! - drops the day partitions older than `retention.audit_days` (whole days,
//!   UTC): the log stays append-only row by row (the trigger refuses UPDATE
//!   and DELETE), and each drop is itself audited, in its transaction, with a
//!   `retention` row;
//! - deletes ended (succeeded or failed) job records whose `updated_at` is
//!   older than `retention.job_days`, in batches, each batch audited with one
//!   `retention` row in its transaction. They are found by `accepted_at`
//!   (indexed; never changes, so job writes stay HOT): a job ends after it
//!   was accepted.
//!
//! Every replica may run it: the drops and purges take one advisory lock, so
//! two replicas never drop (or audit) the same day twice. Creating or dropping
//! a day locks `audit_log` itself; the pass waits at most 2 s for that lock
//! (`lock_timeout`) and otherwise fails and retries at the next pass, so a
//! long audit query never leaves audit inserts queued behind a drop.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use service_kit::entry::cause_chain;

use crate::{
    audit::{self, AuditRecord},
    error::StoreError,
    settings::RetentionSettings,
};

/// Job records one purge statement deletes, at most.
const JOB_BATCH: u64 = 5_000;
/// Purge statements per pass, at most (the next pass continues).
const JOB_BATCHES_PER_PASS: usize = 20;
/// How long a partition's creation or drop waits for its lock on `audit_log`
/// before the pass gives up (the next pass retries). Without it, a long audit
/// query would hold the drop, and every audit insert would queue behind the drop.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '2s'";

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Audit partitions that exist now for today and the days ahead.
    pub partitions_ready: usize,
    /// Audit partitions dropped (their table names).
    pub partitions_dropped: Vec<String>,
    /// Ended job records deleted.
    pub jobs_purged: u64,
}

/// Runs a pass at start, then every `sweep_interval_ms`, until `cancel` fires.
pub async fn run(db: DatabaseConnection, settings: RetentionSettings, cancel: CancellationToken) {
    let interval = Duration::from_millis(settings.sweep_interval_ms);
    crate::db::every(interval, &cancel, || async {
        let today = Utc::now().date_naive();
        match sweep_once(&db, &settings, today).await {
            Ok(swept) if swept.partitions_dropped.is_empty() && swept.jobs_purged == 0 => {}
            Ok(swept) => tracing::info!(
                dropped = ?swept.partitions_dropped,
                jobs_purged = swept.jobs_purged,
                "retention pass"
            ),
            Err(e) => tracing::warn!(error = %cause_chain(&e), "retention pass failed"),
        }
    })
    .await;
}

/// One pass, as if today were `today` (UTC).
///
/// # Errors
/// Database errors (the next pass retries).
pub async fn sweep_once(
    db: &DatabaseConnection,
    settings: &RetentionSettings,
    today: NaiveDate,
) -> Result<Swept, StoreError> {
    let partitions_ready = ensure_partitions(db, today, settings.partitions_ahead_days).await?;
    let mut swept = Swept {
        partitions_ready,
        ..Swept::default()
    };
    if settings.audit_days > 0 {
        let oldest_kept = today - chrono::Days::new(u64::from(settings.audit_days));
        for (name, day) in day_partitions(db).await? {
            if day < oldest_kept && drop_partition(db, &name, day).await? {
                swept.partitions_dropped.push(name);
            }
        }
    }
    if settings.job_days > 0 {
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(settings.job_days));
        for _ in 0..JOB_BATCHES_PER_PASS {
            let purged = purge_jobs(db, cutoff).await?;
            swept.jobs_purged += purged;
            if purged < JOB_BATCH {
                break;
            }
        }
    }
    Ok(swept)
}

/// Creates the partitions of `today` and the `ahead` days after it; returns
/// how many exist (a day whose rows already sit in the DEFAULT partition stays there).
async fn ensure_partitions(
    db: &DatabaseConnection,
    today: NaiveDate,
    ahead: u32,
) -> Result<usize, StoreError> {
    let last = today + chrono::Days::new(u64::from(ahead));
    let txn = db.begin().await?;
    txn.execute_unprepared(LOCK_TIMEOUT).await?;
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT name FROM ( \
                SELECT chat_memory_audit_partition(d::date) AS name \
                  FROM generate_series($1::date, $2::date, interval '1 day') AS d) AS days \
              WHERE name IS NOT NULL",
            [today.into(), last.into()],
        ))
        .await?;
    txn.commit().await?;
    Ok(rows.len())
}

/// The day partitions of `audit_log` (not the DEFAULT one), with their days.
async fn day_partitions(db: &DatabaseConnection) -> Result<Vec<(String, NaiveDate)>, StoreError> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT c.relname AS name FROM pg_inherits i \
               JOIN pg_class c ON c.oid = i.inhrelid \
               JOIN pg_class p ON p.oid = i.inhparent \
              WHERE p.relname = 'audit_log' AND c.relname ~ '^audit_log_p[0-9]{8}$' \
              ORDER BY c.relname",
        ))
        .await?;
    let mut days = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("", "name")?;
        if let Some(day) = partition_day(&name) {
            days.push((name, day));
        }
    }
    Ok(days)
}

/// The day of a partition named `audit_log_pYYYYMMDD`.
fn partition_day(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix("audit_log_p")?;
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

/// Drops one day's partition and audits the drop, in one transaction; false
/// when another replica dropped it first.
async fn drop_partition(
    db: &DatabaseConnection,
    name: &str,
    day: NaiveDate,
) -> Result<bool, StoreError> {
    let txn = locked(db).await?;
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.reltuples::bigint AS estimate FROM pg_class c \
              WHERE c.oid = to_regclass($1)",
            [name.into()],
        ))
        .await?;
    let Some(row) = row else {
        txn.commit().await?;
        return Ok(false);
    };
    let estimate: i64 = row.try_get("", "estimate")?;
    // The name matched `^audit_log_p[0-9]{8}$`: safe as an identifier.
    txn.execute_unprepared(&format!("DROP TABLE \"{name}\""))
        .await?;
    let rows = if estimate < 0 {
        "not yet counted".to_owned()
    } else {
        format!("about {estimate}")
    };
    record(
        &txn,
        format!("dropped audit partition {name}: the rows of {day} (UTC), {rows} rows"),
    )
    .await?;
    txn.commit().await?;
    Ok(true)
}

/// Deletes up to [`JOB_BATCH`] ended job records last written before
/// `cutoff`, audited in the same transaction; returns how many.
async fn purge_jobs(
    db: &DatabaseConnection,
    cutoff: chrono::DateTime<Utc>,
) -> Result<u64, StoreError> {
    let txn = locked(db).await?;
    let purged = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM jobs WHERE job_id IN ( \
                SELECT j.job_id FROM jobs j \
                 WHERE j.accepted_at < $1 AND j.updated_at < $1 \
                   AND j.state IN ('succeeded', 'failed') \
                 LIMIT $2)",
            [cutoff.into(), JOB_BATCH.into()],
        ))
        .await?
        .rows_affected();
    if purged > 0 {
        record(
            &txn,
            format!("purged {purged} ended job records last written before {cutoff}"),
        )
        .await?;
    }
    txn.commit().await?;
    Ok(purged)
}

/// A transaction holding the retention lock (one pass at a time, across replicas).
async fn locked(db: &DatabaseConnection) -> Result<DatabaseTransaction, StoreError> {
    let txn = db.begin().await?;
    txn.execute_unprepared(
        "SELECT pg_advisory_xact_lock(hashtextextended('chat-memory-retention', 0))",
    )
    .await?;
    txn.execute_unprepared(LOCK_TIMEOUT).await?;
    Ok(txn)
}

/// The `retention` audit row of a drop or purge: the deployment's, not a tenant's.
async fn record(txn: &DatabaseTransaction, detail: String) -> Result<(), StoreError> {
    audit::record(
        txn,
        AuditRecord {
            audit_id: Uuid::now_v7(),
            at: Utc::now(),
            tenant: String::new(),
            user: "memory-store".to_owned(),
            action: "retention".to_owned(),
            chat_id: String::new(),
            job_id: String::new(),
            outcome: "OK".to_owned(),
            request_id: String::new(),
            trace_id: service_kit::telemetry::propagation::current_trace_id(),
            detail,
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_day_partition_names_have_a_day() {
        assert_eq!(
            partition_day("audit_log_p20261206"),
            NaiveDate::from_ymd_opt(2026, 12, 6)
        );
        assert_eq!(partition_day("audit_log_default"), None);
        assert_eq!(partition_day("audit_log_p20261399"), None);
    }
}
