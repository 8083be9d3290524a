//! The consume loop of one partition. It owns each message until it is done:
//! progress acks while the job runs (so JetStream does not redeliver a job that is
//! still being worked on), an acknowledgement after memory-store committed, and on
//! shutdown a NAK that hands an unfinished job straight back.

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    AckKind, Message,
    consumer::{Consumer, pull},
};
use futures::StreamExt;
use opentelemetry::trace::TraceContextExt;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::time::from_timestamp;

use chat_memory_proto::store::SkipReason;

use crate::dead_letters::DeadLetters;
use crate::metrics;
use crate::processor::{Delivery, Disposition, Outcome, Processor};
use crate::settings::ConsumerSettings;

/// How long one pull request waits on the server for a job.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

pub struct PartitionLoop {
    partition: u32,
    consumer: Consumer<pull::Config>,
    processor: Processor,
    dead_letters: DeadLetters,
    settings: ConsumerSettings,
}

impl PartitionLoop {
    pub fn new(
        partition: u32,
        consumer: Consumer<pull::Config>,
        processor: Processor,
        dead_letters: DeadLetters,
        settings: ConsumerSettings,
    ) -> Self {
        Self {
            partition,
            consumer,
            processor,
            dead_letters,
            settings,
        }
    }

    /// Consumes until `cancel` fires. Stream errors (NATS restarting, a missed
    /// heartbeat) re-open the pull stream after a pause; nothing here is fatal.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            // One explicit pull for one job at a time: no prefetching state to go
            // stale while a job runs (the consumer allows one in flight anyway).
            let batch = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(partition = self.partition, error = %e, "pull request failed; retrying");
                    pause(&cancel, Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    next = batch.next() => next,
                };
                match next {
                    Some(Ok(message)) => self.handle(message, &cancel).await,
                    Some(Err(e)) => {
                        tracing::warn!(partition = self.partition, error = %e, "pull error; pulling again");
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
        // One span per delivery, a child of the gateway's publish (trace context in
        // the message headers) and linked to it, per the messaging conventions.
        let span = tracing::info_span!(
            "process update job",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.operation.type = "process",
            messaging.destination.name = %message.subject,
            messaging.message.id = %delivery.job.job_id,
            messaging.nats.delivery_count = delivery.delivered,
            job_id = %delivery.job.job_id,
            partition = self.partition,
        );
        let parent = service_kit::telemetry::propagation::context_from_fields(
            &job_queue::headers::trace_fields(message.headers.as_ref()),
        );
        let publish = parent.span().span_context().clone();
        if publish.is_valid() {
            let _ = span.set_parent(parent);
            span.add_link(publish);
        }
        self.handle_in_span(message, delivery, cancel)
            .instrument(span)
            .await;
    }

    async fn handle_in_span(
        &self,
        message: Message,
        delivery: Delivery,
        cancel: &CancellationToken,
    ) {
        let m = metrics::get();
        if delivery.delivered > 1 {
            m.redelivery();
        }
        if let Some(accepted) = delivery.job.accepted_at.as_ref().and_then(from_timestamp) {
            m.queue_wait((chrono::Utc::now() - accepted).to_std().unwrap_or_default());
        }
        let started = Instant::now();
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
                    let outcome = outcome_label(&disposition);
                    m.job(outcome, started.elapsed());
                    let disposition = self.dead_letter(&message, &delivery, disposition).await;
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

    /// Dead-letters a job that failed (or, on a redelivery, had already failed)
    /// before its ack; when that publish fails the job is not acknowledged.
    async fn dead_letter(
        &self,
        message: &Message,
        delivery: &Delivery,
        disposition: Disposition,
    ) -> Disposition {
        let reason = match &disposition {
            Disposition::Ack(Outcome::Failed(reason)) => reason.clone(),
            Disposition::Ack(Outcome::Skipped(SkipReason::AlreadyFailed)) if !delivery.replay => {
                "the job had already failed (dead-lettered on redelivery)".to_owned()
            }
            Disposition::Ack(_) | Disposition::Abandon => return disposition,
        };
        if self
            .dead_letters
            .publish(delivery, message.payload.clone(), &reason)
            .await
        {
            disposition
        } else {
            Disposition::Abandon
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
            Ok(job) => {
                // A replay carries the job's original sequence: order is judged by it.
                let replay_of = job_queue::dlq::replay_of(message.headers.as_ref());
                Some(Delivery {
                    job,
                    stream_seq: replay_of.unwrap_or(info.0),
                    delivered: u32::try_from(info.1.max(1)).unwrap_or(u32::MAX),
                    replay: replay_of.is_some(),
                    message_seq: info.0,
                })
            }
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
        metrics::get().update(outcome_label(&Disposition::Ack(outcome.clone())));
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

/// The metric label of a disposition.
fn outcome_label(d: &Disposition) -> &'static str {
    match d {
        Disposition::Ack(Outcome::Applied { .. }) => "succeeded",
        Disposition::Ack(Outcome::Skipped(_)) => "skipped",
        Disposition::Ack(Outcome::Failed(_)) => "failed",
        Disposition::Ack(Outcome::Poison(_)) => "poison",
        Disposition::Abandon => "abandoned",
    }
}

/// Reports the partition's depth (jobs stored and not yet acknowledged) every
/// `every`, for the `chat_memory_queue_depth` gauge.
pub async fn watch_depth(
    mut consumer: Consumer<pull::Config>,
    partition: u32,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        match consumer.info().await {
            Ok(info) => {
                metrics::get().set_depth(partition, info.num_pending + info.num_ack_pending as u64)
            }
            Err(e) => tracing::debug!(partition, error = %e, "cannot read consumer info"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        () = cancel.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}
