//! The dead-letter stream: jobs that ended FAILED after exhausting their
//! attempts, kept with the reason so an operator can list and replay them.
//!
//! - Stream `<stream>_DLQ` on subject `<subject_prefix>.dlq`, file storage,
//!   limits retention (entries stay until replayed, deleted, or older than
//!   `dead_letter_max_age_days`), created idempotently like the jobs stream.
//! - A dead letter's payload is the job exactly as it was published; headers
//!   carry the reason and where it came from ([`REASON`], [`ORIGINAL_SEQ`]). Its `Nats-Msg-Id` is derived from the failed message, so a worker
//!   that dead-letters the same job twice (its ack was lost) stores it once.
//! - A replay publishes the payload again to the chat's subject as a *new*
//!   message with [`REPLAY_OF`] = the original stream sequence. The worker then
//!   checks order against that original sequence (not the new one), and tells
//!   memory-store it is a replay, which lets a FAILED job run again: it applies
//!   when nothing newer was applied to the chat, else it is recorded superseded.

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use chat_memory_proto::jobs::v1::UpdateJob;
use prost::Message as _;

use crate::publish::classify;
use crate::{QueueError, QueueSettings};

/// Header: why the job was dead-lettered.
pub const REASON: &str = "Chat-Memory-Reason";
/// Header: the job's stream sequence in the jobs stream (its place in order).
pub const ORIGINAL_SEQ: &str = "Chat-Memory-Original-Seq";
/// Header on a replayed job message: the job's original stream sequence.
pub const REPLAY_OF: &str = "Chat-Memory-Replay-Of";

/// The dead-letter stream's name.
pub fn dlq_stream_name(settings: &QueueSettings) -> String {
    format!("{}_DLQ", settings.stream)
}

/// The dead-letter subject.
pub fn dlq_subject(settings: &QueueSettings) -> String {
    format!("{}.dlq", settings.subject_prefix)
}

/// The dead-letter stream's configuration.
pub fn dlq_stream_config(settings: &QueueSettings) -> stream::Config {
    let config = crate::stream::durable_stream_config(
        settings,
        dlq_stream_name(settings),
        vec![dlq_subject(settings)],
        // Kept until an operator replays or removes them, or they age out.
        stream::RetentionPolicy::Limits,
    );
    stream::Config {
        max_age: std::time::Duration::from_secs(
            u64::from(settings.dead_letter_max_age_days) * 24 * 3600,
        ),
        // Reserved by JetStream like the jobs stream's, but dead letters are few.
        max_bytes: settings.dead_letter_max_bytes.min(settings.max_bytes),
        ..config
    }
}

/// Returns the dead-letter stream, creating it if absent; never changes it.
///
/// # Errors
/// [`QueueError::Stream`] when JetStream refuses.
pub async fn ensure_dlq_stream(
    js: &jetstream::Context,
    settings: &QueueSettings,
) -> Result<stream::Stream, QueueError> {
    crate::stream::get_or_create(js, dlq_stream_config(settings)).await
}

/// What is known about a job being dead-lettered.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub job_id: &'a str,
    /// The job message's payload, unchanged.
    pub payload: Bytes,
    pub original_seq: u64,
    /// The failed message's own sequence: the dead letter's id, so a replay
    /// that fails again is a new dead letter, not a duplicate of the first.
    pub message_seq: u64,
    pub reason: &'a str,
}

/// Publishes a dead letter and waits for the server's acknowledgement.
///
/// # Errors
/// [`QueueError::Publish`] or [`QueueError::Full`].
pub async fn publish_dead_letter(
    js: &jetstream::Context,
    settings: &QueueSettings,
    letter: DeadLetter<'_>,
) -> Result<u64, QueueError> {
    // Header values are single-line.
    let reason: String = letter
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let size = letter.payload.len();
    let message = jetstream::message::PublishMessage::build()
        .payload(letter.payload)
        .message_id(format!("{}/dlq/{}", letter.job_id, letter.message_seq))
        .header(REASON, reason.as_str())
        .header(ORIGINAL_SEQ, letter.original_seq.to_string().as_str());
    let ack = js
        .send_publish(dlq_subject(settings), message)
        .await
        .map_err(|e| classify(e, size))?
        .await
        .map_err(|e| classify(e, size))?;
    Ok(ack.sequence)
}

