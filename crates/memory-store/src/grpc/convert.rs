//! Conversions between `chatmemory.store.v1` messages and domain types.
//!
//! Requests are parsed here once; every failure names the offending field.

use chat_memory_proto::{
    store::{self as pb},
    time::{from_timestamp, to_timestamp},
    v1 as pb_v1,
};
use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use crate::{
    audit::{AuditQuery, AuditRecord},
    domain::{
        AcceptedJob, Access, Begin, Begun, ChatId, Commit, CommitBatch, CommitOutcome, Committed,
        CommittedJob, Delivery, Failure, JobId, JobState, JobView, MemoryContent, MemoryView, Skip,
        StreamSeq, TokenCounts, count, request_digest,
    },
    error::StoreError,
};

/// An optional timestamp: absent means "now" (the caller did not know better).
fn time_or_now(ts: Option<&Timestamp>, field: &'static str) -> Result<DateTime<Utc>, StoreError> {
    match ts {
        None => Ok(Utc::now()),
        Some(ts) => from_timestamp(ts).ok_or_else(|| StoreError::invalid(field, "out of range")),
    }
}

/// When an audit row happened. A row is keyed by its id *and* time (the log
/// is partitioned by day), so a retried row must carry the same time: absent,
/// it is taken from a time-ordered (v7) id, and only an id without a time
/// falls back to "now" (such a row, retried, may be stored twice).
fn audit_time(ts: Option<&Timestamp>, audit_id: uuid::Uuid) -> Result<DateTime<Utc>, StoreError> {
    if ts.is_none()
        && let Some(at) = audit_id.get_timestamp().and_then(|t| {
            let (secs, nanos) = t.to_unix();
            DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
        })
    {
        return Ok(at);
    }
    time_or_now(ts, "entry.at")
}

pub fn accepted_job(r: pb::RecordAcceptedRequest) -> Result<AcceptedJob, StoreError> {
    let chat_id = ChatId::parse(r.chat_id)?;
    Ok(AcceptedJob {
        chat_id,
        job_id: JobId::parse(&r.job_id)?,
        stream_seq: StreamSeq::parse(r.stream_seq, "stream_seq")?,
        message_count: count(r.message_count, "message_count")?,
        accepted_at: time_or_now(r.accepted_at.as_ref(), "accepted_at")?,
        idempotency_key: Some(r.idempotency_key).filter(|k| !k.is_empty()),
        request_hash: request_digest(r.request_hash, "request_hash")?,
        audit: carried_audit(r.audit, "audit")?,
    })
}

/// An acceptance's audit row carried with its job (`field` names it in an
/// error): a valid `update` row, or none.
fn carried_audit(
    entry: Option<chat_memory_proto::v1::AuditEntry>,
    field: &str,
) -> Result<Option<AuditRecord>, StoreError> {
    let Some(entry) = entry else { return Ok(None) };
    valid_entry(entry)
        .and_then(|record| {
            if record.action == "update" {
                Ok(record)
            } else {
                Err(StoreError::invalid("entry.action", "must be update"))
            }
        })
        .map(Some)
        .map_err(entry_named(field.to_owned()))
}

/// An audit entry as a checked record (its errors name `entry.<field>`).
fn valid_entry(entry: chat_memory_proto::v1::AuditEntry) -> Result<AuditRecord, StoreError> {
    audit_record(pb::RecordAuditRequest { entry: Some(entry) })
        .and_then(|record| record.validate().map(|()| record))
}

/// Names an entry's bad field where the entry sits: `<place>.<field>`.
fn entry_named(place: String) -> impl Fn(StoreError) -> StoreError {
    move |e| match e {
        StoreError::InvalidArgument { field, reason } => StoreError::invalid(
            format!("{place}.{}", field.trim_start_matches("entry.")),
            reason,
        ),
        other => other,
    }
}

/// Names a batch item's bad field by its place: `<list>[i].<field>`.
fn at(list: &'static str, i: usize) -> impl Fn(StoreError) -> StoreError {
    move |e| match e {
        StoreError::InvalidArgument { field, reason } => StoreError::InvalidArgument {
            field: format!("{list}[{i}].{field}").into(),
            reason,
        },
        other => other,
    }
}

/// Every job of a batch, checked; a bad one names its place (`jobs[i].field`).
pub fn accepted_jobs(r: pb::RecordAcceptedBatchRequest) -> Vec<Result<AcceptedJob, StoreError>> {
    r.jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| accepted_job(job).map_err(at("jobs", i)))
        .collect()
}

