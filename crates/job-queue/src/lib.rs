//! The update-job queue: the contract between the gateway (publisher) and
//! summarizer-worker (consumer) on NATS JetStream 2.9.
//!
//! # Layout
//! - [`settings`]: stream name, subjects and limits, shared by both sides.
//! - [`layout`]: a chat's subject (`<prefix>.jobs.<chat key>`).
//! - [`stream`]: connecting and creating the jobs stream idempotently.
//! - [`publish`]: publishing a job durably, deduplicated by job id and chained to
//!   the chat's previous unfinished job.
//! - [`dlq`]: the dead-letter stream: failed jobs with their reason, and replay.
//! - [`audit_outbox`]: audit rows memory-store could not take yet, relayed by the gateways.
//! - [`changes`]: memory change events (core NATS) for read-your-writes and watch streams.
//! - [`consumer`]: the workers' shared durable pull consumer.
//! - [`pull`]: the pull loop both durable consumers run (retried pull
//!   requests with backoff, the depth watcher).
//! - [`headers`]: the chain link and the trace context a job message carries.
//! - [`digest`]: a keyed job's request digest (idempotency-key reuse).
//!
//! # Order per chat without partitions
//! Each chat has its own subject, and each job carries the sequence of the chat's
//! previous job that was still in the stream when it was accepted (the server
//! checks that link on publish, `Nats-Expected-Last-Subject-Sequence`). The
//! stream has work-queue retention: a job leaves it only when acknowledged, after
//! its commit. A worker runs a job only once its predecessor has left the
//! stream, so one chat's jobs apply one at a time and in acceptance order, while
//! every other chat's jobs run in parallel on one shared consumer. All of it is
//! NATS 2.9 (see docs/architecture.md).

pub mod audit_outbox;
pub mod changes;
pub mod consumer;
pub mod digest;
pub mod dlq;
pub mod headers;
pub mod layout;
pub mod publish;
pub mod pull;
pub mod settings;
pub mod stream;

pub use publish::{JobPublisher, Published};
pub use settings::QueueSettings;
pub use stream::{QueueError, connect, connect_client, connect_reporting, ensure_stream};
