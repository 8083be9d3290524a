//! The public API's metrics, recorded by a layer outside authentication so denied
//! calls count too:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chat_memory_api_requests_total` | counter | `method`, `code` (`OK`, `NotFound`, `Unavailable`, ...) |
//! | `chat_memory_api_request_duration_seconds` | histogram | `method` |
//! | `chat_memory_retrieval_duration_seconds` | histogram | (`GetMemory` only, any outcome) |
//! | `chat_memory_audit_rows_total` | counter | `result`: `outboxed` (made durable in the JetStream outbox), `with_job` (an accepted update's row, stored with its job's registration), `stored` (in memory-store), `relayed` (outbox -> memory-store), `lost` |
//! | `chat_memory_audit_outbox_depth` | gauge | rows in the outbox not yet in memory-store (read every 15 s) |
//! | `chat_memory_watch_streams` | gauge | open WatchMemory streams on this gateway |
//! | `chat_memory_read_cache_total` | counter | `result`: `hit`, `miss`, `installed` (a commit's event cached its memory), `cleared` (a skipped change event emptied the cache) |
//! | `chat_memory_jwks_reloads_total` | counter | `result`: `changed` (new keys in force), `failed` (file unusable; the current keys kept) |
//! | `chat_memory_rate_limit_fail_open_total` | counter | `cause`: `unavailable` (NATS KV failed), `timeout` (a lease took over 1 s); each opens one budget's limit for a while (D-38) |

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use service_kit::telemetry::grpc::{code_label, record_status, split_path, status_of};

const API_SERVICE: &str = "chatmemory.v1.MemoryService";

/// Latency buckets in seconds: 0.5 ms .. 10 s.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0,
];

struct ApiInstruments {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    retrieval: Histogram<f64>,
    audit_rows: Counter<u64>,
    read_cache: Counter<u64>,
    jwks_reloads: Counter<u64>,
    rate_limit_fail_open: Counter<u64>,
    /// Read by the observable gauges.
    outbox_depth: Arc<AtomicU64>,
    watch_streams: Arc<AtomicU64>,
}

fn instruments() -> &'static ApiInstruments {
    static I: OnceLock<ApiInstruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = opentelemetry::global::meter("gateway");
        let outbox_depth: Arc<AtomicU64> = Arc::default();
        let depth = outbox_depth.clone();
        meter
            .u64_observable_gauge("chat_memory_audit_outbox_depth")
            .with_description("Audit rows in the JetStream outbox not yet stored in memory-store")
            .with_callback(move |o| o.observe(depth.load(Ordering::Relaxed), &[]))
            .build();
        let watch_streams: Arc<AtomicU64> = Arc::default();
        let streams = watch_streams.clone();
        meter
            .u64_observable_gauge("chat_memory_watch_streams")
            .with_description("Open WatchMemory streams on this gateway")
            .with_callback(move |o| o.observe(streams.load(Ordering::Relaxed), &[]))
            .build();
        ApiInstruments {
            rate_limit_fail_open: meter
                .u64_counter("chat_memory_rate_limit_fail_open")
                .with_description("Times a rate-limit budget was opened (calls let through unlimited) because its shared state failed")
                .build(),
            jwks_reloads: meter
                .u64_counter("chat_memory_jwks_reloads")
                .with_description("JWKS file re-reads that changed the keys, or found the file unusable")
                .build(),
            read_cache: meter
                .u64_counter("chat_memory_read_cache")
                .with_description("Plain reads answered from the gateway's cache (hit) or memory-store (miss), and cache clears")
                .build(),
            outbox_depth,
            watch_streams,
            requests: meter
                .u64_counter("chat_memory_api_requests")
                .with_description("Public API calls by method and status code")
                .build(),
            duration: meter
                .f64_histogram("chat_memory_api_request_duration")
                .with_unit("s")
                .with_description("Public API call duration")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            retrieval: meter
                .f64_histogram("chat_memory_retrieval_duration")
                .with_unit("s")
                .with_description("GetMemory duration at the gateway")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            audit_rows: meter
                .u64_counter("chat_memory_audit_rows")
                .with_description("Audit rows by where they went: outboxed, stored, relayed, lost")
                .build(),
        }
    })
}

/// Counts `n` audit rows by where they went.
pub fn audit_rows(result: &'static str, n: usize) {
    instruments().audit_rows.add(
        u64::try_from(n).unwrap_or(u64::MAX),
        &[KeyValue::new("result", result)],
    );
}

/// Records the outbox's depth (pending plus held by a relay).
pub fn audit_outbox_depth(rows: u64) {
    instruments().outbox_depth.store(rows, Ordering::Relaxed);
}

/// Counts one read-cache outcome: `hit`, `miss` or `cleared`.
pub fn read_cache(result: &'static str) {
    instruments()
        .read_cache
        .add(1, &[KeyValue::new("result", result)]);
}

/// Counts one JWKS re-read: `changed` or `failed`.
pub fn jwks_reload(result: &'static str) {
    instruments()
        .jwks_reloads
        .add(1, &[KeyValue::new("result", result)]);
}

/// Counts one budget opened because its shared state failed: `unavailable`
/// or `timeout`.
pub fn rate_limit_fail_open(cause: &'static str) {
    instruments()
        .rate_limit_fail_open
        .add(1, &[KeyValue::new("cause", cause)]);
}

/// Records the open watch streams.
pub fn watch_streams(open: usize) {
    instruments()
        .watch_streams
        .store(u64::try_from(open).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Counts one audit row by where it went.
pub fn audit_row(result: &'static str) {
    instruments()
        .audit_rows
        .add(1, &[KeyValue::new("result", result)]);
}

/// Wraps the gateway's services.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiMetricsLayer;

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ApiMetrics<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, RB> tower::Service<Request<B>> for ApiMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let method = (service == API_SERVICE).then(|| method.to_owned());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            if let Some(method) = method {
                let code = response.as_ref().map_or(tonic::Code::Internal, status_of);
                record_status(code);
                let took = started.elapsed().as_secs_f64();
                let i = instruments();
                i.requests.add(
                    1,
                    &[
                        KeyValue::new("method", method.clone()),
                        KeyValue::new("code", code_label(code)),
                    ],
                );
                i.duration
                    .record(took, &[KeyValue::new("method", method.clone())]);
                // A read that waited for a version measures the update path,
                // not retrieval: it stays out of the retrieval histogram.
                let waited = response
                    .as_ref()
                    .is_ok_and(|r| r.extensions().get::<WaitedRead>().is_some());
                if method == "GetMemory" && !waited {
                    i.retrieval.record(took, &[]);
                }
            }
            response
        })
    }
}

/// Marks a GetMemory answer that waited for a version (read-your-writes).
#[derive(Debug, Clone, Copy)]
pub struct WaitedRead;
