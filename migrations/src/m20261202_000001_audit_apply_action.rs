//! Adds `apply` to the audit actions: memory-store writes one `apply` row in the
//! same transaction as the memory and the job's `succeeded` state, so a memory
//! write, its job status and its audit commit together or not at all.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The CHECK constraint Postgres named for the column in the previous migration.
const CONSTRAINT: &str = "audit_log_action_check";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS {CONSTRAINT}; \
             ALTER TABLE audit_log ADD CONSTRAINT {CONSTRAINT} CHECK (action IN \
             ('update', 'read', 'status', 'delete', 'denied', 'expire', 'audit', 'apply'))"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS {CONSTRAINT}; \
             ALTER TABLE audit_log ADD CONSTRAINT {CONSTRAINT} CHECK (action IN \
             ('update', 'read', 'status', 'delete', 'denied', 'expire', 'audit'))"
        ))
        .await?;
        Ok(())
    }
}
