//! The update-job queue: the contract between the gateway (publisher) and
//! summarizer-worker (consumer) on NATS JetStream 2.9.
//!
//! # Layout
//! - [`settings`]: stream name, subjects, partitions and limits, shared by both sides.
//! - [`stream`]: connecting and creating the jobs stream idempotently.
//! - [`publish`]: publishing a job durably, with deduplication by job id.
//! - [`dlq`]: the dead-letter stream: failed jobs with their reason, and replay.
//! - [`audit_outbox`]: audit rows memory-store could not take yet, relayed by the gateways.
//! - [`consumer`]: the per-partition durable pull consumer configuration.
//! - [`headers`]: the trace context a job message carries.
//!
//! # Why partitions
//! A chat maps to one of N partition subjects (`chat_memory_proto::jobs::partition_for`).
//! Each partition has one durable pull consumer with `max_ack_pending = 1`, so across
//! any number of worker processes at most one job of a partition (and so of a chat) is
//! in flight, in stream order; different partitions run in parallel. NATS 2.9 has no
//! per-subject ordering primitive newer than this, which is why the design relies only
//! on `max_ack_pending`.

pub mod audit_outbox;
pub mod consumer;
pub mod dlq;
pub mod headers;
pub mod publish;
pub mod settings;
pub mod stream;

pub use publish::{JobPublisher, Published};
pub use settings::QueueSettings;
pub use stream::{QueueError, connect, ensure_stream};
