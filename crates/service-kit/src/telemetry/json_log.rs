//! One JSON object per log line, with the OpenTelemetry trace and span ids of the
//! current span, so a log line leads to its trace:
//!
//! ```json
//! {"ts":"2026-11-24T01:02:03.456Z","level":"INFO","service":"gateway","target":"gateway::service",
//!  "message":"update accepted","job_id":"...","trace_id":"4bf9...","span_id":"00f0...","span":"UpdateMemory"}
//! ```

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format::Writer};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format.
pub struct JsonWithTrace {
    service: &'static str,
}

impl JsonWithTrace {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(timestamp()));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("service".into(), Value::String(self.service.to_owned()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        event.record(&mut FieldVisitor(&mut line));
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), Value::String(span.name().to_owned()));
        }
        let cx = tracing::Span::current().context();
        let span_ref = cx.span();
        let sc = span_ref.span_context();
        if sc.is_valid() {
            line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
            line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The span fields of the JSON format: none. A line names its span and
/// carries its trace and span ids ([`JsonWithTrace`]), never a span's fields;
/// the `fmt` layer would otherwise format every field of every new span (and
/// every field recorded later) into a string kept with the span, whether any
/// line is ever logged in it or not: about 5 % of a gateway's CPU on reads
/// (`docs/benchmarks.md`, thirteenth session).
pub struct NoSpanFields;

impl<'writer> FormatFields<'writer> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'writer>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }

    fn add_fields(
        &self,
        _current: &'writer mut tracing_subscriber::fmt::FormattedFields<Self>,
        _fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        Ok(())
    }
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

struct FieldVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = super::timestamp();
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
    }
}
