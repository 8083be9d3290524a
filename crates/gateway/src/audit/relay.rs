//! Moves audit rows from the JetStream outbox to memory-store.
//!
//! Every gateway runs one relay on the shared durable consumer
//! (`job_queue::audit_outbox::RELAY_CONSUMER`), so rows a dead gateway left in the
//! outbox are relayed by any other, or by itself once restarted. A row is
//! acknowledged only after memory-store stored it (its insert is idempotent on
//! the audit id, so a row delivered twice is still one row). While memory-store
//! is down the relay holds the row, keeps its delivery alive with progress acks
//! and retries with backoff; nothing here is fatal.

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
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How long one pull waits for rows: the outbox is empty almost always.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Rows per pull.
const BATCH: usize = 64;
/// Longest pause between attempts to hand a row to memory-store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
                    Ok(message) => relay_one(&store, message).await,
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

/// Hands one row to memory-store, retrying until it is stored or refused for good.
async fn relay_one(store: &StoreClient, message: Message) {
    let entry = match AuditEntry::decode(message.payload.clone()) {
        Ok(entry) => entry,
        Err(e) => {
            // Only this service publishes there; a row that does not decode never will.
            tracing::error!(error = %e, "audit relay: undecodable row removed from the outbox");
            audit_row("lost");
            ack(&message, AckKind::Term).await;
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = RecordAuditRequest {
            entry: Some(entry.clone()),
        };
        match store.clone().record_audit(request).await {
            Ok(_) => {
                ack(&message, AckKind::Ack).await;
                audit_row("relayed");
                tracing::info!(audit_id = %entry.audit_id, "audit row relayed from the outbox");
                return;
            }
            Err(s) if s.code() == Code::InvalidArgument => {
                // A row memory-store refuses will never be accepted: log it whole (no content in it).
                tracing::error!(?entry, error = %s.message(), "audit relay: row refused by memory-store");
                audit_row("lost");
                ack(&message, AckKind::Term).await;
                return;
            }
            Err(s) => {
                tracing::debug!(code = ?s.code(), audit_id = %entry.audit_id, "audit relay: memory-store unavailable; holding the row");
                ack(&message, AckKind::Progress).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Acknowledges; a lost ack only means the row comes back and is stored once again (a no-op).
async fn ack(message: &Message, kind: AckKind) {
    if let Err(e) = message.ack_with(kind).await {
        tracing::warn!(error = %e, "audit relay: acknowledgement not sent");
    }
}
