//! The pull loop both durable consumers run (the worker's jobs, the gateway's
//! audit relay): ask for up to N messages, take them as they stream in, and
//! when a pull request fails, wait with backoff and ask again. One place for
//! stalls, backoff and shutdown, instead of one copy per consumer.

use std::time::Duration;

use async_nats::jetstream::consumer::{Consumer, pull};
use service_kit::backoff::{Backoff, Retries};
use tokio_util::sync::CancellationToken;

/// The messages of one pull request, as they arrive.
pub type Batch = pull::Batch;

/// Waits after a failed pull request: from 100 ms, doubling up to 5 s.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Pull requests on one consumer, retried with backoff until they succeed.
pub struct Puller {
    consumer: Consumer<pull::Config>,
    expires: Duration,
    /// Names the consumer in logs (`"jobs"`, `"audit relay"`).
    name: &'static str,
    retries: Retries,
}

impl Puller {
    /// Pull requests on `consumer` that wait up to `expires` for messages.
    pub fn new(consumer: Consumer<pull::Config>, expires: Duration, name: &'static str) -> Self {
        Self {
            consumer,
            expires,
            name,
            retries: Backoff::new(MIN_BACKOFF, MAX_BACKOFF).retries(),
        }
    }

    /// Up to `max` messages, streaming in as the server delivers them (the
    /// stream ends when `expires` passes or `max` arrived). A failed request is
    /// logged, waited out with backoff and made again; `None` once `cancel` fires.
    pub async fn next_batch(&mut self, max: usize, cancel: &CancellationToken) -> Option<Batch> {
        loop {
            let request = self
                .consumer
                .batch()
                .max_messages(max)
                .expires(self.expires)
                .messages();
            let failed = tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                batch = request => match batch {
                    // The backoff starts again only once a message arrives
                    // ([`Puller::delivered`]): a request the server takes and
                    // then ends with an error is no recovery.
                    Ok(batch) => return Some(batch),
                    Err(e) => e,
                },
            };
            tracing::warn!(consumer = self.name, error = %failed, "pull request failed; retrying");
            self.pause(cancel).await;
        }
    }

    /// A message arrived: the consumer works, so the next error waits the
    /// shortest pause again.
    pub fn delivered(&mut self) {
        self.retries.reset();
    }

    /// Waits out an error inside a batch (the server ended the request) before
    /// the next pull, with the same backoff as a failed request.
    pub async fn after_batch_error(
        &mut self,
        error: impl std::fmt::Display,
        cancel: &CancellationToken,
    ) {
        tracing::warn!(consumer = self.name, error = %error, "pull error; pulling again");
        self.pause(cancel).await;
    }

    async fn pause(&mut self, cancel: &CancellationToken) {
        let wait = self.retries.next_delay();
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Reads `consumer`'s messages not yet acknowledged (pending plus held) every
/// `every` and hands the count to `report`, until `cancel` fires.
pub async fn watch_depth<R>(
    mut consumer: Consumer<pull::Config>,
    every: Duration,
    cancel: CancellationToken,
    report: R,
) where
    R: Fn(u64),
{
    loop {
        match consumer.info().await {
            Ok(info) => report(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0)),
            Err(e) => tracing::debug!(error = %e, "cannot read consumer info"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
