//! The job lifecycle: accepted (gateway), begun, failed (worker), and status reads.
//!
//! Every write locks the chat first (see [`crate::db::lock_chat`]), so the
//! read-then-write sequences below cannot interleave with another write of the
//! same chat. RecordAccepted and BeginJobs are one round trip each: plpgsql
//! functions (migrations m20261206_000001 and m20261206_000002) run their
//! steps under that lock.

use chrono::Utc;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    FromQueryResult, Statement,
};

use crate::{
    access::{self, Access},
    db::{begin_chat, deleted_through},
    domain::{AcceptedJob, Begin, Begun, ChatId, Delivery, Failure, JobId, JobState, JobView},
    entity::jobs,
    error::StoreError,
    rows::{BeginRow, one_per_item},
};

/// The error recorded on a job whose requester does not own the chat.
pub const NOT_OWNER_ERROR: &str = "rejected: the chat belongs to another user";

/// The error recorded on a job that a later job of its chat overtook.
pub const SUPERSEDED_ERROR: &str = "superseded by a later update";

/// Records a job the gateway accepted, as `queued`. Never changes a known job.
///
/// What [`record_accepted`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The row was inserted now.
    pub inserted: bool,
    /// The job was known from another stream message: a repeated request.
    pub earlier_acceptance: bool,
}

/// Returns whether the row was inserted, and whether the job id was already
/// accepted as another stream message. A job of a chat deleted after it was
/// accepted is not recorded (it would stay "pending" forever).
pub async fn record_accepted(
    db: &DatabaseConnection,
    job: AcceptedJob,
) -> Result<Recorded, StoreError> {
    // One round trip: the function (migration m20261206_000001) runs the
    // steps of the former transaction in order under the chat's lock; the
    // acceptance's audit row joins its transaction (see `with_audit!`).
    let audits = indexed_audits(std::slice::from_ref(&job));
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            RECORD_ACCEPTED,
            [
                audits.into(),
                job.job_id.uuid().into(),
                job.chat_id.as_str().into(),
                job.stream_seq.get().into(),
                job.message_count.into(),
                job.idempotency_key.into(),
                job.accepted_at.into(),
                job.request_hash.into(),
            ],
        ))
        .await?
        .ok_or_else(|| StoreError::CorruptRow {
            table: "jobs",
            reason: "chat_memory_record_accepted returned no row".to_owned(),
        })?;
    let outcome: String = row.try_get("", "outcome")?;
    let earlier: bool = row.try_get("", "earlier")?;
    recorded(&outcome, earlier)
}

/// [`record_accepted`] for several jobs (acceptances a gateway gathered) in one
/// round trip and one transaction (`chat_memory_record_accepted_batch`, which
/// locks their chats in one order first): each job's answer in order, a key
/// reused with other messages as that job's [`StoreError::Conflict`].
///
/// # Errors
/// Database errors, for the whole batch.
pub async fn record_accepted_batch(
    db: &DatabaseConnection,
    mut jobs: Vec<AcceptedJob>,
) -> Result<Vec<Result<Recorded, StoreError>>, StoreError> {
    let n = jobs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    if n == 1 {
        // A lone job takes the single function: the batch function's set-up
        // (its JSON, lock ordering and result set) cost as much as the job.
        if let Some(job) = jobs.pop() {
            return match record_accepted(db, job).await {
                Ok(recorded) => Ok(vec![Ok(recorded)]),
                Err(e @ StoreError::Conflict { .. }) => Ok(vec![Err(e)]),
                Err(e) => Err(e),
            };
        }
    }
    let audits = indexed_audits(&jobs);
    let batch: Vec<serde_json::Value> = jobs
        .into_iter()
        .map(|job| {
            serde_json::json!({
                "job": job.job_id.uuid(),
                "chat": job.chat_id.as_str(),
                "seq": job.stream_seq.get(),
                "count": job.message_count,
                "key": job.idempotency_key,
                "accepted_at": job.accepted_at.to_rfc3339(),
                "hash": job.request_hash,
            })
        })
        .collect();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            RECORD_ACCEPTED_BATCH,
            [audits.into(), serde_json::Value::Array(batch).into()],
        ))
        .await?;
    one_per_item(rows, n, "jobs", "chat_memory_record_accepted_batch")?
        .iter()
        .map(|row| {
            let outcome: String = row.try_get("", "outcome")?;
            let earlier: bool = row.try_get("", "earlier")?;
            Ok(recorded(&outcome, earlier))
        })
        .collect()
}

