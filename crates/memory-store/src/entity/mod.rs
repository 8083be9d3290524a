//! sea-orm entities of the tables created by `chat-memory-migration`.
//!
//! They describe today's schema for queries only; the migrations own the DDL.

pub mod chat_tombstones;
pub mod jobs;
pub mod memories;
