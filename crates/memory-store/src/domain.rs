//! Domain types: parsed, valid inputs and the results of store operations.
//!
//! Parse, don't validate: the gRPC layer turns raw request fields into these
//! types once, and the query layer only accepts them, so an empty chat id or a
//! zero stream sequence can never reach a SQL statement.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::StoreError;

/// A non-empty chat id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatId(String);

impl ChatId {
    /// # Errors
    /// [`StoreError::InvalidArgument`] on an empty id.
    pub fn parse(raw: String) -> Result<Self, StoreError> {
        if raw.is_empty() {
            return Err(StoreError::invalid("chat_id", "must not be empty"));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A job id: a UUID assigned by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobId(Uuid);

impl JobId {
    /// # Errors
    /// [`StoreError::InvalidArgument`] naming `job_id` when `raw` is not a UUID.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        if raw.is_empty() {
            return Err(StoreError::invalid("job_id", "must not be empty"));
        }
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| StoreError::invalid("job_id", "must be a UUID"))
    }

    pub fn uuid(self) -> Uuid {
        self.0
    }
}

/// A JetStream stream sequence: positive, and stored as `bigint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamSeq(i64);

impl StreamSeq {
    /// # Errors
    /// [`StoreError::InvalidArgument`] naming `field` for 0 or a value beyond `i64::MAX`.
    pub fn parse(raw: u64, field: &'static str) -> Result<Self, StoreError> {
        if raw == 0 {
            return Err(StoreError::invalid(field, "must be at least 1"));
        }
        i64::try_from(raw)
            .map(Self)
            .map_err(|_| StoreError::invalid(field, "out of range"))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Converts a protobuf `uint32` to the `integer` columns (counts, attempts).
///
/// # Errors
/// [`StoreError::InvalidArgument`] naming `field` beyond `i32::MAX`.
pub fn count(raw: u32, field: &'static str) -> Result<i32, StoreError> {
    i32::try_from(raw).map_err(|_| StoreError::invalid(field, "out of range"))
}

/// A keyed job's request digest (64 lowercase hex digits), or None for an
/// unkeyed job (empty).
///
/// # Errors
/// [`StoreError::InvalidArgument`] naming `field` for anything else.
pub fn request_digest(raw: String, field: &'static str) -> Result<Option<String>, StoreError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() == 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Ok(Some(raw));
    }
    Err(StoreError::invalid(
        field,
        "a SHA-256 digest as 64 lowercase hex digits, or empty",
    ))
}

/// The lifecycle of a job, stored as text in `jobs.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// # Errors
    /// [`StoreError::CorruptRow`] for a value the CHECK constraint should have refused.
    pub fn from_db(raw: &str) -> Result<Self, StoreError> {
        match raw {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::CorruptRow {
                table: "jobs",
                reason: format!("unknown state {other:?}"),
            }),
        }
    }

    /// Succeeded and failed jobs never run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Token counts of the three rendered fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCounts {
    pub user_confirmed: i32,
    pub llm_inferred: i32,
    pub general_summary: i32,
}

/// The memory as the summarizer produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryContent {
    pub user_confirmed: String,
    pub llm_inferred: String,
    pub general_summary: String,
    pub tokens: TokenCounts,
    /// Opaque agent state, validated as JSON at the edge.
    pub state: serde_json::Value,
}

/// A job the gateway durably accepted into the stream.
#[derive(Debug, Clone)]
pub struct AcceptedJob {
    pub job_id: JobId,
    pub chat_id: ChatId,
    pub stream_seq: StreamSeq,
    pub message_count: i32,
    pub idempotency_key: Option<String>,
    pub accepted_at: DateTime<Utc>,
    /// Digest of the request's messages (keyed updates only).
    pub request_hash: Option<String>,
    /// The accepting call's audit row (carried in the job message), stored
    /// with a registration that records this job now (not for a repeat or a
    /// reused key: the gateway audits those itself).
    pub audit: Option<crate::audit::AuditRecord>,
}