/// The second part of a registration's statement: after `r` (the function's
/// answers, one per job with its 1-based `idx`), the acceptances' audit rows
/// (`$1`: a JSON array of rows, each with the `idx` of its job,
/// [`indexed_audits`]) are inserted in the same transaction for the jobs this
/// call registered: inserted now, or this very message registered first by the
/// worker. A repeat from another message and a reused key are left to the
/// gateway, which audits them itself. A row already stored is skipped.
///
/// The commit stays relaxed (as the registration's): the row's durable copy is
/// the job message it came in, which is acknowledged only after a durable
/// commit that follows this one in the WAL (the job's commit, or a failure
/// written durably).
macro_rules! with_audit {
    () => {
        "a AS (INSERT INTO audit_log (audit_id, at, tenant, user_id, action, chat_id, job_id, \
         outcome, request_id, trace_id, detail) \
         SELECT x.audit_id, x.at, x.tenant, x.user_id, x.action, x.chat_id, x.job_id, x.outcome, \
                x.request_id, x.trace_id, x.detail \
           FROM jsonb_to_recordset($1) AS x(idx integer, audit_id uuid, at timestamptz, \
                tenant text, user_id text, action text, chat_id text, job_id text, outcome text, \
                request_id text, trace_id text, detail text) \
           JOIN r ON r.idx = x.idx \
          WHERE r.outcome = 'inserted' OR (r.outcome = 'known' AND NOT r.earlier) \
         ON CONFLICT (audit_id, at) DO NOTHING)"
    };
}

/// RecordAccepted's statement (the audit rows are `$1`).
const RECORD_ACCEPTED: &str = concat!(
    "WITH r AS (SELECT 1 AS idx, * FROM chat_memory_record_accepted($2, $3, $4, $5, $6, $7, $8)), ",
    with_audit!(),
    " SELECT outcome, earlier FROM r"
);

/// RecordAcceptedBatch's statement (the audit rows are `$1`).
const RECORD_ACCEPTED_BATCH: &str = concat!(
    "WITH r AS (SELECT * FROM chat_memory_record_accepted_batch($2)), ",
    with_audit!(),
    " SELECT idx, outcome, earlier FROM r ORDER BY idx"
);

/// The carried audit rows of `jobs` as `with_audit!` reads them: each with
/// the 1-based place of its job.
fn indexed_audits(jobs: &[AcceptedJob]) -> serde_json::Value {
    jobs.iter()
        .enumerate()
        .filter_map(|(i, job)| {
            let mut row = job.audit.as_ref()?.as_json();
            row["idx"] = serde_json::json!(i + 1);
            Some(row)
        })
        .collect()
}

/// A job's outcome as `chat_memory_record_accepted` words it.
fn recorded(outcome: &str, earlier: bool) -> Result<Recorded, StoreError> {
    match outcome {
        "inserted" => Ok(Recorded {
            inserted: true,
            earlier_acceptance: false,
        }),
        "deleted" => Ok(Recorded {
            inserted: false,
            earlier_acceptance: false,
        }),
        "known" => Ok(Recorded {
            inserted: false,
            earlier_acceptance: earlier,
        }),
        // The same key with other messages: refuse, so they are not dropped
        // behind a "deduplicated" answer.
        "conflict" => Err(StoreError::Conflict {
            field: "idempotency_key",
            reason: "already used for a different request in this chat".to_owned(),
        }),
        other => Err(StoreError::CorruptRow {
            table: "jobs",
            reason: format!("chat_memory_record_accepted returned outcome {other:?}"),
        }),
    }
}

