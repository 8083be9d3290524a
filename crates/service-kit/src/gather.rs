//! Calls to another service, gathered: a request that arrives while calls of
//! its kind are in flight waits for the next free call and goes with every
//! other one waiting then, in one batch call (one request to the other
//! service; for memory-store, one Postgres transaction). By default a lone
//! request goes at once, as a batch of one: gathering adds no timer of its
//! own, it uses the wait there already is, and lets the tasks ready on its
//! thread send first ([`READY_ROUNDS`]). Under a burst this turns hundreds of
//! calls into a few. At a steady rate requests come one by one, so where a
//! few milliseconds cost nothing (the worker's begins, before a model call of
//! seconds) `linger_ms` lets a free call wait that long for others.
//!
//! Each request still gets its own answer, and a failed call is the failure of
//! every request in it. Used by the gateway (`ClaimChats`,
//! `RecordAcceptedBatch`, the audit outbox's messages of several rows), the
//! worker (`BeginJobsBatch`) and memory-store (audit rows group-committed).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument as _;

use crate::settings::SettingsError;

/// The settings of each kind of gathered call (`[store_batches]` in the
/// gateway and the worker).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Most requests in one call.
    pub max_batch: usize,
    /// Calls of one kind in flight at once per process; requests that arrive
    /// while all are busy go together in the next.
    pub max_in_flight: usize,
    /// How long a free call waits, after a request arrives, for others to go
    /// with it (0: it goes at once). At a steady rate the requests come one
    /// by one and each would be a call of its own; a short wait gathers them.
    pub linger_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_batch: 128,
            max_in_flight: 4,
            linger_ms: 0,
        }
    }
}

