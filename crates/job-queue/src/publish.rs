//! Publishing update jobs: durable once the server acknowledges, and chained to
//! the chat's previous unfinished job.
//!
//! # The chain
//! A job is published to its chat's subject ([`crate::layout`]) with
//! `Nats-Expected-Last-Subject-Sequence = prev` and the header
//! [`headers::PREV_SEQ`](crate::headers::PREV_SEQ) `= prev`, where `prev` is the
//! sequence of the last message stored on that subject (0 when there is none).
//! The server refuses the publish if the subject's last message is not `prev`
//! and says which it is; the publisher then links to that one and publishes
//! again. So every job names the job before it that was still unfinished at
//! acceptance, even with many gateways publishing for one chat at once. The
//! first try assumes the chat has no unfinished job, which is the common case,
//! so an accept costs one round trip.

use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use futures::TryStreamExt;
use prost::Message;
use tracing::Instrument;

use chat_memory_proto::jobs::v1::UpdateJob;

use crate::layout::chat_subject;
use crate::{QueueError, QueueSettings};

/// How many times one publish re-links after another job of the chat slipped
/// in first; only a chat flooded by concurrent publishers ever needs more than two.
const MAX_LINK_ATTEMPTS: usize = 16;

/// Where an acknowledged job landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence: the job's place in acceptance order.
    pub sequence: u64,
    /// True when JetStream already had a message with this job id (within the
    /// duplicate window); `sequence` is then the original's.
    pub duplicate: bool,
    /// The chat's previous unfinished job at acceptance (0: none).
    pub prev_seq: u64,
}

/// Publishes jobs to their chat's subject.
#[derive(Clone)]
pub struct JobPublisher {
    js: jetstream::Context,
    settings: QueueSettings,
    /// Unfinished jobs one chat may have before its updates are refused.
    max_chat_jobs: Option<u64>,
}

impl JobPublisher {
    pub fn new(js: jetstream::Context, settings: QueueSettings) -> Self {
        Self {
            js,
            settings,
            max_chat_jobs: None,
        }
    }

    /// Refuses a chat's update ([`QueueError::ChatBacklogged`]) while it has
    /// `limit` unfinished jobs. Checked only when the chat has any (one extra
    /// request then), so a chat without a backlog pays nothing for it.
    #[must_use]
    pub fn with_chat_limit(mut self, limit: u64) -> Self {
        self.max_chat_jobs = Some(limit);
        self
    }

    /// Publishes `job` and waits for the server's acknowledgement (the durability point).
    /// The job id is the `Nats-Msg-Id`, so a repeat within the duplicate window is not stored twice.
    ///
    /// # Errors
    /// [`QueueError::Full`] when the stream is at its limits, [`QueueError::ChatBacklogged`]
    /// when the chat is, [`QueueError::TooLarge`] for an oversized payload,
    /// [`QueueError::Publish`] when NATS is unreachable or times out.
    pub async fn publish(&self, job: &UpdateJob) -> Result<Published, QueueError> {
        let payload = Bytes::from(job.encode_to_vec());
        self.publish_payload(&job.chat_id, &job.job_id, payload, Vec::new())
            .await
    }

    /// Publishes an encoded job to the chat's subject, chained like [`Self::publish`],
    /// with `message_id` as its `Nats-Msg-Id` and `headers` added (a replay's).
    ///
    /// # Errors
    /// As [`Self::publish`].
    pub async fn publish_payload(
        &self,
        chat_id: &str,
        message_id: &str,
        payload: Bytes,
        mut headers: Vec<(String, String)>,
    ) -> Result<Published, QueueError> {
        let subject = chat_subject(&self.settings.subject_prefix, chat_id);
        // The producer span; its context travels in the message headers, so the
        // worker's consumer span becomes its child (one trace per update).
        let span = tracing::info_span!(
            "publish update job",
            otel.name = %format!("publish {subject}"),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "publish",
            messaging.destination.name = %subject,
            messaging.message.id = %message_id,
            messaging.nats.stream.sequence = tracing::field::Empty,
            chat_memory.prev_seq = tracing::field::Empty,
        );
        headers.extend(span.in_scope(service_kit::telemetry::propagation::current_context_fields));
        let publish = async {
            let mut prev = 0u64;
            for attempt in 0..MAX_LINK_ATTEMPTS {
                match self
                    .publish_linked(&subject, message_id, payload.clone(), &headers, prev)
                    .await
                {
                    Ok(ack) => {
                        let span = tracing::Span::current();
                        span.record("messaging.nats.stream.sequence", ack.sequence);
                        span.record("chat_memory.prev_seq", prev);
                        return Ok(Published {
                            sequence: ack.sequence,
                            duplicate: ack.duplicate,
                            prev_seq: prev,
                        });
                    }
                    Err(Link::Moved(actual)) => {
                        if attempt == 0 {
                            self.check_chat_depth(&subject).await?;
                        }
                        prev = match actual {
                            Some(seq) => seq,
                            None => self.last_on_subject(&subject).await?,
                        };
                    }
                    Err(Link::Failed(e)) => return Err(e),
                }
            }
            Err(QueueError::Publish(format!(
                "the chat's queue changed under {MAX_LINK_ATTEMPTS} concurrent publishes in a row"
            )))
        };
        publish.instrument(span).await
    }

