//! Telemetry for every service: JSON logs carrying trace and span ids, OpenTelemetry
//! traces and metrics exported over OTLP when an endpoint is configured, and the
//! same metrics on a Prometheus scrape endpoint.
//!
//! # Layout
//! - [`init`] / [`TelemetryGuard`]: installs the global subscriber, tracer and
//!   meter providers; the guard flushes and shuts them down on drop.
//! - [`grpc`]: server spans of incoming gRPC calls and status helpers.
//! - [`json_log`]: the JSON line format with `trace_id` / `span_id`.
//! - [`propagation`]: W3C trace context in and out of gRPC metadata and HTTP headers.
//! - [`metrics_http`]: serves `/metrics` for Prometheus.
//!
//! Spans are always recorded (so logs carry trace ids) and exported only when
//! `otlp_endpoint` is set. Never put message content in a span or log field.

pub mod grpc;
pub mod json_log;
pub mod metrics_http;
pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Telemetry settings, the `[telemetry]` section of every service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `EnvFilter` directive, e.g. `info` or `info,summarizer_worker=debug`.
    pub log_filter: String,
    /// `json` (default, for machines) or `pretty` (for people at a terminal).
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`; none or empty: no export.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed over OTLP.
    pub otlp_metrics_interval_ms: u64,
    /// Where `/metrics` is served for Prometheus; none: not served.
    pub metrics_addr: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            otlp_metrics_interval_ms: 10_000,
            metrics_addr: None,
        }
    }
}

impl TelemetrySettings {
    /// The same settings with `/metrics` served on `addr` by default.
    pub fn with_metrics_addr(mut self, addr: &str) -> Self {
        self.metrics_addr = Some(addr.to_owned());
        self
    }
}

/// Keeps telemetry alive; dropping it flushes buffered spans and metrics and
/// shuts the exporters down (otherwise the last spans of a process are lost).
#[must_use = "telemetry stops when the guard is dropped"]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    registry: prometheus::Registry,
    /// The `/metrics` server, stopped with the guard.
    metrics_server: Option<tokio::task::JoinHandle<()>>,
}

impl TelemetryGuard {
    /// The registry `/metrics` renders.
    pub fn registry(&self) -> prometheus::Registry {
        self.registry.clone()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(server) = self.metrics_server.take() {
            server.abort();
        }
        if let Err(e) = self.tracer_provider.force_flush() {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
        let _ = self.tracer_provider.shutdown();
        if let Err(e) = self.meter_provider.force_flush() {
            eprintln!("telemetry: flushing metrics failed: {e}");
        }
        let _ = self.meter_provider.shutdown();
    }
}

/// Targets whose spans must not be exported: exporting would create spans about
/// exporting, and transport internals drown the service's own spans.
const NOISY_TARGETS: [&str; 6] = ["h2", "hyper", "tonic", "tower", "opentelemetry", "reqwest"];

/// Installs logs, traces and metrics for `service_name`. Must run inside the tokio
/// runtime (the exporters spawn on it). Safe to call more than once in a process
/// (tests): later calls keep the first subscriber but still return a working guard.
/// An exporter that cannot be built is reported on stderr and left out; the
/// service runs without it rather than not at all.
pub fn init(service_name: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    let resource = Resource::builder().with_service_name(service_name).build();

    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let mut meter_builder = SdkMeterProvider::builder().with_resource(resource);
    // An empty endpoint is none (`CHAT_MEMORY__TELEMETRY__OTLP_ENDPOINT=` in a
    // compose file that exports only with its observability profile).
    let otlp_endpoint = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty());
    if let Some(endpoint) = otlp_endpoint {
        match otlp_exporters(endpoint) {
            Ok((spans, metrics)) => {
                tracer_builder = tracer_builder.with_batch_exporter(spans);
                let reader = PeriodicReader::builder(metrics)
                    .with_interval(Duration::from_millis(
                        settings.otlp_metrics_interval_ms.max(100),
                    ))
                    .build();
                meter_builder = meter_builder.with_reader(reader);
            }
            Err(e) => eprintln!("{service_name}: OTLP export to {endpoint} disabled: {e}"),
        }
    }
    let registry = prometheus::Registry::new();
    match opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
    {
        Ok(exporter) => meter_builder = meter_builder.with_reader(exporter),
        Err(e) => eprintln!("{service_name}: Prometheus exporter disabled: {e}"),
    }
    let tracer_provider = tracer_builder.build();
    let meter_provider = meter_builder.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let directives = log_directives(settings);
    let installed = subscriber(
        service_name,
        &directives,
        settings.log_format,
        &tracer_provider,
    )
    .try_init();
    if installed.is_ok() {
        tracing::info!(otlp = otlp_endpoint.is_some(), "telemetry initialised");
    }
    TelemetryGuard {
        tracer_provider,
        meter_provider,
        registry,
        metrics_server: None,
    }
}

/// [`init`], then serves `/metrics` on `metrics_addr` when one is set.
///
/// # Errors
/// The metrics address cannot be bound (one line for the operator).
pub async fn start(
    service_name: &'static str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, String> {
    let mut guard = init(service_name, settings);
    if let Some(addr) = &settings.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind telemetry.metrics_addr {addr}: {e}"))?;
        tracing::info!(addr = %addr, "serving /metrics");
        let registry = guard.registry();
        guard.metrics_server = Some(tokio::spawn(async move {
            if let Err(e) = metrics_http::serve(listener, registry, std::future::pending()).await {
                tracing::error!(error = %e, "/metrics server stopped");
            }
        }));
    }
    Ok(guard)
}

/// Logs (`fmt`) and traces (OpenTelemetry), each layer with its own filter.
///
/// Every filter decides once per callsite (`Interest::always` or `never`), so
/// a disabled event of h2 or hyper costs one load on the hot path. A global
/// filter layer under per-layer filters (the earlier shape) or a closure
/// filter (`filter_fn`) makes such a callsite `sometimes`, asked again at
/// every event: about 5 % of the gateway's CPU in a read profile, 7 % of the
/// services' CPU per update (docs/benchmarks.md, eighth session).
fn subscriber(
    service_name: &'static str,
    directives: &str,
    format: LogFormat,
    tracer_provider: &SdkTracerProvider,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    let otel_filter = NOISY_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, noisy| targets.with_target(*noisy, LevelFilter::OFF),
    );
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer(service_name))
        .with_filter(EnvFilter::new(directives).and(otel_filter));
    let fmt_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(json_log::NoSpanFields)
            .event_format(json_log::JsonWithTrace::new(service_name))
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
    };
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer.with_filter(EnvFilter::new(directives)))
}

/// The log filter's directives: `RUST_LOG` when set and valid, else
/// `telemetry.log_filter` when valid, else `info`.
fn log_directives(settings: &TelemetrySettings) -> String {
    let valid = |d: &str| EnvFilter::try_new(d).is_ok();
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(env) if valid(&env) => env,
        _ if valid(&settings.log_filter) => settings.log_filter.clone(),
        _ => "info".to_owned(),
    }
}

type Exporters = (
    opentelemetry_otlp::SpanExporter,
    opentelemetry_otlp::MetricExporter,
);

fn otlp_exporters(endpoint: &str) -> Result<Exporters, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()?;
    Ok((spans, metrics))
}

#[cfg(test)]
mod tests {
    use tracing::callsite::{Callsite, Identifier};
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;
    use tracing::subscriber::Interest;
    use tracing::{Level, Metadata};

    use super::*;

    /// A callsite of the given target and level (what `tracing::event!` makes).
    macro_rules! callsite {
        ($name:ident, $target:expr, $level:expr) => {
            struct $name;
            impl Callsite for $name {
                fn set_interest(&self, _: Interest) {}
                fn metadata(&self) -> &Metadata<'_> {
                    static META: Metadata<'static> = Metadata::new(
                        stringify!($name),
                        $target,
                        $level,
                        None,
                        None,
                        None,
                        FieldSet::new(&[], Identifier(&$name)),
                        Kind::EVENT,
                    );
                    &META
                }
            }
        };
    }
    callsite!(H2Debug, "h2::codec", Level::DEBUG);
    callsite!(OwnDebug, "gateway::reads", Level::DEBUG);
    callsite!(OwnInfo, "gateway::reads", Level::INFO);

    #[test]
    fn every_callsite_is_decided_once_never_asked_again_at_each_event() {
        let provider = SdkTracerProvider::builder().build();
        let dispatch =
            tracing::Dispatch::new(subscriber("test", "info", LogFormat::Json, &provider));
        let interest = |callsite: &'static dyn Callsite| {
            let interest = dispatch.register_callsite(callsite.metadata());
            if interest.is_always() {
                "always"
            } else if interest.is_never() {
                "never"
            } else {
                "sometimes"
            }
        };
        // `sometimes` would mean every h2 frame's disabled event runs the filters.
        assert_eq!(interest(&H2Debug), "never", "a transport's debug event");
        assert_eq!(interest(&OwnDebug), "never", "below the log level");
        assert_eq!(interest(&OwnInfo), "always", "the service's own event");
    }

    #[test]
    fn the_json_log_keeps_no_formatted_copy_of_a_spans_fields() {
        use tracing_subscriber::registry::{LookupSpan, Registry};
        let provider = SdkTracerProvider::builder().build();
        let dispatch =
            tracing::Dispatch::new(subscriber("test", "info", LogFormat::Json, &provider));
        let registry = dispatch.downcast_ref::<Registry>().expect("a registry");
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(
                "grpc request",
                rpc.method = %"GetMemory",
                later = tracing::field::Empty
            );
            span.record("later", 7);
            let id = span.id().expect("an enabled span");
            let data = registry.span(&id).expect("the span");
            let extensions = data.extensions();
            let kept = extensions
                .get::<tracing_subscriber::fmt::FormattedFields<json_log::NoSpanFields>>()
                .expect("the fmt layer's entry for the span");
            assert_eq!(
                kept.fields, "",
                "no field formatted, at creation or when recorded"
            );
        });
    }
}