/// Every claim of a batch, checked; a bad one names its place (`claims[i].field`).
pub fn claims(r: pb::ClaimChatsRequest) -> Vec<Result<(ChatId, Access), StoreError>> {
    r.claims
        .into_iter()
        .enumerate()
        .map(|(i, claim)| {
            let at = at("claims", i);
            let chat = ChatId::parse(claim.chat_id).map_err(&at)?;
            let access = Access::parse(claim.access)
                .map_err(&at)?
                .ok_or_else(|| at(StoreError::invalid("access", "is required")))?;
            Ok((chat, access))
        })
        .collect()
}

pub fn delivery(r: pb::BeginJobRequest) -> Result<Delivery, StoreError> {
    let chat_id = ChatId::parse(r.chat_id)?;
    Ok(Delivery {
        chat_id,
        job_id: JobId::parse(&r.job_id)?,
        stream_seq: StreamSeq::parse(r.stream_seq, "stream_seq")?,
        attempt: count(r.attempt, "attempt")?,
        message_count: count(r.message_count, "message_count")?,
        accepted_at: time_or_now(r.accepted_at.as_ref(), "accepted_at")?,
        access: Access::parse(r.access)?,
        replay: r.replay,
        accept_audit: carried_audit(r.accept_audit, "accept_audit")?,
        request_hash: request_digest(r.request_hash, "request_hash")?,
    })
}

/// The content of a commit and the version it expects, checked.
fn commit_content(
    content: Option<pb::MemoryContent>,
    expected_version: i64,
) -> Result<MemoryContent, StoreError> {
    let content = content.ok_or_else(|| StoreError::invalid("content", "is required"))?;
    if expected_version < 0 {
        return Err(StoreError::invalid(
            "expected_version",
            "must not be negative",
        ));
    }
    memory_content(content)
}

pub fn commit(r: pb::CommitJobRequest) -> Result<Commit, StoreError> {
    let chat_id = ChatId::parse(r.chat_id)?;
    let content = commit_content(r.content, r.expected_version)?;
    Ok(Commit {
        chat_id,
        job_id: JobId::parse(&r.job_id)?,
        stream_seq: StreamSeq::parse(r.stream_seq, "stream_seq")?,
        expected_version: r.expected_version,
        content,
        attempt: count(r.attempt, "attempt")?,
    })
}

/// The jobs of a `BeginJobs` call: one chat (every job's own), increasing sequence.
pub fn deliveries(r: pb::BeginJobsRequest) -> Result<(ChatId, Vec<Delivery>), StoreError> {
    let chat_id = ChatId::parse(r.chat_id)?;
    if r.jobs.is_empty() {
        return Err(StoreError::invalid("jobs", "at least one job is required"));
    }
    let jobs = r
        .jobs
        .into_iter()
        .map(delivery)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(other) = jobs.iter().find(|d| d.chat_id != chat_id) {
        return Err(StoreError::invalid(
            "jobs.chat_id",
            format!("job {} is not of chat_id", other.job_id.uuid()),
        ));
    }
    if jobs.windows(2).any(|w| w[0].stream_seq >= w[1].stream_seq) {
        return Err(StoreError::invalid(
            "jobs.stream_seq",
            "must increase from one job to the next",
        ));
    }
    Ok((chat_id, jobs))
}

/// Every chat of a `BeginJobsBatch` call, checked as [`deliveries`] checks
/// one; a bad one names its place (`chats[i].field`).
pub fn begin_batches(
    r: pb::BeginJobsBatchRequest,
) -> Vec<Result<(ChatId, Vec<Delivery>), StoreError>> {
    r.chats
        .into_iter()
        .enumerate()
        .map(|(i, chat)| deliveries(chat).map_err(at("chats", i)))
        .collect()
}

