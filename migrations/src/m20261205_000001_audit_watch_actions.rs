//! Adds `watch` and `watch_end` to the audit actions: a WatchMemory stream
//! writes one row when it opens and one when it ends (docs/security.md).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The CHECK constraint Postgres named for the column in the first audit migration.
const CONSTRAINT: &str = "audit_log_action_check";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS {CONSTRAINT}; \
             ALTER TABLE audit_log ADD CONSTRAINT {CONSTRAINT} CHECK (action IN \
             ('update', 'read', 'status', 'delete', 'denied', 'expire', 'audit', 'apply', \
              'watch', 'watch_end'))"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            // The log is append-only: rows of the two actions stay, and the old
            // constraint only holds for rows written from now on (NOT VALID).
            "ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS {CONSTRAINT}; \
             ALTER TABLE audit_log ADD CONSTRAINT {CONSTRAINT} CHECK (action IN \
             ('update', 'read', 'status', 'delete', 'denied', 'expire', 'audit', 'apply')) NOT VALID"
        ))
        .await?;
        Ok(())
    }
}
