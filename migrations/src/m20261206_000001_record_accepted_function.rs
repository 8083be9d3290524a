//! `chat_memory_record_accepted(...)`: memory-store's RecordAccepted in one
//! round trip. The same steps as the transaction it replaces, in the same
//! order, inside one statement: relaxed commit (a `queued` row is advisory),
//! the chat's advisory lock (shared with deletes and job commits), the
//! tombstone check, the insert, and for a job already known, the request
//! digest check and recording. Under READ COMMITTED every statement of a
//! plpgsql function takes a fresh snapshot, so the tombstone check after the
//! lock sees a delete that committed while this call waited for it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION chat_memory_record_accepted(
    p_job uuid, p_chat text, p_seq bigint, p_count integer, p_key text,
    p_accepted timestamptz, p_hash text)
RETURNS TABLE (outcome text, earlier boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    known_hash text;
    known_seq bigint;
    inserted integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_chat, 0));
    IF EXISTS (SELECT 1 FROM chat_tombstones t
               WHERE t.chat_id = p_chat AND t.deleted_through_seq >= p_seq) THEN
        RETURN QUERY SELECT 'deleted'::text, false;
        RETURN;
    END IF;
    INSERT INTO jobs (job_id, chat_id, stream_seq, state, attempts, error, resulting_version,
                      message_count, idempotency_key, accepted_at, updated_at, applied_in_call,
                      request_hash)
    VALUES (p_job, p_chat, p_seq, 'queued', 0, NULL, NULL, p_count, p_key, p_accepted, now(),
            NULL, p_hash)
    ON CONFLICT (job_id) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted > 0 THEN
        RETURN QUERY SELECT 'inserted'::text, false;
        RETURN;
    END IF;
    SELECT j.request_hash, j.stream_seq INTO known_hash, known_seq
      FROM jobs j WHERE j.job_id = p_job;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'known'::text, false;
        RETURN;
    END IF;
    IF p_hash IS NOT NULL AND known_hash IS NOT NULL AND known_hash <> p_hash THEN
        RETURN QUERY SELECT 'conflict'::text, false;
        RETURN;
    END IF;
    IF p_hash IS NOT NULL AND known_hash IS NULL THEN
        UPDATE jobs SET request_hash = p_hash WHERE job_id = p_job AND request_hash IS NULL;
    END IF;
    RETURN QUERY SELECT 'known'::text, known_seq <> p_seq;
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
            .execute_unprepared(
                "DROP FUNCTION IF EXISTS chat_memory_record_accepted(uuid, text, bigint, integer, text, timestamptz, text)",
            )
            .await?;
        Ok(())
    }
}
