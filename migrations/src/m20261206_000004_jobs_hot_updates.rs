//! Job rows change state without touching an index, so Postgres can update
//! them in place (HOT: no new index entries, less WAL, less vacuum).
//!
//! A job row is written three times (`queued` at acceptance, `running` when a
//! worker begins it, `succeeded` or `failed` at its commit). Until now `state`
//! and `updated_at` were indexed (`jobs_chat_id_state_idx`, `jobs_ended_idx`),
//! so each of those writes added a tuple to every index of the table. The
//! indexes now key on columns a job never changes:
//! - `jobs_chat_seq_idx (chat_id, stream_seq)`: a chat's jobs in stream order
//!   (the pending count reads the jobs after the memory's `last_applied_seq`;
//!   a chat's delete and expiry);
//! - `jobs_accepted_idx (accepted_at)`: retention (a job ends after it was
//!   accepted, so every job ended before a cutoff was accepted before it).
//!
//! Pages keep 30 % free (`fillfactor = 70`) for the in-place versions; the
//! setting applies to pages written from now on.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE jobs SET (fillfactor = 70);
CREATE INDEX jobs_chat_seq_idx ON jobs (chat_id, stream_seq);
CREATE INDEX jobs_accepted_idx ON jobs (accepted_at);
DROP INDEX IF EXISTS jobs_chat_id_state_idx;
DROP INDEX IF EXISTS jobs_ended_idx;
"#;

const DOWN: &str = r#"
CREATE INDEX jobs_chat_id_state_idx ON jobs (chat_id, state);
CREATE INDEX jobs_ended_idx ON jobs (updated_at) WHERE state IN ('succeeded', 'failed');
DROP INDEX IF EXISTS jobs_accepted_idx;
DROP INDEX IF EXISTS jobs_chat_seq_idx;
ALTER TABLE jobs RESET (fillfactor);
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
