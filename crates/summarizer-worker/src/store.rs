//! memory-store as the worker calls it: the client type, the BeginJobs calls
//! of batches that start together, gathered into `BeginJobsBatch` calls, and
//! the CommitJobs calls of batches whose model calls end together, gathered
//! into `CommitJobsBatch` calls (one memory-store request, one transaction
//! each; `service_kit::gather`).

use tonic::{Code, Status, transport::Channel};

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
        Self(Gatherer::start(begins_call(client), settings))
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

/// CommitJobs, gathered over chats; cheap to clone.
#[derive(Clone)]
pub struct Commits(Gatherer<CommitJobsRequest, CommitJobsResult>);

impl Commits {
    /// Starts the gathering on the current runtime.
    pub fn start(client: StoreClient, settings: &BatchSettings) -> Self {
        Self(Gatherer::start(commits_call(client), settings))
    }

    /// CommitJobs for one chat, gathered with the other chats' that commit
    /// now. `request.trace_id` should be the commit's trace: the batch call
    /// carries several.
    ///
    /// # Errors
    /// CommitJobs's status for this chat (INVALID_ARGUMENT when it refuses the
    /// commit alone), or the batch call's status.
    pub async fn commit(&self, request: CommitJobsRequest) -> Result<CommitJobsResponse, Status> {
        match self.0.call(request).await?.result {
            Some(commit_jobs_result::Result::Committed(committed)) => Ok(committed),
            Some(commit_jobs_result::Result::Invalid(reason)) => {
                Err(Status::invalid_argument(reason))
            }
            None => Err(Status::internal(
                "CommitJobsBatch answered a commit with nothing",
            )),
        }
    }
}

/// `CommitJobsBatch` on `client`; a lone commit (and every commit, one at a
/// time, for an older memory-store) goes as `CommitJobs`.
fn commits_call(client: StoreClient) -> BatchCall<CommitJobsRequest, CommitJobsResult> {
    with_single_fallback(
        client,
        |mut client, mut commits| {
            Box::pin(async move {
                if commits.len() == 1
                    && let Some(commit) = commits.pop()
                {
                    return Ok(vec![commit_one(&mut client, commit).await?]);
                }
                let answer = client
                    .commit_jobs_batch(CommitJobsBatchRequest { commits })
                    .await?;
                Ok(answer.into_inner().results)
            })
        },
        |mut client, commit| Box::pin(async move { commit_one(&mut client, commit).await }),
    )
}

/// One `CommitJobs`, answered as a batch answers each commit.
async fn commit_one(
    client: &mut StoreClient,
    commit: CommitJobsRequest,
) -> Result<CommitJobsResult, Status> {
    let result = match client.commit_jobs(commit).await {
        Ok(committed) => commit_jobs_result::Result::Committed(committed.into_inner()),
        Err(s) if s.code() == Code::InvalidArgument => {
            commit_jobs_result::Result::Invalid(s.message().to_owned())
        }
        Err(s) => return Err(s),
    };
    Ok(CommitJobsResult {
        result: Some(result),
    })
}
