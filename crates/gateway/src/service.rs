//! gRPC handlers of `chatmemory.v1.MemoryService`: each converts the request to
//! domain types, calls the queue or memory-store, and maps the error.

use chrono::Utc;
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::store::{self as store_pb, memory_store_client::MemoryStoreClient};
use chat_memory_proto::time::to_timestamp;
use chat_memory_proto::v1::{
    DeleteMemoryRequest, DeleteMemoryResponse, GetMemoryRequest, GetMemoryResponse,
    GetUpdateStatusRequest, GetUpdateStatusResponse, UpdateMemoryRequest, UpdateMemoryResponse,
    memory_service_server::MemoryService,
};
use job_queue::JobPublisher;

use crate::error::GatewayError;
use crate::validation::{ChatId, JobId, Limits, UpdateCommand};

/// Namespace of job ids derived from idempotency keys (UUIDv5).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_3f0e_8a2b_4c5d_9e7f_1a2b_3c4d_5e6f);

/// The job id of an update: derived from the chat and idempotency key when there
/// is one (so a retry maps to the same job), else a fresh time-ordered UUIDv7.
pub fn job_id_for(chat_id: &ChatId, idempotency_key: Option<&str>) -> Uuid {
    match idempotency_key {
        Some(key) => {
            let name = format!("{}\u{0}{key}", chat_id.as_str());
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())
        }
        None => Uuid::now_v7(),
    }
}

/// The public API.
pub struct MemoryApi {
    publisher: JobPublisher,
    store: MemoryStoreClient<Channel>,
    limits: Limits,
}

impl MemoryApi {
    pub fn new(publisher: JobPublisher, store: MemoryStoreClient<Channel>, limits: Limits) -> Self {
        Self {
            publisher,
            store,
            limits,
        }
    }

    async fn update(&self, req: UpdateMemoryRequest) -> Result<UpdateMemoryResponse, GatewayError> {
        let cmd = UpdateCommand::parse(req, &self.limits)?;
        let job_id = job_id_for(&cmd.chat_id, cmd.idempotency_key.as_deref());
        let accepted_at = to_timestamp(Utc::now());
        let message_count = u32::try_from(cmd.messages.len()).unwrap_or(u32::MAX);
        let job = UpdateJob {
            job_id: job_id.to_string(),
            chat_id: cmd.chat_id.as_str().to_owned(),
            messages: cmd.messages.into_iter().map(|m| m.0).collect(),
            accepted_at: Some(accepted_at),
            idempotency_key: cmd.idempotency_key.clone().unwrap_or_default(),
        };
        let published = self
            .publisher
            .publish(&job)
            .await
            .map_err(GatewayError::from_queue)?;
        tracing::info!(
            job_id = %job.job_id,
            chat_id = %job.chat_id,
            stream_seq = published.sequence,
            messages = message_count,
            duplicate = published.duplicate,
            "update accepted"
        );
        // The job is durable now. Registering it makes its status and the chat's
        // pending count visible at once; if memory-store is down, the worker
        // registers it when it runs, so the update is still accepted.
        let record = store_pb::RecordAcceptedRequest {
            job_id: job.job_id.clone(),
            chat_id: job.chat_id.clone(),
            stream_seq: published.sequence,
            message_count,
            idempotency_key: job.idempotency_key.clone(),
            accepted_at: job.accepted_at,
        };
        let repeated = match self.store.clone().record_accepted(record).await {
            Ok(r) => r.into_inner().earlier_acceptance,
            Err(status) => {
                tracing::warn!(job_id = %job.job_id, code = ?status.code(), "could not register accepted job; the worker will");
                false
            }
        };
        Ok(UpdateMemoryResponse {
            job_id: job.job_id,
            deduplicated: published.duplicate || repeated,
        })
    }

    async fn get(&self, req: GetMemoryRequest) -> Result<GetMemoryResponse, GatewayError> {
        let chat_id = ChatId::parse(&req.chat_id, &self.limits)?;
        let resp = self
            .store
            .clone()
            .get_memory(store_pb::GetMemoryRequest {
                chat_id: chat_id.as_str().to_owned(),
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "memory"))?
            .into_inner();
        Ok(GetMemoryResponse {
            chat_id: resp.chat_id,
            memory: resp.memory,
            freshness: resp.freshness,
        })
    }

    async fn status(
        &self,
        req: GetUpdateStatusRequest,
    ) -> Result<GetUpdateStatusResponse, GatewayError> {
        let job_id = JobId::parse(&req.job_id)?;
        let job = self
            .store
            .clone()
            .get_job(store_pb::GetJobRequest {
                job_id: job_id.0.to_string(),
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "job"))?
            .into_inner();
        Ok(GetUpdateStatusResponse {
            job_id: job.job_id,
            chat_id: job.chat_id,
            state: job.state,
            attempts: job.attempts,
            error: job.error,
            resulting_version: job.resulting_version,
            accepted_at: job.accepted_at,
            updated_at: job.updated_at,
        })
    }

    async fn delete(&self, req: DeleteMemoryRequest) -> Result<DeleteMemoryResponse, GatewayError> {
        let chat_id = ChatId::parse(&req.chat_id, &self.limits)?;
        // Every job accepted before this point has a sequence <= through: those
        // still queued are discarded by the worker instead of re-creating the memory.
        let through = self
            .publisher
            .last_sequence()
            .await
            .map_err(GatewayError::from_queue)?;
        let resp = self
            .store
            .clone()
            .delete_chat(store_pb::DeleteChatRequest {
                chat_id: chat_id.as_str().to_owned(),
                through_stream_seq: through,
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "memory"))?
            .into_inner();
        tracing::info!(chat_id = %chat_id.as_str(), jobs_removed = resp.jobs_removed, "chat deleted");
        Ok(DeleteMemoryResponse {
            memory_deleted: resp.memory_deleted,
            jobs_removed: resp.jobs_removed,
        })
    }
}

#[tonic::async_trait]
impl MemoryService for MemoryApi {
    async fn update_memory(
        &self,
        request: Request<UpdateMemoryRequest>,
    ) -> Result<Response<UpdateMemoryResponse>, Status> {
        Ok(Response::new(self.update(request.into_inner()).await?))
    }

    async fn get_memory(
        &self,
        request: Request<GetMemoryRequest>,
    ) -> Result<Response<GetMemoryResponse>, Status> {
        Ok(Response::new(self.get(request.into_inner()).await?))
    }

    async fn get_update_status(
        &self,
        request: Request<GetUpdateStatusRequest>,
    ) -> Result<Response<GetUpdateStatusResponse>, Status> {
        Ok(Response::new(self.status(request.into_inner()).await?))
    }

    async fn delete_memory(
        &self,
        request: Request<DeleteMemoryRequest>,
    ) -> Result<Response<DeleteMemoryResponse>, Status> {
        Ok(Response::new(self.delete(request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_idempotency_key_gives_the_same_job_id_per_chat() {
        let limits = Limits::default();
        let a = ChatId::parse("chat-a", &limits).expect("valid");
        let b = ChatId::parse("chat-b", &limits).expect("valid");
        assert_eq!(job_id_for(&a, Some("k1")), job_id_for(&a, Some("k1")));
        assert_ne!(job_id_for(&a, Some("k1")), job_id_for(&a, Some("k2")));
        assert_ne!(job_id_for(&a, Some("k1")), job_id_for(&b, Some("k1")));
        assert_ne!(job_id_for(&a, None), job_id_for(&a, None));
    }
}
