//! Service-to-service credentials: a shared bearer token that internal
//! services (memory-store, the agent) require and their callers present.
//!
//! The server side is a tower layer in front of every gRPC service, so a new
//! RPC is protected the day it is added; only the paths listed as open (health)
//! pass without the token. The token is compared in constant time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

use crate::secret::Secret;

/// gRPC paths that stay open without a token: health checks (probes and load
/// balancers carry no credentials).
pub const OPEN_PATH_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

/// The token from an `authorization: Bearer <token>` header value.
pub fn bearer_token(value: Option<&HeaderValue>) -> Option<&[u8]> {
    let raw = value?.as_bytes();
    let prefix = b"Bearer ";
    (raw.len() > prefix.len() && raw[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &raw[prefix.len()..])
}

/// Whether the request carries exactly `token` as its bearer token.
pub fn is_authorized(token: &Secret, value: Option<&HeaderValue>) -> bool {
    bearer_token(value).is_some_and(|presented| token.matches(presented))
}

/// Requires the service token on every path except [`OPEN_PATH_PREFIXES`].
/// With no token configured the layer lets everything through (local
/// development); `validate()` of each service refuses that outside `dev_mode`.
#[derive(Clone)]
pub struct ServiceTokenLayer {
    token: Option<Arc<Secret>>,
}

impl ServiceTokenLayer {
    pub fn new(token: Option<Secret>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for ServiceTokenLayer {
    type Service = ServiceToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceToken {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`ServiceTokenLayer`] wraps around a gRPC router.
#[derive(Clone)]
pub struct ServiceToken<S> {
    inner: S,
    token: Option<Arc<Secret>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> tower::Service<Request<B>> for ServiceToken<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let open = OPEN_PATH_PREFIXES
            .iter()
            .any(|p| request.uri().path().starts_with(p));
        let allowed = match &self.token {
            None => true,
            Some(token) => {
                open || is_authorized(token, request.headers().get(http::header::AUTHORIZATION))
            }
        };
        if allowed {
            Box::pin(self.inner.call(request))
        } else {
            tracing::warn!(path = %request.uri().path(), "internal call without a valid service token");
            let status = Status::unauthenticated("a valid service token is required");
            Box::pin(std::future::ready(Ok(status.into_http())))
        }
    }
}

/// Client side: adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Default)]
pub struct AttachToken {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl AttachToken {
    /// # Errors
    /// When the token is not a valid header value (control characters).
    pub fn new(token: Option<&Secret>) -> Result<Self, crate::settings::SettingsError> {
        let header = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                format!("Bearer {}", t.expose())
                    .parse::<MetadataValue<_>>()
                    .map_err(|_| {
                        crate::settings::SettingsError::invalid(
                            "service_token",
                            "must be printable ASCII",
                        )
                    })?,
            ),
        };
        Ok(Self { header })
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        // Every internal call also carries the caller's trace context, so the
        // callee's spans join the same trace.
        crate::telemetry::propagation::inject_into_metadata(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_authorized() {
        let token = Secret::new("s3cret");
        let cases = [
            (Some("Bearer s3cret"), true),
            (Some("bearer s3cret"), true),
            (Some("Bearer s3cret "), false),
            (Some("Bearer s3cre"), false),
            (Some("Basic s3cret"), false),
            (Some("Bearer "), false),
            (None, false),
        ];
        for (header, want) in cases {
            let value = header.map(HeaderValue::from_static);
            assert_eq!(is_authorized(&token, value.as_ref()), want, "{header:?}");
        }
    }
}
