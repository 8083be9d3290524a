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

/// The chain link of a received job message (`0` when absent).
///
/// # Errors
/// The header's text when it is present but not a sequence number: such a job
/// cannot be ordered, and running it as if it had no predecessor could run
/// it before that one (which would then be superseded).
pub fn prev_seq(headers: Option<&async_nats::HeaderMap>) -> Result<u64, String> {
    match headers.and_then(|h| h.get(PREV_SEQ)) {
        None => Ok(0),
        Some(v) => v.as_str().parse().map_err(|_| v.as_str().to_owned()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_link_is_a_number_none_or_refused() {
        let mut headers = async_nats::HeaderMap::new();
        assert_eq!(prev_seq(None), Ok(0));
        assert_eq!(prev_seq(Some(&headers)), Ok(0));
        headers.insert(PREV_SEQ, "42");
        assert_eq!(prev_seq(Some(&headers)), Ok(42));
        let mut bad = async_nats::HeaderMap::new();
        bad.insert(PREV_SEQ, "forty-two");
        assert_eq!(prev_seq(Some(&bad)), Err("forty-two".to_owned()));
    }
}
