//! The workers' one durable pull consumer.
//!
//! All workers share it. It hands out many jobs at once (`max_ack_pending`), in
//! stream order on first delivery; order *per chat* is kept by the workers from
//! each job's chain link ([`crate::headers::PREV_SEQ`]), not by the consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull};

use crate::QueueSettings;
use crate::layout::stream_subjects;

/// Durable consumer name: `<durable_prefix>-jobs`.
pub fn durable_name(durable_prefix: &str) -> String {
    format!("{durable_prefix}-jobs")
}

/// The consumer's configuration, every value written out.
pub fn jobs_consumer_config(
    settings: &QueueSettings,
    durable_prefix: &str,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> pull::Config {
    let name = durable_name(durable_prefix);
    pull::Config {
        // Durable: survives worker restarts and is shared by every worker process.
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some("summarizer jobs of every chat".to_owned()),
        // Every chat's subject; work-queue retention allows one consumer on them.
        filter_subject: stream_subjects(&settings.subject_prefix),
        deliver_policy: DeliverPolicy::All,
        // Every job is acknowledged on its own, after memory-store committed it.
        ack_policy: AckPolicy::Explicit,
        // Unacknowledged this long (no ack, no progress ack) means the worker died:
        // redeliver. Workers send progress acks well within it while they hold a job.
        ack_wait,
        // Unlimited deliveries: a message JetStream stopped delivering would stay
        // in the stream and block its chat's chain forever. The worker counts
        // attempts itself and ends a job as failed (visibly) after its own limit.
        max_deliver: -1,
        // Jobs handed out and not yet acknowledged, over all workers: bounds the
        // work in progress (each worker also bounds what it holds).
        max_ack_pending,
        // Pull requests waiting at once: a few per worker process.
        max_waiting: 512,
        replay_policy: ReplayPolicy::Instant,
        // Durable consumers never expire.
        inactive_threshold: Duration::ZERO,
        ..Default::default()
    }
}
