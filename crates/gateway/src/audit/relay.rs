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

use chat_memory_proto::store::RecordAuditRequest;
use chat_memory_proto::v1::AuditEntry;
use job_queue::QueueSettings;

use crate::StoreClient;
use crate::metrics::audit_row;

/// A relay that stopped acknowledging (it died) gives its rows back after this long.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How long one pull waits for rows: the outbox is empty almost always.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Pauses while memory-store is unavailable, doubling from the first to the last.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Rows per pull.
const BATCH: usize = 64;

/// Relays until the task is dropped (the gateway aborts it on shutdown; a row
/// held then comes back to a relay after [`ACK_WAIT`]).
pub async fn run(js: jetstream::Context, queue: QueueSettings, store: StoreClient) {
    loop {
        let consumer = match job_queue::audit_outbox::relay_consumer(&js, &queue, ACK_WAIT).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "audit relay: outbox consumer unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            let batch = consumer
                .batch()
                .max_messages(BATCH)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "audit relay: pull failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            };
            while let Some(next) = batch.next().await {
                match next {
                    Ok(message) => {
                        if relay_one(&store, &message, backoff).await {
                            backoff = MIN_BACKOFF;
                            continue;
                        }
                        // memory-store is unavailable: hand back what this pull
                        // already delivered, then pause before pulling again.
                        while let Ok(Some(Ok(rest))) =
                            tokio::time::timeout(Duration::from_millis(20), batch.next()).await
                        {
                            ack(&rest, AckKind::Nak(Some(backoff))).await;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "audit relay: pull error; pulling again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    }
}

/// Hands one row to memory-store. False when memory-store is unavailable: the
/// row is then handed back to the stream, to come again after `delay`.
async fn relay_one(store: &StoreClient, message: &Message, delay: Duration) -> bool {
    let entry = match AuditEntry::decode(message.payload.clone()) {
        Ok(entry) => entry,
        Err(e) => {
            // Only this service publishes there; a row that does not decode never will.
            tracing::error!(error = %e, "audit relay: undecodable row removed from the outbox");
            audit_row("lost");
            ack(message, AckKind::Term).await;
            return true;
        }
    };
    let request = RecordAuditRequest {
        entry: Some(entry.clone()),
    };
    match store.clone().record_audit(request).await {
        Ok(_) => {
            ack(message, AckKind::Ack).await;
            audit_row("relayed");
            tracing::info!(audit_id = %entry.audit_id, "audit row relayed from the outbox");
            true
        }
        Err(s) if s.code() == Code::InvalidArgument => {
            // A row memory-store refuses will never be accepted: log it whole (no content in it).
            tracing::error!(?entry, error = %s.message(), "audit relay: row refused by memory-store");
            audit_row("lost");
            ack(message, AckKind::Term).await;
            true
        }
        Err(s) => {
            tracing::debug!(code = ?s.code(), audit_id = %entry.audit_id, "audit relay: memory-store unavailable; row handed back");
            ack(message, AckKind::Nak(Some(delay))).await;
            false
        }
    }
}

/// Acknowledges; a lost ack only means the row comes back and is stored once again (a no-op).
async fn ack(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "audit relay: acknowledgement not sent");
    }
}
