//! Chat memories: the conditional commit of a job's result, reads, and deletes.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, FromQueryResult, QueryFilter, Statement,
};

use chat_memory_proto::namespace::TenantChatId;

use crate::{
    access::{self, Access},
    db::begin_chat,
    domain::{ChatId, Commit, CommitBatch, Committed, CommittedJob, Deleted, MemoryView},
    entity::{chat_owners, chat_tombstones, jobs, memories},
    error::StoreError,
    jobs::SUPERSEDED_ERROR,
    rows::{CommitRow, MemoryRead},
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
            trace_id: None,
        },
    )
    .await
}

/// [`commit_job`] for several jobs of one chat folded into one summarizer call:
/// one round trip (`chat_memory_commit_jobs`, migration m20261206_000002,
/// through `chat_memory_commit_jobs_viewed`, m20261207_000002, which also
/// answers the owner and pending count the gateway's cache needs)
/// under the chat's lock writes the memory once, marks every job succeeded
/// with the same version and `applied_in_call`, and appends their `apply`
/// audit rows, all in one transaction. All or nothing: if the jobs do not all
/// stand where `begin_jobs` left them (one was applied, superseded or deleted
/// meanwhile), nothing is written and the answer is `VersionConflict` (begin
/// again); when it is true of every job, the answer says which.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for an empty batch or a job of another chat.
pub async fn commit_jobs(db: &DatabaseConnection, c: CommitBatch) -> Result<Committed, StoreError> {
    if c.jobs.is_empty() {
        return Err(StoreError::invalid("jobs", "at least one job is required"));
    }
    let (tenant, public_chat) = audit_names(&c.chat_id);
    let jobs = committed_jobs_json(&c);
    let content = c.content;
    let trace_id = c
        .trace_id
        .unwrap_or_else(service_kit::telemetry::propagation::current_trace_id);
    CommitRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT * FROM chat_memory_commit_jobs_viewed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        [
            c.chat_id.as_str().into(),
            jobs.into(),
            c.expected_version.into(),
            content.user_confirmed.into(),
            content.llm_inferred.into(),
            content.general_summary.into(),
            content.tokens.user_confirmed.into(),
            content.tokens.llm_inferred.into(),
            content.tokens.general_summary.into(),
            content.state.into(),
            c.call_id.into(),
            SUPERSEDED_ERROR.into(),
            tenant.into(),
            public_chat.into(),
            trace_id.into(),
        ],
    ))
    .one(db)
    .await?
    .ok_or_else(|| StoreError::CorruptRow {
        table: "memories",
        reason: "chat_memory_commit_jobs_viewed returned no row".to_owned(),
    })?
    .into_committed()
}

/// [`commit_jobs`] for several chats in one round trip and one transaction
/// (`chat_memory_commit_jobs_batch`, the chats locked in one order): one
/// answer per commit, in order. A commit refused alone
/// ([`StoreError::InvalidArgument`], a job of another chat) wrote nothing; the
/// others are written. A lone commit takes the single function.
///
/// # Errors
/// The batch's own failure (nothing of it written).
pub async fn commit_jobs_batch(
    db: &DatabaseConnection,
    mut commits: Vec<CommitBatch>,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let n = commits.len();
    if n <= 1 {
        let Some(commit) = commits.pop() else {
            return Ok(Vec::new());
        };
        return match commit_jobs(db, commit).await {
            Ok(committed) => Ok(vec![Ok(committed)]),
            Err(e @ StoreError::InvalidArgument { .. }) => Ok(vec![Err(e)]),
            Err(e) => Err(e),
        };
    }
    if let Some(i) = commits.iter().position(|c| c.jobs.is_empty()) {
        return Err(StoreError::invalid(
            "jobs",
            format!("commits[{i}]: at least one job is required"),
        ));
    }
    let current_trace = service_kit::telemetry::propagation::current_trace_id();
    let batch: Vec<serde_json::Value> = commits
        .into_iter()
        .map(|c| {
            let jobs = committed_jobs_json(&c);
            let (tenant, public_chat) = audit_names(&c.chat_id);
            serde_json::json!({
                "chat": c.chat_id.as_str(),
                "jobs": jobs,
                "expected": c.expected_version,
                "user_confirmed": c.content.user_confirmed,
                "llm_inferred": c.content.llm_inferred,
                "general_summary": c.content.general_summary,
                "tokens_user_confirmed": c.content.tokens.user_confirmed,
                "tokens_llm_inferred": c.content.tokens.llm_inferred,
                "tokens_general_summary": c.content.tokens.general_summary,
                "state": c.content.state,
                "call": c.call_id,
                "tenant": tenant,
                "public_chat": public_chat,
                "trace_id": c.trace_id.as_deref().unwrap_or(&current_trace),
            })
        })
        .collect();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT * FROM chat_memory_commit_jobs_batch_viewed($1, $2) ORDER BY idx",
            [
                serde_json::Value::Array(batch).into(),
                SUPERSEDED_ERROR.into(),
            ],
        ))
        .await?;
    crate::rows::one_per_item(rows, n, "memories", "chat_memory_commit_jobs_batch_viewed")?
        .iter()
        .map(|row| CommitRow::from_query_result(row, "").map_err(StoreError::from))
        .map(|row| match row?.into_committed() {
            Err(e @ StoreError::InvalidArgument { .. }) => Ok(Err(e)),
            other => other.map(Ok),
        })
        .collect()
}

