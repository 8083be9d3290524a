//! Serving an MCP endpoint the way both MCP servers do (the summarizer agent
//! and chat-memory-mcp): streamable HTTP, stateless, plain JSON answers, next
//! to the standard gRPC health service on one listener. On shutdown the
//! health service reports NOT_SERVING first, so probes drain traffic away,
//! then rmcp's in-process handling is cancelled and in-flight requests finish.
//!
//! Only with the `mcp-server` feature (the worker, which links this crate,
//! builds no HTTP server).

use std::future::Future;

use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

/// Stateless streamable HTTP with plain JSON responses: no session lives in
/// the server, so a restart (or another replica) is invisible to clients.
/// `Host` headers outside `allowed_hosts` are refused; `cancel` ends rmcp's
/// in-process request handling.
pub fn stateless_config(
    allowed_hosts: Vec<String>,
    cancel: CancellationToken,
) -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(allowed_hosts)
        .with_cancellation_token(cancel)
}

/// Serves `mcp_route` (the MCP service with its auth layer) and gRPC health
/// (`health_name` and `""` reported SERVING) on `listener` until `shutdown`
/// resolves; then reports NOT_SERVING, cancels `mcp_cancel` and finishes
/// in-flight requests. `name` is the service's name in the logs.
///
/// # Errors
/// When serving fails (accepting connections, for example).
pub async fn serve(
    listener: TcpListener,
    mcp_route: axum::Router,
    health_name: &'static str,
    name: &'static str,
    mcp_cancel: CancellationToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(health_name, ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let app = tonic::service::Routes::new(health)
        .into_axum_router()
        .merge(mcp_route);
    // The peer's address reaches the handlers (`ConnectInfo`): chat-memory-mcp
    // forwards it to the gateway as `x-forwarded-for`.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(service = name, "shutting down");
        // Report NOT_SERVING first so health checks drain traffic away.
        reporter
            .set_service_status(health_name, ServingStatus::NotServing)
            .await;
        mcp_cancel.cancel();
    })
    .await
}

/// Makes `span` continue the caller's trace when the tool call carries W3C
/// trace context in its `_meta` (MCP SEP-414: `traceparent`, `tracestate`).
pub fn continue_trace(span: &tracing::Span, meta: &rmcp::model::RequestMetaObject) {
    let mut fields = std::collections::HashMap::new();
    if let Some(tp) = meta.get_traceparent() {
        fields.insert("traceparent".to_owned(), tp.to_owned());
    }
    if let Some(ts) = meta.get_tracestate() {
        fields.insert("tracestate".to_owned(), ts.to_owned());
    }
    if !fields.is_empty() {
        let parent = crate::telemetry::propagation::context_from_fields(&fields);
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(span, parent);
    }
}
