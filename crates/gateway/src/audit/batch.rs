//! Groups concurrent audit rows into one outbox message: the rows of calls
//! that arrive while a message is being published go out together in the
//! next one (`chatmemory.jobs.v1.AuditRows`), so a busy gateway pays one
//! JetStream publish, acknowledgement and relay delivery for many rows. Each
//! caller still waits until the message holding its row is acknowledged; an
//! idle gateway publishes a message per row, with no added wait.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{Mutex, mpsc, oneshot};

use chat_memory_proto::jobs::v1::AuditRows;
use chat_memory_proto::v1::AuditEntry;
use job_queue::QueueSettings;

/// Most rows in one message (about 300 bytes each).
const MAX_ROWS: usize = 256;
/// Publishers: a message can be acknowledged while the next one gathers.
const PUBLISHERS: usize = 2;
/// Rows waiting for a publisher before callers wait to enqueue.
const QUEUE: usize = 8_192;

type Reply = oneshot::Sender<Result<(), String>>;

/// Hands rows to the publishers; cheap to clone.
#[derive(Clone)]
pub struct OutboxBatcher {
    tx: mpsc::Sender<(AuditEntry, Reply)>,
}

impl OutboxBatcher {
    /// Starts the publisher tasks on the current runtime; they end when every
    /// clone is dropped.
    pub fn start(js: async_nats::jetstream::Context, queue: QueueSettings) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..PUBLISHERS {
            tokio::spawn(publish_batches(js.clone(), queue.clone(), rx.clone()));
        }
        Self { tx }
    }

    /// Publishes `entry` (with whatever rows arrive meanwhile) and waits for
    /// the outbox's acknowledgement.
    ///
    /// # Errors
    /// The reason the message was not acknowledged.
    pub async fn publish(&self, entry: AuditEntry) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((entry, reply))
            .await
            .map_err(|_| "the audit outbox publisher stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the audit outbox publisher stopped".to_owned())?
    }
}

async fn publish_batches(
    js: async_nats::jetstream::Context,
    queue: QueueSettings,
    rx: Arc<Mutex<mpsc::Receiver<(AuditEntry, Reply)>>>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_ROWS {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let (rows, replies): (Vec<AuditEntry>, Vec<Reply>) = batch.into_iter().unzip();
        // Unique per batch: a repeated publish of the same rows is stored once.
        let batch_id = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => {
                format!("{}..{}+{}", first.audit_id, last.audit_id, rows.len())
            }
            _ => continue,
        };
        let payload = Bytes::from(AuditRows { rows }.encode_to_vec());
        let result = job_queue::audit_outbox::publish_rows(&js, &queue, &batch_id, payload)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}