/// The tenant and the public chat id an `apply` audit row carries (chat ids
/// are `<tenant>/<chat>`, namespaced by the gateway).
fn audit_names(chat_id: &ChatId) -> (String, String) {
    TenantChatId::parse(chat_id.as_str()).ok().map_or_else(
        || (String::new(), chat_id.as_str().to_owned()),
        |id| (id.tenant().to_owned(), id.chat().to_owned()),
    )
}

/// A commit's jobs as `chat_memory_commit_jobs` takes them, each with the id
/// of its `apply` audit row.
fn committed_jobs_json(c: &CommitBatch) -> serde_json::Value {
    c.jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "job": j.job_id.uuid(),
                "seq": j.stream_seq.get(),
                "attempt": j.attempt,
                "audit_id": uuid::Uuid::new_v5(&APPLY_AUDIT_NAMESPACE, j.job_id.uuid().as_bytes()),
            })
        })
        .collect()
}

/// Namespace of `apply` audit ids: UUIDv5(job id), so a row exists once per job.
const APPLY_AUDIT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8d2c_41a7_5b3e_4f19_a0c6_7e21_9b44_d308);

/// A memory, its owner and its pending job count (a `WHERE` on `m.chat_id` follows).
const MEMORY_READ: &str = "SELECT m.chat_id, m.user_confirmed, m.llm_inferred, m.general_summary, \
        m.tokens_user_confirmed, m.tokens_llm_inferred, m.tokens_general_summary, \
        m.state, m.version, m.last_job_id, m.updated_at, o.owner_user, \
        o.last_activity_at AS owner_active_at, \
        (SELECT count(*) FROM jobs j \
          WHERE j.chat_id = m.chat_id AND j.stream_seq > m.last_applied_seq \
            AND j.state IN ('queued', 'running')) AS pending_jobs \
   FROM memories m LEFT JOIN chat_owners o ON o.chat_id = m.chat_id";

/// The chat's memory and its pending job count, read with its owner in one
/// statement (a read is the hot path: one round trip, no transaction).
///
/// Jobs apply in stream order, so a pending job is after the memory's
/// `last_applied_seq`: the count reads only those (`jobs_chat_seq_idx`), not
/// the chat's whole job history.
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
        format!("{MEMORY_READ} WHERE m.chat_id = $1"),
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
    Ok(row.into())
}

/// [`get_memory`] for several reads in one statement: one answer per read, in
/// order, each exactly what [`get_memory`] answers it.
///
/// # Errors
/// The database's error, which fails every read (an answer per read is
/// [`StoreError::NotFound`] or [`StoreError::Absent`] as for [`get_memory`]).
pub async fn get_memories(
    db: &DatabaseConnection,
    reads: &[(ChatId, Option<Access>)],
) -> Result<Vec<Result<MemoryView, StoreError>>, StoreError> {
    if let [(chat, access)] = reads {
        // A lone read: get_memory's own statement.
        return match get_memory(db, chat, access.as_ref()).await {
            Err(e @ (StoreError::NotFound(_) | StoreError::Absent(_))) => Ok(vec![Err(e)]),
            Err(other) => Err(other),
            Ok(memory) => Ok(vec![Ok(memory)]),
        };
    }
    // Chats outside the caller's namespace are never looked up.
    let wanted: Vec<String> = reads
        .iter()
        .filter(|(chat, access)| {
            access
                .as_ref()
                .is_none_or(|a| a.in_namespace(chat.as_str()))
        })
        .map(|(chat, _)| chat.as_str().to_owned())
        .collect();
    let mut found: HashMap<String, MemoryRead> = HashMap::with_capacity(wanted.len());
    if let Some(last) = wanted.last().cloned() {
        // `IN` with a power-of-two count of parameters, padded with the last
        // chat: a handful of statements, each planned once (an `= ANY($1)`
        // array is estimated at 10 rows in its generic plan, so Postgres
        // would plan every batch anew).
        let arity = wanted.len().next_power_of_two();
        let mut values: Vec<sea_orm::Value> = wanted.into_iter().map(Into::into).collect();
        values.resize(arity, last.into());
        let placeholders = (1..=arity)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = MemoryRead::find_by_statement(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("{MEMORY_READ} WHERE m.chat_id IN ({placeholders})"),
            values,
        ))
        .all(db)
        .await?;
        found.extend(rows.into_iter().map(|row| (row.chat_id.clone(), row)));
    }
    Ok(reads
        .iter()
        .map(|(chat, access)| {
            if access
                .as_ref()
                .is_some_and(|a| !a.in_namespace(chat.as_str()))
            {
                return Err(StoreError::NotFound("memory"));
            }
            let row = found
                .get(chat.as_str())
                .ok_or(StoreError::Absent("memory"))?;
            if let Some(access) = access
                && !access.may_use_owner(row.owner_user.as_deref())
            {
                return Err(StoreError::NotFound("memory"));
            }
            Ok(row.clone().into())
        })
        .collect())
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
