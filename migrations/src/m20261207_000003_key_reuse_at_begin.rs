//! BeginJobs keeps a keyed job's request digest and refuses a message that
//! reuses a key for other messages.
//!
//! The gateway compares a repeated idempotency key with the job it repeats
//! (the queued message, or `jobs.request_hash` via RecordAccepted). Two cases
//! escaped it while memory-store was down at an acceptance: a job the worker
//! registered had no digest (so a later reuse of its key was adopted, not
//! refused), and a reuse accepted after JetStream's duplicate window, while
//! memory-store was down, reached the worker as a second message with the same
//! job id (skipped as already applied: its messages dropped without a trace).
//!
//! The worker now hands each keyed job's digest (`hash` in a job's JSON) to
//! `chat_memory_begin_jobs`, which
//! - decides `key_reused` for a job whose row holds another digest, before any
//!   other decision but a deletion: nothing of it is written, and the worker
//!   dead-letters the message (visible; its messages must be sent again under
//!   a new key);
//! - decides a second message of a job id in the same call by the first: a
//!   reuse (another digest) is `key_reused`, a repeat shares the first's
//!   decision (`applied` when the first runs), so no job runs twice in a call;
//! - stores the digest on the rows it registers (jobs whose RecordAccepted
//!   never landed), in one statement after its loop, only when there are any
//!   and only on those rows.
//!
//! The function is migration `m20261206_000009`'s (`patched` there), changed
//! at four anchors. `down` restores that body.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const DECLARE: &str = "    carried_new boolean;\nBEGIN\n";
const DECLARE_HASHES: &str = "    carried_new boolean;
    known_hash text;
    hashes text[] := '{}';
    seen_jobs uuid[] := '{}';
    seen_at integer[] := '{}';
    seen_hashes text[] := '{}';
    reg_jobs uuid[] := '{}';
    reg_hashes text[] := '{}';
    k integer;
BEGIN
";
const LOOKUP: &str = "        SELECT j.chat_id, j.state INTO v_chat, job_state FROM jobs j WHERE j.job_id = v_job;\n        states := array_append(states, job_state);\n";
const LOOKUP_HASH: &str = "        SELECT j.chat_id, j.state, j.request_hash INTO v_chat, job_state, known_hash\n          FROM jobs j WHERE j.job_id = v_job;\n        states := array_append(states, job_state);\n        hashes := array_append(hashes, known_hash);\n";
/// After the deletion's skip, before the state's decisions.
const STATE: &str = "        job_state := states[i];\n";
const KEY_REUSED: &str = r#"        k := array_position(seen_jobs, v_job);
        IF k IS NOT NULL THEN
            -- A second message of a job id in this call (a repeat or a reuse
            -- published past the duplicate window): never run twice. Other
            -- messages are a reuse; the same ones share the first's decision.
            IF seen_hashes[k] IS NOT NULL AND d->>'hash' IS NOT NULL
               AND seen_hashes[k] <> d->>'hash' THEN
                decided := decided || jsonb_build_array('key_reused');
            ELSE
                decided := decided || jsonb_build_array(
                    COALESCE(decided->>(seen_at[k] - 1), 'applied'));
            END IF;
            CONTINUE;
        END IF;
        IF hashes[i] IS NOT NULL AND d->>'hash' IS NOT NULL AND hashes[i] <> d->>'hash' THEN
            -- The job id's job was registered with other messages: this message
            -- reuses its idempotency key. Never applied; nothing of it is written.
            decided := decided || jsonb_build_array('key_reused');
            CONTINUE;
        END IF;
        -- The first message of the job id in this call that may be the job.
        seen_jobs := array_append(seen_jobs, v_job);
        seen_at := array_append(seen_at, i);
        seen_hashes := array_append(seen_hashes, COALESCE(hashes[i], d->>'hash'));
        IF states[i] IS NULL AND d->>'hash' IS NOT NULL THEN
            -- Registered below (every decision from here on writes its row).
            reg_jobs := array_append(reg_jobs, v_job);
            reg_hashes := array_append(reg_hashes, d->>'hash');
        END IF;
"#;
const AFTER_LOOP: &str = "    IF NOT must_be_durable THEN\n";
const STORE_HASHES: &str = r#"    IF cardinality(reg_jobs) > 0 THEN
        -- The jobs registered here keep their digest, as RecordAccepted's rows do.
        UPDATE jobs j SET request_hash = r.hash
          FROM unnest(reg_jobs, reg_hashes) AS r(job, hash)
         WHERE j.job_id = r.job AND j.request_hash IS NULL;
    END IF;
"#;

/// `chat_memory_begin_jobs` of migration 000009 with the digest's check and keeping.
fn patched() -> Result<String, DbErr> {
    super::patch::at_anchors(
        &super::m20261206_000009_accept_audit_with_job::patched()?,
        "chat_memory_begin_jobs of migration 000009",
        &[
            (DECLARE, DECLARE_HASHES.to_owned()),
            (LOOKUP, LOOKUP_HASH.to_owned()),
            (STATE, format!("{KEY_REUSED}{STATE}")),
            (AFTER_LOOP, format!("{STORE_HASHES}{AFTER_LOOP}")),
        ],
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&patched()?)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&super::m20261206_000009_accept_audit_with_job::patched()?)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_checks_the_digest_after_a_deletion_and_keeps_it_after_the_loop() {
        let sql = patched().expect("patched");
        assert!(sql.contains("known_hash text;"), "{sql}");
        let deleted = sql.find("'deleted'").expect("the deleted skip");
        let reused = sql.find("'key_reused'").expect("the reuse skip");
        let applied = sql.find("'applied'").expect("the applied skip");
        assert!(deleted < reused && reused < applied, "{sql}");
        let keep = sql.find("SET request_hash").expect("the digest kept");
        let durable = sql.find(AFTER_LOOP).expect("the loop's end");
        assert!(reused < keep && keep < durable, "{sql}");
    }
}
