//! The worker's metrics, named by Prometheus conventions (the OTel → Prometheus
//! exporter appends `_total` to counters and `_seconds` to histograms in seconds):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chat_memory_updates_total` | counter | `outcome`: succeeded, failed, retried, rate_limited, outage_bound, skipped, poison |
//! | `chat_memory_job_duration_seconds` | histogram | `outcome` |
//! | `chat_memory_agent_call_duration_seconds` | histogram | `outcome`: ok, error |
//! | `chat_memory_queue_wait_seconds` | histogram | (acceptance → processing start) |
//! | `chat_memory_redeliveries_total` | counter | (deliveries after the first) |
//! | `chat_memory_queue_depth` | gauge | (jobs stored, not yet acknowledged, over all chats) |
//! | `chat_memory_agent_calls_in_flight` | gauge | (this worker's summarizer calls running now) |
//! | `chat_memory_jobs_per_call` | histogram | (jobs coalesced into one summarizer call) |
//! | `chat_memory_held_jobs` | gauge | (jobs this worker holds: running or waiting behind their chat) |
//! | `chat_memory_agent_circuit_state` | gauge | (0 closed, 1 half-open, 2 open) |
//! | `chat_memory_dead_letters_total` | counter | (failed jobs published to the dead-letter stream) |

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

/// Latency buckets in seconds: 1 ms .. 60 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

pub struct WorkerMetrics {
    updates: Counter<u64>,
    job_duration: Histogram<f64>,
    agent_call: Histogram<f64>,
    queue_wait: Histogram<f64>,
    redeliveries: Counter<u64>,
    circuit: Gauge<u64>,
    dead_letters: Counter<u64>,
    jobs_per_call: Histogram<u64>,
    change_events_lost: Counter<u64>,
    /// Last observed depth of the jobs consumer, read by the observable gauge.
    depth: Arc<AtomicU64>,
    /// Agent calls running now, read by the observable gauge.
    in_flight: Arc<AtomicU64>,
    /// Jobs held now, read by the observable gauge.
    held: Arc<AtomicU64>,
}

/// The process-wide instruments (created on first use from the global meter).
pub fn get() -> &'static WorkerMetrics {
    static METRICS: OnceLock<WorkerMetrics> = OnceLock::new();
    METRICS.get_or_init(WorkerMetrics::new)
}

impl WorkerMetrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("summarizer-worker");
        let depth: Arc<AtomicU64> = Arc::default();
        let in_flight: Arc<AtomicU64> = Arc::default();
        let held: Arc<AtomicU64> = Arc::default();
        for (name, description, value) in [
            (
                "chat_memory_queue_depth",
                "Update jobs stored and not yet acknowledged, over all chats",
                depth.clone(),
            ),
            (
                "chat_memory_agent_calls_in_flight",
                "Summarizer calls this worker is making now",
                in_flight.clone(),
            ),
            (
                "chat_memory_held_jobs",
                "Jobs this worker holds (running, or waiting behind their chat's job)",
                held.clone(),
            ),
        ] {
            meter
                .u64_observable_gauge(name)
                .with_description(description)
                .with_callback(move |observer| observer.observe(value.load(Ordering::Relaxed), &[]))
                .build();
        }
        Self {
            updates: meter
                .u64_counter("chat_memory_updates")
                .with_description("Update jobs by outcome")
                .build(),
            job_duration: seconds(
                &meter,
                "chat_memory_job_duration",
                "Processing time of one job delivery",
            ),
            agent_call: seconds(
                &meter,
                "chat_memory_agent_call_duration",
                "Duration of one summarizer agent call",
            ),
            queue_wait: seconds(
                &meter,
                "chat_memory_queue_wait",
                "Time from acceptance to processing start",
            ),
            redeliveries: meter
                .u64_counter("chat_memory_redeliveries")
                .with_description("Job deliveries after the first (a worker died or gave up)")
                .build(),
            circuit: meter
                .u64_gauge("chat_memory_agent_circuit_state")
                .with_description("Agent circuit breaker: 0 closed, 1 half-open, 2 open")
                .build(),
            dead_letters: meter
                .u64_counter("chat_memory_dead_letters")
                .with_description("Failed jobs published to the dead-letter stream")
                .build(),
            change_events_lost: meter
                .u64_counter("chat_memory_change_events_lost")
                .with_description("Change events not published after a commit (watchers catch up at their next check)")
                .build(),
            jobs_per_call: meter
                .u64_histogram("chat_memory_jobs_per_call")
                .with_description("Update jobs coalesced into one summarizer call")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                .build(),
            depth,
            in_flight,
            held,
        }
    }

    pub fn update(&self, outcome: &'static str) {
        self.updates.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    pub fn job(&self, outcome: &'static str, took: Duration) {
        self.job_duration
            .record(took.as_secs_f64(), &[KeyValue::new("outcome", outcome)]);
    }

    pub fn agent_call(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.agent_call
            .record(took.as_secs_f64(), &[KeyValue::new("outcome", outcome)]);
    }

    pub fn queue_wait(&self, waited: Duration) {
        self.queue_wait.record(waited.as_secs_f64(), &[]);
    }

    pub fn redelivery(&self) {
        self.redeliveries.add(1, &[]);
    }

    /// The breaker's state as its gauge value (0 closed, 1 half-open, 2 open).
    pub fn circuit_state(&self, gauge: u64) {
        self.circuit.record(gauge, &[]);
    }

    pub fn dead_letter(&self) {
        self.dead_letters.add(1, &[]);
    }

    pub fn set_depth(&self, depth: u64) {
        self.depth.store(depth, Ordering::Relaxed);
    }

    /// A summarizer call over `jobs` coalesced jobs starts.
    pub fn call_started(&self, jobs: usize) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.jobs_per_call
            .record(u64::try_from(jobs).unwrap_or(u64::MAX), &[]);
    }

    pub fn change_event_lost(&self) {
        self.change_events_lost.add(1, &[]);
    }

    pub fn call_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set_held(&self, held: u64) {
        self.held.store(held, Ordering::Relaxed);
    }
}

fn seconds(
    meter: &opentelemetry::metrics::Meter,
    name: &'static str,
    description: &'static str,
) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(SECONDS_BUCKETS.to_vec())
        .build()
}
