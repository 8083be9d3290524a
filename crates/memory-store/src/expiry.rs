//! Short-term memory: chats nobody wrote to for `expiry.inactive_after_secs`
//! are purged (memory, jobs, owner) by a background sweep, each with one
//! `expire` audit row written in the same transaction.
//!
//! Every replica may sweep: a chat is re-checked under its lock, so two
//! replicas never expire (or audit) the same chat twice.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use chat_memory_proto::namespace::TenantChatId;

use service_kit::entry::cause_chain;

use crate::{
    audit::{self, AuditRecord},
    db::begin_chat,
    domain::ChatId,
    entity::{chat_owners, jobs, memories},
    error::StoreError,
    memories::purge_in,
    settings::ExpirySettings,
};

/// Chats one sweep pass looks at, at most (the next pass continues).
const BATCH: u64 = 100;

/// Sweeps every `sweep_interval_ms` until `cancel` fires.
pub async fn run(db: DatabaseConnection, settings: ExpirySettings, cancel: CancellationToken) {
    if settings.inactive_after_secs == 0 {
        tracing::info!("chat expiry disabled");
        return;
    }
    let interval = Duration::from_millis(settings.sweep_interval_ms);
    crate::db::every(interval, &cancel, || async {
        match sweep_once(&db, &settings).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(chats = n, "expired inactive chats"),
            Err(e) => tracing::warn!(error = %cause_chain(&e), "expiry sweep failed"),
        }
    })
    .await;
}

/// One pass: expires up to [`BATCH`] inactive chats; returns how many.
///
/// # Errors
/// Database errors (the next pass retries).
pub async fn sweep_once(
    db: &DatabaseConnection,
    settings: &ExpirySettings,
) -> Result<usize, StoreError> {
    let Some(cutoff) = settings
        .inactive_after()
        .and_then(|ttl| Utc::now().checked_sub_signed(ttl))
    else {
        // Expiry off, or a chat lives longer than time goes back.
        return Ok(0);
    };
    let stale = chat_owners::Entity::find()
        .filter(chat_owners::COLUMN.last_activity_at.lt(cutoff))
        .order_by_asc(chat_owners::Column::LastActivityAt)
        .limit(BATCH)
        .all(db)
        .await?;
    let mut expired = 0;
    for owner in stale {
        if expire_chat(db, &owner.chat_id, cutoff).await? {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Expires one chat if it is still inactive under its lock.
async fn expire_chat(
    db: &DatabaseConnection,
    chat_id: &str,
    cutoff: chrono::DateTime<Utc>,
) -> Result<bool, StoreError> {
    let chat = ChatId::parse(chat_id.to_owned())?;
    let txn = begin_chat(db, &chat).await?;
    let Some(owner) = chat_owners::Entity::find_by_id(chat_id).one(&txn).await? else {
        txn.commit().await?;
        return Ok(false);
    };
    // The stored time may be up to a minute behind (a claim rewrites it only
    // when older than that: migration `m20261206_000008_coarse_owner_activity`);
    // the chat's newest accepted job says when it was last written to. Its
    // last sequence bounds what an expiry discards.
    let (newest_job, last_job_seq): (Option<chrono::DateTime<Utc>>, Option<i64>) =
        jobs::Entity::find()
            .select_only()
            .column_as(jobs::Column::AcceptedAt.max(), "newest")
            .column_as(jobs::Column::StreamSeq.max(), "max_seq")
            .filter(jobs::Column::ChatId.eq(chat_id))
            .into_tuple()
            .one(&txn)
            .await?
            .unwrap_or_default();
    let active_at = newest_job.map_or(owner.last_activity_at, |at| at.max(owner.last_activity_at));
    if active_at >= cutoff {
        if active_at > owner.last_activity_at {
            // Keeps the chat out of the next passes' candidates.
            chat_owners::Entity::update_many()
                .col_expr(chat_owners::Column::LastActivityAt, Expr::value(active_at))
                .filter(chat_owners::COLUMN.chat_id.eq(chat_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        return Ok(false);
    }
    // Jobs up to the chat's last known sequence are discarded if still queued.
    let applied_seq = memories::Entity::find_by_id(chat_id)
        .one(&txn)
        .await?
        .map_or(0, |m| m.last_applied_seq);
    let through = last_job_seq.unwrap_or(0).max(applied_seq);
    let deleted = purge_in(&txn, &chat, through).await?;
    let namespaced = TenantChatId::parse(chat_id).ok();
    let public_chat = namespaced.as_ref().map_or(chat_id, TenantChatId::chat);
    let audit_id = Uuid::now_v7();
    audit::record(
        &txn,
        AuditRecord {
            audit_id,
            at: Utc::now(),
            tenant: owner.tenant,
            user: owner.owner_user,
            action: "expire".into(),
            chat_id: public_chat.to_owned(),
            job_id: String::new(),
            outcome: "OK".into(),
            request_id: audit_id.to_string(),
            trace_id: String::new(),
            detail: format!(
                "inactive since {}; memory_deleted={} jobs_removed={}",
                active_at.to_rfc3339(),
                deleted.memory_deleted,
                deleted.jobs_removed
            ),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(true)
}
