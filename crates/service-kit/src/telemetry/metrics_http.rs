//! `/metrics` in the Prometheus text format, on its own listener so scraping never
//! competes with the service's API port or its TLS and auth.
//!
//! Served with hyper's HTTP/1.1 connection directly: one route needs no router,
//! and a service that routes nothing else over HTTP (the worker) builds no axum.

use std::convert::Infallible;
use std::future::Future;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let answer = answer(&registry, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            // A scraper hanging up mid-answer is its business, not ours.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(registry: &prometheus::Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return status(StatusCode::NOT_FOUND);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let encoder = TextEncoder::new();
    let mut buffer = Vec::new();
    if encoder.encode(&registry.gather(), &mut buffer).is_err() {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let mut response = Response::new(Full::new(Bytes::from(buffer)));
    if let Ok(value) = header::HeaderValue::from_str(encoder.format_type()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request over a fresh connection; the whole answer.
    async fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn metrics_are_served_at_their_path_and_nothing_else_is() {
        let registry = prometheus::Registry::new();
        let counter =
            prometheus::IntCounter::new("served_things_total", "things").expect("counter");
        registry
            .register(Box::new(counter.clone()))
            .expect("register");
        counter.inc_by(7);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(super::serve(listener, registry, async {
            let _ = stopped.await;
        }));

        let metrics = get(addr, "GET", "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
        assert!(metrics.contains("served_things_total 7"), "{metrics}");
        let elsewhere = get(addr, "GET", "/").await;
        assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");
        let posted = get(addr, "POST", "/metrics").await;
        assert!(posted.starts_with("HTTP/1.1 405"), "{posted}");

        stop.send(()).expect("server still running");
        server
            .await
            .expect("joined")
            .expect("served until shutdown");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }
}
