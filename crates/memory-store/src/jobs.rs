//! The job lifecycle: accepted (gateway), begun, failed (worker), and status reads.
//!
//! Every write locks the chat first (see [`crate::db::lock_chat`]), so the
//! read-then-write sequences below cannot interleave with another write of the
//! same chat.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, QueryFilter, Statement, TransactionTrait,
};

use crate::{
    access::{self, Access},
    db::{deleted_through, lock_chat, relaxed_commit},
    domain::{
        AcceptedJob, Begin, Begun, ChatId, Delivery, Failure, JobId, JobState, JobView, Skip,
        StreamSeq,
    },
    entity::{chat_tombstones, jobs, memories},
    error::StoreError,
    memories::content_of,
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
    // steps of the former transaction in order under the chat's lock.
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT outcome, earlier FROM chat_memory_record_accepted($1, $2, $3, $4, $5, $6, $7)",
            [
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
    match outcome.as_str() {
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
/// summarizer call): one transaction under the chat's lock, the same decision
/// for each job as [`begin_job`] makes, and the memory they all build on.
///
/// # Errors
/// [`StoreError::InvalidArgument`] when a job belongs to another chat.
pub async fn begin_jobs(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    deliveries: Vec<Delivery>,
) -> Result<Begun, StoreError> {
    if let Some(other) = deliveries.iter().find(|d| &d.chat_id != chat_id) {
        return Err(StoreError::invalid(
            "jobs.chat_id",
            format!("job {} is not of chat_id", other.job_id.uuid()),
        ));
    }
    let txn = begin_chat(db, chat_id).await?;
    let through = tombstone_through(&txn, chat_id).await?;
    let mut rows = find_jobs(&txn, deliveries.iter().map(|d| d.job_id), chat_id).await?;
    let memory = memories::Entity::find_by_id(chat_id.as_str())
        .one(&txn)
        .await?;
    let last_applied = memory.as_ref().map_or(0, |m| m.last_applied_seq);
    // Ownership is claimed or checked once per requester.
    let mut owners: Vec<(Access, bool)> = Vec::new();
    // Whether this transaction wrote something that must be durable before
    // the worker goes on: a job ended here (failed as not the owner, or
    // superseded; its message is acknowledged next), or the chat's first owner.
    let mut must_be_durable = false;
    let mut skips = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        if through.is_some_and(|t| t >= d.stream_seq.get()) {
            skips.push(Some(Skip::ChatDeleted));
            continue;
        }
        let job = rows.remove(&d.job_id.uuid());
        if let Some(row) = &job {
            match JobState::from_db(&row.state)? {
                JobState::Succeeded => {
                    skips.push(Some(Skip::AlreadyApplied));
                    continue;
                }
                // A replay runs a failed job again; the order check below still
                // decides whether it may apply.
                JobState::Failed if d.replay => {}
                JobState::Failed => {
                    skips.push(Some(Skip::AlreadyFailed));
                    continue;
                }
                JobState::Queued | JobState::Running => {}
            }
        }
        let new_row = NewJobRow {
            job_id: d.job_id,
            chat_id,
            stream_seq: d.stream_seq,
            message_count: d.message_count,
            accepted_at: d.accepted_at,
        };
        // The gateway claims the chat before accepting; if memory-store was down
        // then, this is the first check of who owns it. Another user's job never applies.
        if let Some(access) = &d.access {
            let owns = match owners.iter().find(|(a, _)| a == access) {
                Some((_, owns)) => *owns,
                None => {
                    let owns = match access::claim_in(&txn, chat_id, access).await {
                        Ok(claimed_now) => {
                            must_be_durable |= claimed_now;
                            true
                        }
                        Err(StoreError::NotFound(_)) => false,
                        Err(other) => return Err(other),
                    };
                    owners.push((access.clone(), owns));
                    owns
                }
            };
            if !owns {
                let write = JobWrite {
                    state: JobState::Failed,
                    attempts: d.attempt,
                    error: Some(Some(NOT_OWNER_ERROR.to_owned())),
                    resulting_version: None,
                    applied_in_call: None,
                };
                write_job(&txn, job, new_row, write).await?;
                must_be_durable = true;
                skips.push(Some(Skip::NotOwner));
                continue;
            }
        }
        if last_applied >= d.stream_seq.get() {
            write_job(&txn, job, new_row, JobWrite::superseded(d.attempt)).await?;
            must_be_durable = true;
            skips.push(Some(Skip::Superseded));
            continue;
        }
        let running = JobWrite {
            state: JobState::Running,
            attempts: d.attempt,
            // A replay starts clean: the dead-letter reason is history.
            error: d.replay.then_some(None),
            resulting_version: None,
            applied_in_call: None,
        };
        write_job(&txn, job, new_row, running).await?;
        skips.push(None);
    }
    if !must_be_durable {
        // Only `running` states (and an owner's activity time) were written.
        relaxed_commit(&txn).await?;
    }
    txn.commit().await?;
    Ok(match memory {
        Some(m) => Begun {
            skips,
            prior_version: m.version,
            prior: Some(content_of(m)),
        },
        None => Begun {
            skips,
            prior: None,
            prior_version: 0,
        },
    })
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
        let new_row = NewJobRow {
            job_id: f.job_id,
            chat_id: &f.chat_id,
            stream_seq: f.stream_seq,
            message_count: 0,
            accepted_at: Utc::now(),
        };
        let write = JobWrite {
            state,
            attempts: f.attempt,
            error: Some(Some(f.error)),
            resulting_version: None,
            applied_in_call: None,
        };
        write_job(&txn, job, new_row, write).await?;
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

/// Opens a transaction holding the chat's write lock.
pub(crate) async fn begin_chat(
    db: &DatabaseConnection,
    chat_id: &ChatId,
) -> Result<DatabaseTransaction, StoreError> {
    let txn = db.begin().await?;
    lock_chat(&txn, chat_id).await?;
    Ok(txn)
}

/// The chat's tombstone: jobs with a sequence up to it were accepted before a delete.
pub(crate) async fn tombstone_through(
    txn: &DatabaseTransaction,
    chat_id: &ChatId,
) -> Result<Option<i64>, StoreError> {
    Ok(chat_tombstones::Entity::find_by_id(chat_id.as_str())
        .one(txn)
        .await?
        .map(|t| t.deleted_through_seq))
}

/// Loads several jobs in one statement, by id; a job id already used by another
/// chat is a caller bug.
pub(crate) async fn find_jobs(
    txn: &DatabaseTransaction,
    job_ids: impl Iterator<Item = JobId>,
    chat_id: &ChatId,
) -> Result<HashMap<uuid::Uuid, jobs::Model>, StoreError> {
    let ids: Vec<uuid::Uuid> = job_ids.map(JobId::uuid).collect();
    let rows = jobs::Entity::find()
        .filter(jobs::COLUMN.job_id.is_in(ids))
        .all(txn)
        .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for row in rows {
        if row.chat_id != chat_id.as_str() {
            return Err(StoreError::invalid(
                "job_id",
                "already used by another chat",
            ));
        }
        found.insert(row.job_id, row);
    }
    Ok(found)
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

/// The columns of a job row that only matter when the row does not exist yet
/// (the worker can see a job before the gateway's RecordAccepted lands).
pub(crate) struct NewJobRow<'a> {
    pub job_id: JobId,
    pub chat_id: &'a ChatId,
    pub stream_seq: StreamSeq,
    pub message_count: i32,
    pub accepted_at: DateTime<Utc>,
}

/// A change of a job's lifecycle columns.
pub(crate) struct JobWrite {
    pub state: JobState,
    /// Kept as the maximum of the stored and the reported attempt count.
    pub attempts: i32,
    /// `None` keeps the stored error; `Some(e)` replaces it.
    pub error: Option<Option<String>>,
    pub resulting_version: Option<i64>,
    /// The summarizer call that applied the job (set with `resulting_version`).
    pub applied_in_call: Option<uuid::Uuid>,
}

impl JobWrite {
    pub(crate) fn superseded(attempt: i32) -> Self {
        Self {
            state: JobState::Failed,
            attempts: attempt,
            error: Some(Some(SUPERSEDED_ERROR.to_owned())),
            resulting_version: None,
            applied_in_call: None,
        }
    }
}

/// Applies `write` to the job row, inserting the row from `new_row` when missing.
pub(crate) async fn write_job(
    txn: &DatabaseTransaction,
    existing: Option<jobs::Model>,
    new_row: NewJobRow<'_>,
    write: JobWrite,
) -> Result<(), StoreError> {
    let now = Utc::now();
    match existing {
        Some(row) => {
            let attempts = row.attempts.max(write.attempts);
            let mut active: jobs::ActiveModel = row.into();
            active.state = Set(write.state.as_str().to_owned());
            active.attempts = Set(attempts);
            if let Some(error) = write.error {
                active.error = Set(error);
            }
            if let Some(version) = write.resulting_version {
                active.resulting_version = Set(Some(version));
            }
            if let Some(call) = write.applied_in_call {
                active.applied_in_call = Set(Some(call));
            }
            active.updated_at = Set(now);
            active.update(txn).await?;
        }
        None => {
            let active = jobs::ActiveModel {
                job_id: Set(new_row.job_id.uuid()),
                chat_id: Set(new_row.chat_id.as_str().to_owned()),
                stream_seq: Set(new_row.stream_seq.get()),
                state: Set(write.state.as_str().to_owned()),
                attempts: Set(write.attempts),
                error: Set(write.error.flatten()),
                resulting_version: Set(write.resulting_version),
                applied_in_call: Set(write.applied_in_call),
                request_hash: Set(None),
                message_count: Set(new_row.message_count),
                idempotency_key: Set(None),
                accepted_at: Set(new_row.accepted_at),
                updated_at: Set(now),
            };
            jobs::Entity::insert(active)
                .exec_without_returning(txn)
                .await?;
        }
    }
    Ok(())
}
