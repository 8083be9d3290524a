//! The `chatmemory.store.v1.MemoryStore` adapter: each handler converts the
//! request ([`convert`]), calls the query layer, and maps the error.

mod convert;

use chat_memory_proto::store::{self as pb, memory_store_server::MemoryStore};
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    access::{self, Access},
    audit,
    domain::{ChatId, JobId},
    error::StoreError,
    jobs, memories,
};

/// The gRPC service; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct StoreService {
    db: DatabaseConnection,
    /// Audit rows, group-committed (see [`crate::audit_batch`]).
    audit: crate::audit_batch::AuditWriter,
    /// What a memory's answer says of its expiry (`expires_at`).
    expiry: convert::Expiry,
}

impl StoreService {
    /// Starts the audit writers on the current runtime.
    pub fn new(db: DatabaseConnection, expiry: &crate::settings::ExpirySettings) -> Self {
        let audit = crate::audit_batch::AuditWriter::start(db.clone());
        Self {
            db,
            audit,
            expiry: convert::Expiry(expiry.inactive_after()),
        }
    }
}

#[tonic::async_trait]
impl MemoryStore for StoreService {
    async fn record_accepted(
        &self,
        request: Request<pb::RecordAcceptedRequest>,
    ) -> Result<Response<pb::RecordAcceptedResponse>, Status> {
        let job = convert::accepted_job(request.into_inner())?;
        let recorded = jobs::record_accepted(&self.db, job)
            .instrument(crate::db::span("record_accepted"))
            .await?;
        Ok(Response::new(pb::RecordAcceptedResponse {
            inserted: recorded.inserted,
            earlier_acceptance: recorded.earlier_acceptance,
        }))
    }

