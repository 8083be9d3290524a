//! Serving: the MCP streamable-HTTP endpoint at `/mcp`, behind the bearer
//! check, and the standard gRPC health service, on one listener.
//!
//! ```text
//!             ┌─ /mcp ── require_bearer ──▶ StreamableHttpService ─▶ MemoryTools ──gRPC + caller's token──▶ gateway
//! listener ───┤  (401 without a token)       (stateless JSON; TLS when `tls.*` is set)
//!             └─ /grpc.health.v1.Health/* ───▶ tonic-health (h2c, or HTTP/2 over TLS)
//! ```

use std::{future::Future, sync::Arc};

use rmcp::transport::streamable_http_server::{
    StreamableHttpService, session::local::LocalSessionManager,
};
use service_kit::mcp_server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{FrontError, gateway::Gateway, settings::Settings, tools::MemoryTools};

/// Name under which the health service reports the front (besides `""`).
pub const HEALTH_SERVICE_NAME: &str = "chatmemory.mcp";

/// Path of the MCP endpoint.
pub const MCP_PATH: &str = "/mcp";

/// Serves until `shutdown` resolves, then finishes in-flight requests and
/// returns. The gateway is dialled lazily: one that is down makes tool calls
/// fail with `UNAVAILABLE`, it does not stop the front.
///
/// # Errors
/// [`FrontError`] when the gateway channel cannot be built (URL, CA file) or
/// the listener fails.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), FrontError> {
    let addr = listener.local_addr().map_err(FrontError::ListenerAddress)?;
    let tls = settings.tls.rustls_config()?;
    let gateway = Gateway::new(
        settings.gateway.lazy_channel()?,
        settings.gateway.request_timeout(),
    );
    // Cancelled on shutdown so rmcp ends its in-process request handling too.
    let mcp_cancel = CancellationToken::new();
    let mcp = StreamableHttpService::new(
        move || Ok(MemoryTools::new(gateway.clone())),
        Arc::new(LocalSessionManager::default()),
        mcp_server::stateless_config(settings.allowed_hosts.clone(), mcp_cancel.child_token()),
    );
    // Only the MCP route needs a token; health stays open for probes.
    let mcp_route = axum::Router::new()
        .nest_service(MCP_PATH, mcp)
        .layer(axum::middleware::from_fn(crate::auth::require_bearer));
    tracing::info!(%addr, gateway = %settings.gateway.url, tls = tls.is_some(), "MCP front serving");
    mcp_server::serve(
        listener,
        tls,
        mcp_route,
        HEALTH_SERVICE_NAME,
        "MCP front",
        mcp_cancel,
        shutdown,
    )
    .await
    .map_err(FrontError::Serve)
}
