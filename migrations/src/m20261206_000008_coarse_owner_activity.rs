//! An owner's activity time written at most once a minute per chat.
//!
//! `chat_memory_claim` (called by ClaimChat(s) and for each job BeginJobs
//! decides) rewrote `chat_owners.last_activity_at` on every call: an indexed
//! column, so every update of a chat cost a new row version and two index
//! entries, twice (the gateway's claim and the worker's begin), and turned the
//! gateway's claim of a chat it already owned into a write with a durable
//! commit. Now the time is written only when the stored one is older than
//! [`ACTIVITY_GRAIN`] (60 s): a claim of a chat active within the minute reads
//! and writes nothing, so its transaction has no commit record to flush.
//!
//! The stored time may be up to a minute older than the chat's last update.
//! The expiry sweep (memory-store `expiry.rs`) uses it only to find
//! candidates; under the chat's lock it takes the chat's activity as the later
//! of that time and its newest job's acceptance, so a chat is never expired
//! earlier than `expiry.inactive_after_secs` after its last accepted update.
//!
//! The signature is unchanged, so the functions that call it (migrations
//! 000005, 000006, 000007) call the new body. `down` restores the old body.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// How stale a stored activity time may be before a claim rewrites it.
const ACTIVITY_GRAIN: &str = "60 seconds";

fn create() -> String {
    format!(
        r#"
CREATE OR REPLACE FUNCTION chat_memory_claim(
    p_chat text, p_tenant text, p_user text, p_acts boolean)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    known_owner text;
    active_at timestamptz;
BEGIN
    SELECT o.owner_user, o.last_activity_at INTO known_owner, active_at
      FROM chat_owners o WHERE o.chat_id = p_chat;
    IF NOT FOUND THEN
        INSERT INTO chat_owners (chat_id, tenant, owner_user, created_at, last_activity_at)
        VALUES (p_chat, p_tenant, p_user, clock_timestamp(), clock_timestamp());
        RETURN 'claimed';
    END IF;
    IF NOT p_acts AND known_owner <> p_user THEN
        RETURN 'denied';
    END IF;
    IF active_at < clock_timestamp() - interval '{ACTIVITY_GRAIN}' THEN
        UPDATE chat_owners o SET last_activity_at = clock_timestamp() WHERE o.chat_id = p_chat;
    END IF;
    RETURN 'owner';
END
$$;
"#
    )
}

/// `chat_memory_claim` as `m20261206_000002_job_functions` created it, taken
/// from that migration's SQL (its other functions were replaced since).
fn restore() -> Result<&'static str, DbErr> {
    let sql = super::m20261206_000002_job_functions::CREATE;
    let start = sql
        .find("CREATE OR REPLACE FUNCTION chat_memory_claim(")
        .ok_or_else(|| DbErr::Custom("migration 000002 defines no chat_memory_claim".into()))?;
    let end = sql[start..]
        .find("$$;")
        .map(|e| start + e + "$$;".len())
        .ok_or_else(|| DbErr::Custom("migration 000002's chat_memory_claim has no end".into()))?;
    Ok(&sql[start..end])
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&create())
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(restore()?)
            .await?;
        Ok(())
    }
}
