//! An acceptance's audit row travels in its job message and is stored by
//! BeginJobs when the job was never registered.
//!
//! The gateway puts the `UpdateMemory` call's audit row (outcome OK) into the
//! job message it publishes (`UpdateJob.accept_audit`): JetStream's
//! acknowledgement of the job makes the row durable too, so the gateway no
//! longer publishes it to the audit outbox. memory-store stores it with the
//! job's registration (RecordAccepted, the same transaction; memory-store's
//! `jobs.rs`). When the registration never reached Postgres (memory-store was
//! down, or Postgres lost the relaxed commit), `chat_memory_begin_jobs` finds
//! no job row and stores the row it is handed (`audit` in a job's JSON) before
//! deciding. If that job is then skipped as deleted, nothing else of the
//! transaction is written, yet the worker acknowledges the message (the row's
//! durable copy) next: the commit is made durable. Every other path ends in a
//! durable commit that follows the row in the WAL (the job's CommitJobs, or a
//! failed state BeginJobs writes durably).
//!
//! The function is `chat_memory_begin_jobs` of migration
//! `m20261206_000005_fewer_job_statements`, changed in two places (`patched`):
//! the row's insert after a job's fields are read, and the durable commit for
//! the deleted skip. `down` restores that migration's body.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Where the carried row is stored: after a job's fields are read, before any
/// decision about it.
const READ_FIELDS: &str = "        v_replay := (d->>'replay')::boolean;\n";
const STORE_CARRIED: &str = r#"        carried_new := states[i] IS NULL AND jsonb_typeof(d->'audit') = 'object';
        IF carried_new THEN
            -- Never registered: the acceptance's audit row from the job message.
            INSERT INTO audit_log (audit_id, at, tenant, user_id, action, chat_id, job_id,
                                   outcome, request_id, trace_id, detail)
            SELECT x.audit_id, x.at, x.tenant, x.user_id, x.action, x.chat_id, x.job_id,
                   x.outcome, x.request_id, x.trace_id, x.detail
              FROM jsonb_to_record(d->'audit') AS x(audit_id uuid, at timestamptz, tenant text,
                   user_id text, action text, chat_id text, job_id text, outcome text,
                   request_id text, trace_id text, detail text)
            ON CONFLICT (audit_id, at) DO NOTHING;
        END IF;
"#;
/// The deleted skip writes nothing else: a stored carried row needs the flush.
const DELETED: &str = "            decided := decided || jsonb_build_array('deleted');\n";
const DELETED_DURABLE: &str = "            must_be_durable := must_be_durable OR carried_new;\n";
const DECLARE_LAST: &str = "    i integer := 0;\nBEGIN\n";
const DECLARE_CARRIED: &str = "    i integer := 0;\n    carried_new boolean;\nBEGIN\n";

/// `chat_memory_begin_jobs` as migration 000005 created it (that migration
/// also replaced `chat_memory_commit_jobs`, which stays).
fn original() -> Result<&'static str, DbErr> {
    let sql = super::m20261206_000005_fewer_job_statements::CREATE;
    let start = sql
        .find("CREATE OR REPLACE FUNCTION chat_memory_begin_jobs(")
        .ok_or_else(|| {
            DbErr::Custom("migration 000005 defines no chat_memory_begin_jobs".into())
        })?;
    let end = sql[start..]
        .find("$$;")
        .map(|e| start + e + "$$;".len())
        .ok_or_else(|| DbErr::Custom("migration 000005's begin function has no end".into()))?;
    Ok(&sql[start..end])
}

/// The original with the carried row's insert and the deleted skip's flush.
pub(crate) fn patched() -> Result<String, DbErr> {
    super::patch::at_anchors(
        original()?,
        "chat_memory_begin_jobs of migration 000005",
        &[
            (DECLARE_LAST, DECLARE_CARRIED.to_owned()),
            (READ_FIELDS, format!("{READ_FIELDS}{STORE_CARRIED}")),
            (DELETED, format!("{DELETED_DURABLE}{DELETED}")),
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
            .execute_unprepared(original()?)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_finds_each_anchor_once_and_adds_the_insert_and_the_flush() {
        let sql = patched().expect("patched");
        assert!(sql.contains("carried_new boolean;"), "{sql}");
        assert_eq!(sql.matches("INSERT INTO audit_log").count(), 1, "{sql}");
        let flush = sql.find(DELETED_DURABLE).expect("the deleted skip's flush");
        let deleted = sql.find(DELETED).expect("the deleted skip");
        assert!(
            flush < deleted,
            "the flush is set before the skip continues"
        );
        let store = sql.find("carried_new := states[i]").expect("the insert");
        assert!(store < flush, "the row is stored before any decision");
    }
}
