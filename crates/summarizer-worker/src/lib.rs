//! summarizer-worker: applies update jobs to chat memories, exactly once in effect
//! and in acceptance order per chat.
//!
//! # Layout
//! - [`settings`]: typed settings.
//! - [`partition`]: one consume loop per JetStream partition consumer; owns the
//!   message: progress acks while working, ack after commit, hand back on shutdown.
//! - [`processor`]: one job: `BeginJob` -> agent -> `CommitJob`, with bounded retries.
//! - `convert`: job checks, the agent's input and memory-store content built from a job.
//! - [`circuit`]: the circuit breaker around the agent: while it is open, jobs
//!   wait (without spending attempts) instead of calling an agent that is down.
//! - [`dead_letters`]: failed jobs go to the dead-letter stream before their ack.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`metrics`]: the worker's metrics.
//!
//! # Guarantees, and where they come from
//! - Order per chat: a chat's jobs share a partition whose consumer allows one
//!   unacknowledged message (`max_ack_pending = 1`) across all worker processes.
//! - Exactly-once effect: memory-store commits the memory and the job state in one
//!   transaction, conditional on the job not being applied yet and on the chat's
//!   applied sequence; the message is acknowledged only after that commit, so a
//!   crash anywhere means a redelivery that is either applied once or skipped.

pub mod backoff;
pub mod circuit;
mod convert;
pub mod dead_letters;
pub mod metrics;
pub mod partition;
pub mod processor;
pub mod settings;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use chat_memory_proto::store::memory_store_client::MemoryStoreClient;
use job_queue::QueueError;
use summarizer_agent::client::{AgentClient, AgentClientError};

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

/// Connects to NATS (failing fast if it is down), binds a durable consumer per
/// partition, and processes jobs until `shutdown` resolves; then stops taking
/// jobs, lets in-flight ones finish within `consumer.shutdown_grace_ms` (or hands
/// them back), and returns. Serves `grpc.health.v1` on `health_listener`.
///
/// # Errors
/// [`StartError`] when NATS is unreachable or a consumer cannot be created.
pub async fn run(
    settings: Settings,
    health_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let js = job_queue::connect(&settings.nats, "chat-memory-summarizer-worker").await?;
    let stream = job_queue::ensure_stream(&js, &settings.nats).await?;
    job_queue::dlq::ensure_dlq_stream(&js, &settings.nats).await?;
    let dead_letters = dead_letters::DeadLetters::new(js.clone(), settings.nats.clone());
    let ack_wait = Duration::from_millis(settings.consumer.ack_wait_ms);
    let mut consumers = Vec::with_capacity(settings.nats.partitions as usize);
    for p in 0..settings.nats.partitions {
        let config = job_queue::consumer::partition_consumer_config(
            &settings.nats,
            &settings.consumer.durable_prefix,
            p,
            ack_wait,
        );
        let name = job_queue::consumer::durable_name(&settings.consumer.durable_prefix, p);
        let consumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| StartError::Consumer {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        consumers.push((p, consumer));
    }

    let store = MemoryStoreClient::with_interceptor(
        settings.store.lazy_channel()?,
        settings.store.token_interceptor()?,
    );
    let agent = AgentClient::with_service_token(
        &settings.agent.url,
        Duration::from_millis(settings.agent.call_timeout_ms),
        settings.agent.service_token.as_ref(),
    )?;
    let processor = Processor::new(
        store,
        agent,
        settings.retry.clone(),
        circuit::CircuitBreaker::new(settings.circuit.clone()),
        settings.memory.limits(),
    );

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let cancel = CancellationToken::new();
    let mut loops = tokio::task::JoinSet::new();
    for (p, consumer) in consumers {
        loops.spawn(partition::watch_depth(
            consumer.clone(),
            p,
            Duration::from_secs(5),
            cancel.clone(),
        ));
        let partition = partition::PartitionLoop::new(
            p,
            consumer,
            processor.clone(),
            dead_letters.clone(),
            settings.consumer.clone(),
        );
        loops.spawn(partition.run(cancel.clone()));
    }
    tracing::info!(
        partitions = settings.nats.partitions,
        "summarizer-worker consuming"
    );

    let mut health_server = tonic::transport::Server::builder();
    if let Some(tls) = settings.tls.server_config()? {
        health_server = health_server.tls_config(tls)?;
    }
    let health_cancel = cancel.clone();
    let health = tokio::spawn(
        health_server
            .add_service(health_service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(health_listener)
                    .with_nodelay(Some(true)),
                async move {
                    health_cancel.cancelled().await;
                },
            ),
    );

    shutdown.await;
    tracing::info!("shutting down: no new jobs; finishing or handing back in-flight ones");
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    cancel.cancel();
    while loops.join_next().await.is_some() {}
    match health.await {
        Ok(served) => served?,
        Err(e) => tracing::warn!(error = %e, "health server task ended abnormally"),
    }
    tracing::info!("summarizer-worker stopped");
    Ok(())
}
