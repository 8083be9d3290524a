//! Sending the updates: open loop. Each update is sent at its scheduled time
//! on its own task, whatever happened to the ones before; only acceptance is
//! awaited (the accept latency), never the job's end. A small pool of
//! connections spreads the HTTP/2 streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use chat_memory_proto::v1::UpdateMemoryRequest;
use test_support::GatewayClient;

use crate::report;

/// Updates sent but not yet answered above which the generator stops
/// sending (and says so): a bound on its own memory and tasks when the
/// service stalls.
const MAX_OUTSTANDING: usize = 20_000;

/// What sending produced.
#[derive(Debug)]
pub struct Sent {
    pub accepted: u64,
    pub refused: u64,
    /// Updates not sent because `MAX_OUTSTANDING` were unanswered.
    pub skipped: u64,
    pub accept_latency: Histogram<u64>,
    /// From the first send to the last answer.
    pub wall: Duration,
    /// The first refusal's status, to say why.
    pub first_refusal: Option<String>,
}

/// The schedule: update `k` goes to chat `k % chats` at `k / rate` seconds
/// (all at once when `rate` is `None`).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub updates: usize,
    pub chats: usize,
    pub rate: Option<f64>,
}

pub fn chat_id(run: &str, chat: usize) -> String {
    format!("bench-{run}-{chat:05}")
}

/// Sends `plan` through `clients` (round robin).
pub async fn send(clients: &[GatewayClient], run: &str, plan: Plan, deadline: Instant) -> Sent {
    let histogram = Arc::new(Mutex::new(crate::histogram()));
    let refusal: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let chats = plan.chats.max(1);
    let mut skipped = 0u64;
    for k in 0..plan.updates {
        if let Some(rate) = plan.rate {
            let due = start + Duration::from_secs_f64(k as f64 / rate.max(0.001));
            tokio::time::sleep_until(due.into()).await;
        }
        if Instant::now() >= deadline {
            skipped += (plan.updates - k) as u64;
            break;
        }
        // Reap what has finished, so the set holds only outstanding sends.
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= MAX_OUTSTANDING {
            skipped += 1;
            continue;
        }
        let Some(client) = clients.get(k % clients.len().max(1)) else {
            break;
        };
        let mut client = client.clone();
        let chat = k % chats;
        let request = UpdateMemoryRequest {
            chat_id: chat_id(run, chat),
            messages: crate::message(chat, k / chats),
            idempotency_key: format!("bench-{run}-{k}"),
        };
        let histogram = Arc::clone(&histogram);
        let refusal = Arc::clone(&refusal);
        let (accepted, refused) = (Arc::clone(&accepted), Arc::clone(&refused));
        tasks.spawn(async move {
            let sent = Instant::now();
            match client.update_memory(request).await {
                Ok(_) => {
                    report::record(&mut *histogram.lock().await, sent.elapsed());
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                Err(status) => {
                    refused.fetch_add(1, Ordering::SeqCst);
                    let mut first = refusal.lock().await;
                    if first.is_none() {
                        *first = Some(format!("{:?}: {}", status.code(), status.message()));
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let (accepted, refused) = (
        accepted.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    let wall = start.elapsed();
    let accept_latency = histogram.lock().await.clone();
    let first_refusal = refusal.lock().await.clone();
    Sent {
        accepted,
        refused,
        skipped,
        accept_latency,
        wall,
        first_refusal,
    }
}
