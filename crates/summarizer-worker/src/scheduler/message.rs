//! One job message on its own: decoding a delivery (terminating what is not a
//! job), the span of a batch, NAKs, the coalescing size estimate and metric
//! labels. The chat logic that uses them is in the parent module.

use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use opentelemetry::trace::TraceContextExt;
use prost::Message as _;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use chat_memory_proto::jobs::v1::UpdateJob;

use super::Held;
use crate::metrics;
use crate::processor::{Delivery, Disposition, Outcome};

/// The job in a message and its chain link (the sequence of the job it must
/// follow, 0 for none), or `None` after terminating a message that is not
/// one: undecodable, or with a chain link that is not a sequence number (it
/// cannot be ordered: running it as if first could run it before its
/// predecessor).
pub(super) async fn decode(message: &Message) -> Option<(Delivery, u64)> {
    let (stream_seq, delivered) = match message.info() {
        Ok(i) => (i.stream_sequence, i.delivered),
        Err(e) => {
            tracing::error!(error = %e, "message without JetStream metadata; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        }
    };
    let job = match UpdateJob::decode(message.payload.as_ref()) {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(stream_seq, error = %e, "undecodable job; terminating it (poison)");
            return terminate(message).await;
        }
    };
    let prev_seq = match job_queue::headers::prev_seq(message.headers.as_ref()) {
        Ok(prev_seq) => prev_seq,
        Err(link) => {
            tracing::error!(job_id = %job.job_id, stream_seq, link = %link, "job with an unreadable chain link; terminating it (poison)");
            return terminate(message).await;
        }
    };
    // A replay carries the job's original sequence: order is judged by it.
    let replay_of = job_queue::dlq::replay_of(message.headers.as_ref());
    let delivery = Delivery {
        job,
        stream_seq: replay_of.unwrap_or(stream_seq),
        delivered: u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
        replay: replay_of.is_some(),
        message_seq: stream_seq,
    };
    Some((delivery, prev_seq))
}

/// Terminates a poison message (counted; never redelivered).
async fn terminate<T>(message: &Message) -> Option<T> {
    metrics::get().update("poison");
    let _ = message.ack_with(AckKind::Term).await;
    None
}

/// One span per batch, a child of the first job's publish (trace context in the
/// message headers) and linked to every job's publish, per the messaging conventions.
pub(super) fn batch_span(batch: &[Held]) -> tracing::Span {
    let Some(first) = batch.first() else {
        return tracing::Span::none();
    };
    let job_ids: Vec<&str> = batch
        .iter()
        .map(|h| h.delivery.job.job_id.as_str())
        .collect();
    let span = tracing::info_span!(
        "process update job",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %first.message.subject,
        messaging.message.id = %first.delivery.job.job_id,
        messaging.batch.message_count = batch.len(),
        messaging.nats.delivery_count = first.delivery.delivered,
        job_id = %first.delivery.job.job_id,
        job_ids = %job_ids.join(","),
    );
    for (i, held) in batch.iter().enumerate() {
        let context = service_kit::telemetry::propagation::context_from_fields(
            &job_queue::headers::trace_fields(held.message.headers.as_ref()),
        );
        let publish = context.span().span_context().clone();
        if publish.is_valid() {
            if i == 0 {
                let _ = span.set_parent(context);
            }
            span.add_link(publish);
        }
    }
    span
}

/// Chat-message tokens estimated from bytes (4 a token), for the coalescing bound.
pub(super) fn estimated_tokens(job: &UpdateJob) -> usize {
    job.messages.iter().map(|m| m.content.len() / 4 + 4).sum()
}

pub(super) async fn nak(message: &Message, delay: Duration) {
    let delay = (!delay.is_zero()).then_some(delay);
    if let Err(e) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::warn!(error = %e, "NAK failed; the job is redelivered after ack_wait");
    }
}

/// The metric label of a disposition.
pub(super) fn outcome_label(d: &Disposition) -> &'static str {
    match d {
        Disposition::Ack(Outcome::Applied { .. }) => "succeeded",
        Disposition::Ack(Outcome::Skipped(_)) => "skipped",
        Disposition::Ack(Outcome::Failed(_)) => "failed",
        Disposition::Ack(Outcome::Poison(_)) => "poison",
        Disposition::Abandon => "abandoned",
    }
}
