//! The worker's metrics, named by Prometheus conventions (the OTel → Prometheus
//! exporter appends `_total` to counters and `_seconds` to histograms in seconds):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chat_memory_updates_total` | counter | `outcome`: succeeded, failed, retried, skipped, poison |
//! | `chat_memory_job_duration_seconds` | histogram | `outcome` |
//! | `chat_memory_agent_call_duration_seconds` | histogram | `outcome`: ok, error |
//! | `chat_memory_queue_wait_seconds` | histogram | (acceptance → processing start) |
//! | `chat_memory_redeliveries_total` | counter | (deliveries after the first) |
//! | `chat_memory_queue_depth` | gauge | `partition` (jobs stored, not yet acknowledged) |
//! | `chat_memory_agent_circuit_state` | gauge | (0 closed, 1 half-open, 2 open) |
//! | `chat_memory_dead_letters_total` | counter | (failed jobs published to the dead-letter stream) |

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

use crate::circuit::CircuitState;

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
    /// Last observed depth per partition, read by the observable gauge.
    depths: Arc<Mutex<Vec<u64>>>,
}

/// The process-wide instruments (created on first use from the global meter).
pub fn get() -> &'static WorkerMetrics {
    static METRICS: OnceLock<WorkerMetrics> = OnceLock::new();
    METRICS.get_or_init(WorkerMetrics::new)
}

impl WorkerMetrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("summarizer-worker");
        let depths: Arc<Mutex<Vec<u64>>> = Arc::default();
        let gauge_depths = depths.clone();
        meter
            .u64_observable_gauge("chat_memory_queue_depth")
            .with_description("Update jobs stored in the partition and not yet acknowledged")
            .with_callback(move |observer| {
                if let Ok(depths) = gauge_depths.lock() {
                    for (p, d) in depths.iter().enumerate() {
                        observer.observe(*d, &[KeyValue::new("partition", p.to_string())]);
                    }
                }
            })
            .build();
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
            depths,
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

    pub fn circuit_state(&self, state: CircuitState) {
        self.circuit.record(state.gauge(), &[]);
    }

    pub fn dead_letter(&self) {
        self.dead_letters.add(1, &[]);
    }

    pub fn set_depth(&self, partition: u32, depth: u64) {
        if let Ok(mut depths) = self.depths.lock() {
            let p = partition as usize;
            if depths.len() <= p {
                depths.resize(p + 1, 0);
            }
            depths[p] = depth;
        }
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
