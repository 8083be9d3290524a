//! summarizer-worker: applies update jobs to chat memories, exactly once in effect
//! and in acceptance order per chat.
//!
//! # Layout
//! - [`settings`]: typed settings.
//! - [`scheduler`] (and its `message` module: decoding, spans, NAKs): takes jobs from the shared consumer and runs each chat's jobs
//!   one batch at a time, in order; owns every message until it is done
//!   (progress acks while held, ack after commit, hand back when blocked or on shutdown).
//! - [`processor`]: one batch: `BeginJobs` -> agent -> `CommitJobs`, with bounded
//!   retries and a per-worker limit on agent calls in flight.
//! - [`store`]: memory-store's client type and the gathered `BeginJobs` calls.
//! - `convert`: job checks, the agent's input and memory-store content built from jobs.
//! - [`circuit`]: the circuit breaker around the agent: while it is open, jobs
//!   wait (without spending attempts) instead of calling an agent that is down.
//! - [`dead_letters`]: failed jobs go to the dead-letter stream before their ack.
//! - [`metrics`]: the worker's metrics.
//!
//! # Guarantees, and where they come from
//! - Order per chat: each job names its chat's previous unfinished job (checked
//!   by the server on publish); a job runs only once that one has left the
//!   stream, which happens only when it is acknowledged after its commit. So one
//!   chat's jobs never run side by side and apply in acceptance order, across any
//!   number of workers, while all other chats run in parallel.
//! - Exactly-once effect: memory-store commits the memory and the jobs' states in
//!   one transaction, conditional on the jobs not being applied yet, on the chat's
//!   applied sequence and on the memory's version; a message is acknowledged only
//!   after that commit, so a crash anywhere means a redelivery that is either
//!   applied once or skipped.

pub mod circuit;
mod convert;
pub mod dead_letters;
pub mod metrics;
pub mod processor;
pub mod scheduler;
pub mod settings;
pub mod store;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use chat_memory_proto::store::memory_store_client::MemoryStoreClient;
use job_queue::QueueError;
use summarizer_contract::client::{AgentClient, AgentClientError};

use crate::processor::Processor;
pub use crate::settings::Settings;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Settings(#[from] service_kit::settings::SettingsError),
    #[error("agent client: {0}")]
    Agent(#[from] AgentClientError),
    #[error("creating consumer {name}: {reason}")]
    Consumer { name: String, reason: String },
    #[error("health server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// JetStream's refusal of the consumer, with what to do when it is the known case.
fn consumer_refusal(reason: &str, stream: &str) -> String {
    if reason.contains("filtered consumer not unique") {
        format!(
            "{reason}: stream {stream} still has consumers of another layout (the partition \
             consumers of an earlier release?); drain and delete them, or start on a new \
             nats.stream (runbooks/maintenance.md, \"Moving from the partition layout\")"
        )
    } else {
        reason.to_owned()
    }
}

/// Connects to NATS (failing fast if it is down), binds the shared durable
/// consumer, and processes jobs until `shutdown` resolves; then stops taking
/// jobs, lets in-flight ones finish within `consumer.shutdown_grace_ms` (or hands
/// them back), and returns. Serves `grpc.health.v1` on `health_listener`.
///
/// # Errors
/// [`StartError`] when NATS is unreachable or the consumer cannot be created.
pub async fn run(
    settings: Settings,
    health_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let js = job_queue::connect(&settings.nats, "chat-memory-summarizer-worker").await?;
    let stream = job_queue::ensure_stream(&js, &settings.nats).await?;
    job_queue::dlq::ensure_dlq_stream(&js, &settings.nats).await?;
    let dead_letters = dead_letters::DeadLetters::new(js.clone(), settings.nats.clone());
    let c = &settings.consumer;
    let config = job_queue::consumer::jobs_consumer_config(
        &settings.nats,
        &c.durable_prefix,
        Duration::from_millis(c.ack_wait_ms),
        c.max_ack_pending,
    );
    let name = job_queue::consumer::durable_name(&c.durable_prefix);
    let consumer = stream
        .get_or_create_consumer(&name, config)
        .await
        .map_err(|e| StartError::Consumer {
            name: name.clone(),
            reason: consumer_refusal(&e.to_string(), &settings.nats.stream),
        })?;

    let store = MemoryStoreClient::with_interceptor(
        settings.store.lazy_channel()?,
        settings.store.token_interceptor()?,
    );
    let agent = AgentClient::with_options(
        &settings.agent.url,
        Duration::from_millis(settings.agent.call_timeout_ms),
        settings.agent.service_token.as_ref(),
        &settings.agent.tls_pem()?,
    )?
    .with_max_concurrent_calls(settings.agent.max_concurrent_calls as usize);
    let processor = Processor::new(
        store,
        &settings.store_batches,
        agent,
        settings.retry.clone(),
        circuit::CircuitBreaker::new(settings.circuit.clone()),
        settings.agent.max_concurrent_calls,
        settings.memory.limits(),
    )
    .with_changes(processor::ChangePublisher(std::sync::Arc::new(
        job_queue::changes::Publisher::new(js.client(), settings.nats.subject_prefix.clone()),
    )));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let cancel = CancellationToken::new();
    let scheduler = scheduler::Scheduler::new(
        processor,
        dead_letters,
        stream,
        settings.consumer.clone(),
        settings.coalesce.clone(),
        settings.agent.max_concurrent_calls,
        cancel.clone(),
    );
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(job_queue::pull::watch_depth(
        consumer.clone(),
        Duration::from_secs(5),
        cancel.clone(),
        |depth| metrics::get().set_depth(depth),
    ));
    loops.spawn(async move { scheduler.run(consumer).await });
    tracing::info!(
        consumer = %name,
        max_concurrent_calls = settings.agent.max_concurrent_calls,
        "summarizer-worker consuming"
    );

    let mut health_server = tonic::transport::Server::builder();
    if let Some(tls) = settings.tls.server_config()? {
        health_server = health_server.tls_config(tls)?;
    }
    let health_cancel = cancel.clone();
    // The one service on this port needs no router (so the worker builds no axum).
    let health = tokio::spawn(health_server.serve_with_incoming_shutdown(
        health_service,
        tonic::transport::server::TcpIncoming::from(health_listener).with_nodelay(Some(true)),
        async move {
            health_cancel.cancelled().await;
        },
    ));

    shutdown.await;
    tracing::info!("shutting down: no new jobs; finishing or handing back in-flight ones");
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    cancel.cancel();
    while loops.join_next().await.is_some() {}
    // The last acks and NAKs are in the client's buffer: put them on the
    // connection before it is dropped, or their jobs wait for ack_wait.
    match tokio::time::timeout(settings::FINAL_FLUSH, js.client().flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "last acks not flushed; their jobs are redelivered after ack_wait")
        }
        Err(_) => tracing::warn!(
            "last acks not flushed within 5 s; their jobs are redelivered after ack_wait"
        ),
    }
    match health.await {
        Ok(served) => served?,
        Err(e) => tracing::warn!(error = %e, "health server task ended abnormally"),
    }
    tracing::info!("summarizer-worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_leftover_partition_layout_is_named_with_what_to_do() {
        let said = super::consumer_refusal(
            "JetStream error: filtered consumer not unique on workqueue stream (code 400, error code 10100)",
            "CHAT_MEMORY_JOBS",
        );
        assert!(said.contains("partition consumers"), "{said}");
        assert!(said.contains("runbooks/maintenance.md"), "{said}");
        assert_eq!(super::consumer_refusal("timed out", "S"), "timed out");
    }
}
