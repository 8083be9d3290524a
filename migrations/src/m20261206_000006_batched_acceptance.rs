//! RecordAccepted and ClaimChat for several jobs or chats in one round trip
//! and one transaction each (a gateway's acceptances that arrived together).
//!
//! `chat_memory_record_accepted_batch(jobs jsonb)` locks every chat of the
//! batch first, in the order of the lock keys (so two batches, each holding
//! some chats, never wait for each other in a cycle; every other writer holds
//! one chat's lock at a time), then runs `chat_memory_record_accepted` for each
//! job in the batch's order (the lock is re-entrant) and answers one row per
//! job: its 1-based position, the outcome and whether it was accepted before.
//! The commit is relaxed, as RecordAccepted's (the worker registers a job that
//! a crash lost).
//!
//! `chat_memory_claim_chats(claims jsonb)` locks the same way, then runs
//! `chat_memory_claim` for each claim and answers its position and verdict
//! (`claimed`, `owner`, `denied`). Its commit is durable: a first owner is.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION chat_memory_record_accepted_batch(p_jobs jsonb)
RETURNS TABLE (idx integer, outcome text, earlier boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k bigint;
    d jsonb;
    i bigint;
    r record;
BEGIN
    FOR k IN SELECT DISTINCT hashtextextended(e->>'chat', 0) AS key
               FROM jsonb_array_elements(p_jobs) e ORDER BY key LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    FOR d, i IN SELECT e, n FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS t(e, n) LOOP
        SELECT * INTO r FROM chat_memory_record_accepted(
            (d->>'job')::uuid, d->>'chat', (d->>'seq')::bigint, (d->>'count')::integer,
            d->>'key', (d->>'accepted_at')::timestamptz, d->>'hash');
        RETURN QUERY SELECT i::integer, r.outcome, r.earlier;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION chat_memory_claim_chats(p_claims jsonb)
RETURNS TABLE (idx integer, claim text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k bigint;
    d jsonb;
    i bigint;
BEGIN
    FOR k IN SELECT DISTINCT hashtextextended(e->>'chat', 0) AS key
               FROM jsonb_array_elements(p_claims) e ORDER BY key LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    FOR d, i IN SELECT e, n FROM jsonb_array_elements(p_claims) WITH ORDINALITY AS t(e, n) LOOP
        RETURN QUERY SELECT i::integer, chat_memory_claim(d->>'chat', d->>'tenant', d->>'user',
            (d->>'acts_for_tenant')::boolean);
    END LOOP;
END
$$;
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS chat_memory_claim_chats(jsonb); \
                    DROP FUNCTION IF EXISTS chat_memory_record_accepted_batch(jsonb)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DROP).await?;
        Ok(())
    }
}
