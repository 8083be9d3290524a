//! Message headers beyond the payload: the W3C trace context of the publish.

use std::collections::HashMap;

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
