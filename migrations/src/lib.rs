//! Postgres schema of memory-store, as frozen history.
//!
//! # Layout
//! - [`Migrator`]: the ordered list of migrations; `chat-memory-migrate up` applies it.
//! - `m20261124_000001_create_memory_tables`: `memories`, `jobs`, `chat_tombstones`.
//! - `m20261201_000001_audit_and_owners`: the append-only `audit_log` and `chat_owners`.
//! - `m20261202_000001_audit_apply_action`: the `apply` audit action (written with each memory write).
//! - `m20261203_000001_jobs_applied_in_call`: which summarizer call applied a job (coalescing).
//! - `m20261204_000001_jobs_request_hash`: the digest of a keyed update (idempotency-key reuse).
//! - `m20261205_000001_audit_watch_actions`: the `watch` and `watch_end` audit actions.
//! - `m20261206_000001_record_accepted_function`: RecordAccepted in one round trip (plpgsql).
//! - `m20261206_000002_job_functions`: ClaimChat, BeginJobs and CommitJobs in one round trip each.
//! - `m20261206_000003_audit_partitions`: `audit_log` partitioned by day (retention drops days), the
//!   `retention` action, an index of ended jobs.
//! - `m20261206_000004_jobs_hot_updates`: `jobs` indexed only on columns a job never changes, so its
//!   state changes are heap-only (HOT) updates.
//! - `m20261206_000005_fewer_job_statements`: BeginJobs and CommitJobs with fewer statements, same
//!   decisions.
//! - `m20261206_000006_batched_acceptance`: RecordAccepted and ClaimChat for several jobs or chats
//!   in one round trip.
//! - `m20261206_000007_batched_begin`: BeginJobs for several chats in one round trip.
//! - `m20261206_000008_coarse_owner_activity`: an owner's activity time written at most once a
//!   minute per chat (a claim of an active chat writes nothing).
//! - `m20261206_000009_accept_audit_with_job`: BeginJobs stores an acceptance's audit row carried in
//!   its job message when the job was never registered.
//! - `m20261207_000001_batched_commit`: CommitJobs for several chats in one round trip.
//! - `m20261207_000002_commit_answers_for_the_cache`: a commit also answers the chat's owner,
//!   pending job count and highest registered stream sequence (a gateway caches the result).
//! - `m20261207_000003_key_reuse_at_begin`: BeginJobs keeps a keyed job's digest when it registers
//!   the job, and skips a message reusing a key for other messages (`key_reused`).
//!
//! Migrations never import entity types: an entity describes the schema of
//! *today*, a migration the change of *one day*, and must keep compiling (and
//! meaning the same) after the entities move on. memory-store only checks that
//! nothing is pending; it never migrates at start (one Job does, not every replica).

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_memory_tables;
mod m20261201_000001_audit_and_owners;
mod m20261202_000001_audit_apply_action;
mod m20261203_000001_jobs_applied_in_call;
mod m20261204_000001_jobs_request_hash;
mod m20261205_000001_audit_watch_actions;
mod m20261206_000001_record_accepted_function;
mod m20261206_000002_job_functions;
mod m20261206_000003_audit_partitions;
mod m20261206_000004_jobs_hot_updates;
mod m20261206_000005_fewer_job_statements;
mod m20261206_000006_batched_acceptance;
mod m20261206_000007_batched_begin;
mod m20261206_000008_coarse_owner_activity;
mod m20261206_000009_accept_audit_with_job;
mod m20261207_000001_batched_commit;
mod m20261207_000002_commit_answers_for_the_cache;
mod m20261207_000003_key_reuse_at_begin;
mod patch;

/// Every migration of memory-store, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_memory_tables::Migration),
            Box::new(m20261201_000001_audit_and_owners::Migration),
            Box::new(m20261202_000001_audit_apply_action::Migration),
            Box::new(m20261203_000001_jobs_applied_in_call::Migration),
            Box::new(m20261204_000001_jobs_request_hash::Migration),
            Box::new(m20261205_000001_audit_watch_actions::Migration),
            Box::new(m20261206_000001_record_accepted_function::Migration),
            Box::new(m20261206_000002_job_functions::Migration),
            Box::new(m20261206_000003_audit_partitions::Migration),
            Box::new(m20261206_000004_jobs_hot_updates::Migration),
            Box::new(m20261206_000005_fewer_job_statements::Migration),
            Box::new(m20261206_000006_batched_acceptance::Migration),
            Box::new(m20261206_000007_batched_begin::Migration),
            Box::new(m20261206_000008_coarse_owner_activity::Migration),
            Box::new(m20261206_000009_accept_audit_with_job::Migration),
            Box::new(m20261207_000001_batched_commit::Migration),
            Box::new(m20261207_000002_commit_answers_for_the_cache::Migration),
            Box::new(m20261207_000003_key_reuse_at_begin::Migration),
        ]
    }
}
