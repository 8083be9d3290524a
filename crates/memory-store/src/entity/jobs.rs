//! `jobs`: one row per accepted update job and its lifecycle.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: Uuid,
    pub chat_id: String,
    pub stream_seq: i64,
    /// `queued`, `running`, `succeeded` or `failed` (a CHECK constraint); see
    /// [`crate::domain::JobState`].
    pub state: String,
    pub attempts: i32,
    pub error: Option<String>,
    pub resulting_version: Option<i64>,
    pub message_count: i32,
    pub idempotency_key: Option<String>,
    pub accepted_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The summarizer call that applied the job (jobs coalesced into one call share it).
    pub applied_in_call: Option<Uuid>,
    /// Digest of the messages of an update that came with an idempotency key.
    pub request_hash: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
