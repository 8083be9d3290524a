//! Security (issue 4): the append-only audit log, and the owner of each chat
//! (tenant and user that first wrote it, and when it was last written, for expiry).

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Refuses UPDATE and DELETE on `audit_log` inside Postgres itself, so not even a
/// bug in memory-store can rewrite history. TRUNCATE is left to DBAs (retention).
const APPEND_ONLY_SQL: &str = r"
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update_or_delete
  BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
";

const DROP_APPEND_ONLY_SQL: &str = r"
DROP TRIGGER IF EXISTS audit_log_no_update_or_delete ON audit_log;
DROP FUNCTION IF EXISTS audit_log_append_only();
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(uuid(AuditLog::AuditId).primary_key())
                    .col(timestamp_with_time_zone(AuditLog::At))
                    .col(text(AuditLog::Tenant))
                    .col(text(AuditLog::UserId))
                    .col(
                        text(AuditLog::Action).check(Expr::col(AuditLog::Action).is_in([
                            "update", "read", "status", "delete", "denied", "expire", "audit",
                        ])),
                    )
                    .col(text(AuditLog::ChatId))
                    .col(text(AuditLog::JobId))
                    .col(text(AuditLog::Outcome))
                    .col(text(AuditLog::RequestId))
                    .col(text(AuditLog::TraceId))
                    .col(text(AuditLog::Detail))
                    .to_owned(),
            )
            .await?;
        // Queries are per tenant, newest first, optionally per chat.
        manager
            .create_index(
                Index::create()
                    .name("audit_log_tenant_at_idx")
                    .table(AuditLog::Table)
                    .col(AuditLog::Tenant)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChatOwners::Table)
                    .col(text(ChatOwners::ChatId).primary_key())
                    .col(text(ChatOwners::Tenant))
                    .col(text(ChatOwners::OwnerUser))
                    .col(timestamp_with_time_zone(ChatOwners::CreatedAt))
                    .col(timestamp_with_time_zone(ChatOwners::LastActivityAt))
                    .to_owned(),
            )
            .await?;
        // The expiry sweep scans by last activity.
        manager
            .create_index(
                Index::create()
                    .name("chat_owners_last_activity_idx")
                    .table(ChatOwners::Table)
                    .col(ChatOwners::LastActivityAt)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(APPEND_ONLY_SQL)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(DROP_APPEND_ONLY_SQL)
                .await?;
        }
        for table in [ChatOwners::Table.into_iden(), AuditLog::Table.into_iden()] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    AuditId,
    At,
    Tenant,
    UserId,
    Action,
    ChatId,
    JobId,
    Outcome,
    RequestId,
    TraceId,
    Detail,
}

#[derive(DeriveIden)]
enum ChatOwners {
    Table,
    ChatId,
    Tenant,
    OwnerUser,
    CreatedAt,
    LastActivityAt,
}
