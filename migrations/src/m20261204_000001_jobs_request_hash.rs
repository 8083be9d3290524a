//! Adds `jobs.request_hash`: a digest of an update's messages, kept when the
//! update came with an idempotency key. A later request with the same key and a
//! different digest is refused (naming `idempotency_key`) instead of being
//! answered "deduplicated" while its messages are dropped.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS request_hash text NULL")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE jobs DROP COLUMN IF EXISTS request_hash")
            .await?;
        Ok(())
    }
}
