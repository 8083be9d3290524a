//! Row mappers: the rows the queries read, turned into domain values. One
//! place maps a memory's columns to [`MemoryContent`], whichever statement
//! read them.

use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;

use crate::{
    domain::{
        Begun, CommitOutcome, CommitView, Committed, MemoryContent, MemoryView, Skip, TokenCounts,
    },
    error::StoreError,
};

/// A memory's content columns, as every statement that reads one names them
/// (nested in the rows below; `prior_`-prefixed in BeginJobs' answer).
#[derive(Debug, Clone, FromQueryResult)]
struct ContentColumns {
    user_confirmed: String,
    llm_inferred: String,
    general_summary: String,
    tokens_user_confirmed: i32,
    tokens_llm_inferred: i32,
    tokens_general_summary: i32,
    state: serde_json::Value,
}

impl From<ContentColumns> for MemoryContent {
    fn from(c: ContentColumns) -> Self {
        Self {
            user_confirmed: c.user_confirmed,
            llm_inferred: c.llm_inferred,
            general_summary: c.general_summary,
            tokens: TokenCounts {
                user_confirmed: c.tokens_user_confirmed,
                llm_inferred: c.tokens_llm_inferred,
                general_summary: c.tokens_general_summary,
            },
            state: c.state,
        }
    }
}

/// The chat's memory, its owner and its pending job count: one row.
#[derive(Debug, Clone, FromQueryResult)]
pub(crate) struct MemoryRead {
    pub(crate) chat_id: String,
    #[sea_orm(nested)]
    content: ContentColumns,
    version: i64,
    last_job_id: uuid::Uuid,
    updated_at: DateTime<Utc>,
    pub(crate) owner_user: Option<String>,
    owner_active_at: Option<DateTime<Utc>>,
    pending_jobs: i64,
}

impl From<MemoryRead> for MemoryView {
    fn from(row: MemoryRead) -> Self {
        Self {
            chat_id: row.chat_id,
            version: row.version,
            updated_at: row.updated_at,
            last_applied_job_id: row.last_job_id,
            pending_jobs: u64::try_from(row.pending_jobs).unwrap_or(0),
            owner_user: row.owner_user.unwrap_or_default(),
            owner_active_at: row.owner_active_at,
            content: row.content.into(),
        }
    }
}

/// What `chat_memory_begin_jobs` answers: a problem, or per job why it must
/// not be applied (null: apply) and the memory they build on.
#[derive(Debug, FromQueryResult)]
pub(crate) struct BeginRow {
    problem: Option<String>,
    skips: Option<serde_json::Value>,
    has_memory: bool,
    prior_version: i64,
    /// Null columns (no memory) read as `None`.
    #[sea_orm(nested(prefix = "prior_"))]
    prior: Option<ContentColumns>,
}

impl BeginRow {
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a job of another chat;
    /// [`StoreError::CorruptRow`] when the answer does not have one decision
    /// per job or a memory without its columns.
    pub(crate) fn into_begun(self, jobs: usize) -> Result<Begun, StoreError> {
        problem(self.problem.as_deref())?;
        let corrupt = |reason: String| StoreError::CorruptRow {
            table: "jobs",
            reason,
        };
        let skips = match self.skips {
            Some(serde_json::Value::Array(decided)) if decided.len() == jobs => decided
                .iter()
                .map(|d| skip(d).ok_or_else(|| corrupt(format!("unknown decision {d}"))))
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(corrupt(format!(
                    "chat_memory_begin_jobs decided {other:?} for {jobs} jobs"
                )));
            }
        };
        if !self.has_memory {
            return Ok(Begun {
                skips,
                prior: None,
                prior_version: 0,
            });
        }
        let content = self
            .prior
            .ok_or_else(|| corrupt("a memory without its columns".to_owned()))?;
        Ok(Begun {
            skips,
            prior: Some(content.into()),
            prior_version: self.prior_version,
        })
    }
}

