//! Fewer statements per BeginJobs and CommitJobs, same decisions: every
//! plpgsql statement pays the executor's set-up (the largest share of
//! Postgres's CPU on the update path, docs/benchmarks.md).
//!
//! - `chat_memory_begin_jobs`: a job's chat and state are read in one lookup
//!   (was one for the chat, then one for the state);
//! - `chat_memory_commit_jobs`: the tombstone's count runs only when the chat
//!   has a tombstone, and the jobs at or below the applied sequence are counted
//!   in the loop that already reads each job (were two `count(*)` queries).
//!
//! `down` restores the functions of `m20261206_000002_job_functions`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

pub(crate) const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION chat_memory_begin_jobs(
    p_chat text, p_jobs jsonb, p_not_owner_error text, p_superseded_error text)
RETURNS TABLE (problem text, skips jsonb, has_memory boolean, prior_version bigint,
               prior_user_confirmed text, prior_llm_inferred text, prior_general_summary text,
               prior_tokens_user_confirmed integer, prior_tokens_llm_inferred integer,
               prior_tokens_general_summary integer, prior_state jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    through bigint;
    mem memories%ROWTYPE;
    found_memory boolean;
    last_applied bigint;
    d jsonb;
    v_job uuid;
    v_seq bigint;
    v_attempt integer;
    v_replay boolean;
    job_state text;
    access_key text;
    last_key text;
    owns boolean;
    claim text;
    must_be_durable boolean := false;
    decided jsonb := '[]'::jsonb;
    v_chat text;
    states text[] := '{}';
    i integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_chat, 0));
    SELECT t.deleted_through_seq INTO through FROM chat_tombstones t WHERE t.chat_id = p_chat;
    -- A job id already used by another chat: refused before anything is written.
    -- (Job by job with a scalar key: a cached generic plan is a primary-key
    -- lookup whatever the table's size when it was planned.) Each job's state
    -- is kept for the decisions below (null: no row yet): one lookup per job.
    FOR d IN SELECT e FROM jsonb_array_elements(p_jobs) e LOOP
        v_job := (d->>'job')::uuid;
        SELECT j.chat_id, j.state INTO v_chat, job_state FROM jobs j WHERE j.job_id = v_job;
        states := array_append(states, job_state);
        IF FOUND AND v_chat <> p_chat THEN
            RETURN QUERY SELECT 'job_of_another_chat'::text, NULL::jsonb, false, 0::bigint,
                NULL::text, NULL::text, NULL::text, NULL::integer, NULL::integer,
                NULL::integer, NULL::jsonb;
            RETURN;
        END IF;
    END LOOP;
    SELECT * INTO mem FROM memories m WHERE m.chat_id = p_chat;
    found_memory := FOUND;
    last_applied := CASE WHEN found_memory THEN mem.last_applied_seq ELSE 0 END;
    FOR d IN SELECT e FROM jsonb_array_elements(p_jobs) e LOOP
        i := i + 1;
        v_job := (d->>'job')::uuid;
        v_seq := (d->>'seq')::bigint;
        v_attempt := (d->>'attempt')::integer;
        v_replay := (d->>'replay')::boolean;
        IF through IS NOT NULL AND through >= v_seq THEN
            decided := decided || jsonb_build_array('deleted');
            CONTINUE;
        END IF;
        job_state := states[i];
        IF job_state IS NOT NULL THEN
            IF job_state = 'succeeded' THEN
                decided := decided || jsonb_build_array('applied');
                CONTINUE;
            END IF;
            -- A replay runs a failed job again; the order check below still decides.
            IF job_state = 'failed' AND NOT v_replay THEN
                decided := decided || jsonb_build_array('failed');
                CONTINUE;
            END IF;
        END IF;
        -- The gateway claims the chat before accepting; if memory-store was down
        -- then, this is the first check of who owns it.
        IF jsonb_typeof(d->'access') = 'object' THEN
            access_key := (d->'access')::text;
            IF last_key IS DISTINCT FROM access_key THEN
                IF (d->'access'->>'in_namespace')::boolean THEN
                    claim := chat_memory_claim(p_chat, d->'access'->>'tenant',
                        d->'access'->>'user', (d->'access'->>'acts_for_tenant')::boolean);
                    must_be_durable := must_be_durable OR claim = 'claimed';
                    owns := claim <> 'denied';
                ELSE
                    owns := false;
                END IF;
                last_key := access_key;
            END IF;
            IF NOT owns THEN
                PERFORM chat_memory_write_job(v_job, p_chat, v_seq, (d->>'count')::integer,
                    (d->>'accepted_at')::timestamptz, 'failed', v_attempt, true,
                    p_not_owner_error, NULL, NULL);
                must_be_durable := true;
                decided := decided || jsonb_build_array('not_owner');
                CONTINUE;
            END IF;
        END IF;
        IF last_applied >= v_seq THEN
            PERFORM chat_memory_write_job(v_job, p_chat, v_seq, (d->>'count')::integer,
                (d->>'accepted_at')::timestamptz, 'failed', v_attempt, true,
                p_superseded_error, NULL, NULL);
            must_be_durable := true;
            decided := decided || jsonb_build_array('superseded');
            CONTINUE;
        END IF;
        -- A replay starts clean: the dead-letter reason is history.
        PERFORM chat_memory_write_job(v_job, p_chat, v_seq, (d->>'count')::integer,
            (d->>'accepted_at')::timestamptz, 'running', v_attempt, v_replay, NULL, NULL, NULL);
        decided := decided || jsonb_build_array(NULL::text);
    END LOOP;
    IF NOT must_be_durable THEN
        -- Only `running` states (and an owner's activity time) were written.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF found_memory THEN
        RETURN QUERY SELECT NULL::text, decided, true, mem.version, mem.user_confirmed,
            mem.llm_inferred, mem.general_summary, mem.tokens_user_confirmed,
            mem.tokens_llm_inferred, mem.tokens_general_summary, mem.state;
    ELSE
        RETURN QUERY SELECT NULL::text, decided, false, 0::bigint, NULL::text, NULL::text,
            NULL::text, NULL::integer, NULL::integer, NULL::integer, NULL::jsonb;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION chat_memory_commit_jobs(
    p_chat text, p_jobs jsonb, p_expected bigint,
    p_user_confirmed text, p_llm_inferred text, p_general_summary text,
    p_tokens_user_confirmed integer, p_tokens_llm_inferred integer,
    p_tokens_general_summary integer, p_state jsonb, p_call uuid,
    p_superseded_error text, p_tenant text, p_public_chat text, p_trace_id text)
RETURNS TABLE (outcome text, new_version bigint, written_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    found_memory boolean;
    current_version bigint;
    last_applied bigint;
    through bigint;
    n integer;
    k integer;
    d jsonb;
    v_version bigint;
    v_at timestamptz;
    v_job uuid;
    v_chat text;
    job_state text;
    behind integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_chat, 0));
    SELECT m.version, m.last_applied_seq INTO current_version, last_applied
      FROM memories m WHERE m.chat_id = p_chat;
    found_memory := FOUND;
    IF NOT found_memory THEN
        current_version := 0;
        last_applied := 0;
    END IF;
    n := jsonb_array_length(p_jobs);
    SELECT t.deleted_through_seq INTO through FROM chat_tombstones t WHERE t.chat_id = p_chat;
    k := 0;
    IF through IS NOT NULL THEN
        SELECT count(*) INTO k FROM jsonb_array_elements(p_jobs) e
         WHERE through >= (e->>'seq')::bigint;
    END IF;
    IF k > 0 THEN
        RETURN QUERY SELECT CASE WHEN k = n THEN 'chat_deleted' ELSE 'version_conflict' END,
            current_version, NULL::timestamptz;
        RETURN;
    END IF;
    -- Job by job with a scalar key (a cached generic plan is a primary-key
    -- lookup whatever the table's size when it was planned): a job of another
    -- chat is refused, and the batch's succeeded jobs, and those at or below the
    -- applied sequence, are counted.
    k := 0;
    FOR d IN SELECT e FROM jsonb_array_elements(p_jobs) e LOOP
        v_job := (d->>'job')::uuid;
        IF last_applied >= (d->>'seq')::bigint THEN
            behind := behind + 1;
        END IF;
        SELECT j.chat_id, j.state INTO v_chat, job_state FROM jobs j WHERE j.job_id = v_job;
        IF FOUND AND v_chat <> p_chat THEN
            RETURN QUERY SELECT 'job_of_another_chat'::text, current_version, NULL::timestamptz;
            RETURN;
        END IF;
        IF FOUND AND job_state = 'succeeded' THEN
            k := k + 1;
        END IF;
    END LOOP;
    IF k > 0 THEN
        RETURN QUERY SELECT CASE WHEN k = n THEN 'already_applied' ELSE 'version_conflict' END,
            current_version, NULL::timestamptz;
        RETURN;
    END IF;
    k := behind;
    IF k = n THEN
        FOR d IN SELECT e FROM jsonb_array_elements(p_jobs) e LOOP
            PERFORM chat_memory_write_job((d->>'job')::uuid, p_chat, (d->>'seq')::bigint, 0,
                clock_timestamp(), 'failed', (d->>'attempt')::integer, true,
                p_superseded_error, NULL, NULL);
        END LOOP;
        RETURN QUERY SELECT 'superseded'::text, current_version, NULL::timestamptz;
        RETURN;
    END IF;
    IF k > 0 OR current_version <> p_expected THEN
        RETURN QUERY SELECT 'version_conflict'::text, current_version, NULL::timestamptz;
        RETURN;
    END IF;

    v_version := current_version + 1;
    v_at := clock_timestamp();
    IF found_memory THEN
        UPDATE memories m
           SET user_confirmed = p_user_confirmed, llm_inferred = p_llm_inferred,
               general_summary = p_general_summary,
               tokens_user_confirmed = p_tokens_user_confirmed,
               tokens_llm_inferred = p_tokens_llm_inferred,
               tokens_general_summary = p_tokens_general_summary,
               state = p_state, version = v_version,
               last_job_id = (p_jobs->(n - 1)->>'job')::uuid,
               last_applied_seq = GREATEST((p_jobs->(n - 1)->>'seq')::bigint,
                                           (p_jobs->0->>'seq')::bigint),
               updated_at = v_at
         WHERE m.chat_id = p_chat;
    ELSE
        INSERT INTO memories (chat_id, user_confirmed, llm_inferred, general_summary,
                              tokens_user_confirmed, tokens_llm_inferred, tokens_general_summary,
                              state, version, last_job_id, last_applied_seq, created_at, updated_at)
        VALUES (p_chat, p_user_confirmed, p_llm_inferred, p_general_summary,
                p_tokens_user_confirmed, p_tokens_llm_inferred, p_tokens_general_summary,
                p_state, v_version, (p_jobs->(n - 1)->>'job')::uuid,
                GREATEST((p_jobs->(n - 1)->>'seq')::bigint, (p_jobs->0->>'seq')::bigint),
                v_at, v_at);
    END IF;
    FOR d IN SELECT e FROM jsonb_array_elements(p_jobs) e LOOP
        PERFORM chat_memory_write_job((d->>'job')::uuid, p_chat, (d->>'seq')::bigint, 0, v_at,
            'succeeded', (d->>'attempt')::integer, true, NULL, v_version, p_call);
    END LOOP;
    -- The `apply` audit rows, in the same transaction as the write.
    INSERT INTO audit_log (audit_id, at, tenant, user_id, action, chat_id, job_id, outcome,
                           request_id, trace_id, detail)
    SELECT (e->>'audit_id')::uuid, v_at, p_tenant, 'summarizer-worker', 'apply', p_public_chat,
           e->>'job', 'OK', e->>'job', p_trace_id, 'version ' || v_version
      FROM jsonb_array_elements(p_jobs) e
    ON CONFLICT DO NOTHING;
    RETURN QUERY SELECT 'applied'::text, v_version, v_at;
END
$$;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(super::m20261206_000002_job_functions::CREATE)
            .await?;
        Ok(())
    }
}