/// Decides whether a delivery must be applied and, if so, marks the job
/// `running` and returns the memory to build on.
pub async fn begin_job(db: &DatabaseConnection, d: Delivery) -> Result<Begin, StoreError> {
    let chat_id = d.chat_id.clone();
    let begun = begin_jobs(db, &chat_id, vec![d]).await?;
    Ok(match begun.skips.first().copied().flatten() {
        Some(skip) => Begin::Skip(skip),
        None => Begin::Apply {
            prior: begun.prior,
            prior_version: begun.prior_version,
        },
    })
}

/// [`begin_job`] for the next jobs of one chat at once (to be folded into one
/// summarizer call): one round trip (`chat_memory_begin_jobs`) under the
/// chat's lock decides for each job, in order, whether it applies (then marks
/// it `running`) or why not, and reads the memory they all build on. The chat's
/// first owner is recorded on the way when the gateway could not claim it.
///
/// # Errors
/// [`StoreError::InvalidArgument`] when a job belongs to another chat.
pub async fn begin_jobs(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    deliveries: Vec<Delivery>,
) -> Result<Begun, StoreError> {
    let jobs = begin_jobs_json(chat_id, &deliveries);
    let row = BeginRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT * FROM chat_memory_begin_jobs($1, $2, $3, $4)",
        [
            chat_id.as_str().into(),
            jobs.into(),
            NOT_OWNER_ERROR.into(),
            SUPERSEDED_ERROR.into(),
        ],
    ))
    .one(db)
    .await?
    .ok_or_else(|| StoreError::CorruptRow {
        table: "jobs",
        reason: "chat_memory_begin_jobs returned no row".to_owned(),
    })?;
    row.into_begun(deliveries.len())
}

/// [`begin_jobs`] for several chats (a worker's batches that started
/// together) in one round trip and one transaction
/// (`chat_memory_begin_jobs_batch`, migration m20261206_000007): every chat is
/// locked first, in lock-key order, then decided exactly as [`begin_jobs`]
/// decides it. One answer per chat, in order: a chat of a job used by another
/// chat gets [`StoreError::InvalidArgument`] and nothing of it is written.
///
/// # Errors
/// The database's errors, for the whole batch.
pub async fn begin_jobs_batch(
    db: &DatabaseConnection,
    mut chats: Vec<(ChatId, Vec<Delivery>)>,
) -> Result<Vec<Result<Begun, StoreError>>, StoreError> {
    let n = chats.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    if n == 1 {
        // A lone chat takes the single function (see `record_accepted_batch`).
        if let Some((chat_id, deliveries)) = chats.pop() {
            return match begin_jobs(db, &chat_id, deliveries).await {
                Ok(begun) => Ok(vec![Ok(begun)]),
                Err(e @ StoreError::InvalidArgument { .. }) => Ok(vec![Err(e)]),
                Err(e) => Err(e),
            };
        }
    }
    let batch = chats
        .iter()
        .map(|(chat_id, deliveries)| {
            serde_json::json!({
                "chat": chat_id.as_str(),
                "jobs": begin_jobs_json(chat_id, deliveries),
            })
        })
        .collect::<Vec<_>>();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT * FROM chat_memory_begin_jobs_batch($1, $2, $3) ORDER BY idx",
            [
                serde_json::Value::Array(batch).into(),
                NOT_OWNER_ERROR.into(),
                SUPERSEDED_ERROR.into(),
            ],
        ))
        .await?;
    one_per_item(rows, n, "jobs", "chat_memory_begin_jobs_batch")?
        .iter()
        .zip(&chats)
        .map(|(row, (_, deliveries))| {
            let row = BeginRow::from_query_result(row, "")?;
            Ok(row.into_begun(deliveries.len()))
        })
        .collect()
}

