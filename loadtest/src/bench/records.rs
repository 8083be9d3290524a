//! What the benchmark learns from the jobs table once the load is sent: one
//! query a second while it waits (counting ended jobs), and one at the end
//! (every job's acceptance and commit times). Nothing goes through the
//! gateway, so measuring adds no load to the path being measured.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

/// Why the job records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot reach the stack's database: {0}")]
    Connect(#[source] sea_orm::DbErr),
    #[error("query on the jobs table failed: {0}")]
    Query(#[source] sea_orm::DbErr),
}

/// Jobs by end state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub succeeded: u64,
    pub failed: u64,
}

/// Every succeeded job's times, from its record.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Commit time minus acceptance time, per succeeded job.
    pub accept_to_readable: Vec<Duration>,
    /// Seconds from the first acceptance to the last commit.
    pub span_secs: f64,
}

pub struct Records {
    db: DatabaseConnection,
    /// The database's clock when the bench connected: only jobs that ended
    /// since count (a seeded history ended earlier).
    since: chrono::DateTime<chrono::Utc>,
}

impl Records {
    /// # Errors
    /// [`RecordsError::Connect`] when the database is unreachable.
    pub async fn connect(url: &str) -> Result<Self, RecordsError> {
        let db = Database::connect(url)
            .await
            .map_err(RecordsError::Connect)?;
        let since = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT now() AS now",
            ))
            .await
            .map_err(RecordsError::Query)?
            .and_then(|r| r.try_get::<chrono::DateTime<chrono::Utc>>("", "now").ok())
            .unwrap_or_else(chrono::Utc::now);
        Ok(Self { db, since })
    }

    /// # Errors
    /// [`RecordsError::Query`].
    pub async fn counts(&self) -> Result<Counts, RecordsError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded, \
                 count(*) FILTER (WHERE state = 'failed') AS failed FROM jobs \
                 WHERE accepted_at >= $1 AND updated_at >= $1 \
                   AND state IN ('succeeded', 'failed')",
                [self.since.into()],
            ))
            .await
            .map_err(RecordsError::Query)?;
        let get = |column: &str| {
            row.as_ref()
                .and_then(|r| r.try_get::<i64>("", column).ok())
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok(Counts {
            succeeded: get("succeeded"),
            failed: get("failed"),
        })
    }

    /// Why jobs of this run ended failed: each recorded error (its first 120
    /// characters) and how many jobs it ended, most first.
    ///
    /// # Errors
    /// [`RecordsError::Query`].
    pub async fn failure_reasons(&self) -> Result<Vec<(String, u64)>, RecordsError> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT left(coalesce(error, ''), 120) AS error, count(*) AS n FROM jobs \
                 WHERE accepted_at >= $1 AND state = 'failed' GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
                [self.since.into()],
            ))
            .await
            .map_err(RecordsError::Query)?;
        Ok(rows
            .iter()
            .map(|r| {
                let error = r.try_get::<String>("", "error").unwrap_or_default();
                let n = r.try_get::<i64>("", "n").ok();
                (error, n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
            })
            .collect())
    }

    /// Waits, one query a second, until `expected` jobs have ended or
    /// `deadline`; prints progress every 10 s.
    ///
    /// # Errors
    /// [`RecordsError::Query`].
    pub async fn wait_ended(
        &self,
        expected: u64,
        deadline: Instant,
    ) -> Result<Counts, RecordsError> {
        let started = Instant::now();
        let mut last_print = Instant::now();
        loop {
            let counts = self.counts().await?;
            if counts.succeeded + counts.failed >= expected || Instant::now() >= deadline {
                return Ok(counts);
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "  waiting: {} succeeded, {} failed of {expected} ({:.0} s)",
                    counts.succeeded,
                    counts.failed,
                    started.elapsed().as_secs_f64()
                );
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The succeeded jobs' acceptance → commit times.
    ///
    /// # Errors
    /// [`RecordsError::Query`].
    pub async fn timings(&self) -> Result<Timings, RecordsError> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT EXTRACT(EPOCH FROM (updated_at - accepted_at))::float8 AS secs FROM jobs \
                 WHERE accepted_at >= $1 AND updated_at >= $1 AND state = 'succeeded'",
                [self.since.into()],
            ))
            .await
            .map_err(RecordsError::Query)?;
        let accept_to_readable = rows
            .iter()
            .filter_map(|r| r.try_get::<f64>("", "secs").ok())
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
            .collect();
        let span = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT EXTRACT(EPOCH FROM (max(updated_at) - min(accepted_at)))::float8 AS span \
                 FROM jobs WHERE accepted_at >= $1 AND updated_at >= $1 AND state = 'succeeded'",
                [self.since.into()],
            ))
            .await
            .map_err(RecordsError::Query)?;
        let span_secs = span
            .and_then(|r| r.try_get::<Option<f64>>("", "span").ok().flatten())
            .unwrap_or(0.0);
        Ok(Timings {
            accept_to_readable,
            span_secs,
        })
    }

    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}
