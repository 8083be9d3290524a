//! The per-partition durable pull consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull};
use chat_memory_proto::jobs::partition_subject;

use crate::QueueSettings;

/// Durable consumer name of a partition: `<durable_prefix>-p<partition>`.
pub fn durable_name(durable_prefix: &str, partition: u32) -> String {
    format!("{durable_prefix}-p{partition}")
}

/// The configuration of a partition's consumer, every value written out.
pub fn partition_consumer_config(
    settings: &QueueSettings,
    durable_prefix: &str,
    partition: u32,
    ack_wait: Duration,
) -> pull::Config {
    let name = durable_name(durable_prefix, partition);
    pull::Config {
        // Durable: survives worker restarts and is shared by every worker process.
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(format!("summarizer jobs of partition {partition}")),
        // Only this partition's subject: a chat's jobs all arrive on one consumer.
        filter_subject: partition_subject(&settings.subject_prefix, partition),
        deliver_policy: DeliverPolicy::All,
        // Every job is acknowledged on its own, after memory-store committed it.
        ack_policy: AckPolicy::Explicit,
        // Unacknowledged this long (no ack, no progress ack) means the worker died:
        // redeliver. Workers send progress acks well within it during long agent calls.
        ack_wait,
        // Unlimited deliveries: with max_ack_pending = 1, a message that JetStream
        // stopped delivering would block the partition forever. The worker counts
        // attempts itself and ends a job as failed (visibly) after its own limit.
        max_deliver: -1,
        // The ordering guarantee: at most one job of this partition in flight,
        // across all worker processes.
        max_ack_pending: 1,
        // Pull requests waiting at once: a few per worker process.
        max_waiting: 512,
        replay_policy: ReplayPolicy::Instant,
        // Durable consumers never expire.
        inactive_threshold: Duration::ZERO,
        ..Default::default()
    }
}
