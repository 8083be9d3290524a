//! memory-store as the worker calls it: the client type, and the BeginJobs
//! calls of batches that start together, gathered into `BeginJobsBatch` calls
//! (one memory-store request, one transaction; `service_kit::gather`).

use tonic::{Code, Status, transport::Channel};

use chat_memory_proto::store::{
    BeginJobsBatchRequest, BeginJobsRequest, BeginJobsResponse, BeginJobsResult, begin_jobs_result,
    memory_store_client::MemoryStoreClient,
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
