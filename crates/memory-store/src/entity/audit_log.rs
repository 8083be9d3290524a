//! `audit_log`: one row per audited action; append-only (a trigger refuses
//! UPDATE and DELETE), partitioned by day; retention drops whole days. Never
//! holds message content.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    /// Chosen by the caller (the gateway's request id), so a retried write adds nothing.
    #[sea_orm(primary_key, auto_increment = false)]
    pub audit_id: Uuid,
    /// Part of the key: the table is partitioned by day of `at` (a retried row
    /// carries its original `at`, so it is still stored once).
    #[sea_orm(primary_key, auto_increment = false)]
    pub at: DateTimeUtc,
    pub tenant: String,
    pub user_id: String,
    /// One of `audit::ACTIONS` (a CHECK constraint).
    pub action: String,
    /// The public chat id (without the tenant namespace); empty when none.
    pub chat_id: String,
    pub job_id: String,
    /// gRPC status code name of the answer.
    pub outcome: String,
    pub request_id: String,
    pub trace_id: String,
    pub detail: String,
}

impl ActiveModelBehavior for ActiveModel {}
