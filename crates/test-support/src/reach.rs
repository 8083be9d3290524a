//! Reaching a running service: channels, health checks, gateway clients, and
//! waiting for a job's end or for the audit outbox to be relayed (used by the
//! in-process [`crate::stack`] and the process-based [`crate::processes`]
//! stacks alike; [`crate::stack`] re-exports them).

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Channel;

use chat_memory_proto::v1::memory_service_client::MemoryServiceClient;
use chat_memory_proto::v1::{GetUpdateStatusRequest, GetUpdateStatusResponse, JobState};

use crate::auth::Bearer;
use crate::stack::GatewayClient;
use crate::wait;

/// Polls `GetUpdateStatus` of `job_id` through `client` until `done` holds for
/// the status (`what` names the condition in the timeout message); returns it.
///
/// # Panics
/// After `timeout`.
pub async fn wait_job(
    client: &GatewayClient,
    job_id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&GetUpdateStatusResponse) -> bool,
) -> GetUpdateStatusResponse {
    let done = &done;
    wait::until(&format!("job {job_id} to {what}"), timeout, || {
        let mut client = client.clone();
        let job_id = job_id.to_owned();
        async move {
            let s = client
                .get_update_status(GetUpdateStatusRequest { job_id })
                .await
                .ok()?
                .into_inner();
            done(&s).then_some(s)
        }
    })
    .await
}

/// `done` for [`wait_job`]: the job SUCCEEDED.
pub fn succeeded(s: &GetUpdateStatusResponse) -> bool {
    s.state == JobState::Succeeded as i32
}

/// Waits until `grpc.health.v1` at `addr` reports SERVING.
///
/// # Panics
/// After 30 s.
pub async fn wait_serving(addr: SocketAddr, what: &str) {
    wait::until(
        &format!("{what} at {addr} to be SERVING"),
        Duration::from_secs(30),
        || is_serving(addr),
    )
    .await;
}

/// `Some(())` when the service at `addr` answers its health check SERVING.
pub async fn is_serving(addr: SocketAddr) -> Option<()> {
    serving(try_channel(addr).await?).await
}

/// [`wait_serving`] over TLS, presenting the PKI's client certificate.
///
/// # Panics
/// After 30 s.
pub async fn wait_serving_tls(pki: &crate::pki::TestPki, addr: SocketAddr, what: &str) {
    wait::until(
        &format!("{what} at {addr} to be SERVING over TLS"),
        Duration::from_secs(30),
        || async move {
            let channel = pki.channel(addr, true).await.ok()?;
            serving(channel).await
        },
    )
    .await;
}

/// `Some(())` when the health service behind `channel` reports SERVING.
pub(crate) async fn serving(channel: Channel) -> Option<()> {
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?
        .into_inner()
        .status;
    (status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32).then_some(())
}

async fn try_channel(addr: SocketAddr) -> Option<Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()
}

/// A connected channel to `addr`.
///
/// # Panics
/// When nothing listens there.
pub async fn channel(addr: SocketAddr) -> Channel {
    try_channel(addr)
        .await
        .unwrap_or_else(|| panic!("cannot connect to {addr}"))
}

/// A client of the public API at `addr` with `bearer`.
pub async fn gateway_client(addr: SocketAddr, bearer: Bearer) -> GatewayClient {
    MemoryServiceClient::with_interceptor(channel(addr).await, bearer)
}

/// Waits until the audit outbox of `queue` holds no row: every row published
/// so far is stored in `audit_log` (the relay acknowledges a row only once
/// stored, tens of milliseconds after its call answered).
///
/// # Panics
/// When the outbox is not empty within 30 s.
pub async fn audit_relayed(js: &async_nats::jetstream::Context, queue: &job_queue::QueueSettings) {
    let stream = job_queue::audit_outbox::outbox_stream_name(queue);
    wait::until(
        "the audit outbox to be relayed",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            let stream = stream.clone();
            async move {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                    .get_consumer_from_stream(job_queue::audit_outbox::RELAY_CONSUMER, &stream)
                    .await
                    .ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        },
    )
    .await;
}
