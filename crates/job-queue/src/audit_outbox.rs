//! The audit outbox: where the gateway makes each call's audit row durable
//! before it answers (the default `audit.durable_point`; with `store`, only the
//! rows memory-store could not take), so a row survives the gateway dying
//! before memory-store has it.
//!
//! - Stream `<stream>_AUDIT` on subject `<subject_prefix>.audit`, file storage,
//!   work-queue retention: a row leaves the stream once a relay acknowledged it,
//!   which it does only after memory-store stored it.
//! - The payload is `chatmemory.jobs.v1.AuditRows` (the rows of concurrent
//!   calls, header [`ROWS_HEADER`]), or a single `chatmemory.v1.AuditEntry`
//!   from a gateway of an earlier release; memory-store's insert is
//!   idempotent on each row's audit id, so a row delivered twice is stored once.
//! - One durable pull consumer ([`RELAY_CONSUMER`]) shared by every gateway
//!   replica: any live gateway drains what a dead one left.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull},
    stream,
};
use bytes::Bytes;

use crate::publish::classify;
use crate::{QueueError, QueueSettings};

/// Durable name of the relay consumer shared by the gateways.
pub const RELAY_CONSUMER: &str = "audit-relay";

/// The outbox stream's name.
pub fn outbox_stream_name(settings: &QueueSettings) -> String {
    format!("{}_AUDIT", settings.stream)
}

/// The outbox subject.
pub fn outbox_subject(settings: &QueueSettings) -> String {
    format!("{}.audit", settings.subject_prefix)
}

/// The outbox stream's configuration.
pub fn outbox_stream_config(settings: &QueueSettings) -> stream::Config {
    let config = crate::stream::durable_stream_config(
        settings,
        outbox_stream_name(settings),
        vec![outbox_subject(settings)],
        // A row is removed once relayed: the stream only holds rows in transit.
        stream::RetentionPolicy::WorkQueue,
    );
    stream::Config {
        // Reserved by JetStream like the jobs stream's; rows only pass through.
        max_bytes: settings.outbox_max_bytes.min(settings.max_bytes),
        ..config
    }
}

/// The relay consumer's configuration.
pub fn relay_consumer_config(ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(RELAY_CONSUMER.to_owned()),
        name: Some(RELAY_CONSUMER.to_owned()),
        description: Some("gateways relaying audit rows to memory-store".to_owned()),
        deliver_policy: DeliverPolicy::All,
        // A row is acknowledged after memory-store stored it, never before.
        ack_policy: AckPolicy::Explicit,
        // A relay that died holding rows: they come back after this long.
        ack_wait,
        // Rows are retried until memory-store takes them (it is idempotent).
        max_deliver: -1,
        max_ack_pending: 1_000,
        max_waiting: 512,
        replay_policy: ReplayPolicy::Instant,
        inactive_threshold: Duration::ZERO,
        ..Default::default()
    }
}

/// Returns the outbox stream, creating it if absent; never changes it.
///
/// # Errors
/// [`QueueError::Stream`] when JetStream refuses.
pub async fn ensure_outbox_stream(
    js: &jetstream::Context,
    settings: &QueueSettings,
) -> Result<stream::Stream, QueueError> {
    crate::stream::get_or_create(js, outbox_stream_config(settings)).await
}

/// The relay consumer, created if absent.
///
/// # Errors
/// [`QueueError::Stream`] when JetStream refuses.
pub async fn relay_consumer(
    js: &jetstream::Context,
    settings: &QueueSettings,
    ack_wait: Duration,
) -> Result<jetstream::consumer::Consumer<pull::Config>, QueueError> {
    let stream = ensure_outbox_stream(js, settings).await?;
    stream
        .get_or_create_consumer(RELAY_CONSUMER, relay_consumer_config(ack_wait))
        .await
        .map_err(|e| QueueError::Stream {
            stream: outbox_stream_name(settings),
            reason: e.to_string(),
        })
}

/// Header of an outbox message holding several rows (`chatmemory.jobs.v1.AuditRows`).
pub const ROWS_HEADER: &str = "Chat-Memory-Audit-Rows";

/// Whether an outbox message holds several rows ([`ROWS_HEADER`]) rather than one.
pub fn holds_rows(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers.and_then(|h| h.get(ROWS_HEADER)).is_some()
}

/// Publishes encoded `AuditRows` (several rows, one message) and waits for the
/// server's acknowledgement. `batch_id` deduplicates a repeated publish.
///
/// # Errors
/// [`QueueError::Publish`], [`QueueError::Full`] or [`QueueError::TooLarge`].
pub async fn publish_rows(
    js: &jetstream::Context,
    settings: &QueueSettings,
    batch_id: &str,
    payload: Bytes,
) -> Result<u64, QueueError> {
    let size = payload.len();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ROWS_HEADER, "1");
    let message = jetstream::message::PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(batch_id);
    let ack = js
        .send_publish(outbox_subject(settings), message)
        .await
        .map_err(|e| classify(e, size))?
        .await
        .map_err(|e| classify(e, size))?;
    Ok(ack.sequence)
}
