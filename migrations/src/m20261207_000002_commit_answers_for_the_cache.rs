//! A commit answers what a gateway needs to cache its result: the chat's
//! owner (and its last recorded activity, from which the expiry sweep may
//! purge the chat) and its pending jobs: the applied stream sequence and the
//! sequences of the jobs after it still pending (their count is GetMemory's
//! `pending_jobs`), all read in the commit's transaction under the chat's lock
//! (so they are exactly what `GetMemory` would answer right after the commit).
//!
//! `chat_memory_commit_jobs_viewed` wraps `chat_memory_commit_jobs` (same
//! arguments, same first three columns) and `chat_memory_commit_jobs_batch_viewed`
//! wraps the batch function of migration 20261207_000001 the same way. The
//! wrapped functions stay: a memory-store of the previous release still calls
//! them during a rolling upgrade.
//!
//! The sequences order the answer against acceptances and failures announced
//! by other processes: an acceptance announced with a sequence neither applied
//! nor among `pending_seqs` was not counted (registrations need not come in
//! stream order), a failure among them was counted as pending
//! (docs/architecture.md, "The gateway's read cache").

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION chat_memory_commit_jobs_viewed(
    p_chat text, p_jobs jsonb, p_expected bigint,
    p_user_confirmed text, p_llm_inferred text, p_general_summary text,
    p_tokens_user_confirmed integer, p_tokens_llm_inferred integer,
    p_tokens_general_summary integer, p_state jsonb, p_call uuid,
    p_superseded_error text, p_tenant text, p_public_chat text, p_trace_id text)
RETURNS TABLE (outcome text, new_version bigint, written_at timestamptz,
               owner_user text, owner_active_at timestamptz,
               applied_through bigint, pending_seqs jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    SELECT * INTO r FROM chat_memory_commit_jobs(p_chat, p_jobs, p_expected,
        p_user_confirmed, p_llm_inferred, p_general_summary,
        p_tokens_user_confirmed, p_tokens_llm_inferred, p_tokens_general_summary,
        p_state, p_call, p_superseded_error, p_tenant, p_public_chat, p_trace_id);
    outcome := r.outcome;
    new_version := r.new_version;
    written_at := r.written_at;
    IF r.outcome = 'applied' THEN
        -- One statement (each one a plpgsql function runs has its own
        -- executor start-up): the owner, the memory's applied sequence and the
        -- jobs after it still pending, as GetMemory counts them.
        SELECT o.owner_user, o.last_activity_at, m.last_applied_seq,
               to_jsonb(ARRAY(SELECT j.stream_seq FROM jobs j
                               WHERE j.chat_id = m.chat_id
                                 AND j.stream_seq > m.last_applied_seq
                                 AND j.state IN ('queued', 'running')
                               ORDER BY j.stream_seq))
          INTO owner_user, owner_active_at, applied_through, pending_seqs
          FROM memories m LEFT JOIN chat_owners o ON o.chat_id = m.chat_id
         WHERE m.chat_id = p_chat;
    END IF;
    RETURN NEXT;
END
$$;

CREATE OR REPLACE FUNCTION chat_memory_commit_jobs_batch_viewed(p_commits jsonb, p_superseded_error text)
RETURNS TABLE (idx integer, outcome text, new_version bigint, written_at timestamptz,
               owner_user text, owner_active_at timestamptz,
               applied_through bigint, pending_seqs jsonb)
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
        RETURN QUERY SELECT i::integer, c.* FROM chat_memory_commit_jobs_viewed(
            d->>'chat', d->'jobs', (d->>'expected')::bigint,
            d->>'user_confirmed', d->>'llm_inferred', d->>'general_summary',
            (d->>'tokens_user_confirmed')::integer, (d->>'tokens_llm_inferred')::integer,
            (d->>'tokens_general_summary')::integer, d->'state', (d->>'call')::uuid,
            p_superseded_error, d->>'tenant', d->>'public_chat', d->>'trace_id') c;
    END LOOP;
END
$$;
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS chat_memory_commit_jobs_batch_viewed(jsonb, text);
DROP FUNCTION IF EXISTS chat_memory_commit_jobs_viewed(text, jsonb, bigint, text, text, text,
    integer, integer, integer, jsonb, uuid, text, text, text, text);";

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