/// One decision of `chat_memory_begin_jobs`: `Some(None)` to apply.
fn skip(decision: &serde_json::Value) -> Option<Option<Skip>> {
    match decision {
        serde_json::Value::Null => Some(None),
        serde_json::Value::String(s) => Some(Some(match s.as_str() {
            "deleted" => Skip::ChatDeleted,
            "applied" => Skip::AlreadyApplied,
            "failed" => Skip::AlreadyFailed,
            "not_owner" => Skip::NotOwner,
            "key_reused" => Skip::KeyReused,
            "superseded" => Skip::Superseded,
            _ => return None,
        })),
        _ => None,
    }
}

/// What `chat_memory_commit_jobs_viewed` answers.
#[derive(Debug, FromQueryResult)]
pub(crate) struct CommitRow {
    outcome: String,
    new_version: i64,
    written_at: Option<DateTime<Utc>>,
    owner_user: Option<String>,
    owner_active_at: Option<DateTime<Utc>>,
    applied_through: Option<i64>,
    /// A JSON array of the pending jobs' stream sequences.
    pending_seqs: Option<serde_json::Value>,
}

impl CommitRow {
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a job of another chat;
    /// [`StoreError::CorruptRow`] for an unknown outcome.
    pub(crate) fn into_committed(self) -> Result<Committed, StoreError> {
        problem(Some(self.outcome.as_str()))?;
        let outcome = match self.outcome.as_str() {
            "applied" => CommitOutcome::Applied,
            "already_applied" => CommitOutcome::AlreadyApplied,
            "superseded" => CommitOutcome::Superseded,
            "chat_deleted" => CommitOutcome::ChatDeleted,
            "version_conflict" => CommitOutcome::VersionConflict,
            other => {
                return Err(StoreError::CorruptRow {
                    table: "memories",
                    reason: format!("chat_memory_commit_jobs returned outcome {other:?}"),
                });
            }
        };
        let view = match (outcome, self.applied_through) {
            (CommitOutcome::Applied, Some(applied_through)) => {
                let pending_seqs = self
                    .pending_seqs
                    .as_ref()
                    .and_then(serde_json::Value::as_array)
                    .map(|seqs| seqs.iter().filter_map(serde_json::Value::as_u64).collect())
                    .ok_or_else(|| StoreError::CorruptRow {
                        table: "memories",
                        reason: "chat_memory_commit_jobs_viewed returned no pending sequences"
                            .to_owned(),
                    })?;
                Some(CommitView {
                    owner_user: self.owner_user.unwrap_or_default(),
                    owner_active_at: self.owner_active_at,
                    applied_through,
                    pending_seqs,
                })
            }
            _ => None,
        };
        Ok(Committed {
            outcome,
            version: self.new_version,
            updated_at: self.written_at,
            view,
        })
    }
}

/// The caller bugs the job functions answer instead of writing.
fn problem(answer: Option<&str>) -> Result<(), StoreError> {
    match answer {
        Some("job_of_another_chat") => Err(StoreError::invalid(
            "job_id",
            "already used by another chat",
        )),
        _ => Ok(()),
    }
}

/// The rows of a batch function (`SELECT idx, ... ORDER BY idx`), checked to be
/// exactly one per item, in the items' order (`idx` = 1, 2, ...).
///
/// # Errors
/// [`StoreError::CorruptRow`] naming `function` when a row is missing, extra
/// or out of place.
pub fn one_per_item(
    rows: Vec<sea_orm::QueryResult>,
    items: usize,
    table: &'static str,
    function: &str,
) -> Result<Vec<sea_orm::QueryResult>, StoreError> {
    let corrupt = |reason: String| StoreError::CorruptRow { table, reason };
    if rows.len() != items {
        return Err(corrupt(format!(
            "{function} answered {} of {items} items",
            rows.len()
        )));
    }
    for (k, row) in rows.iter().enumerate() {
        let idx: i32 = row.try_get("", "idx")?;
        if usize::try_from(idx).ok() != Some(k + 1) {
            return Err(corrupt(format!(
                "{function} answered position {idx} as {}",
                k + 1
            )));
        }
    }
    Ok(rows)
}
