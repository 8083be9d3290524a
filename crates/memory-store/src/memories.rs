//! Chat memories: the conditional commit of a job's result, reads, and deletes.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, DatabaseConnection, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter,
};

use crate::{
    access::{self, Access},
    db::deleted_through,
    domain::{
        ChatId, Commit, CommitOutcome, Committed, Deleted, JobState, MemoryContent, MemoryView,
        TokenCounts,
    },
    entity::{chat_owners, chat_tombstones, jobs, memories},
    error::StoreError,
    jobs::{JobWrite, NewJobRow, begin_chat, find_job, write_job},
};

/// Writes a job's new memory and marks the job succeeded, in one transaction,
/// unless the chat was deleted, the job already applied, a later job already
/// applied, or the memory changed since the worker read it.
pub async fn commit_job(db: &DatabaseConnection, c: Commit) -> Result<Committed, StoreError> {
    let txn = begin_chat(db, &c.chat_id).await?;
    let memory = memories::Entity::find_by_id(c.chat_id.as_str())
        .one(&txn)
        .await?;
    let current_version = memory.as_ref().map_or(0, |m| m.version);
    let skip = |outcome| Committed {
        outcome,
        version: current_version,
    };

    if deleted_through(&txn, &c.chat_id, c.stream_seq).await? {
        txn.commit().await?;
        return Ok(skip(CommitOutcome::ChatDeleted));
    }
    let job = find_job(&txn, c.job_id, &c.chat_id).await?;
    if let Some(row) = &job
        && JobState::from_db(&row.state)? == JobState::Succeeded
    {
        txn.commit().await?;
        return Ok(skip(CommitOutcome::AlreadyApplied));
    }
    let new_row = NewJobRow {
        job_id: c.job_id,
        chat_id: &c.chat_id,
        stream_seq: c.stream_seq,
        message_count: 0,
        accepted_at: Utc::now(),
    };
    if memory
        .as_ref()
        .is_some_and(|m| m.last_applied_seq >= c.stream_seq.get())
    {
        write_job(&txn, job, new_row, JobWrite::superseded(c.attempt)).await?;
        txn.commit().await?;
        return Ok(skip(CommitOutcome::Superseded));
    }
    if current_version != c.expected_version {
        txn.commit().await?;
        return Ok(skip(CommitOutcome::VersionConflict));
    }

    let now = Utc::now();
    let version = current_version + 1;
    let content = c.content;
    let mut row = match memory {
        Some(existing) => existing.into(),
        None => memories::ActiveModel {
            chat_id: Set(c.chat_id.as_str().to_owned()),
            created_at: Set(now),
            ..Default::default()
        },
    };
    row.user_confirmed = Set(content.user_confirmed);
    row.llm_inferred = Set(content.llm_inferred);
    row.general_summary = Set(content.general_summary);
    row.tokens_user_confirmed = Set(content.tokens.user_confirmed);
    row.tokens_llm_inferred = Set(content.tokens.llm_inferred);
    row.tokens_general_summary = Set(content.tokens.general_summary);
    row.state = Set(content.state);
    row.version = Set(version);
    row.last_job_id = Set(c.job_id.uuid());
    row.last_applied_seq = Set(c.stream_seq.get());
    row.updated_at = Set(now);
    if current_version == 0 {
        memories::Entity::insert(row)
            .exec_without_returning(&txn)
            .await?;
    } else {
        row.update(&txn).await?;
    }
    let succeeded = JobWrite {
        state: JobState::Succeeded,
        attempts: c.attempt,
        error: Some(None),
        resulting_version: Some(version),
    };
    write_job(&txn, job, new_row, succeeded).await?;
    // The audit row of the write, in the same transaction: memory, job state and
    // audit commit together or not at all.
    crate::audit::record(&txn, apply_record(&c.chat_id, c.job_id.uuid(), version)).await?;
    txn.commit().await?;
    Ok(Committed {
        outcome: CommitOutcome::Applied,
        version,
    })
}

/// Namespace of `apply` audit ids: UUIDv5(job id), so a row exists once per job.
const APPLY_AUDIT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8d2c_41a7_5b3e_4f19_a0c6_7e21_9b44_d308);