    async fn record_accepted_batch(
        &self,
        request: Request<pb::RecordAcceptedBatchRequest>,
    ) -> Result<Response<pb::RecordAcceptedBatchResponse>, Status> {
        // A malformed job is its own refusal; the others are recorded together.
        let db = &self.db;
        let answers = each_valid(
            convert::accepted_jobs(request.into_inner()),
            "jobs",
            |valid| async move {
                jobs::record_accepted_batch(db, valid)
                    .instrument(crate::db::span("record_accepted_batch"))
                    .await
            },
        )
        .await?;
        let results = answers
            .into_iter()
            .map(|answer| match answer {
                Ok(recorded) => Ok(pb::RecordAcceptedResult {
                    inserted: recorded.inserted,
                    earlier_acceptance: recorded.earlier_acceptance,
                    ..Default::default()
                }),
                Err(StoreError::Conflict { .. }) => Ok(pb::RecordAcceptedResult {
                    key_reused: true,
                    ..Default::default()
                }),
                Err(e @ StoreError::InvalidArgument { .. }) => Ok(pb::RecordAcceptedResult {
                    invalid: Status::from(e).message().to_owned(),
                    ..Default::default()
                }),
                Err(other) => Err(other),
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Response::new(pb::RecordAcceptedBatchResponse { results }))
    }

    async fn begin_job(
        &self,
        request: Request<pb::BeginJobRequest>,
    ) -> Result<Response<pb::BeginJobResponse>, Status> {
        let delivery = convert::delivery(request.into_inner())?;
        let begin = jobs::begin_job(&self.db, delivery)
            .instrument(crate::db::span("begin_job"))
            .await?;
        Ok(Response::new(convert::begin_to_pb(begin)))
    }

    async fn commit_job(
        &self,
        request: Request<pb::CommitJobRequest>,
    ) -> Result<Response<pb::CommitJobResponse>, Status> {
        let commit = convert::commit(request.into_inner())?;
        let committed = memories::commit_job(&self.db, commit)
            .instrument(crate::db::span("commit_job"))
            .await?;
        Ok(Response::new(convert::committed_to_pb(committed)))
    }

    async fn begin_jobs(
        &self,
        request: Request<pb::BeginJobsRequest>,
    ) -> Result<Response<pb::BeginJobsResponse>, Status> {
        let (chat_id, deliveries) = convert::deliveries(request.into_inner())?;
        let begun = jobs::begin_jobs(&self.db, &chat_id, deliveries)
            .instrument(crate::db::span("begin_jobs"))
            .await?;
        Ok(Response::new(convert::begun_to_pb(begun)))
    }

    async fn begin_jobs_batch(
        &self,
        request: Request<pb::BeginJobsBatchRequest>,
    ) -> Result<Response<pb::BeginJobsBatchResponse>, Status> {
        // A malformed chat is its own refusal; the others are begun together.
        let db = &self.db;
        let answers = each_valid(
            convert::begin_batches(request.into_inner()),
            "chats",
            |valid| async move {
                jobs::begin_jobs_batch(db, valid)
                    .instrument(crate::db::span("begin_jobs_batch"))
                    .await
            },
        )
        .await?;
        let results = answers
            .into_iter()
            .map(|answer| {
                let result = match answer {
                    Ok(begun) => pb::begin_jobs_result::Result::Begun(convert::begun_to_pb(begun)),
                    // This chat alone is refused, as BeginJobs would refuse it.
                    Err(e @ StoreError::InvalidArgument { .. }) => {
                        pb::begin_jobs_result::Result::Invalid(Status::from(e).message().to_owned())
                    }
                    Err(other) => return Err(other),
                };
                Ok(pb::BeginJobsResult {
                    result: Some(result),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Response::new(pb::BeginJobsBatchResponse { results }))
    }

    async fn commit_jobs(
        &self,
        request: Request<pb::CommitJobsRequest>,
    ) -> Result<Response<pb::CommitJobsResponse>, Status> {
        let batch = convert::commit_batch(request.into_inner())?;
        let committed = memories::commit_jobs(&self.db, batch)
            .instrument(crate::db::span("commit_jobs"))
            .await?;
        Ok(Response::new(convert::commit_jobs_response(
            committed,
            self.expiry,
        )))
    }

    async fn commit_jobs_batch(
        &self,
        request: Request<pb::CommitJobsBatchRequest>,
    ) -> Result<Response<pb::CommitJobsBatchResponse>, Status> {
        // A malformed commit is its own refusal; the others go to the store.
        let db = &self.db;
        let answers = each_valid(
            convert::commit_batches(request.into_inner()),
            "commits",
            |valid| async move {
                memories::commit_jobs_batch(db, valid)
                    .instrument(crate::db::span("commit_jobs_batch"))
                    .await
            },
        )
        .await?;
        let results = answers
            .into_iter()
            .map(|answer| convert::commit_result(answer, self.expiry))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Response::new(pb::CommitJobsBatchResponse { results }))
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::FailJobResponse>, Status> {
        let failure = convert::failure(request.into_inner())?;
        jobs::fail_job(&self.db, failure)
            .instrument(crate::db::span("fail_job"))
            .await?;
        Ok(Response::new(pb::FailJobResponse {}))
    }

    async fn get_memory(
        &self,
        request: Request<pb::GetMemoryRequest>,
    ) -> Result<Response<pb::GetMemoryResponse>, Status> {
        let request = request.into_inner();
        let chat_id = ChatId::parse(request.chat_id)?;
        let access = Access::parse(request.access)?;
        let memory = memories::get_memory(&self.db, &chat_id, access.as_ref())
            .instrument(crate::db::span("get_memory"))
            .await?;
        Ok(Response::new(convert::memory_to_pb(memory, self.expiry)))
    }

    async fn get_memories(
        &self,
        request: Request<pb::GetMemoriesRequest>,
    ) -> Result<Response<pb::GetMemoriesResponse>, Status> {
        // A malformed read is its own refusal; the others are read together.
        let db = &self.db;
        let answers = each_valid(
            convert::memory_reads(request.into_inner()),
            "reads",
            |valid| async move {
                memories::get_memories(db, &valid)
                    .instrument(crate::db::span("get_memories"))
                    .await
            },
        )
        .await?;
        let results = answers
            .into_iter()
            .map(|answer| convert::memory_result(answer, self.expiry))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Response::new(pb::GetMemoriesResponse { results }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let request = request.into_inner();
        let job_id = JobId::parse(&request.job_id)?;
        let access = Access::parse(request.access)?;
        let job = jobs::get_job(&self.db, job_id, access.as_ref())
            .instrument(crate::db::span("get_job"))
            .await?;
        Ok(Response::new(convert::job_to_pb(job)))
    }

    async fn delete_chat(
        &self,
        request: Request<pb::DeleteChatRequest>,
    ) -> Result<Response<pb::DeleteChatResponse>, Status> {
        let request = request.into_inner();
        let chat_id = ChatId::parse(request.chat_id)?;
        let through = convert::through_seq(request.through_stream_seq)?;
        let access = Access::parse(request.access)?;
        let deleted = memories::delete_chat(&self.db, &chat_id, through, access.as_ref())
            .instrument(crate::db::span("delete_chat"))
            .await?;
        Ok(Response::new(pb::DeleteChatResponse {
            memory_deleted: deleted.memory_deleted,
            jobs_removed: u32::try_from(deleted.jobs_removed).unwrap_or(u32::MAX),
        }))
    }

    async fn claim_chat(
        &self,
        request: Request<pb::ClaimChatRequest>,
    ) -> Result<Response<pb::ClaimChatResponse>, Status> {
        let request = request.into_inner();
        let chat_id = ChatId::parse(request.chat_id)?;
        let access = Access::parse(request.access)?
            .ok_or_else(|| crate::StoreError::invalid("access", "is required"))?;
        let claimed = access::claim(&self.db, &chat_id, &access)
            .instrument(crate::db::span("claim"))
            .await?;
        Ok(Response::new(pb::ClaimChatResponse { claimed }))
    }

    async fn claim_chats(
        &self,
        request: Request<pb::ClaimChatsRequest>,
    ) -> Result<Response<pb::ClaimChatsResponse>, Status> {
        // A malformed claim is its own refusal; the others are claimed together.
        let db = &self.db;
        let verdicts = each_valid(
            convert::claims(request.into_inner()),
            "claims",
            |valid| async move {
                let verdicts = access::claim_many(db, valid)
                    .instrument(crate::db::span("claim_many"))
                    .await?;
                Ok(verdicts.into_iter().map(Ok).collect())
            },
        )
        .await?;
        let results = verdicts
            .into_iter()
            .map(|verdict| match verdict {
                Ok(verdict) => Ok(pb::ClaimChatResult {
                    claimed: verdict == access::Claim::Claimed,
                    denied: verdict == access::Claim::Denied,
                    ..Default::default()
                }),
                Err(e @ StoreError::InvalidArgument { .. }) => Ok(pb::ClaimChatResult {
                    invalid: Status::from(e).message().to_owned(),
                    ..Default::default()
                }),
                Err(other) => Err(other),
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Response::new(pb::ClaimChatsResponse { results }))
    }

    async fn record_audit(
        &self,
        request: Request<pb::RecordAuditRequest>,
    ) -> Result<Response<pb::RecordAuditResponse>, Status> {
        let record = convert::audit_record(request.into_inner())?;
        let inserted = self.audit.record(record).await?;
        Ok(Response::new(pb::RecordAuditResponse { inserted }))
    }

    async fn record_audits(
        &self,
        request: Request<pb::RecordAuditsRequest>,
    ) -> Result<Response<pb::RecordAuditsResponse>, Status> {
        let records = convert::audit_records(request.into_inner())?;
        let inserted = audit::record_batch(&self.db, &records)
            .instrument(crate::db::span("record_audits"))
            .await?;
        Ok(Response::new(pb::RecordAuditsResponse {
            inserted: u32::try_from(inserted).unwrap_or(u32::MAX),
        }))
    }

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Result<Response<pb::QueryAuditResponse>, Status> {
        let query = convert::audit_query(request.into_inner())?;
        let rows = audit::query(&self.db, query)
            .instrument(crate::db::span("query"))
            .await?;
        Ok(Response::new(pb::QueryAuditResponse {
            entries: rows.into_iter().map(convert::audit_entry_to_pb).collect(),
        }))
    }
}

/// Hands the well-formed items of a batch to `store` and answers every item in
/// request order: a malformed one keeps its own refusal.
///
/// # Errors
/// `store`'s error, which fails the whole call, or [`StoreError::CorruptRow`]
/// when it answered fewer items than it was given.
async fn each_valid<T, R, Fut>(
    parsed: Vec<Result<T, StoreError>>,
    what: &'static str,
    store: impl FnOnce(Vec<T>) -> Fut,
) -> Result<Vec<Result<R, StoreError>>, StoreError>
where
    Fut: std::future::Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>>,
{
    let mut refusals = Vec::with_capacity(parsed.len());
    let mut valid = Vec::with_capacity(parsed.len());
    for item in parsed {
        match item {
            Ok(item) => {
                valid.push(item);
                refusals.push(None);
            }
            Err(refused) => refusals.push(Some(refused)),
        }
    }
    let mut answered = if valid.is_empty() {
        Vec::new()
    } else {
        store(valid).await?
    }
    .into_iter();
    let corrupt = |how: &str| StoreError::CorruptRow {
        table: what,
        reason: format!("a batch of {what} answered too {how}"),
    };
    let results = refusals
        .into_iter()
        .map(|refusal| match refusal {
            None => answered.next().ok_or_else(|| corrupt("few")),
            Some(refused) => Ok(Err(refused)),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    match answered.next() {
        Some(_) => Err(corrupt("many")),
        None => Ok(results),
    }
}
