//! Chat memories: the conditional commit of a job's result, reads, and deletes.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, DatabaseConnection, DatabaseTransaction, DbBackend,
    EntityTrait, FromQueryResult, QueryFilter, Statement,
};

use crate::{
    access::{self, Access},
    domain::{
        ChatId, Commit, CommitBatch, CommitOutcome, Committed, CommittedJob, Deleted, JobState,
        MemoryContent, MemoryView, TokenCounts,
    },
    entity::{chat_owners, chat_tombstones, jobs, memories},
    error::StoreError,
    jobs::{JobWrite, NewJobRow, begin_chat, find_jobs, tombstone_through, write_job},
};

/// Writes a job's new memory and marks the job succeeded, in one transaction,
/// unless the chat was deleted, the job already applied, a later job already
/// applied, or the memory changed since the worker read it.
pub async fn commit_job(db: &DatabaseConnection, c: Commit) -> Result<Committed, StoreError> {
    commit_jobs(
        db,
        CommitBatch {
            chat_id: c.chat_id,
            jobs: vec![CommittedJob {
                job_id: c.job_id,
                stream_seq: c.stream_seq,
                attempt: c.attempt,
            }],
            expected_version: c.expected_version,
            content: c.content,
            // A call that applied this job alone.
            call_id: c.job_id.uuid(),
        },
    )
    .await
}

/// [`commit_job`] for several jobs of one chat folded into one summarizer call:
/// one transaction writes the memory once and marks every job succeeded with
/// the same version and `applied_in_call`. All or nothing: if the jobs do not
/// all stand where `begin_jobs` left them (one was applied, superseded or
/// deleted meanwhile), nothing is written and the answer is `VersionConflict`
/// (begin again); when it is true of every job, the answer says which.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for an empty batch or a job of another chat.
pub async fn commit_jobs(db: &DatabaseConnection, c: CommitBatch) -> Result<Committed, StoreError> {
    let (Some(first), Some(last)) = (c.jobs.first().copied(), c.jobs.last().copied()) else {
        return Err(StoreError::invalid("jobs", "at least one job is required"));
    };
    let txn = begin_chat(db, &c.chat_id).await?;
    let memory = memories::Entity::find_by_id(c.chat_id.as_str())
        .one(&txn)
        .await?;
    let current_version = memory.as_ref().map_or(0, |m| m.version);
    let last_applied = memory.as_ref().map_or(0, |m| m.last_applied_seq);
    let skip = |outcome| Committed {
        outcome,
        version: current_version,
        updated_at: None,
    };
    let n = c.jobs.len();
    let through = tombstone_through(&txn, &c.chat_id).await?;
    let deleted = c
        .jobs
        .iter()
        .filter(|j| through.is_some_and(|t| t >= j.stream_seq.get()))
        .count();
    if deleted > 0 {
        txn.commit().await?;
        let outcome = if deleted == n {
            CommitOutcome::ChatDeleted
        } else {
            CommitOutcome::VersionConflict
        };
        return Ok(skip(outcome));
    }
    let mut rows = find_jobs(&txn, c.jobs.iter().map(|j| j.job_id), &c.chat_id).await?;
    let mut succeeded = 0;
    for row in rows.values() {
        if JobState::from_db(&row.state)? == JobState::Succeeded {
            succeeded += 1;
        }
    }
    if succeeded > 0 {
        txn.commit().await?;
        let outcome = if succeeded == n {
            CommitOutcome::AlreadyApplied
        } else {
            CommitOutcome::VersionConflict
        };
        return Ok(skip(outcome));
    }
    let superseded = c
        .jobs
        .iter()
        .filter(|j| last_applied >= j.stream_seq.get())
        .count();
    if superseded == n {
        for j in &c.jobs {
            let row = rows.remove(&j.job_id.uuid());
            write_job(
                &txn,
                row,
                new_row(&c.chat_id, j),
                JobWrite::superseded(j.attempt),
            )
            .await?;
        }
        txn.commit().await?;
        return Ok(skip(CommitOutcome::Superseded));
    }
    if superseded > 0 || current_version != c.expected_version {
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
    row.last_job_id = Set(last.job_id.uuid());
    row.last_applied_seq = Set(last.stream_seq.get().max(first.stream_seq.get()));
    row.updated_at = Set(now);
    if current_version == 0 {
        memories::Entity::insert(row)
            .exec_without_returning(&txn)
            .await?;
    } else {
        row.update(&txn).await?;
    }
    for j in &c.jobs {
        let succeeded = JobWrite {
            state: JobState::Succeeded,
            attempts: j.attempt,
            error: Some(None),
            resulting_version: Some(version),
            applied_in_call: Some(c.call_id),
        };
        let row = rows.remove(&j.job_id.uuid());
        write_job(&txn, row, new_row(&c.chat_id, j), succeeded).await?;
    }
    // The audit rows of the write, in the same transaction: memory, job states and
    // audit commit together or not at all.
    crate::audit::record_all(
        &txn,
        c.jobs
            .iter()
            .map(|j| apply_record(&c.chat_id, j.job_id.uuid(), version))
            .collect(),
    )
    .await?;
    txn.commit().await?;
    Ok(Committed {
        outcome: CommitOutcome::Applied,
        version,
        updated_at: Some(now),
    })
}

/// The row of a job the worker saw before the gateway's RecordAccepted landed.
fn new_row<'a>(chat_id: &'a ChatId, j: &CommittedJob) -> NewJobRow<'a> {
    NewJobRow {
        job_id: j.job_id,
        chat_id,
        stream_seq: j.stream_seq,
        message_count: 0,
        accepted_at: Utc::now(),
    }
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

