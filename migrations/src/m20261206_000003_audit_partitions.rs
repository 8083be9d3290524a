//! Bounded data growth (issue 13): `audit_log` partitioned by day (UTC), so
//! rows past the retention leave by dropping whole days, never by DELETE (the
//! append-only trigger stays on every partition); an index for the retention
//! of ended job records; the `retention` audit action (each drop or purge is
//! itself audited).
//!
//! - `audit_log` becomes `PARTITION BY RANGE (at)` with one partition per day
//!   (`audit_log_pYYYYMMDD`) and a DEFAULT partition for a row outside every
//!   day created so far (never refused: an unaudited answer is never given).
//!   The primary key becomes `(audit_id, at)` (a partitioned table's keys
//!   include its partition key); a retried row carries its original `at`, so
//!   `ON CONFLICT DO NOTHING` still stores it once.
//! - `chat_memory_audit_partition(day)`: creates a day's partition if missing
//!   (memory-store's retention sweep creates the next days ahead); NULL when
//!   the DEFAULT partition already holds rows of that day (they stay there,
//!   kept until an operator moves them: docs/operations).
//! - Existing rows are copied into their days' partitions, in this migration's
//!   transaction.
//! - `jobs_ended_idx`: ended jobs by `updated_at`, for the job-record retention.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER TABLE audit_log_unpartitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_unpartitioned_pkey;
ALTER INDEX audit_log_tenant_at_idx RENAME TO audit_log_unpartitioned_tenant_at_idx;
ALTER TABLE audit_log_unpartitioned RENAME CONSTRAINT audit_log_action_check
    TO audit_log_unpartitioned_action_check;
DROP TRIGGER IF EXISTS audit_log_no_update_or_delete ON audit_log_unpartitioned;

CREATE TABLE audit_log (
    audit_id uuid NOT NULL,
    at timestamptz NOT NULL,
    tenant text NOT NULL,
    user_id text NOT NULL,
    action text NOT NULL CONSTRAINT audit_log_action_check CHECK (action IN
        ('update', 'read', 'status', 'delete', 'denied', 'expire', 'audit', 'apply',
         'watch', 'watch_end', 'retention')),
    chat_id text NOT NULL,
    job_id text NOT NULL,
    outcome text NOT NULL,
    request_id text NOT NULL,
    trace_id text NOT NULL,
    detail text NOT NULL,
    CONSTRAINT audit_log_pkey PRIMARY KEY (audit_id, at)
) PARTITION BY RANGE (at);
CREATE INDEX audit_log_tenant_at_idx ON audit_log (tenant, at);
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
CREATE TRIGGER audit_log_no_update_or_delete
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE OR REPLACE FUNCTION chat_memory_audit_partition(p_day date)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    name text := 'audit_log_p' || to_char(p_day, 'YYYYMMDD');
BEGIN
    -- One creator at a time (every memory-store replica runs the retention pass).
    PERFORM pg_advisory_xact_lock(hashtextextended('chat-memory-audit-partitions', 0));
    IF to_regclass(name) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
                name, (p_day::timestamp AT TIME ZONE 'UTC'),
                ((p_day + 1)::timestamp AT TIME ZONE 'UTC'));
        EXCEPTION
            WHEN check_violation THEN
                -- The DEFAULT partition already holds rows of this day (written
                -- before the day was created): they stay there, and so does the day.
                RAISE WARNING 'audit day % stays in audit_log_default, which holds rows of it',
                    p_day;
                RETURN NULL;
            WHEN duplicate_table OR unique_violation THEN
                -- Another replica created it while this one waited for the lock
                -- (an advisory lock does not refresh the catalog this call sees).
                RETURN name;
        END;
    END IF;
    RETURN name;
END
$$;

DO $$
DECLARE
    first_day date;
    d date;
BEGIN
    SELECT min((at AT TIME ZONE 'UTC')::date) INTO first_day FROM audit_log_unpartitioned;
    d := LEAST(COALESCE(first_day, (now() AT TIME ZONE 'UTC')::date),
               (now() AT TIME ZONE 'UTC')::date);
    WHILE d <= (now() AT TIME ZONE 'UTC')::date + 2 LOOP
        PERFORM chat_memory_audit_partition(d);
        d := d + 1;
    END LOOP;
END
$$;

INSERT INTO audit_log SELECT audit_id, at, tenant, user_id, action, chat_id, job_id, outcome,
    request_id, trace_id, detail FROM audit_log_unpartitioned;
DROP TABLE audit_log_unpartitioned;

CREATE INDEX jobs_ended_idx ON jobs (updated_at) WHERE state IN ('succeeded', 'failed');
"#;

const DOWN: &str = r#"
DROP INDEX IF EXISTS jobs_ended_idx;
ALTER TABLE audit_log RENAME TO audit_log_partitioned;
ALTER TABLE audit_log_partitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_partitioned_pkey;
ALTER INDEX audit_log_tenant_at_idx RENAME TO audit_log_partitioned_tenant_at_idx;
CREATE TABLE audit_log (
    audit_id uuid NOT NULL PRIMARY KEY,
    at timestamptz NOT NULL,
    tenant text NOT NULL,
    user_id text NOT NULL,
    action text NOT NULL,
    chat_id text NOT NULL,
    job_id text NOT NULL,
    outcome text NOT NULL,
    request_id text NOT NULL,
    trace_id text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX audit_log_tenant_at_idx ON audit_log (tenant, at);
INSERT INTO audit_log SELECT * FROM audit_log_partitioned ON CONFLICT DO NOTHING;
-- Rows of the `retention` action stay; the old list holds for new rows (NOT VALID).
ALTER TABLE audit_log ADD CONSTRAINT audit_log_action_check CHECK (action IN
    ('update', 'read', 'status', 'delete', 'denied', 'expire', 'audit', 'apply',
     'watch', 'watch_end')) NOT VALID;
DROP TABLE audit_log_partitioned CASCADE;
CREATE TRIGGER audit_log_no_update_or_delete
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
DROP FUNCTION IF EXISTS chat_memory_audit_partition(date);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