impl BatchSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the bad field (`store_batches.*`:
    /// the section's name in every service that gathers).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_batch == 0 {
            return Err(SettingsError::invalid(
                "store_batches.max_batch",
                "must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(SettingsError::invalid(
                "store_batches.max_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One call answering several requests: one answer per request, in order.
pub type BatchCall<Req, Res, E = tonic::Status> =
    Arc<dyn Fn(Vec<Req>) -> BoxFuture<'static, Result<Vec<Res>, E>> + Send + Sync>;

/// Why a gathered request got no answer from its call: the error type of a
/// [`Gatherer`] says it in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GatherError {
    /// Every clone of the gatherer's task is gone (shutdown).
    #[error("gathered calls have stopped")]
    Stopped,
    /// The call ended without answering (it panicked or was aborted).
    #[error("a gathered call ended without an answer")]
    NoAnswer,
    /// The call answered another number of requests than it was given.
    #[error("the batch call answered {answered} of {asked} requests")]
    WrongCount { answered: usize, asked: usize },
}

impl From<GatherError> for tonic::Status {
    fn from(e: GatherError) -> Self {
        match e {
            GatherError::Stopped => Self::unavailable(e.to_string()),
            GatherError::NoAnswer | GatherError::WrongCount { .. } => Self::internal(e.to_string()),
        }
    }
}

impl From<GatherError> for String {
    fn from(e: GatherError) -> Self {
        e.to_string()
    }
}

struct Pending<Req, Res, E> {
    request: Req,
    answer: oneshot::Sender<Result<Res, E>>,
    /// The caller's span, so the call it goes in shows in its trace.
    span: tracing::Span,
}

/// How many times a free caller that found requests lets the other tasks
/// ready on its runtime thread run first, while that brings more requests.
///
/// A request's sender wakes the caller, and tokio runs a task woken by the
/// running one next: without these rounds the caller would usually take that
/// one request alone while other requests are a few microseconds from being
/// sent (a gateway at 16 concurrent reads put 2.6 audit rows in an outbox
/// message; with them 6.4, and a read cost 22 % less CPU; decision 36). A
/// round is a `yield_now`, not a timer: it lasts until the tasks ready on the
/// thread have run (or tokio's next maintenance tick) plus a poll of the I/O
/// driver that does not block; on an idle thread the call goes after that one
/// poll.
const READY_ROUNDS: u32 = 4;

/// Gathers requests into calls of a [`BatchCall`]; cheap to clone.
pub struct Gatherer<Req, Res, E = tonic::Status> {
    tx: mpsc::Sender<Pending<Req, Res, E>>,
}

impl<Req, Res, E> Clone for Gatherer<Req, Res, E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Res, E> Gatherer<Req, Res, E>
where
    Req: Send + 'static,
    Res: Send + 'static,
    E: From<GatherError> + Clone + Send + 'static,
{
    /// Starts gathering on the current runtime: `max_in_flight` callers, each
    /// taking whatever waits when it is free; they stop when every clone is
    /// dropped.
    /// `name` labels the calls' sizes in `chat_memory_gathered_batch_size{call}`.
    pub fn start(
        name: &'static str,
        call: BatchCall<Req, Res, E>,
        settings: &BatchSettings,
    ) -> Self {
        let max_batch = settings.max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
        let rx = Arc::new(Mutex::new(rx));
        let linger = Duration::from_millis(settings.linger_ms);
        let sizes = BatchSizes::new(name);
        for _ in 0..settings.max_in_flight.max(1) {
            tokio::spawn(call_batches(
                rx.clone(),
                call.clone(),
                max_batch,
                linger,
                sizes.clone(),
            ));
        }
        Self { tx }
    }

    /// Sends one request; waits for the call it goes in.
    ///
    /// # Errors
    /// The call's error (every request of a failed call gets it).
    pub async fn call(&self, request: Req) -> Result<Res, E> {
        let (answer, answered) = oneshot::channel();
        self.tx
            .send(Pending {
                request,
                answer,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| E::from(GatherError::Stopped))?;
        answered.await.map_err(|_| E::from(GatherError::NoAnswer))?
    }
}

/// Records each call's size: `chat_memory_gathered_batch_size{call}` (how
/// many requests one call carried; all ones mean nothing was gathered).
#[derive(Clone)]
struct BatchSizes {
    histogram: opentelemetry::metrics::Histogram<u64>,
    call: [opentelemetry::KeyValue; 1],
}

impl BatchSizes {
    fn new(name: &'static str) -> Self {
        static HISTOGRAM: std::sync::OnceLock<opentelemetry::metrics::Histogram<u64>> =
            std::sync::OnceLock::new();
        let histogram = HISTOGRAM
            .get_or_init(|| {
                opentelemetry::global::meter("service-kit")
                    .u64_histogram("chat_memory_gathered_batch_size")
                    .with_description(
                        "Requests carried by one gathered call (store calls, audit outbox messages)",
                    )
                    .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
                    .build()
            })
            .clone();
        Self {
            histogram,
            call: [opentelemetry::KeyValue::new("call", name)],
        }
    }

    fn record(&self, n: usize) {
        self.histogram
            .record(u64::try_from(n).unwrap_or(u64::MAX), &self.call);
    }
}

/// One of the gatherer's callers: waits for a request, takes every other one
/// waiting then (up to `max_batch`), makes the call and answers each. A
/// long-lived task per call in flight, so a request costs no task spawn and
/// no extra hand-over on its way to the call.
async fn call_batches<Req, Res, E>(
    rx: Arc<Mutex<mpsc::Receiver<Pending<Req, Res, E>>>>,
    call: BatchCall<Req, Res, E>,
    max_batch: usize,
    linger: Duration,
    sizes: BatchSizes,
) where
    Req: Send + 'static,
    Res: Send + 'static,
    E: From<GatherError> + Clone + Send + 'static,
{
    loop {
        let batch = {
            // Only a free caller waits on the queue: what arrives while every
            // caller is busy waits for the next free one, and goes with it.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + linger;
            // Rounds left, and the batch's size at the last one: a round
            // that brought nothing ends them.
            let (mut rounds, mut before_round) = (READY_ROUNDS, 0);
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) if rounds > 0 && batch.len() > before_round => {
                        rounds -= 1;
                        before_round = batch.len();
                        tokio::task::yield_now().await;
                    }
                    Err(_) if linger.is_zero() => break,
                    Err(_) => match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            batch
        };
        let span = call_span(&batch);
        let (requests, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.request, p.answer)).unzip();
        let n = requests.len();
        sizes.record(n);
        // A call that panics answers nobody (each gets `NoAnswer` when its
        // answer is dropped), and this caller goes on serving.
        let Ok(outcome) = std::panic::AssertUnwindSafe(call(requests).instrument(span))
            .catch_unwind()
            .await
        else {
            continue;
        };
        let outcome = outcome.and_then(|results| {
            if results.len() == n {
                Ok(results)
            } else {
                Err(E::from(GatherError::WrongCount {
                    answered: results.len(),
                    asked: n,
                }))
            }
        });
        match outcome {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Err(error) => {
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The span of a call: a child of its first request's span (so a lone
/// request's trace shows the call, and the hop to the other service), linked
/// to the spans of the others.
fn call_span<Req, Res, E>(batch: &[Pending<Req, Res, E>]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let Some((first, rest)) = batch.split_first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(parent: &first.span, "gathered call", requests = batch.len());
    for other in rest {
        let linked = other.span.context().span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
    span
}

/// A call's answer, boxed.
pub type CallFuture<T> = BoxFuture<'static, Result<T, tonic::Status>>;

/// A gathered call: `batch` on the client; a server older than the batch
/// call (UNIMPLEMENTED, during a rolling upgrade) gets `single` for each
/// request, in order.
pub fn with_single_fallback<C, Req, Res>(
    client: C,
    batch: fn(C, Vec<Req>) -> CallFuture<Vec<Res>>,
    single: fn(C, Req) -> CallFuture<Res>,
) -> BatchCall<Req, Res>
where
    C: Clone + Send + Sync + 'static,
    Req: Clone + Send + 'static,
    Res: Send + 'static,
{
    Arc::new(move |requests: Vec<Req>| {
        let client = client.clone();
        Box::pin(async move {
            match batch(client.clone(), requests.clone()).await {
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    let mut results = Vec::with_capacity(requests.len());
                    for request in requests {
                        results.push(single(client.clone(), request).await?);
                    }
                    Ok(results)
                }
                answered => answered,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;
    use tokio::sync::Semaphore;

    use super::*;

    /// A call that records the batches it got and answers, once released,
    /// each request with its own name in capitals.
    fn recording_call(
        seen: Arc<Mutex<Vec<Vec<String>>>>,
        release: Arc<Semaphore>,
    ) -> BatchCall<String, String> {
        Arc::new(move |requests: Vec<String>| {
            let seen = seen.clone();
            let release = release.clone();
            async move {
                seen.lock().expect("lock").push(requests.clone());
                release.acquire().await.expect("open").forget();
                Ok(requests.iter().map(|r| r.to_uppercase()).collect())
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn requests_that_wait_for_a_busy_call_go_together_and_each_gets_its_answer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(0));
        let settings = BatchSettings {
            max_batch: 3,
            max_in_flight: 1,
            linger_ms: 0,
        };
        let gatherer = Gatherer::start(
            "test",
            recording_call(seen.clone(), release.clone()),
            &settings,
        );

        let first = tokio::spawn({
            let g = gatherer.clone();
            async move { g.call("a".to_owned()).await }
        });
        // `a` is in its call (held) before the others arrive.
        while seen.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = ["b", "c", "d", "e"]
            .into_iter()
            .map(|name| {
                let g = gatherer.clone();
                tokio::spawn(async move { g.call(name.to_owned()).await })
            })
            .collect();
        // All four sent: three wait in the channel (the gathering task may
        // already hold the first of them while it waits for the busy call).
        while gatherer.tx.max_capacity() - gatherer.tx.capacity() < 3 {
            tokio::task::yield_now().await;
        }
        release.add_permits(10);

        assert_eq!(first.await.expect("joined").expect("answered"), "A");
        let mut answers = Vec::new();
        for handle in later {
            answers.push(handle.await.expect("joined").expect("answered"));
        }
        assert_eq!(answers, ["B", "C", "D", "E"], "each its own answer");
        let batches = seen.lock().expect("lock").clone();
        assert_eq!(
            batches,
            vec![
                vec!["a".to_owned()],
                vec!["b".to_owned(), "c".to_owned(), "d".to_owned()],
                vec!["e".to_owned()],
            ],
            "the three that waited went together (at most max_batch), the rest next"
        );
    }

    /// As the services run: one runtime thread, which runs a task woken by
    /// the running one next.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn requests_of_tasks_ready_together_go_in_one_call_without_a_linger() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(100));
        let settings = BatchSettings {
            max_batch: 64,
            max_in_flight: 1,
            linger_ms: 0,
        };
        let gatherer = Gatherer::start("test", recording_call(seen.clone(), release), &settings);
        let names = ["a", "b", "c", "d", "e", "f"];
        // On the runtime's one thread (the test's own body is not): the six
        // are made ready together by one task, and run after it.
        tokio::spawn(async move {
            let callers: Vec<_> = names
                .into_iter()
                .map(|name| {
                    let g = gatherer.clone();
                    tokio::spawn(async move { g.call(name.to_owned()).await })
                })
                .collect();
            for caller in callers {
                caller.await.expect("joined").expect("answered");
            }
        })
        .await
        .expect("joined");
        // In whichever order the runtime ran them (the last woken first).
        let mut batches = seen.lock().expect("lock").clone();
        batches.iter_mut().for_each(|batch| batch.sort());
        assert_eq!(
            batches,
            vec![names.map(str::to_owned).to_vec()],
            "the six made ready together went in one call"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_linger_requests_arriving_one_by_one_go_together_and_a_lone_one_goes_after_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(100));
        let settings = BatchSettings {
            max_batch: 3,
            max_in_flight: 1,
            linger_ms: 20,
        };
        let gatherer = Gatherer::start("test", recording_call(seen.clone(), release), &settings);
        let call = |name: &'static str| {
            let g = gatherer.clone();
            tokio::spawn(async move { g.call(name.to_owned()).await })
        };
        let started = tokio::time::Instant::now();
        // Four requests 5 ms apart: the first three fill a batch within the
        // linger; the fourth waits out its own linger alone.
        let mut handles = Vec::new();
        for name in ["a", "b", "c", "d"] {
            handles.push(call(name));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.expect("joined").expect("answered"));
        }
        assert_eq!(answers, ["A", "B", "C", "D"], "each its own answer");
        assert_eq!(
            seen.lock().expect("lock").clone(),
            vec![
                vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
                vec!["d".to_owned()],
            ],
            "one by one within the linger they went together, up to max_batch"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(15 + 20) && waited < Duration::from_millis(15 + 40),
            "the lone request went when its linger ended ({waited:?})"
        );
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_request_in_it() {
        let call: BatchCall<String, String> = Arc::new(|_requests: Vec<String>| {
            async { Err(tonic::Status::unavailable("memory-store down")) }.boxed()
        });
        let gatherer = Gatherer::start("test", call, &BatchSettings::default());
        let status = gatherer
            .call("a".to_owned())
            .await
            .expect_err("the call failed");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let short: BatchCall<String, String> =
            Arc::new(|_requests: Vec<String>| async { Ok(Vec::new()) }.boxed());
        let gatherer = Gatherer::start("test", short, &BatchSettings::default());
        let status = gatherer
            .call("a".to_owned())
            .await
            .expect_err("no answer for the request");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("0 of 1"), "{}", status.message());
    }

    #[test]
    fn zero_batch_or_zero_calls_in_flight_is_refused_naming_the_setting() {
        let bad = BatchSettings {
            max_batch: 0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("store_batches.max_batch")
        );
        let bad = BatchSettings {
            max_in_flight: 0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("store_batches.max_in_flight")
        );
    }
}