/// A delivery of a job the worker is about to process.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job_id: JobId,
    pub chat_id: ChatId,
    pub stream_seq: StreamSeq,
    /// JetStream delivery count (1 for the first delivery).
    pub attempt: i32,
    pub message_count: i32,
    pub accepted_at: DateTime<Utc>,
    /// Who asked for the job (absent for jobs accepted before issue 4).
    pub access: Option<Access>,
    /// An operator's replay of a dead-lettered job: a FAILED job may run again.
    pub replay: bool,
    /// The accepting call's audit row from the job message: stored when the
    /// job was never registered (durably if the job is then skipped as deleted).
    pub accept_audit: Option<crate::audit::AuditRecord>,
    /// A keyed job's request digest: kept when the job was never registered;
    /// a registered job with another digest is skipped ([`Skip::KeyReused`]).
    pub request_hash: Option<String>,
}

/// Why a job must not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    AlreadyApplied,
    Superseded,
    ChatDeleted,
    AlreadyFailed,
    /// Another user owns the chat.
    NotOwner,
    /// The job id's job was registered with other messages: this message
    /// reuses its idempotency key.
    KeyReused,
}

/// What `begin_job` decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Apply the job on top of `prior` (absent for a new chat) at `prior_version` (0 if new).
    Apply {
        prior: Option<MemoryContent>,
        prior_version: i64,
    },
    Skip(Skip),
}

/// What `begin_jobs` decided: per job, in order, `None` (apply) or why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Begun {
    pub skips: Vec<Option<Skip>>,
    /// The memory the jobs to apply build on (absent for a new chat).
    pub prior: Option<MemoryContent>,
    /// Its version (0 for a new chat).
    pub prior_version: i64,
}

/// One job folded into a coalesced commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedJob {
    pub job_id: JobId,
    pub stream_seq: StreamSeq,
    pub attempt: i32,
}

/// The memory built from several jobs of one chat by one summarizer call.
#[derive(Debug, Clone)]
pub struct CommitBatch {
    pub chat_id: ChatId,
    /// In increasing stream sequence; never empty.
    pub jobs: Vec<CommittedJob>,
    pub expected_version: i64,
    pub content: MemoryContent,
    pub call_id: Uuid,
    /// The commit's trace when its caller gave one (a batch's commits each
    /// have their own); else the call's.
    pub trace_id: Option<String>,
}

/// A finished job's new memory, to be written if the chat has not moved on.
#[derive(Debug, Clone)]
pub struct Commit {
    pub job_id: JobId,
    pub chat_id: ChatId,
    pub stream_seq: StreamSeq,
    pub expected_version: i64,
    pub content: MemoryContent,
    pub attempt: i32,
}

/// The outcome of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Applied,
    AlreadyApplied,
    Superseded,
    ChatDeleted,
    VersionConflict,
}

/// The outcome of a commit and the chat's memory version after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub outcome: CommitOutcome,
    pub version: i64,
    /// The memory's new `updated_at`, when this commit wrote it.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What `GetMemory` answers besides the memory right after this commit,
    /// when it wrote one (read in its transaction, under the chat's lock).
    pub view: Option<CommitView>,
}

/// The rest of a chat's `GetMemory` answer right after a commit, and the
/// stream sequences that order it against acceptances and failures
/// announced elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitView {
    /// Empty: no owner recorded.
    pub owner_user: String,
    /// As [`MemoryView::owner_active_at`].
    pub owner_active_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The memory's applied stream sequence: jobs at or below it are applied.
    pub applied_through: i64,
    /// The stream sequences of the jobs still pending (GetMemory's
    /// `pending_jobs` is their count): an acceptance announced with another
    /// sequence above `applied_through` was not counted.
    pub pending_seqs: Vec<u64>,
}

/// A failed attempt of a job.
#[derive(Debug, Clone)]
pub struct Failure {
    pub job_id: JobId,
    pub chat_id: ChatId,
    pub stream_seq: StreamSeq,
    pub attempt: i32,
    pub error: String,
    /// The job will never be retried.
    pub terminal: bool,
}

