//! Adds `jobs.applied_in_call`: the summarizer call that applied a job. Updates
//! of one chat that waited together are folded into one call and committed in
//! one transaction; each job's record then says which call applied it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS applied_in_call uuid NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE jobs DROP COLUMN IF EXISTS applied_in_call")
            .await?;
        Ok(())
    }
}
