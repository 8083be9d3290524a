//! Calls to the gateway's public API (`chatmemory.v1.MemoryService`), each
//! presenting the MCP caller's token and carrying the current trace context.

use std::time::Duration;

use chat_memory_proto::v1::{
    GetMemoryRequest, GetMemoryResponse, GetUpdateStatusRequest, GetUpdateStatusResponse,
    UpdateMemoryRequest, UpdateMemoryResponse, memory_service_client::MemoryServiceClient,
};
use tonic::{Request, Status, transport::Channel};

use crate::auth::Caller;

/// A cheap-to-clone handle on one lazily connecting channel to the gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    client: MemoryServiceClient<Channel>,
    /// Deadline of a call; a waiting read adds its wait.
    request_timeout: Duration,
}

impl Gateway {
    pub fn new(channel: Channel, request_timeout: Duration) -> Self {
        Self {
            client: MemoryServiceClient::new(channel),
            request_timeout,
        }
    }

    fn request<T>(&self, token: &Caller, message: T, extra: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", token.metadata_value());
        if let Some(chain) = token.forwarded_for() {
            request.metadata_mut().insert("x-forwarded-for", chain);
        }
        request.set_timeout(self.request_timeout + extra);
        service_kit::telemetry::propagation::inject_into_metadata(request.metadata_mut());
        request
    }

    /// `GetMemory`; its deadline covers the read's own `wait_ms`.
    ///
    /// # Errors
    /// The gateway's status, or the channel's when it is unreachable.
    pub async fn get_memory(
        &self,
        token: &Caller,
        message: GetMemoryRequest,
    ) -> Result<GetMemoryResponse, Status> {
        let wait = Duration::from_millis(u64::from(message.wait_ms));
        let request = self.request(token, message, wait);
        Ok(self.client.clone().get_memory(request).await?.into_inner())
    }

    /// `UpdateMemory`.
    ///
    /// # Errors
    /// As [`Gateway::get_memory`].
    pub async fn update_memory(
        &self,
        token: &Caller,
        message: UpdateMemoryRequest,
    ) -> Result<UpdateMemoryResponse, Status> {
        let request = self.request(token, message, Duration::ZERO);
        Ok(self
            .client
            .clone()
            .update_memory(request)
            .await?
            .into_inner())
    }

    /// `GetUpdateStatus`.
    ///
    /// # Errors
    /// As [`Gateway::get_memory`].
    pub async fn get_update_status(
        &self,
        token: &Caller,
        message: GetUpdateStatusRequest,
    ) -> Result<GetUpdateStatusResponse, Status> {
        let request = self.request(token, message, Duration::ZERO);
        Ok(self
            .client
            .clone()
            .get_update_status(request)
            .await?
            .into_inner())
    }
}
