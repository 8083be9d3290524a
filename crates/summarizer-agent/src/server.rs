//! Serving: the MCP streamable-HTTP endpoint at `/mcp` and the standard gRPC
//! health service, on one listener.
//!
//! ```text
//!             ┌─ /mcp ───────────────────────▶ StreamableHttpService ─▶ SummarizerTools ─▶ backend
//! listener ───┤  (HTTP/1.1 or HTTP/2, over TLS when `tls.*` is set; stateless JSON)
//!             └─ /grpc.health.v1.Health/* ───▶ tonic-health (h2c, or HTTP/2 over TLS)
//! ```

mod mcp;

use std::{future::Future, sync::Arc};

use rmcp::transport::streamable_http_server::{
    StreamableHttpService, session::local::LocalSessionManager,
};
use service_kit::mcp_server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    AgentError, backend::SummarizerBackend, settings::Settings, summarizer::SummarizerAgent,
};

/// Name under which the health service reports the agent (besides `""`).
pub const HEALTH_SERVICE_NAME: &str = "chatmemory.agent";

/// Path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";

/// Serves with the backend named in `settings` until `shutdown` resolves.
///
/// # Errors
/// [`AgentError`] when the backend cannot be built or the listener fails.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let backend = settings.build_backend().map_err(AgentError::Backend)?;
    run_with_backend(settings, backend, listener, shutdown).await
}

/// Serves with an explicit backend (tests wrap the offline one) until
/// `shutdown` resolves, then finishes in-flight requests and returns.
///
/// Every call goes through [`SummarizerAgent`]: deadline, output validation,
/// budgets, token accounting.
///
/// # Errors
/// [`AgentError`] when the listener fails.
pub async fn run_with_backend(
    settings: Settings,
    backend: Arc<dyn SummarizerBackend>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let addr = listener.local_addr().map_err(AgentError::ListenerAddress)?;
    let tls = settings.tls.rustls_config().map_err(AgentError::Tls)?;
    let backend_name = backend.name();
    let agent = Arc::new(
        SummarizerAgent::new(
            backend,
            std::time::Duration::from_millis(settings.call_timeout_ms),
        )
        .map_err(AgentError::Backend)?,
    );
    // Cancelled on shutdown so rmcp ends its in-process request handling too.
    let mcp_cancel = CancellationToken::new();
    let mcp = StreamableHttpService::new(
        move || Ok(mcp::SummarizerTools::new(Arc::clone(&agent))),
        Arc::new(LocalSessionManager::default()),
        mcp_server::stateless_config(settings.allowed_hosts.clone(), mcp_cancel.child_token()),
    );
    // Only the MCP route needs the service token; health stays open for probes.
    let tokens = service_kit::service_auth::AcceptedTokens::new(
        settings.service_token.as_ref(),
        settings.service_token_previous.as_ref(),
    );
    let mcp_route = axum::Router::new().nest_service(MCP_PATH, mcp).layer(
        axum::middleware::from_fn_with_state(tokens, require_service_token),
    );
    tracing::info!(%addr, backend = backend_name, tls = tls.is_some(), "summarizer agent serving");
    mcp_server::serve(
        listener,
        tls,
        mcp_route,
        HEALTH_SERVICE_NAME,
        "summarizer agent",
        mcp_cancel,
        shutdown,
    )
    .await
    .map_err(AgentError::Serve)
}

/// Refuses MCP requests without the configured bearer token (401), compared in
/// constant time. Without a configured token (loopback-only agents, see
/// `Settings::validate`) every request passes.
async fn require_service_token(
    axum::extract::State(tokens): axum::extract::State<service_kit::service_auth::AcceptedTokens>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let authorized = tokens.admits(request.headers().get(axum::http::header::AUTHORIZATION));
    if authorized {
        next.run(request).await
    } else {
        tracing::warn!("MCP call without a valid service token");
        axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED)
    }
}
