//! The suite's workload: `updates` updates over `chats` chats, each chat's in
//! sequence, paced to `rate` per second overall; every update has an
//! idempotency key, so a client retry after a failure (the gateway killed
//! mid-request) is the same update, never a second one. Then the drain: each
//! accepted job polled until it ends, or the deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tonic::Code;

use chat_memory_proto::v1::{
    GetMemoryRequest, GetUpdateStatusRequest, JobState, UpdateMemoryRequest,
};
use test_support::GatewayClient;

/// What was sent to one chat: job ids by update index (`None`: never accepted).
pub type ChatJobs = Vec<Option<String>>;

/// A job's end as polled.
#[derive(Debug, Clone)]
pub struct Ended {
    pub state: JobState,
    pub resulting_version: Option<i64>,
    /// The summarizer call that applied the job (shared by the jobs it coalesced).
    pub applied_in_call: String,
    pub error: String,
}

pub fn chat_id(chat: usize) -> String {
    format!("fault-chat-{chat:04}")
}

/// A client of the gateway at `addr` whose channel reconnects by itself (the
/// gateway may be restarted under it).
pub fn client(addr: SocketAddr) -> Result<GatewayClient, String> {
    let token = test_support::auth::mint(
        test_support::auth::TENANT,
        test_support::auth::USER,
        &["memory:read", "memory:write"],
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    Ok(
        chat_memory_proto::v1::memory_service_client::MemoryServiceClient::with_interceptor(
            channel,
            test_support::auth::Bearer::new(&token),
        ),
    )
}

/// Whether a failed call may be repeated (same idempotency key).
fn retryable(code: Code) -> bool {
    match code {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::Aborted => true,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated => false,
    }
}

/// Sends the workload; `accepted` counts acceptances as they happen (the
/// fault scenario watches it to strike mid-run).
pub async fn send_all(
    client: GatewayClient,
    updates: usize,
    chats: usize,
    rate: f64,
    accepted: Arc<AtomicUsize>,
    deadline: Instant,
) -> Vec<ChatJobs> {
    let gap = Duration::from_secs_f64(chats as f64 / rate.max(0.1));
    let tasks = (0..chats).map(|chat| {
        let mut client = client.clone();
        let accepted = accepted.clone();
        let count = updates / chats + usize::from(chat < updates % chats);
        async move {
            let mut jobs = Vec::with_capacity(count);
            for i in 0..count {
                let request = UpdateMemoryRequest {
                    chat_id: chat_id(chat),
                    messages: crate::message(chat, i),
                    idempotency_key: format!("fault-{chat}-{i}"),
                };
                let mut job = None;
                while Instant::now() < deadline {
                    match client.update_memory(request.clone()).await {
                        Ok(r) => {
                            job = Some(r.into_inner().job_id);
                            accepted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(s) if retryable(s.code()) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(s) => {
                            eprintln!("update {chat}/{i} refused: {s:?}");
                            break;
                        }
                    }
                }
                jobs.push(job);
                tokio::time::sleep(gap).await;
            }
            jobs
        }
    });
    join_all(tasks).await
}

/// Polls every accepted job until it ends or `deadline`; per chat, by index.
pub async fn drain(
    client: &GatewayClient,
    sent: &[ChatJobs],
    deadline: Instant,
) -> Vec<Vec<Option<Ended>>> {
    let tasks = sent.iter().map(|jobs| {
        let client = client.clone();
        async move {
            let mut ended = Vec::with_capacity(jobs.len());
            for job in jobs {
                ended.push(match job {
                    Some(id) => wait_end(client.clone(), id, deadline, |_| true).await,
                    None => None,
                });
            }
            ended
        }
    });
    join_all(tasks).await
}

/// Polls job `id` until it has ended and `done` accepts the end, or `deadline`.
pub async fn wait_end(
    mut client: GatewayClient,
    id: &str,
    deadline: Instant,
    done: impl Fn(&Ended) -> bool,
) -> Option<Ended> {
    loop {
        let request = GetUpdateStatusRequest {
            job_id: id.to_owned(),
        };
        if let Ok(r) = client.get_update_status(request).await {
            let r = r.into_inner();
            let state = JobState::try_from(r.state).unwrap_or(JobState::Unspecified);
            if matches!(state, JobState::Succeeded | JobState::Failed) {
                let ended = Ended {
                    state,
                    resulting_version: r.resulting_version,
                    applied_in_call: r.applied_in_call,
                    error: r.error,
                };
                if done(&ended) {
                    return Some(ended);
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The chat's memory: (version, the three fields joined), or `None` if absent.
pub async fn memory(client: &GatewayClient, chat: usize) -> Option<(i64, String)> {
    let mut client = client.clone();
    for _ in 0..50 {
        match client
            .get_memory(GetMemoryRequest {
                chat_id: chat_id(chat),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                return r.into_inner().memory.map(|m| {
                    (
                        m.version,
                        format!(
                            "{}\n{}\n{}",
                            m.user_confirmed, m.llm_inferred, m.general_summary
                        ),
                    )
                });
            }
            Err(s) if s.code() == Code::NotFound => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    None
}
