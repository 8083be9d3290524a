//! `chat_owners`: the tenant and user that first wrote each chat, and when it
//! was last written (the expiry sweep's clock).

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_owners")]
pub struct Model {
    /// The namespaced chat id (`<tenant>/<chat>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub chat_id: String,
    pub tenant: String,
    pub owner_user: String,
    pub created_at: DateTimeUtc,
    pub last_activity_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