/// A chat's memory and how fresh it is.
#[derive(Debug, Clone)]
pub struct MemoryView {
    pub chat_id: String,
    pub content: MemoryContent,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    pub last_applied_job_id: Uuid,
    /// Jobs of the chat still queued or running.
    pub pending_jobs: u64,
    /// The chat's owner; empty when none is recorded.
    pub owner_user: String,
    /// The owner's last recorded activity, from which the expiry sweep
    /// counts (none: no owner, never expired).
    pub owner_active_at: Option<DateTime<Utc>>,
}

/// A job's status.
#[derive(Debug, Clone)]
pub struct JobView {
    pub job_id: Uuid,
    pub chat_id: String,
    pub state: JobState,
    pub attempts: i32,
    pub error: Option<String>,
    pub resulting_version: Option<i64>,
    pub stream_seq: i64,
    pub accepted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub applied_in_call: Option<Uuid>,
}

/// What a chat delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub memory_deleted: bool,
    pub jobs_removed: u64,
}

/// Separator between the tenant and the public chat id.
pub use chat_memory_proto::namespace::SEPARATOR as NAMESPACE_SEPARATOR;
use chat_memory_proto::namespace::TenantChatId;

/// On whose behalf a call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub tenant: String,
    pub user: String,
    /// A service/admin token acting for every user of the tenant.
    pub acts_for_tenant: bool,
}

impl Access {
    /// `None` for a call without access information (the worker's internal calls).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] when the tenant or user is empty.
    pub fn parse(
        raw: Option<chat_memory_proto::store::Access>,
    ) -> Result<Option<Self>, StoreError> {
        let Some(raw) = raw else { return Ok(None) };
        if raw.tenant.is_empty() || raw.tenant.contains(NAMESPACE_SEPARATOR) {
            return Err(StoreError::invalid(
                "access.tenant",
                "must be a non-empty tenant id",
            ));
        }
        if raw.user.is_empty() {
            return Err(StoreError::invalid("access.user", "must not be empty"));
        }
        Ok(Some(Self {
            tenant: raw.tenant,
            user: raw.user,
            acts_for_tenant: raw.acts_for_tenant,
        }))
    }

    /// Whether the chat id lies in this tenant's namespace.
    pub(crate) fn in_namespace(&self, chat_id: &str) -> bool {
        TenantChatId::parse_in(&self.tenant, chat_id).is_some()
    }

    /// Whether the caller may use a chat owned by `owner` (`None`: no owner yet).
    pub(crate) fn may_use_owner(&self, owner: Option<&str>) -> bool {
        owner.is_none_or(|o| self.acts_for_tenant || o == self.user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tenant: &str) -> Access {
        Access {
            tenant: tenant.into(),
            user: "u".into(),
            acts_for_tenant: false,
        }
    }

    #[test]
    fn a_chat_is_in_a_namespace_only_with_the_exact_tenant_prefix() {
        assert!(access("acme").in_namespace("acme/c1"));
        assert!(!access("acme").in_namespace("acme2/c1"));
        assert!(!access("acm").in_namespace("acme/c1"));
        assert!(!access("acme").in_namespace("acme/"));
        assert!(!access("acme").in_namespace("acme"));
    }

    #[test]
    fn an_empty_chat_id_is_rejected_with_the_field_name() {
        let err = ChatId::parse(String::new()).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("chat_id: must not be empty"));
    }

    #[test]
    fn job_ids_must_be_uuids() {
        assert!(JobId::parse("0190b2a0-7d1e-7c2b-9f5e-3b8f2a1c4d5e").is_ok());
        for bad in ["", "not-a-uuid", "1234"] {
            let err = JobId::parse(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with("job_id: "), "{bad:?} gave {err:?}");
        }
    }

    #[test]
    fn stream_seq_zero_and_overflow_are_rejected() {
        assert!(StreamSeq::parse(0, "stream_seq").is_err());
        assert!(StreamSeq::parse(u64::MAX, "stream_seq").is_err());
        assert_eq!(
            StreamSeq::parse(7, "stream_seq").map(StreamSeq::get).ok(),
            Some(7)
        );
    }

    #[test]
    fn job_states_round_trip_through_their_column_value() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
        ] {
            assert_eq!(JobState::from_db(s.as_str()).ok(), Some(s));
        }
        assert!(JobState::from_db("paused").is_err());
    }
}