    async fn publish_linked(
        &self,
        subject: &str,
        message_id: &str,
        payload: Bytes,
        headers: &[(String, String)],
        prev: u64,
    ) -> Result<jetstream::publish::PublishAck, Link> {
        let size = payload.len();
        let mut message = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(message_id)
            .expected_last_subject_sequence(prev)
            .header(crate::headers::PREV_SEQ, prev.to_string().as_str());
        for (key, value) in headers {
            message = message.header(key.as_str(), value.as_str());
        }
        let ack_future = self
            .js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| Link::Failed(classify(e, size)))?;
        // The second await is the server's acknowledgement: the durability point.
        ack_future.await.map_err(|e| {
            if e.kind() == PublishErrorKind::WrongLastSequence {
                Link::Moved(actual_last_sequence(&e))
            } else {
                Link::Failed(classify(e, size))
            }
        })
    }

    /// Refuses the update when the chat already has `max_chat_jobs` unfinished jobs.
    async fn check_chat_depth(&self, subject: &str) -> Result<(), QueueError> {
        let Some(limit) = self.max_chat_jobs else {
            return Ok(());
        };
        let stream = self
            .js
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(|e| self.stream_error(e))?;
        let mut info = stream
            .info_with_subjects(subject)
            .await
            .map_err(|e| self.stream_error(e))?;
        let mut depth = 0;
        while let Some((_, count)) = info.try_next().await.map_err(|e| self.stream_error(e))? {
            depth += u64::try_from(count).unwrap_or(u64::MAX);
        }
        if depth >= limit {
            return Err(QueueError::ChatBacklogged { depth, limit });
        }
        Ok(())
    }

    /// The sequence of the last message on `subject` (0 when it has none); used
    /// only when the server's refusal did not say.
    async fn last_on_subject(&self, subject: &str) -> Result<u64, QueueError> {
        let stream = self
            .js
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(|e| self.stream_error(e))?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok(0)
            }
            Err(e) => Err(self.stream_error(e)),
        }
    }

    fn stream_error(&self, e: impl std::fmt::Display) -> QueueError {
        QueueError::Stream {
            stream: self.settings.stream.clone(),
            reason: e.to_string(),
        }
    }

    /// The job the stream holds at `sequence`, or None once it has left the
    /// stream (a job is removed when it is done). A repeat within the duplicate
    /// window is told the original's sequence: this reads what it repeats.
    ///
    /// # Errors
    /// [`QueueError::Stream`] when the stream cannot be read or the message
    /// there is not a job.
    pub async fn stored_job(&self, sequence: u64) -> Result<Option<UpdateJob>, QueueError> {
        let stream = self
            .js
            .get_stream_no_info(&self.settings.stream)
            .await
            .map_err(|e| self.stream_error(e))?;
        let message = match stream.get_raw_message(sequence).await {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None);
            }
            Err(e) => return Err(self.stream_error(e)),
        };
        UpdateJob::decode(message.payload)
            .map(Some)
            .map_err(|e| self.stream_error(format!("message {sequence} is not a job: {e}")))
    }

    /// The stream's last sequence: every job accepted so far has a sequence <= this.
    ///
    /// # Errors
    /// [`QueueError::Stream`] when the stream cannot be read.
    pub async fn last_sequence(&self) -> Result<u64, QueueError> {
        let mut stream = self
            .js
            .get_stream(&self.settings.stream)
            .await
            .map_err(|e| self.stream_error(e))?;
        let info = stream.info().await.map_err(|e| self.stream_error(e))?;
        Ok(info.state.last_sequence)
    }
}

/// Why one linked publish did not land.
enum Link {
    /// The chat's subject ends at another message than assumed (its sequence,
    /// when the server said which).
    Moved(Option<u64>),
    Failed(QueueError),
}

/// The subject's real last sequence from a "wrong last sequence: N" refusal.
fn actual_last_sequence(e: &jetstream::context::PublishError) -> Option<u64> {
    let api = std::error::Error::source(e)?.downcast_ref::<async_nats::jetstream::Error>()?;
    parse_wrong_last_sequence(&api.to_string())
}

fn parse_wrong_last_sequence(text: &str) -> Option<u64> {
    let rest = text.split_once("wrong last sequence:")?.1.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::parse_wrong_last_sequence;

    #[test]
    fn the_real_last_sequence_is_read_from_the_servers_refusal() {
        assert_eq!(
            parse_wrong_last_sequence("wrong last sequence: 42 (code 400, error code 10071)"),
            Some(42)
        );
        assert_eq!(parse_wrong_last_sequence("wrong last sequence: x"), None);
        assert_eq!(parse_wrong_last_sequence("maximum messages exceeded"), None);
    }
}
