//! `chat_tombstones`: deleted chats, so that jobs accepted before the delete and
//! still in the stream are discarded instead of resurrecting the memory.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_tombstones")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub chat_id: String,
    /// Jobs with `stream_seq <=` this are discarded.
    pub deleted_through_seq: i64,
    pub deleted_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
