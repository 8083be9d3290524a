//! Message headers beyond the payload: the chat chain link and the W3C trace
//! context of the publish.

use std::collections::HashMap;

/// The stream sequence of the chat's previous job that was still in the stream
/// when this one was published (`0`: none was). The workers run a job only once
/// that one has left the stream (acknowledged after its commit, or ended), which
/// is what keeps a chat's jobs in acceptance order across any number of workers.
/// The publish carries `Nats-Expected-Last-Subject-Sequence` with the same value,
/// so the server refuses the link if another job slipped in between.
pub const PREV_SEQ: &str = "Chat-Memory-Prev-Seq";

/// The chain link of a received job message (`0` when absent or unreadable).
pub fn prev_seq(headers: Option<&async_nats::HeaderMap>) -> u64 {
    headers
        .and_then(|h| h.get(PREV_SEQ))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// The trace context fields (`traceparent`, `tracestate`) of a received message.
pub fn trace_fields(headers: Option<&async_nats::HeaderMap>) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    if let Some(headers) = headers {
        for key in ["traceparent", "tracestate"] {
            if let Some(value) = headers.get(key) {
                fields.insert(key.to_owned(), value.as_str().to_owned());
            }
        }
    }
    fields
}
