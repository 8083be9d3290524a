//! `memories`: the latest applied memory of each chat.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "memories")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub chat_id: String,
    pub user_confirmed: String,
    pub llm_inferred: String,
    pub general_summary: String,
    pub tokens_user_confirmed: i32,
    pub tokens_llm_inferred: i32,
    pub tokens_general_summary: i32,
    /// Opaque state of the summarizer agent.
    #[sea_orm(column_type = "JsonBinary")]
    pub state: Json,
    /// Starts at 1 and increments with every applied job (0 means "no memory").
    pub version: i64,
    pub last_job_id: Uuid,
    /// Stream sequence of the last applied job: older jobs are superseded.
    pub last_applied_seq: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
