//! The front's metrics (exported like every service's: `/metrics` and OTLP):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chat_memory_mcp_tool_calls_total` | counter | `tool`, `code` (`OK`, `NOT_FOUND`, `UNAUTHENTICATED`, ...) |
//! | `chat_memory_mcp_tool_call_duration_seconds` | histogram | `tool` (a waiting `read_memory` includes its wait) |
//!
//! Requests refused for want of a token never reach a tool: they show as 401s
//! at the HTTP layer (logged), and the gateway's own metrics count the rest.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

/// Latency buckets in seconds: 1 ms .. 15 s (reads may wait up to 10 s).
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 15.0,
];

struct Instruments {
    calls: Counter<u64>,
    duration: Histogram<f64>,
}

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = opentelemetry::global::meter("chat-memory-mcp");
        Instruments {
            calls: meter
                .u64_counter("chat_memory_mcp_tool_calls")
                .with_description("MCP tool calls by tool and status code")
                .build(),
            duration: meter
                .f64_histogram("chat_memory_mcp_tool_call_duration")
                .with_unit("s")
                .with_description("MCP tool call duration, gateway call included")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
        }
    })
}

/// Counts one finished tool call.
pub fn tool_call(tool: &'static str, code: &'static str, elapsed: Duration) {
    let i = instruments();
    i.calls.add(
        1,
        &[KeyValue::new("tool", tool), KeyValue::new("code", code)],
    );
    i.duration
        .record(elapsed.as_secs_f64(), &[KeyValue::new("tool", tool)]);
}
