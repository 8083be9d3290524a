//! Connecting to NATS and creating the jobs stream idempotently.
//!
//! The stream is created if missing and never deleted or reconfigured here:
//! deleting it would drop accepted jobs. A running stream whose shape differs from
//! the settings is reported, and changing it is an explicit operation (runbooks).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::QueueSettings;

/// Queue failures, shared by publisher and consumers.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("NATS at {url} is unreachable: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("NATS did not answer within {0:?} at start")]
    ConnectTimeout(Duration),
    #[error("jobs stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("the jobs queue is full ({0})")]
    Full(String),
    #[error("the chat has {depth} unfinished updates (limit {limit})")]
    ChatBacklogged { depth: u64, limit: u64 },
    #[error("job message of {size} bytes exceeds the server's maximum payload")]
    TooLarge { size: usize },
    #[error("publishing the job failed: {0}")]
    Publish(String),
}

impl QueueError {
    /// True when the failure is the dependency being unavailable (retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::ConnectTimeout(_) | Self::Publish(_) | Self::Stream { .. }
        )
    }
}

/// Connects to NATS, failing within `connect_timeout_ms` when the server is down.
/// After the first connection the client reconnects by itself, forever.
///
/// # Errors
/// [`QueueError::Connect`] or [`QueueError::ConnectTimeout`].
pub async fn connect(
    settings: &QueueSettings,
    client_name: &str,
) -> Result<jetstream::Context, QueueError> {
    let client = connect_client(settings, client_name).await?;
    Ok(context(client, settings))
}

fn context(client: async_nats::Client, settings: &QueueSettings) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_millis(settings.publish_timeout_ms));
    js
}

/// [`connect`], also handing every event of the connection (disconnected,
/// connected again, a slow consumer) to `events`: for what must know when core
/// NATS messages may have been missed (the gateway's read cache).
///
/// # Errors
/// As [`connect`].
pub async fn connect_reporting(
    settings: &QueueSettings,
    client_name: &str,
    events: tokio::sync::mpsc::UnboundedSender<async_nats::Event>,
) -> Result<jetstream::Context, QueueError> {
    let client = connect_with(settings, client_name, Some(events)).await?;
    Ok(context(client, settings))
}

/// The NATS connection [`connect`] builds JetStream on, for what needs the
/// core client too (inboxes, JetStream API requests of its own).
///
/// # Errors
/// As [`connect`].
pub async fn connect_client(
    settings: &QueueSettings,
    client_name: &str,
) -> Result<async_nats::Client, QueueError> {
    connect_with(settings, client_name, None).await
}

async fn connect_with(
    settings: &QueueSettings,
    client_name: &str,
    events: Option<tokio::sync::mpsc::UnboundedSender<async_nats::Event>>,
) -> Result<async_nats::Client, QueueError> {
    let timeout = Duration::from_millis(settings.connect_timeout_ms);
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(timeout)
        .retry_on_initial_connect()
        .max_reconnects(None);
    if let Some(events) = events {
        options = options.event_callback(move |event| {
            // Nobody listening any more: the process is shutting down.
            let _ = events.send(event);
            std::future::ready(())
        });
    }
    // retry_on_initial_connect makes connect() return at once and keep trying in the
    // background; we still want a clear failure at start, so wait for the first
    // connection with a deadline.
    let client = options
        .connect(settings.servers())
        .await
        .map_err(|source| QueueError::Connect {
            url: settings.url.clone(),
            source,
        })?;
    let deadline = tokio::time::Instant::now() + timeout;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(QueueError::ConnectTimeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(client)
}

/// The configuration every stream of the queue shares (jobs, dead letters,
/// audit outbox), around its name, subjects and retention:
/// - file storage: an acknowledged publish survives a NATS restart;
/// - discard-new: when full, refuse a new message rather than drop an accepted one;
/// - the settings' limits (JetStream reserves `max_bytes` per stream) and duplicate window;
/// - `nats.replicas` replicas (1 on a single server, 3 in a cluster).
pub(crate) fn durable_stream_config(
    settings: &QueueSettings,
    name: String,
    subjects: Vec<String>,
    retention: stream::RetentionPolicy,
) -> stream::Config {
    stream::Config {
        name,
        subjects,
        retention,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_messages: settings.max_jobs,
        max_bytes: settings.max_bytes,
        duplicate_window: Duration::from_secs(settings.duplicate_window_secs),
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// The stream configuration the settings describe.
pub fn stream_config(settings: &QueueSettings) -> stream::Config {
    durable_stream_config(
        settings,
        settings.stream.clone(),
        vec![crate::layout::stream_subjects(&settings.subject_prefix)],
        // Work queue: a job is removed once acknowledged, so a chat's subject holds
        // exactly its unfinished jobs (the publisher's chaining relies on it).
        stream::RetentionPolicy::WorkQueue,
    )
}

/// Returns the stream `config` names, creating it if absent; never changes it.
///
/// # Errors
/// [`QueueError::Stream`] naming the stream when JetStream refuses.
pub async fn get_or_create(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, QueueError> {
    let name = config.name.clone();
    js.get_or_create_stream(config)
        .await
        .map_err(|e| QueueError::Stream {
            stream: name,
            reason: e.to_string(),
        })
}

/// Returns the jobs stream, creating it if absent. Never changes an existing one.
///
/// # Errors
/// [`QueueError::Stream`] when JetStream refuses, or an existing stream binds other subjects.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &QueueSettings,
) -> Result<stream::Stream, QueueError> {
    let wanted = stream_config(settings);
    let err = |reason: String| QueueError::Stream {
        stream: settings.stream.clone(),
        reason,
    };
    let mut stream = get_or_create(js, wanted.clone()).await?;
    let info = stream.info().await.map_err(|e| err(e.to_string()))?;
    if info.config.subjects != wanted.subjects || info.config.retention != wanted.retention {
        return Err(err(format!(
            "exists with subjects {:?} and retention {:?}, settings want {:?} and {:?}",
            info.config.subjects, info.config.retention, wanted.subjects, wanted.retention
        )));
    }
    if info.config.duplicate_window != wanted.duplicate_window
        || info.config.max_messages != wanted.max_messages
        || info.config.num_replicas != wanted.num_replicas
    {
        tracing::warn!(
            stream = %settings.stream,
            replicas = info.config.num_replicas,
            wanted_replicas = wanted.num_replicas,
            "jobs stream limits or replicas differ from settings; keeping the stream's (change them explicitly, see runbooks/maintenance.md)"
        );
    }
    Ok(stream)
}
