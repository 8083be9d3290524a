//! The consume loop of one partition. It owns each message until it is done:
//! progress acks while the job runs (so JetStream does not redeliver a job that is
//! still being worked on), an acknowledgement after memory-store committed, and on
//! shutdown a NAK that hands an unfinished job straight back.

use std::time::Duration;

use async_nats::jetstream::{
    AckKind, Message,
    consumer::{Consumer, pull},
};
use futures::StreamExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use chat_memory_proto::jobs::v1::UpdateJob;

use crate::processor::{Delivery, Disposition, Outcome, Processor};
use crate::settings::ConsumerSettings;

/// How long one pull request waits on the server for a job.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

pub struct PartitionLoop {
    partition: u32,
    consumer: Consumer<pull::Config>,
    processor: Processor,
    settings: ConsumerSettings,
}

impl PartitionLoop {
    pub fn new(
        partition: u32,
        consumer: Consumer<pull::Config>,
        processor: Processor,
        settings: ConsumerSettings,
    ) -> Self {
        Self {
            partition,
            consumer,
            processor,
            settings,
        }
    }

    /// Consumes until `cancel` fires. Stream errors (NATS restarting, a missed
    /// heartbeat) re-open the pull stream after a pause; nothing here is fatal.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let messages = self
                .consumer
                .stream()
                .max_messages_per_batch(1)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(partition = self.partition, error = %e, "cannot open pull stream; retrying");
                    pause(&cancel, Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => self.handle(message, &cancel).await,
                    Some(Err(e)) => {
                        tracing::warn!(partition = self.partition, error = %e, "pull stream error; reopening");
                        pause(&cancel, Duration::from_millis(500)).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    async fn handle(&self, message: Message, cancel: &CancellationToken) {
        let Some(delivery) = self.decode(&message).await else {
            return;
        };
        let job_id = delivery.job.job_id.clone();
        let work = self.processor.handle(&delivery);
        tokio::pin!(work);
        let mut progress =
            tokio::time::interval(Duration::from_millis(self.settings.progress_interval_ms));
        progress.tick().await;
        let grace = Duration::from_millis(self.settings.shutdown_grace_ms);
        let deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                disposition = &mut work => {
                    self.finish(&message, &job_id, disposition).await;
                    return;
                }
                _ = progress.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(job_id = %job_id, error = %e, "progress ack failed");
                    }
                }
                () = &mut deadline => {
                    tracing::warn!(job_id = %job_id, "shutdown grace over; handing the job back");
                    if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                        tracing::warn!(job_id = %job_id, error = %e, "NAK failed; the job is redelivered after ack_wait");
                    }
                    return;
                }
            }
        }
    }

    async fn decode(&self, message: &Message) -> Option<Delivery> {
        let info = match message.info() {
            Ok(i) => (i.stream_sequence, i.delivered),
            Err(e) => {
                tracing::error!(partition = self.partition, error = %e, "message without JetStream metadata; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
                return None;
            }
        };
        match UpdateJob::decode(message.payload.as_ref()) {
            Ok(job) => Some(Delivery {
                job,
                stream_seq: info.0,
                delivered: u32::try_from(info.1.max(1)).unwrap_or(u32::MAX),
            }),
            Err(e) => {
                tracing::error!(partition = self.partition, stream_seq = info.0, error = %e, "undecodable job; terminating it");
                let _ = message.ack_with(AckKind::Term).await;
                None
            }
        }
    }

    async fn finish(&self, message: &Message, job_id: &str, disposition: Disposition) {
        let outcome = match disposition {
            Disposition::Abandon => return,
            Disposition::Ack(outcome) => outcome,
        };
        match &outcome {
            Outcome::Applied { version } => {
                tracing::info!(job_id, partition = self.partition, version, "job applied")
            }
            Outcome::Skipped(reason) => {
                tracing::info!(job_id, partition = self.partition, reason = ?reason, "job skipped")
            }
            Outcome::Failed(reason) => {
                tracing::warn!(job_id, partition = self.partition, reason = %reason, "job ended failed")
            }
            Outcome::Poison(reason) => {
                tracing::error!(job_id, partition = self.partition, reason = %reason, "poison job dropped")
            }
        }
        // A double ack waits for the server to confirm; if it is lost, the job is
        // redelivered and memory-store skips it as already applied.
        if let Err(e) = message.double_ack().await {
            tracing::warn!(job_id, error = %e, "ack not confirmed; a redelivery will be skipped");
        }
    }
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}
