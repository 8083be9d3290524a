//! CommitJobs for several chats in one round trip and one transaction (a
//! worker's batches of different chats whose model calls ended together).
//!
//! `chat_memory_commit_jobs_batch(commits jsonb, ...)` locks every chat of the
//! batch first, in the order of the lock keys (as the other batch functions,
//! migrations 000006 and 000007: two batches never wait for each other in a
//! cycle), then runs `chat_memory_commit_jobs` for each commit in the batch's
//! order (the lock is re-entrant) and answers its row prefixed with the
//! commit's 1-based position. A commit the single function answers with a
//! problem (`job_of_another_chat`) or a refusal (`version_conflict`,
//! `chat_deleted`, ...) wrote nothing, as before; the others of the batch are
//! written. The transaction's commit is durable, as a single commit's is.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION chat_memory_commit_jobs_batch(p_commits jsonb, p_superseded_error text)
RETURNS TABLE (idx integer, outcome text, new_version bigint, written_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k bigint;
    d jsonb;
    i bigint;
BEGIN
    FOR k IN SELECT DISTINCT hashtextextended(e->>'chat', 0) AS key
               FROM jsonb_array_elements(p_commits) e ORDER BY key LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    FOR d, i IN SELECT e, n FROM jsonb_array_elements(p_commits) WITH ORDINALITY AS t(e, n) LOOP
        RETURN QUERY SELECT i::integer, c.* FROM chat_memory_commit_jobs(
            d->>'chat', d->'jobs', (d->>'expected')::bigint,
            d->>'user_confirmed', d->>'llm_inferred', d->>'general_summary',
            (d->>'tokens_user_confirmed')::integer, (d->>'tokens_llm_inferred')::integer,
            (d->>'tokens_general_summary')::integer, d->'state', (d->>'call')::uuid,
            p_superseded_error, d->>'tenant', d->>'public_chat', d->>'trace_id') c;
    END LOOP;
END
$$;
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS chat_memory_commit_jobs_batch(jsonb, text)";

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
