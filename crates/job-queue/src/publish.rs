//! Publishing update jobs: durable once the server acknowledges.

use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use chat_memory_proto::jobs::{partition_for, partition_subject, v1::UpdateJob};
use prost::Message;
use tracing::Instrument;

use crate::{QueueError, QueueSettings};

/// Where an acknowledged job landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence: the job's place in acceptance order.
    pub sequence: u64,
    /// True when JetStream already had a message with this job id (within the
    /// duplicate window); `sequence` is then the original's.
    pub duplicate: bool,
}

/// Publishes jobs to their chat's partition.
#[derive(Clone)]
pub struct JobPublisher {
    js: jetstream::Context,
    settings: QueueSettings,
}

impl JobPublisher {
    pub fn new(js: jetstream::Context, settings: QueueSettings) -> Self {
        Self { js, settings }
    }

    /// Publishes `job` and waits for the server's acknowledgement (the durability point).
    /// The job id is the `Nats-Msg-Id`, so a repeat within the duplicate window is not stored twice.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the stream is at its limits, [`QueueError::TooLarge`]
    /// for an oversized payload, [`QueueError::Publish`] when NATS is unreachable or times out.
    pub async fn publish(&self, job: &UpdateJob) -> Result<Published, QueueError> {
        let partition = partition_for(&job.chat_id, self.settings.partitions);
        let subject = partition_subject(&self.settings.subject_prefix, partition);
        // The producer span; its context travels in the message headers, so the
        // worker's consumer span becomes its child (one trace per update).
        let span = tracing::info_span!(
            "publish update job",
            otel.name = %format!("publish {subject}"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "publish",
            messaging.destination.name = %subject,
            messaging.destination.partition.id = partition,
            messaging.message.id = %job.job_id,
            messaging.nats.stream.sequence = tracing::field::Empty,
        );
        let payload = Bytes::from(job.encode_to_vec());
        let size = payload.len();
        let mut message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(job.job_id.as_str());
        for (key, value) in
            span.in_scope(service_kit::telemetry::propagation::current_context_fields)
        {
            message = message.header(key.as_str(), value.as_str());
        }
        let publish = async {
            let ack_future = self
                .js
                .send_publish(subject, message)
                .await
                .map_err(|e| classify(e, size))?;
            // The second await is the server's acknowledgement: the durability point.
            let ack = ack_future.await.map_err(|e| classify(e, size))?;
            tracing::Span::current().record("messaging.nats.stream.sequence", ack.sequence);
            Ok(Published {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            })
        };
        publish.instrument(span).await
    }

    /// The stream's last sequence: every job accepted so far has a sequence <= this.
    ///
    /// # Errors
    /// [`QueueError::Stream`] when the stream cannot be read.
    pub async fn last_sequence(&self) -> Result<u64, QueueError> {
        let err = |e: String| QueueError::Stream {
            stream: self.settings.stream.clone(),
            reason: e,
        };
        let stream = self
            .js
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| err(e.to_string()))?;
        let info = stream.get_info().await.map_err(|e| err(e.to_string()))?;
        Ok(info.state.last_sequence)
    }
}

pub(crate) fn classify(e: jetstream::context::PublishError, size: usize) -> QueueError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => QueueError::TooLarge { size },
        PublishErrorKind::Other => {
            // A full stream with DiscardPolicy::New answers "maximum messages/bytes exceeded".
            let api_error = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
                .cloned();
            match api_error {
                Some(api) if api.to_string().contains("maximum") => {
                    QueueError::Full(api.to_string())
                }
                _ => QueueError::Publish(e.to_string()),
            }
        }
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => QueueError::Publish(e.to_string()),
    }
}
