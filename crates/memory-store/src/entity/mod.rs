//! sea-orm entities of the tables created by `chat-memory-migration`.
//!
//! They describe today's schema for queries only; the migrations own the DDL.

pub mod audit_log;
pub mod chat_owners;
pub mod chat_tombstones;
pub mod jobs;
pub mod memories;
