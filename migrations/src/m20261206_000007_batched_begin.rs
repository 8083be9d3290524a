//! BeginJobs for several chats in one round trip and one transaction (a
//! worker's batches of different chats that started together).
//!
//! `chat_memory_begin_jobs_batch(chats jsonb, ...)` locks every chat of the
//! batch first, in the order of the lock keys (as the other batch functions,
//! migration 000006: two batches never wait for each other in a cycle), then
//! runs `chat_memory_begin_jobs` for each chat in the batch's order (the lock
//! is re-entrant) and answers its rows prefixed with the chat's 1-based
//! position. A chat the single function answers with a problem
//! (`job_of_another_chat`) wrote nothing, as before.
//!
//! The commit: `chat_memory_begin_jobs` turns durable commit off for its
//! transaction when it wrote only `running` states (a crash that loses them
//! only means the job is begun again). In a batch, one chat's call must not
//! relax another's durable write, so the setting is restored before each
//! chat, and the transaction's commit is relaxed only if every chat's call
//! relaxed it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION chat_memory_begin_jobs_batch(
    p_chats jsonb, p_not_owner_error text, p_superseded_error text)
RETURNS TABLE (idx integer, problem text, skips jsonb, has_memory boolean, prior_version bigint,
               prior_user_confirmed text, prior_llm_inferred text, prior_general_summary text,
               prior_tokens_user_confirmed integer, prior_tokens_llm_inferred integer,
               prior_tokens_general_summary integer, prior_state jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    k bigint;
    d jsonb;
    i bigint;
    configured text := current_setting('synchronous_commit');
    relaxed boolean := true;
BEGIN
    FOR k IN SELECT DISTINCT hashtextextended(e->>'chat', 0) AS key
               FROM jsonb_array_elements(p_chats) e ORDER BY key LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
    FOR d, i IN SELECT e, n FROM jsonb_array_elements(p_chats) WITH ORDINALITY AS t(e, n) LOOP
        PERFORM set_config('synchronous_commit', configured, true);
        RETURN QUERY SELECT i::integer, b.* FROM chat_memory_begin_jobs(
            d->>'chat', d->'jobs', p_not_owner_error, p_superseded_error) b;
        relaxed := relaxed AND current_setting('synchronous_commit') = 'off';
    END LOOP;
    PERFORM set_config('synchronous_commit', CASE WHEN relaxed THEN 'off' ELSE configured END, true);
END
$$;
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS chat_memory_begin_jobs_batch(jsonb, text, text)";

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
