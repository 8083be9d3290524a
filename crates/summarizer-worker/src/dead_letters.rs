//! Publishing failed jobs to the dead-letter stream (see `job_queue::dlq`).
//!
//! A job that ended FAILED is dead-lettered *before* its message is
//! acknowledged; if the dead-letter publish fails the message is left
//! unacknowledged, and its redelivery (which memory-store answers
//! ALREADY_FAILED) dead-letters it again. The dead letter's message id is
//! derived from the job, so doing that twice stores it once.

use async_nats::jetstream;
use bytes::Bytes;

use job_queue::QueueSettings;
use job_queue::dlq::{self, DeadLetter};

use crate::metrics;
use crate::processor::Delivery;

/// Where dead letters go; cheap to clone.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    settings: QueueSettings,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, settings: QueueSettings) -> Self {
        Self { js, settings }
    }

    /// Publishes the job with `reason`; true once the server stored it.
    pub async fn publish(&self, d: &Delivery, payload: Bytes, reason: &str) -> bool {
        let letter = DeadLetter {
            job_id: &d.job.job_id,
            payload,
            original_seq: d.stream_seq,
            message_seq: d.message_seq,
            reason,
        };
        match dlq::publish_dead_letter(&self.js, &self.settings, letter).await {
            Ok(seq) => {
                metrics::get().dead_letter();
                tracing::warn!(job_id = %d.job.job_id, dlq_seq = seq, reason, "job dead-lettered");
                true
            }
            Err(e) => {
                tracing::error!(job_id = %d.job.job_id, error = %e, "dead-letter publish failed; leaving the job for redelivery");
                false
            }
        }
    }
}
