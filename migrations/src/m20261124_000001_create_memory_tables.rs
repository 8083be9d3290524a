//! The initial schema: one row per chat memory, one per update job, and one
//! tombstone per deleted chat (so jobs accepted before a delete are discarded).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Memories::Table)
                    .col(text(Memories::ChatId).primary_key())
                    .col(text(Memories::UserConfirmed))
                    .col(text(Memories::LlmInferred))
                    .col(text(Memories::GeneralSummary))
                    .col(integer(Memories::TokensUserConfirmed))
                    .col(integer(Memories::TokensLlmInferred))
                    .col(integer(Memories::TokensGeneralSummary))
                    .col(json_binary(Memories::State))
                    .col(big_integer(Memories::Version))
                    .col(uuid(Memories::LastJobId))
                    .col(big_integer(Memories::LastAppliedSeq))
                    .col(timestamp_with_time_zone(Memories::CreatedAt))
                    .col(timestamp_with_time_zone(Memories::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(uuid(Jobs::JobId).primary_key())
                    .col(text(Jobs::ChatId))
                    .col(big_integer(Jobs::StreamSeq))
                    .col(text(Jobs::State).check(Expr::col(Jobs::State).is_in([
                        "queued",
                        "running",
                        "succeeded",
                        "failed",
                    ])))
                    .col(integer(Jobs::Attempts))
                    .col(text_null(Jobs::Error))
                    .col(big_integer_null(Jobs::ResultingVersion))
                    .col(integer(Jobs::MessageCount))
                    .col(text_null(Jobs::IdempotencyKey))
                    .col(timestamp_with_time_zone(Jobs::AcceptedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        // GetMemory counts a chat's pending jobs; DeleteChat removes a chat's jobs.
        manager
            .create_index(
                Index::create()
                    .name("jobs_chat_id_state_idx")
                    .table(Jobs::Table)
                    .col(Jobs::ChatId)
                    .col(Jobs::State)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ChatTombstones::Table)
                    .col(text(ChatTombstones::ChatId).primary_key())
                    .col(big_integer(ChatTombstones::DeletedThroughSeq))
                    .col(timestamp_with_time_zone(ChatTombstones::DeletedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ChatTombstones::Table.into_iden(),
            Jobs::Table.into_iden(),
            Memories::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Memories {
    Table,
    ChatId,
    UserConfirmed,
    LlmInferred,
    GeneralSummary,
    TokensUserConfirmed,
    TokensLlmInferred,
    TokensGeneralSummary,
    State,
    Version,
    LastJobId,
    LastAppliedSeq,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    JobId,
    ChatId,
    StreamSeq,
    State,
    Attempts,
    Error,
    ResultingVersion,
    MessageCount,
    IdempotencyKey,
    AcceptedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChatTombstones {
    Table,
    ChatId,
    DeletedThroughSeq,
    DeletedAt,
}
