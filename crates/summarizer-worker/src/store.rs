//! memory-store as the worker calls it: the client type, the BeginJobs calls
//! of batches that start together, gathered into `BeginJobsBatch` calls, and
//! the CommitJobs calls of batches whose model calls end together, gathered
//! into `CommitJobsBatch` calls (one memory-store request, one transaction
//! each; `service_kit::gather`).

use std::sync::Arc;

use tonic::{Code, Response, Status, transport::Channel};

use chat_memory_proto::store::{
    BeginJobsBatchRequest, BeginJobsRequest, BeginJobsResponse, BeginJobsResult,
    CommitJobsBatchRequest, CommitJobsRequest, CommitJobsResponse, CommitJobsResult,
    begin_jobs_result, commit_jobs_result, memory_store_client::MemoryStoreClient,
};
use service_kit::gather::{BatchCall, BatchSettings, Gatherer, with_single_fallback};

/// memory-store's client, presenting the service token on every call.
pub type StoreClient = MemoryStoreClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        service_kit::service_auth::AttachToken,
    >,
>;

/// BeginJobs, gathered over chats; cheap to clone.
#[derive(Clone)]
pub struct Begins(Gatherer<BeginJobsRequest, BeginJobsResult>);

impl Begins {
    /// Starts the gathering on the current runtime.
    pub fn start(client: StoreClient, settings: &BatchSettings) -> Self {
        Self(Gatherer::start("begins", begins_call(client), settings))
    }

    /// BeginJobs for one chat, gathered with the other chats' that start now.
    ///
    /// # Errors
    /// BeginJobs's status for this chat (INVALID_ARGUMENT when it refuses the
    /// chat alone), or the batch call's status.
    pub async fn begin(&self, request: BeginJobsRequest) -> Result<BeginJobsResponse, Status> {
        match self.0.call(request).await?.result {
            Some(begin_jobs_result::Result::Begun(begun)) => Ok(begun),
            Some(begin_jobs_result::Result::Invalid(reason)) => {
                Err(Status::invalid_argument(reason))
            }
            None => Err(Status::internal(
                "BeginJobsBatch answered a chat with nothing",
            )),
        }
    }
}

/// `BeginJobsBatch` on `client` (one BeginJobs at a time for an older memory-store).
fn begins_call(client: StoreClient) -> BatchCall<BeginJobsRequest, BeginJobsResult> {
    with_single_fallback(
        client,
        |mut client, chats| {
            Box::pin(async move {
                let answer = client
                    .begin_jobs_batch(BeginJobsBatchRequest { chats })
                    .await?;
                Ok(answer.into_inner().results)
            })
        },
        |mut client, chat| {
            Box::pin(async move {
                let result = match client.begin_jobs(chat).await {
                    Ok(begun) => begin_jobs_result::Result::Begun(begun.into_inner()),
                    Err(s) if s.code() == Code::InvalidArgument => {
                        begin_jobs_result::Result::Invalid(s.message().to_owned())
                    }
                    Err(s) => return Err(s),
                };
                Ok(BeginJobsResult {
                    result: Some(result),
                })
            })
        },
    )
}

/// CommitJobs, gathered over chats; cheap to clone. Each commit has its own
/// answer, its own failure included.
#[derive(Clone)]
pub struct Commits(Gatherer<CommitJobsRequest, Result<CommitJobsResponse, Status>>);

impl Commits {
    /// Starts the gathering on the current runtime.
    pub fn start(client: StoreClient, settings: &BatchSettings) -> Self {
        Self(Gatherer::start("commits", commits_call(client), settings))
    }

    /// CommitJobs for one chat, gathered with the other chats' that commit
    /// now. The request carries the caller's trace id: a batch call carries
    /// the commits of several traces.
    ///
    /// # Errors
    /// CommitJobs's status for this commit (INVALID_ARGUMENT when it refuses
    /// it), or the batch call's status when memory-store was not reached.
    pub async fn commit(
        &self,
        mut request: CommitJobsRequest,
    ) -> Result<CommitJobsResponse, Status> {
        request.trace_id = service_kit::telemetry::propagation::current_trace_id();
        self.0.call(request).await?
    }
}

/// `CommitJobsBatch` on `client`. A lone commit goes as `CommitJobs`; so does
/// each commit of a batch memory-store could not take as one (an older
/// memory-store without the call, or a transaction that failed): one commit
/// that fails every time then fails alone, never its neighbours. Only a
/// memory-store out of reach fails the whole batch.
fn commits_call(
    client: StoreClient,
) -> BatchCall<CommitJobsRequest, Result<CommitJobsResponse, Status>> {
    Arc::new(move |mut commits: Vec<CommitJobsRequest>| {
        let mut client = client.clone();
        Box::pin(async move {
            if commits.len() == 1
                && let Some(commit) = commits.pop()
            {
                return Ok(vec![
                    client.commit_jobs(commit).await.map(Response::into_inner),
                ]);
            }
            let batch = CommitJobsBatchRequest {
                commits: commits.clone(),
            };
            match client.commit_jobs_batch(batch).await {
                Ok(answer) => {
                    let results = answer.into_inner().results;
                    if results.len() != commits.len() {
                        return Err(Status::internal(format!(
                            "CommitJobsBatch answered {} of {} commits",
                            results.len(),
                            commits.len()
                        )));
                    }
                    Ok(results.into_iter().map(committed).collect())
                }
                Err(s) if unreachable(s.code()) => Err(s),
                Err(_) => {
                    let mut results = Vec::with_capacity(commits.len());
                    for commit in commits {
                        results.push(client.commit_jobs(commit).await.map(Response::into_inner));
                    }
                    Ok(results)
                }
            }
        })
    })
}

/// A batch's answer for one commit, as `CommitJobs` would have answered it.
fn committed(result: CommitJobsResult) -> Result<CommitJobsResponse, Status> {
    match result.result {
        Some(commit_jobs_result::Result::Committed(committed)) => Ok(committed),
        Some(commit_jobs_result::Result::Invalid(reason)) => Err(Status::invalid_argument(reason)),
        None => Err(Status::internal(
            "CommitJobsBatch answered a commit with nothing",
        )),
    }
}

/// memory-store was not reached, or did not answer in time: single calls would fare no better.
fn unreachable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted
    )
}
