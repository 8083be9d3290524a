//! `/metrics` in the Prometheus text format, on its own listener so scraping never
//! competes with the service's API port or its TLS and auth.

use std::future::Future;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;

/// Serves `registry` at `/metrics` on `listener` until `shutdown` resolves.
///
/// # Errors
/// The listener failing.
pub async fn serve(
    listener: TcpListener,
    registry: prometheus::Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(registry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn render(State(registry): State<prometheus::Registry>) -> Result<String, StatusCode> {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    String::from_utf8(buffer).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}