/// The jobs of one chat as `chat_memory_begin_jobs` takes them (each of
/// `chat_id`: the API's conversion checks that).
fn begin_jobs_json(chat_id: &ChatId, deliveries: &[Delivery]) -> serde_json::Value {
    serde_json::Value::Array(
        deliveries
            .iter()
            .map(|d| {
                let access = d.access.as_ref().map(|a| {
                    serde_json::json!({
                        "tenant": a.tenant,
                        "user": a.user,
                        "acts_for_tenant": a.acts_for_tenant,
                        "in_namespace": a.in_namespace(chat_id.as_str()),
                    })
                });
                serde_json::json!({
                    "job": d.job_id.uuid(),
                    "seq": d.stream_seq.get(),
                    "count": d.message_count,
                    "accepted_at": d.accepted_at,
                    "attempt": d.attempt,
                    "replay": d.replay,
                    "access": access,
                    "audit": d.accept_audit.as_ref().map(crate::audit::AuditRecord::as_json),
                    "hash": d.request_hash,
                })
            })
            .collect(),
    )
}

/// Records a failed attempt. A succeeded job is never touched; a failed one
/// only takes a later terminal error.
pub async fn fail_job(db: &DatabaseConnection, f: Failure) -> Result<(), StoreError> {
    let txn = begin_chat(db, &f.chat_id).await?;
    let job = find_job(&txn, f.job_id, &f.chat_id).await?;
    let current = job
        .as_ref()
        .map(|row| JobState::from_db(&row.state))
        .transpose()?;
    let state = match (current, f.terminal) {
        (Some(JobState::Succeeded), _) | (Some(JobState::Failed), false) => None,
        (_, true) => Some(JobState::Failed),
        (Some(JobState::Queued | JobState::Running) | None, false) => Some(JobState::Running),
    };
    // A job of a deleted chat is not brought back by its failure report.
    let deleted = job.is_none() && deleted_through(&txn, &f.chat_id, f.stream_seq).await?;
    if let (Some(state), false) = (state, deleted) {
        // The same row write as BeginJobs and CommitJobs make (migration
        // m20261206_000002): attempts kept at their maximum, the row created
        // if the gateway's RecordAccepted has not landed yet.
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT chat_memory_write_job($1, $2, $3, 0, $4, $5, $6, true, $7, NULL, NULL)",
            [
                f.job_id.uuid().into(),
                f.chat_id.as_str().into(),
                f.stream_seq.get().into(),
                Utc::now().into(),
                state.as_str().into(),
                f.attempt.into(),
                f.error.into(),
            ],
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// A job's status.
///
/// # Errors
/// [`StoreError::NotFound`] for an unknown job, or one `access` may not see.
pub async fn get_job(
    db: &DatabaseConnection,
    job_id: JobId,
    access: Option<&Access>,
) -> Result<JobView, StoreError> {
    let row = jobs::Entity::find_by_id(job_id.uuid())
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("job"))?;
    // Another tenant's (or user's) job is reported exactly like an unknown one.
    access::check(db, &row.chat_id, access, "job").await?;
    Ok(JobView {
        state: JobState::from_db(&row.state)?,
        job_id: row.job_id,
        chat_id: row.chat_id,
        attempts: row.attempts,
        error: row.error,
        resulting_version: row.resulting_version,
        stream_seq: row.stream_seq,
        accepted_at: row.accepted_at,
        updated_at: row.updated_at,
        applied_in_call: row.applied_in_call,
    })
}

/// Loads a job; a job id already used by another chat is a caller bug.
pub(crate) async fn find_job(
    txn: &DatabaseTransaction,
    job_id: JobId,
    chat_id: &ChatId,
) -> Result<Option<jobs::Model>, StoreError> {
    let row = jobs::Entity::find_by_id(job_id.uuid()).one(txn).await?;
    match row {
        Some(row) if row.chat_id != chat_id.as_str() => Err(StoreError::invalid(
            "job_id",
            "already used by another chat",
        )),
        row => Ok(row),
    }
}