/// Republishes a dead-lettered job to its chat's subject as a replay, chained
/// behind the chat's unfinished jobs like any new job.
/// `dlq_seq` makes the message id unique per dead letter, so the jobs stream's
/// duplicate window (which remembers the original job id) does not swallow it.
///
/// # Errors
/// [`QueueError::Publish`] or [`QueueError::Full`].
pub async fn publish_replay(
    js: &jetstream::Context,
    settings: &QueueSettings,
    chat_id: &str,
    job_id: &str,
    payload: Bytes,
    original_seq: u64,
    dlq_seq: u64,
) -> Result<u64, QueueError> {
    let published = crate::JobPublisher::new(js.clone(), settings.clone())
        .publish_payload(
            chat_id,
            &format!("{job_id}/replay/{dlq_seq}"),
            payload,
            vec![(REPLAY_OF.to_owned(), original_seq.to_string())],
        )
        .await?;
    Ok(published.sequence)
}

/// One dead letter as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// Sequence in the dead-letter stream (what `dlq replay` takes).
    pub dlq_seq: u64,
    pub job_id: String,
    pub chat_id: String,
    /// The job's sequence in the jobs stream.
    pub original_seq: u64,
    pub reason: String,
}

/// The dead letters stored, oldest first (at most `limit`).
///
/// # Errors
/// [`QueueError::Stream`] when the dead-letter stream cannot be read.
pub async fn list(
    js: &jetstream::Context,
    settings: &QueueSettings,
    limit: usize,
) -> Result<Vec<DeadLetterEntry>, QueueError> {
    // Read only: the workers create the stream; an operator's listing must not.
    let stream = js
        .get_stream(dlq_stream_name(settings))
        .await
        .map_err(|e| stream_error(settings, e))?;
    let info = stream
        .get_info()
        .await
        .map_err(|e| stream_error(settings, e))?;
    let mut entries = Vec::new();
    if info.state.messages == 0 {
        return Ok(entries);
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if entries.len() >= limit {
            break;
        }
        // Replayed letters are deleted: gaps are expected.
        if let Ok(message) = stream.get_raw_message(seq).await {
            entries.push(entry(&message));
        }
    }
    Ok(entries)
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub dlq_seq: u64,
    /// The new message's sequence in the jobs stream.
    pub job_seq: u64,
}

/// Replays dead letter `dlq_seq`: republishes its job to the chat's subject,
/// then removes the letter. A crash in between leaves the letter, and a second
/// replay of it is harmless (the job applies once; memory-store decides).
///
/// # Errors
/// [`QueueError::Stream`] when the letter is missing or unreadable,
/// [`QueueError::Publish`] / [`QueueError::Full`] when republishing fails.
pub async fn replay(
    js: &jetstream::Context,
    settings: &QueueSettings,
    dlq_seq: u64,
) -> Result<Replayed, QueueError> {
    // Read only: the workers create the stream; an operator's listing must not.
    let stream = js
        .get_stream(dlq_stream_name(settings))
        .await
        .map_err(|e| stream_error(settings, e))?;
    let message = stream
        .get_raw_message(dlq_seq)
        .await
        .map_err(|e| stream_error(settings, e))?;
    let e = entry(&message);
    if e.chat_id.is_empty() || e.original_seq == 0 {
        return Err(QueueError::Stream {
            stream: dlq_stream_name(settings),
            reason: format!("dead letter {dlq_seq} is not a job with its original sequence"),
        });
    }
    let job_seq = publish_replay(
        js,
        settings,
        &e.chat_id,
        &e.job_id,
        message.payload.clone(),
        e.original_seq,
        dlq_seq,
    )
    .await?;
    // Announced like any acceptance: gateways drop what they cached of the
    // chat and keep nothing of it settled until the job's commit (best
    // effort; the commit's event announces it again).
    let accepted = crate::changes::MemoryChanged {
        chat_id: e.chat_id.clone(),
        accepted_job_ids: vec![e.job_id.clone()],
        accepted_through_seq: job_seq,
        ..Default::default()
    };
    if let Err(err) =
        crate::changes::publish(&js.client(), &settings.subject_prefix, &accepted).await
    {
        tracing::warn!(error = %err, dlq_seq, "the replayed job's acceptance was not announced");
    }
    stream
        .delete_message(dlq_seq)
        .await
        .map_err(|err| stream_error(settings, err))?;
    Ok(Replayed { dlq_seq, job_seq })
}

