//! Serving an MCP endpoint the way both MCP servers do (the summarizer agent
//! and chat-memory-mcp): streamable HTTP, stateless, plain JSON answers, next
//! to the standard gRPC health service on one listener. On shutdown the
//! health service reports NOT_SERVING first, so probes drain traffic away,
//! then rmcp's in-process handling is cancelled and in-flight requests finish.
//!
//! With `tls` set the listener serves TLS ([`TlsListener`]: handshakes run
//! concurrently, bounded in number and time, so a slow or silent client holds
//! only its own connection, for at most 5 s).
//!
//! Only with the `mcp-server` feature (the worker, which links this crate,
//! builds no HTTP server).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
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
/// (`health_name` and `""` reported SERVING) on `listener`, over TLS when
/// `tls` is set, until `shutdown` resolves; then reports NOT_SERVING, cancels
/// `mcp_cancel` and finishes in-flight requests. `name` is the service's name
/// in the logs.
///
/// # Errors
/// When serving fails (accepting connections, for example).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
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
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let drain = async move {
        shutdown.await;
        tracing::info!(service = name, "shutting down");
        // Report NOT_SERVING first so health checks drain traffic away.
        reporter
            .set_service_status(health_name, ServingStatus::NotServing)
            .await;
        mcp_cancel.cancel();
    };
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(drain)
                .await
        }
        Some(config) => {
            // The tap does nothing; a tapped listener is what axum gives
            // `ConnectInfo<SocketAddr>` for (a plain `TcpListener` has it built in).
            let listener = TlsListener::new(listener, config).tap_io(|_| {});
            axum::serve(listener, app)
                .with_graceful_shutdown(drain)
                .await
        }
    }
}

/// Longest a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS handshakes under way at once. A connection arriving while this many
/// are under way is closed at once (logged at debug), so silent clients can
/// fill at most this many slots for [`HANDSHAKE_TIMEOUT`] each, and new
/// connections are still accepted and answered meanwhile.
const MAX_HANDSHAKES: usize = 4096;

/// A TCP listener that hands axum only connections whose TLS handshake
/// completed. Handshakes run concurrently (tasks of a `JoinSet` the listener
/// owns, so dropping the listener closes its socket and ends every handshake
/// with it), each within [`HANDSHAKE_TIMEOUT`], at most [`MAX_HANDSHAKES`] at
/// once; a failed or late handshake drops its connection (logged at debug:
/// scanners and plain-HTTP clients would flood warnings). Accept errors are
/// handled as axum handles them for a plain listener.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: tokio::task::JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            handshakes: tokio::task::JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if self.handshakes.len() >= MAX_HANDSHAKES {
            tracing::debug!(%peer, "too many TLS handshakes under way; connection closed");
            return;
        }
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: a connection accepted or a
            // handshake finished is never lost between two calls.
            tokio::select! {
                (tcp, peer) = axum::serve::Listener::accept(&mut self.tcp) => {
                    self.start_handshake(tcp, peer);
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
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
