//! Groups concurrent audit rows into one outbox message: the rows of calls
//! that arrive while a message is being published go out together in the
//! next one (`chatmemory.jobs.v1.AuditRows`), so a busy gateway pays one
//! JetStream publish, acknowledgement and relay delivery for many rows. Each
//! caller still waits until the message holding its row is acknowledged; an
//! idle gateway publishes a message per row, with no added wait.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use prost::Message as _;
use service_kit::gather::{BatchSettings, Gatherer};

use chat_memory_proto::jobs::v1::AuditRows;
use chat_memory_proto::v1::AuditEntry;
use job_queue::QueueSettings;

/// Most rows in one message (about 300 bytes each).
const MAX_ROWS: usize = 256;
/// Publishes in flight: a message can be acknowledged while the next one gathers.
const PUBLISHERS: usize = 2;

/// Hands rows to the publishes; cheap to clone.
#[derive(Clone)]
pub struct OutboxBatcher(Gatherer<AuditEntry, (), String>);

impl OutboxBatcher {
    /// Starts gathering on the current runtime; it ends when every clone is
    /// dropped.
    pub fn start(js: async_nats::jetstream::Context, queue: QueueSettings) -> Self {
        let publish = Arc::new(move |rows: Vec<AuditEntry>| {
            publish_rows(js.clone(), queue.clone(), rows).boxed()
        });
        Self(Gatherer::start(
            "audit_outbox",
            publish,
            &BatchSettings {
                max_batch: MAX_ROWS,
                max_in_flight: PUBLISHERS,
                linger_ms: 0,
            },
        ))
    }

    /// Publishes `entry` (with whatever rows arrive meanwhile) and waits for
    /// the outbox's acknowledgement.
    ///
    /// # Errors
    /// The reason the message was not acknowledged.
    pub async fn publish(&self, entry: AuditEntry) -> Result<(), String> {
        self.0.call(entry).await
    }
}

/// One outbox message holding `rows`; one `()` per row once acknowledged.
async fn publish_rows(
    js: async_nats::jetstream::Context,
    queue: QueueSettings,
    rows: Vec<AuditEntry>,
) -> Result<Vec<()>, String> {
    let n = rows.len();
    // Unique per batch: a repeated publish of the same rows is stored once.
    let batch_id = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => format!("{}..{}+{n}", first.audit_id, last.audit_id),
        _ => return Ok(Vec::new()),
    };
    let payload = Bytes::from(AuditRows { rows }.encode_to_vec());
    job_queue::audit_outbox::publish_rows(&js, &queue, &batch_id, payload)
        .await
        .map_err(|e| e.to_string())?;
    Ok(vec![(); n])
}
