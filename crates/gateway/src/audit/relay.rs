//! Moves audit rows from the JetStream outbox to memory-store.
//!
//! Every gateway runs one relay on the shared durable consumer
//! (`job_queue::audit_outbox::RELAY_CONSUMER`), so rows a dead gateway left in the
//! outbox are relayed by any other, or by itself once restarted. A row is
//! acknowledged only after memory-store stored it (its insert is idempotent on
//! the audit id, so a row delivered twice is still one row). While memory-store
//! is down the relay hands rows straight back (NAK with a delay) and pauses with
//! backoff, so it never sits on rows another gateway could deliver (and a
//! relay that dies holds at most one batch, for [`ACK_WAIT`]); nothing here is fatal.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, Message};
use futures::StreamExt;
use prost::Message as _;
use tonic::Code;

use chat_memory_proto::jobs::v1::AuditRows;
use chat_memory_proto::store::{RecordAuditRequest, RecordAuditsRequest};
use chat_memory_proto::v1::AuditEntry;
use job_queue::QueueSettings;
use job_queue::pull::Puller;
use service_kit::backoff::Backoff;
use tokio_util::sync::CancellationToken;

use crate::StoreClient;
use crate::metrics::{audit_row, audit_rows};

/// A relay that stopped acknowledging (it died) gives its rows back after this long.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long one pull waits for rows: the outbox is empty almost always.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Pauses while memory-store is unavailable, doubling (with jitter) from the
/// first to the last.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Rows one pull request may deliver (they stream in as they are published).
const PULL: usize = 1_024;
/// Rows stored by one `RecordAudits` call: a group closes once it holds this
/// many (a message holds at most 256, so a call carries fewer than 1,280).
const MAX_ROWS: usize = 1_024;
/// How long a group waits for more rows after its first: rows are durable in
/// the outbox already and no caller waits for the relay, so a busy gateway
/// stores hundreds of rows per call instead of a few.
const LINGER: Duration = Duration::from_millis(20);