/// The `apply` audit row of a committed job. Chat ids are `<tenant>/<chat>`
/// (namespaced by the gateway); rows carry the tenant and the public chat id.
fn apply_record(chat_id: &ChatId, job_id: uuid::Uuid, version: i64) -> crate::audit::AuditRecord {
    let (tenant, chat) = chat_id
        .as_str()
        .split_once('/')
        .unwrap_or(("", chat_id.as_str()));
    let trace_id = service_kit::telemetry::propagation::current_trace_id();
    crate::audit::AuditRecord {
        audit_id: uuid::Uuid::new_v5(&APPLY_AUDIT_NAMESPACE, job_id.as_bytes()),
        at: Utc::now(),
        tenant: tenant.to_owned(),
        user: "summarizer-worker".to_owned(),
        action: "apply".to_owned(),
        chat_id: chat.to_owned(),
        job_id: job_id.to_string(),
        outcome: "OK".to_owned(),
        request_id: job_id.to_string(),
        trace_id,
        detail: format!("version {version}"),
    }
}

/// The chat's memory and its pending job count.
///
/// # Errors
/// [`StoreError::NotFound`] when the chat has no memory, or `access` may not see it.
pub async fn get_memory(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    access: Option<&Access>,
) -> Result<MemoryView, StoreError> {
    access::check(db, chat_id.as_str(), access, "memory").await?;
    let row = memories::Entity::find_by_id(chat_id.as_str())
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("memory"))?;
    let pending_jobs = jobs::Entity::find()
        .filter(jobs::COLUMN.chat_id.eq(chat_id.as_str()))
        .filter(
            jobs::COLUMN
                .state
                .is_in([JobState::Queued.as_str(), JobState::Running.as_str()]),
        )
        .count(db)
        .await?;
    Ok(MemoryView {
        chat_id: row.chat_id.clone(),
        version: row.version,
        updated_at: row.updated_at,
        last_applied_job_id: row.last_job_id,
        pending_jobs,
        content: content_of(row),
    })
}

/// Removes the chat's memory, job rows and owner, and records a tombstone so
/// jobs with `stream_seq <= through_seq` still in the stream are discarded
/// (the worker acks them, and the work-queue stream then drops their messages).
///
/// # Errors
/// [`StoreError::NotFound`] when `access` may not see the chat.
pub async fn delete_chat(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    through_seq: i64,
    access: Option<&Access>,
) -> Result<Deleted, StoreError> {
    let txn = begin_chat(db, chat_id).await?;
    access::check(&txn, chat_id.as_str(), access, "memory").await?;
    let deleted = purge_in(&txn, chat_id, through_seq).await?;
    txn.commit().await?;
    Ok(deleted)
}

/// [`delete_chat`] inside a transaction holding the chat's lock (also used by expiry).
pub(crate) async fn purge_in(
    txn: &DatabaseTransaction,
    chat_id: &ChatId,
    through_seq: i64,
) -> Result<Deleted, StoreError> {
    let memory_deleted = memories::Entity::delete_by_id(chat_id.as_str())
        .exec(txn)
        .await?
        .rows_affected
        > 0;
    let jobs_removed = jobs::Entity::delete_many()
        .filter(jobs::COLUMN.chat_id.eq(chat_id.as_str()))
        .exec(txn)
        .await?
        .rows_affected;
    chat_owners::Entity::delete_by_id(chat_id.as_str())
        .exec(txn)
        .await?;
    let now = Utc::now();
    match chat_tombstones::Entity::find_by_id(chat_id.as_str())
        .one(txn)
        .await?
    {
        Some(existing) => {
            let through = existing.deleted_through_seq.max(through_seq);
            let mut row: chat_tombstones::ActiveModel = existing.into();
            row.deleted_through_seq = Set(through);
            row.deleted_at = Set(now);
            row.update(txn).await?;
        }
        None => {
            let row = chat_tombstones::ActiveModel {
                chat_id: Set(chat_id.as_str().to_owned()),
                deleted_through_seq: Set(through_seq),
                deleted_at: Set(now),
            };
            chat_tombstones::Entity::insert(row)
                .exec_without_returning(txn)
                .await?;
        }
    }
    Ok(Deleted {
        memory_deleted,
        jobs_removed,
    })
}

/// The stored content of a memory row.
pub(crate) fn content_of(row: memories::Model) -> MemoryContent {
    MemoryContent {
        user_confirmed: row.user_confirmed,
        llm_inferred: row.llm_inferred,
        general_summary: row.general_summary,
        tokens: TokenCounts {
            user_confirmed: row.tokens_user_confirmed,
            llm_inferred: row.tokens_llm_inferred,
            general_summary: row.tokens_general_summary,
        },
        state: row.state,
    }
}