pub fn commit_batch(r: pb::CommitJobsRequest) -> Result<CommitBatch, StoreError> {
    let chat_id = ChatId::parse(r.chat_id)?;
    let content = commit_content(r.content, r.expected_version)?;
    if r.jobs.is_empty() {
        return Err(StoreError::invalid("jobs", "at least one job is required"));
    }
    let jobs = r
        .jobs
        .into_iter()
        .map(|j| {
            Ok(CommittedJob {
                job_id: JobId::parse(&j.job_id)?,
                stream_seq: StreamSeq::parse(j.stream_seq, "jobs.stream_seq")?,
                attempt: count(j.attempt, "jobs.attempt")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if jobs.windows(2).any(|w| w[0].stream_seq >= w[1].stream_seq) {
        return Err(StoreError::invalid(
            "jobs.stream_seq",
            "must increase from one job to the next",
        ));
    }
    let call_id = uuid::Uuid::parse_str(&r.call_id)
        .map_err(|_| StoreError::invalid("call_id", "must be a UUID"))?;
    let trace_id = match r.trace_id {
        t if t.is_empty() => None,
        t if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) => Some(t),
        _ => {
            return Err(StoreError::invalid(
                "trace_id",
                "must be empty or 32 hexadecimal digits",
            ));
        }
    };
    Ok(CommitBatch {
        chat_id,
        jobs,
        expected_version: r.expected_version,
        content,
        call_id,
        trace_id,
    })
}

/// The commits of a `CommitJobsBatch` call, each parsed alone: a malformed
/// one is that commit's refusal (naming `commits[i].field`), not the call's.
pub fn commit_batches(r: pb::CommitJobsBatchRequest) -> Vec<Result<CommitBatch, StoreError>> {
    r.commits
        .into_iter()
        .enumerate()
        .map(|(i, commit)| commit_batch(commit).map_err(at("commits", i)))
        .collect()
}

pub fn failure(r: pb::FailJobRequest) -> Result<Failure, StoreError> {
    let chat_id = ChatId::parse(r.chat_id)?;
    Ok(Failure {
        chat_id,
        job_id: JobId::parse(&r.job_id)?,
        stream_seq: StreamSeq::parse(r.stream_seq, "stream_seq")?,
        attempt: count(r.attempt, "attempt")?,
        error: r.error,
        terminal: r.terminal,
    })
}

/// `through_stream_seq` may be 0: nothing of the chat is left in the stream.
pub fn through_seq(raw: u64) -> Result<i64, StoreError> {
    i64::try_from(raw).map_err(|_| StoreError::invalid("through_stream_seq", "out of range"))
}

fn memory_content(c: pb::MemoryContent) -> Result<MemoryContent, StoreError> {
    let tokens = c.token_counts.unwrap_or_default();
    // An empty state means "no state yet"; anything else must be JSON.
    let state = if c.state_json.trim().is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_str(&c.state_json)
            .map_err(|e| StoreError::invalid("content.state_json", format!("not JSON: {e}")))?
    };
    Ok(MemoryContent {
        user_confirmed: c.user_confirmed,
        llm_inferred: c.llm_inferred,
        general_summary: c.general_summary,
        tokens: TokenCounts {
            user_confirmed: count(tokens.user_confirmed, "content.token_counts.user_confirmed")?,
            llm_inferred: count(tokens.llm_inferred, "content.token_counts.llm_inferred")?,
            general_summary: count(
                tokens.general_summary,
                "content.token_counts.general_summary",
            )?,
        },
        state,
    })
}

/// Stored counts are written from `u32` values, so they are never negative.
fn unsigned(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn token_counts(t: TokenCounts) -> pb_v1::TokenCounts {
    let (u, l, g) = (
        unsigned(t.user_confirmed),
        unsigned(t.llm_inferred),
        unsigned(t.general_summary),
    );
    pb_v1::TokenCounts {
        user_confirmed: u,
        llm_inferred: l,
        general_summary: g,
        total: u.saturating_add(l).saturating_add(g),
    }
}

pub fn content_to_pb(c: MemoryContent) -> pb::MemoryContent {
    pb::MemoryContent {
        user_confirmed: c.user_confirmed,
        llm_inferred: c.llm_inferred,
        general_summary: c.general_summary,
        token_counts: Some(token_counts(c.tokens)),
        state_json: c.state.to_string(),
    }
}

pub fn begin_to_pb(b: Begin) -> pb::BeginJobResponse {
    match b {
        Begin::Apply {
            prior,
            prior_version,
        } => pb::BeginJobResponse {
            skip: pb::SkipReason::Unspecified.into(),
            prior: prior.map(content_to_pb),
            prior_version,
        },
        Begin::Skip(reason) => pb::BeginJobResponse {
            skip: skip_to_pb(Some(reason)).into(),
            prior: None,
            prior_version: 0,
        },
    }
}

fn skip_to_pb(reason: Option<Skip>) -> pb::SkipReason {
    match reason {
        None => pb::SkipReason::Unspecified,
        Some(Skip::AlreadyApplied) => pb::SkipReason::AlreadyApplied,
        Some(Skip::Superseded) => pb::SkipReason::Superseded,
        Some(Skip::ChatDeleted) => pb::SkipReason::ChatDeleted,
        Some(Skip::AlreadyFailed) => pb::SkipReason::AlreadyFailed,
        Some(Skip::NotOwner) => pb::SkipReason::NotOwner,
        Some(Skip::KeyReused) => pb::SkipReason::KeyReused,
    }
}

pub fn begun_to_pb(b: Begun) -> pb::BeginJobsResponse {
    pb::BeginJobsResponse {
        skips: b.skips.into_iter().map(|s| skip_to_pb(s).into()).collect(),
        prior: b.prior.map(content_to_pb),
        prior_version: b.prior_version,
    }
}

pub fn committed_to_pb(c: Committed) -> pb::CommitJobResponse {
    let outcome = match c.outcome {
        CommitOutcome::Applied => pb::CommitOutcome::Applied,
        CommitOutcome::AlreadyApplied => pb::CommitOutcome::AlreadyApplied,
        CommitOutcome::Superseded => pb::CommitOutcome::Superseded,
        CommitOutcome::ChatDeleted => pb::CommitOutcome::ChatDeleted,
        CommitOutcome::VersionConflict => pb::CommitOutcome::VersionConflict,
    };
    pb::CommitJobResponse {
        outcome: outcome.into(),
        version: c.version,
    }
}

/// CommitJobs's answer (also each applied commit's in a batch).
pub fn commit_jobs_response(c: Committed, expiry: Expiry) -> pb::CommitJobsResponse {
    let updated_at = c.updated_at.map(to_timestamp);
    let view = c.view.clone();
    let c = committed_to_pb(c);
    let mut answer = pb::CommitJobsResponse {
        outcome: c.outcome,
        version: c.version,
        updated_at,
        ..Default::default()
    };
    if let Some(view) = view {
        answer.owner_user = view.owner_user;
        answer.pending_jobs = Some(u32::try_from(view.pending_seqs.len()).unwrap_or(u32::MAX));
        answer.applied_through_seq = u64::try_from(view.applied_through).unwrap_or(0);
        answer.pending_seqs = view.pending_seqs;
        answer.expires_at = expiry.at(view.owner_active_at);
    }
    answer
}

/// One commit's answer in a batch, as CommitJobs would answer it.
///
/// # Errors
/// The error that would fail CommitJobs with anything but INVALID_ARGUMENT
/// (which fails the whole batch).
pub fn commit_result(
    answer: Result<Committed, StoreError>,
    expiry: Expiry,
) -> Result<pb::CommitJobsResult, StoreError> {
    use pb::commit_jobs_result::Result as R;
    let result = match answer {
        Ok(committed) => R::Committed(commit_jobs_response(committed, expiry)),
        // This commit alone is refused, as CommitJobs would refuse it.
        Err(e @ StoreError::InvalidArgument { .. }) => {
            R::Invalid(tonic::Status::from(e).message().to_owned())
        }
        Err(other) => return Err(other),
    };
    Ok(pb::CommitJobsResult {
        result: Some(result),
    })
}

/// Every read of a batch, checked; a bad one names its place (`reads[i].field`).
pub fn memory_reads(
    r: pb::GetMemoriesRequest,
) -> Vec<Result<(ChatId, Option<Access>), StoreError>> {
    r.reads
        .into_iter()
        .enumerate()
        .map(|(i, read)| memory_read(read).map_err(at("reads", i)))
        .collect()
}

fn memory_read(r: pb::GetMemoryRequest) -> Result<(ChatId, Option<Access>), StoreError> {
    Ok((ChatId::parse(r.chat_id)?, Access::parse(r.access)?))
}

/// One read's answer in a batch, as GetMemory would answer it.
///
/// # Errors
/// The error that would fail GetMemory with anything but NOT_FOUND or
/// INVALID_ARGUMENT (which fails the whole batch: the database is out of reach).
pub fn memory_result(
    answer: Result<MemoryView, StoreError>,
    expiry: Expiry,
) -> Result<pb::GetMemoryResult, StoreError> {
    use pb::get_memory_result::Result as R;
    let result = match answer {
        Ok(memory) => R::Memory(memory_to_pb(memory, expiry)),
        Err(StoreError::NotFound(_)) => R::NotFound(true),
        Err(StoreError::Absent(_)) => R::Absent(true),
        Err(e @ StoreError::InvalidArgument { .. }) => {
            R::Invalid(tonic::Status::from(e).message().to_owned())
        }
        Err(other) => return Err(other),
    };
    Ok(pb::GetMemoryResult {
        result: Some(result),
    })
}

/// How long an inactive chat lives (`expiry.inactive_after_secs`; `None`:
/// expiry off): what makes an answer's `expires_at`.
#[derive(Debug, Clone, Copy)]
pub struct Expiry(pub Option<chrono::Duration>);

impl Expiry {
    /// When a chat whose owner was last active at `active_at` may be purged.
    fn at(self, active_at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
        let (active_at, after) = (active_at?, self.0?);
        active_at.checked_add_signed(after).map(to_timestamp)
    }
}

pub fn memory_to_pb(m: MemoryView, expiry: Expiry) -> pb::GetMemoryResponse {
    let expires_at = expiry.at(m.owner_active_at);
    let tokens = token_counts(m.content.tokens);
    pb::GetMemoryResponse {
        chat_id: m.chat_id,
        memory: Some(pb_v1::Memory {
            user_confirmed: m.content.user_confirmed,
            llm_inferred: m.content.llm_inferred,
            general_summary: m.content.general_summary,
            token_counts: Some(tokens),
            version: m.version,
            updated_at: Some(to_timestamp(m.updated_at)),
        }),
        freshness: Some(pb_v1::Freshness {
            last_applied_job_id: m.last_applied_job_id.to_string(),
            pending_jobs: u32::try_from(m.pending_jobs).unwrap_or(u32::MAX),
        }),
        owner_user: m.owner_user,
        expires_at,
    }
}

pub fn job_to_pb(j: JobView) -> pb::GetJobResponse {
    let state = match j.state {
        JobState::Queued => pb_v1::JobState::Queued,
        JobState::Running => pb_v1::JobState::Running,
        JobState::Succeeded => pb_v1::JobState::Succeeded,
        JobState::Failed => pb_v1::JobState::Failed,
    };
    pb::GetJobResponse {
        job_id: j.job_id.to_string(),
        chat_id: j.chat_id,
        state: state.into(),
        attempts: unsigned(j.attempts),
        error: j.error.unwrap_or_default(),
        resulting_version: j.resulting_version,
        accepted_at: Some(to_timestamp(j.accepted_at)),
        updated_at: Some(to_timestamp(j.updated_at)),
        stream_seq: u64::try_from(j.stream_seq).unwrap_or(0),
        applied_in_call: j.applied_in_call.map(|c| c.to_string()).unwrap_or_default(),
    }
}

/// Longest page of audit rows one query returns.
const MAX_AUDIT_PAGE: u32 = 1000;

pub fn audit_record(r: pb::RecordAuditRequest) -> Result<AuditRecord, StoreError> {
    let e = r
        .entry
        .ok_or_else(|| StoreError::invalid("entry", "is required"))?;
    let audit_id = uuid::Uuid::parse_str(&e.audit_id)
        .map_err(|_| StoreError::invalid("entry.audit_id", "must be a UUID"))?;
    Ok(AuditRecord {
        audit_id,
        at: audit_time(e.at.as_ref(), audit_id)?,
        tenant: e.tenant,
        user: e.user,
        action: e.action,
        chat_id: e.chat_id,
        job_id: e.job_id,
        outcome: e.outcome,
        request_id: e.request_id,
        trace_id: e.trace_id,
        detail: e.detail,
    })
}

/// Every entry of a batch, or the first malformed one named `entries[i].<field>`.
pub fn audit_records(r: pb::RecordAuditsRequest) -> Result<Vec<AuditRecord>, StoreError> {
    if r.entries.is_empty() {
        return Err(StoreError::invalid(
            "entries",
            "at least one entry is required",
        ));
    }
    r.entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| valid_entry(entry).map_err(entry_named(format!("entries[{i}]"))))
        .collect()
}

pub fn audit_query(r: pb::QueryAuditRequest) -> Result<AuditQuery, StoreError> {
    if r.tenant.is_empty() {
        return Err(StoreError::invalid("tenant", "must not be empty"));
    }
    let f = r.filter.unwrap_or_default();
    let before = match f.before.as_ref() {
        None => None,
        Some(ts) => Some(
            from_timestamp(ts)
                .ok_or_else(|| StoreError::invalid("filter.before", "out of range"))?,
        ),
    };
    let limit = match f.limit {
        0 => 100,
        n => n.min(MAX_AUDIT_PAGE),
    };
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    Ok(AuditQuery {
        tenant: r.tenant,
        chat_id: nonempty(f.chat_id),
        user: nonempty(f.user),
        action: nonempty(f.action),
        before,
        limit: u64::from(limit),
    })
}

pub fn audit_entry_to_pb(m: crate::entity::audit_log::Model) -> pb_v1::AuditEntry {
    pb_v1::AuditEntry {
        audit_id: m.audit_id.to_string(),
        at: Some(to_timestamp(m.at)),
        tenant: m.tenant,
        user: m.user_id,
        action: m.action,
        chat_id: m.chat_id,
        job_id: m.job_id,
        outcome: m.outcome,
        request_id: m.request_id,
        trace_id: m.trace_id,
        detail: m.detail,
    }
}