/// Relays until the task is dropped (the gateway aborts it on shutdown; a row
/// held then comes back to a relay after [`ACK_WAIT`]).
pub async fn run(js: jetstream::Context, queue: QueueSettings, store: StoreClient) {
    let consumer = loop {
        match job_queue::audit_outbox::relay_consumer(&js, &queue, ACK_WAIT).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "audit relay: outbox consumer unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    // The task is aborted rather than cancelled; the pull loop's token never fires.
    let never = CancellationToken::new();
    let depth = tokio::spawn(job_queue::pull::watch_depth(
        consumer.clone(),
        DEPTH_EVERY,
        never.clone(),
        crate::metrics::audit_outbox_depth,
    ));
    let _stop_depth = AbortOnDrop(depth);
    let mut puller = Puller::new(consumer, PULL_EXPIRES, "audit relay");
    let mut store_retries = Backoff::new(MIN_BACKOFF, MAX_BACKOFF).retries();
    let mut wait = MIN_BACKOFF;
    while let Some(mut batch) = puller.next_batch(PULL, &never).await {
        // Rows stream in as they are published: take the first, then what
        // arrives within LINGER (up to MAX_ROWS), and store them in one call.
        let mut ended = false;
        while !ended {
            let Some(next) = batch.next().await else {
                break;
            };
            let mut group = Group::default();
            let mut pull_error = None;
            match next {
                Ok(message) => {
                    puller.delivered();
                    group.push(message).await;
                }
                Err(e) => pull_error = Some(e),
            }
            let until = tokio::time::Instant::now() + LINGER;
            while group.rows < MAX_ROWS && pull_error.is_none() {
                match tokio::time::timeout_at(until, batch.next()).await {
                    Ok(Some(Ok(message))) => group.push(message).await,
                    Ok(Some(Err(e))) => pull_error = Some(e),
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(_lingered) => break,
                }
            }
            if !group.messages.is_empty() {
                if relay_group(&store, group, wait).await {
                    store_retries.reset();
                    wait = MIN_BACKOFF;
                } else {
                    // memory-store is unavailable: hand back what this pull
                    // already delivered, then pause before pulling again.
                    while let Ok(Some(Ok(rest))) =
                        tokio::time::timeout(Duration::from_millis(20), batch.next()).await
                    {
                        ack(&rest, AckKind::Nak(Some(wait))).await;
                    }
                    tokio::time::sleep(wait).await;
                    wait = store_retries.next_delay();
                    break;
                }
            }
            if let Some(e) = pull_error {
                puller.after_batch_error(e, &never).await;
                break;
            }
        }
    }
}

/// The rows of one outbox message: several (`AuditRows`, from a gateway that
/// groups rows) or one (`AuditEntry`).
fn decode_rows(message: &Message) -> Result<Vec<AuditEntry>, prost::DecodeError> {
    if job_queue::audit_outbox::holds_rows(message.headers.as_ref()) {
        AuditRows::decode(message.payload.clone()).map(|r| r.rows)
    } else {
        AuditEntry::decode(message.payload.clone()).map(|e| vec![e])
    }
}

/// Outbox messages pulled for one `RecordAudits` call, decoded.
#[derive(Default)]
struct Group {
    messages: Vec<(Vec<AuditEntry>, Message)>,
    rows: usize,
}

impl Group {
    /// Decodes `message` into the group; an undecodable one is removed from
    /// the outbox instead (only gateways publish there: it never will decode).
    async fn push(&mut self, message: Message) {
        match decode_rows(&message) {
            Ok(rows) => {
                self.rows += rows.len();
                self.messages.push((rows, message));
            }
            Err(e) => {
                tracing::error!(error = %e, "audit relay: undecodable message removed from the outbox");
                audit_row("lost");
                ack(&message, AckKind::Term).await;
            }
        }
    }
}

/// Hands the rows of `group` to memory-store in one `RecordAudits` call and
/// acknowledges the messages. False when memory-store is unavailable: the
/// messages are then handed back to the stream, to come again after `delay`.
async fn relay_group(store: &StoreClient, group: Group, delay: Duration) -> bool {
    let decoded = group.messages;
    let rows: Vec<AuditEntry> = decoded
        .iter()
        .flat_map(|(r, _)| r.iter().cloned())
        .collect();
    if rows.is_empty() {
        for (_, message) in &decoded {
            ack(message, AckKind::Ack).await;
        }
        return true;
    }
    let count = rows.len();
    match store
        .clone()
        .record_audits(RecordAuditsRequest { entries: rows })
        .await
    {
        Ok(_) => {
            for (_, message) in &decoded {
                ack(message, AckKind::Ack).await;
            }
            audit_rows("relayed", count);
            tracing::debug!(rows = count, "audit rows relayed from the outbox");
            true
        }
        Err(s) if s.code() == Code::InvalidArgument => {
            // One malformed row refuses the whole call: store the rows one by
            // one so only that row is set aside.
            tracing::warn!(error = %s.message(), rows = count, "audit relay: a batch was refused; relaying its rows one by one");
            let mut all = true;
            for (rows, message) in decoded {
                all &= relay_message(store, rows, &message, delay).await;
            }
            all
        }
        Err(s) => {
            tracing::debug!(code = ?s.code(), rows = count, "audit relay: memory-store unavailable; rows handed back");
            for (_, message) in &decoded {
                ack(message, AckKind::Nak(Some(delay))).await;
            }
            false
        }
    }
}

/// Hands one message's rows to memory-store one by one, then acknowledges it.
/// False when memory-store is unavailable: the message is then handed back to
/// the stream, to come again after `delay` (rows already stored are stored
/// once again then, a no-op).
async fn relay_message(
    store: &StoreClient,
    rows: Vec<AuditEntry>,
    message: &Message,
    delay: Duration,
) -> bool {
    for entry in rows {
        let request = RecordAuditRequest {
            entry: Some(entry.clone()),
        };
        match store.clone().record_audit(request).await {
            Ok(_) => audit_row("relayed"),
            Err(s) if s.code() == Code::InvalidArgument => {
                // A row memory-store refuses will never be accepted: log it whole (no content in it).
                tracing::error!(?entry, error = %s.message(), "audit relay: row refused by memory-store");
                audit_row("lost");
            }
            Err(s) => {
                tracing::debug!(code = ?s.code(), audit_id = %entry.audit_id, "audit relay: memory-store unavailable; message handed back");
                ack(message, AckKind::Nak(Some(delay))).await;
                return false;
            }
        }
    }
    ack(message, AckKind::Ack).await;
    true
}

/// Acknowledges; a lost ack only means the row comes back and is stored once again (a no-op).
async fn ack(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "audit relay: acknowledgement not sent");
    }
}

/// How often the outbox's depth is read for `chat_memory_audit_outbox_depth`.
const DEPTH_EVERY: Duration = Duration::from_secs(15);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