/// The chat's memory, its owner and its pending job count: one row.
#[derive(Debug, sea_orm::FromQueryResult)]
struct MemoryRead {
    chat_id: String,
    user_confirmed: String,
    llm_inferred: String,
    general_summary: String,
    tokens_user_confirmed: i32,
    tokens_llm_inferred: i32,
    tokens_general_summary: i32,
    state: serde_json::Value,
    version: i64,
    last_job_id: uuid::Uuid,
    updated_at: chrono::DateTime<Utc>,
    owner_user: Option<String>,
    pending_jobs: i64,
}

/// The chat's memory and its pending job count, read with its owner in one
/// statement (a read is the hot path: one round trip, no transaction).
///
/// # Errors
/// [`StoreError::NotFound`] when the chat has no memory, or `access` may not see it.
pub async fn get_memory(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    access: Option<&Access>,
) -> Result<MemoryView, StoreError> {
    if access.is_some_and(|a| !a.in_namespace(chat_id.as_str())) {
        return Err(StoreError::NotFound("memory"));
    }
    let row = MemoryRead::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT m.chat_id, m.user_confirmed, m.llm_inferred, m.general_summary, \
                m.tokens_user_confirmed, m.tokens_llm_inferred, m.tokens_general_summary, \
                m.state, m.version, m.last_job_id, m.updated_at, o.owner_user, \
                (SELECT count(*) FROM jobs j \
                  WHERE j.chat_id = m.chat_id AND j.state IN ('queued', 'running')) AS pending_jobs \
           FROM memories m LEFT JOIN chat_owners o ON o.chat_id = m.chat_id \
          WHERE m.chat_id = $1",
        [chat_id.as_str().into()],
    ))
    .one(db)
    .await?
    .ok_or(StoreError::Absent("memory"))?;
    // Another tenant's (or user's) chat is reported exactly like a missing one.
    if let Some(access) = access
        && !access.may_use_owner(row.owner_user.as_deref())
    {
        return Err(StoreError::NotFound("memory"));
    }
    Ok(MemoryView {
        chat_id: row.chat_id,
        version: row.version,
        updated_at: row.updated_at,
        last_applied_job_id: row.last_job_id,
        pending_jobs: u64::try_from(row.pending_jobs).unwrap_or(0),
        owner_user: row.owner_user.unwrap_or_default(),
        content: MemoryContent {
            user_confirmed: row.user_confirmed,
            llm_inferred: row.llm_inferred,
            general_summary: row.general_summary,
            tokens: TokenCounts {
                user_confirmed: row.tokens_user_confirmed,
                llm_inferred: row.tokens_llm_inferred,
                general_summary: row.tokens_general_summary,
            },
            state: row.state,
        },
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
