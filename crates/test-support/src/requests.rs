//! Request builders the end-to-end tests share, so that a test reads as what
//! it sends (`update("chat-1", vec![user("My plan is PPO.")])`, `get("chat-1")`),
//! and the two calls nearly every test makes: [`send`] an update and read its
//! [`memory`], panicking with the status when the gateway refuses.

use chat_memory_proto::v1::{
    ChatMessage, DeleteMemoryRequest, GetMemoryRequest, GetMemoryResponse, GetUpdateStatusRequest,
    Role, UpdateMemoryRequest, WatchMemoryRequest,
};

use crate::GatewayClient;

/// A message from the user.
pub fn user(text: &str) -> ChatMessage {
    message(Role::User, text)
}

/// A message from the assistant.
pub fn assistant(text: &str) -> ChatMessage {
    message(Role::Assistant, text)
}

/// A message with `role`.
pub fn message(role: Role, text: &str) -> ChatMessage {
    ChatMessage {
        role: role as i32,
        content: text.into(),
        ..Default::default()
    }
}

/// An update of `chat_id` with `messages`, without an idempotency key.
pub fn update(chat_id: &str, messages: Vec<ChatMessage>) -> UpdateMemoryRequest {
    UpdateMemoryRequest {
        chat_id: chat_id.into(),
        messages,
        idempotency_key: String::new(),
    }
}

/// An update of `chat_id` with one user message.
pub fn user_update(chat_id: &str, text: &str) -> UpdateMemoryRequest {
    update(chat_id, vec![user(text)])
}

/// `request` with an idempotency key.
pub fn keyed(request: UpdateMemoryRequest, key: &str) -> UpdateMemoryRequest {
    UpdateMemoryRequest {
        idempotency_key: key.into(),
        ..request
    }
}

/// A plain read of `chat_id` (no read-your-writes condition).
pub fn get(chat_id: &str) -> GetMemoryRequest {
    GetMemoryRequest {
        chat_id: chat_id.into(),
        ..Default::default()
    }
}

/// A read of `chat_id` that waits up to `wait_ms` for `job_id` to be applied.
pub fn after_job(chat_id: &str, job_id: &str, wait_ms: u32) -> GetMemoryRequest {
    GetMemoryRequest {
        after_job_id: job_id.into(),
        wait_ms,
        ..get(chat_id)
    }
}

/// A read of `chat_id` that waits up to `wait_ms` for `version`.
pub fn min_version(chat_id: &str, version: i64, wait_ms: u32) -> GetMemoryRequest {
    GetMemoryRequest {
        min_version: version,
        wait_ms,
        ..get(chat_id)
    }
}

/// A watch of `chat_id` for the versions after `from_version`.
pub fn watch(chat_id: &str, from_version: i64) -> WatchMemoryRequest {
    WatchMemoryRequest {
        chat_id: chat_id.into(),
        from_version,
    }
}

/// The status of `job_id` (`GetUpdateStatus`).
pub fn update_status(job_id: &str) -> GetUpdateStatusRequest {
    GetUpdateStatusRequest {
        job_id: job_id.into(),
    }
}

/// Deletes `chat_id`'s memory.
pub fn delete(chat_id: &str) -> DeleteMemoryRequest {
    DeleteMemoryRequest {
        chat_id: chat_id.into(),
    }
}

/// Sends `request` and returns the job id.
///
/// # Panics
/// When the gateway refuses the update.
pub async fn send(client: &mut GatewayClient, request: UpdateMemoryRequest) -> String {
    client
        .update_memory(request)
        .await
        .unwrap_or_else(|s| panic!("update rejected: {s:?}"))
        .into_inner()
        .job_id
}

/// `chat_id`'s memory, read plainly.
///
/// # Panics
/// When the read fails (including NOT_FOUND).
pub async fn memory(client: &mut GatewayClient, chat_id: &str) -> GetMemoryResponse {
    client
        .get_memory(get(chat_id))
        .await
        .unwrap_or_else(|s| panic!("get_memory({chat_id}): {s:?}"))
        .into_inner()
}