fn entry(message: &jetstream::message::StreamMessage) -> DeadLetterEntry {
    let job = UpdateJob::decode(message.payload.as_ref()).unwrap_or_default();
    let header = |name: &str| {
        message
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    DeadLetterEntry {
        dlq_seq: message.sequence,
        job_id: job.job_id,
        chat_id: job.chat_id,
        original_seq: header(ORIGINAL_SEQ).parse().unwrap_or(0),
        reason: header(REASON),
    }
}

fn stream_error(settings: &QueueSettings, e: impl std::fmt::Display) -> QueueError {
    QueueError::Stream {
        stream: dlq_stream_name(settings),
        reason: e.to_string(),
    }
}

/// The original sequence of a replayed job message, if it is one.
pub fn replay_of(headers: Option<&async_nats::HeaderMap>) -> Option<u64> {
    headers?.get(REPLAY_OF)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dlq_is_named_after_the_jobs_stream_and_outside_its_subjects() {
        let s = QueueSettings::default();
        assert_eq!(dlq_stream_name(&s), "CHAT_MEMORY_JOBS_DLQ");
        assert_eq!(dlq_subject(&s), "chatmemory.dlq");
        assert!(!dlq_subject(&s).starts_with(&format!("{}.jobs.", s.subject_prefix)));
    }

    #[test]
    fn the_dead_letter_and_outbox_streams_reserve_their_own_limits_at_most_the_jobs_one() {
        let s = QueueSettings::default();
        assert_eq!(dlq_stream_config(&s).max_bytes, 1 << 28);
        assert_eq!(
            crate::audit_outbox::outbox_stream_config(&s).max_bytes,
            1 << 28
        );
        assert_eq!(crate::stream::stream_config(&s).max_bytes, 1 << 30);
        // A small jobs stream (tests, a small server) caps the other two.
        let small = QueueSettings {
            max_bytes: 1 << 20,
            ..QueueSettings::default()
        };
        assert_eq!(dlq_stream_config(&small).max_bytes, 1 << 20);
        assert_eq!(
            crate::audit_outbox::outbox_stream_config(&small).max_bytes,
            1 << 20
        );
    }

    #[test]
    fn dead_letters_age_out_after_the_configured_days_and_zero_keeps_them() {
        let month = dlq_stream_config(&QueueSettings::default());
        assert_eq!(
            month.max_age,
            std::time::Duration::from_secs(30 * 24 * 3600)
        );
        let forever = dlq_stream_config(&QueueSettings {
            dead_letter_max_age_days: 0,
            ..QueueSettings::default()
        });
        assert_eq!(
            forever.max_age,
            std::time::Duration::ZERO,
            "JetStream's 'no limit'"
        );
        // The jobs stream itself never ages jobs out.
        assert_eq!(
            crate::stream::stream_config(&QueueSettings::default()).max_age,
            std::time::Duration::ZERO
        );
    }

    #[test]
    fn replay_of_reads_the_header_and_ignores_garbage() {
        let mut h = async_nats::HeaderMap::new();
        assert_eq!(replay_of(Some(&h)), None);
        h.insert(REPLAY_OF, "42");
        assert_eq!(replay_of(Some(&h)), Some(42));
        h.insert(REPLAY_OF, "x");
        assert_eq!(replay_of(Some(&h)), None);
        assert_eq!(replay_of(None), None);
    }
}
