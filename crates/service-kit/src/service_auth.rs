//! Service-to-service credentials: a shared bearer token that internal
//! services (memory-store, the agent) require and their callers present.
//!
//! The server side is a tower layer in front of every gRPC service, so a new
//! RPC is protected the day it is added; only the paths listed as open (health)
//! pass without the token. The token is compared in constant time.
//!
//! Rotation without downtime: a server accepts its `service_token` and, while
//! a rotation is under way, its `service_token_previous` ([`AcceptedTokens`]);
//! servers are rolled to accept both, then callers to present the new one,
//! then servers to drop the old one (runbooks/maintenance.md).

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

/// The tokens a server accepts: its current one and, during a rotation, the
/// previous one. None configured: every call passes (local development only;
/// each service's `validate()` refuses that elsewhere). Cheap to clone.
#[derive(Clone, Default)]
pub struct AcceptedTokens(Arc<Vec<Secret>>);

impl AcceptedTokens {
    /// `previous` counts only next to a `current` token; empty tokens are ignored.
    pub fn new(current: Option<&Secret>, previous: Option<&Secret>) -> Self {
        let current = current.filter(|t| !t.is_empty());
        let previous = previous.filter(|t| !t.is_empty() && current.is_some());
        Self(Arc::new(
            current.into_iter().chain(previous).cloned().collect(),
        ))
    }

    /// Whether no token is required.
    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the request may pass: no token required, or it presents one
    /// of the accepted tokens (each compared in constant time, all of them).
    pub fn admits(&self, value: Option<&HeaderValue>) -> bool {
        if self.is_open() {
            return true;
        }
        bearer_token(value).is_some_and(|presented| {
            self.0
                .iter()
                .fold(false, |found, token| token.matches(presented) | found)
        })
    }
}

/// Requires an accepted service token on every path except
/// [`OPEN_PATH_PREFIXES`]. With no token configured the layer lets everything
/// through (local development); `validate()` of each service refuses that
/// outside `dev_mode`.
#[derive(Clone)]
pub struct ServiceTokenLayer {
    tokens: AcceptedTokens,
}

impl ServiceTokenLayer {
    pub fn new(tokens: AcceptedTokens) -> Self {
        Self { tokens }
    }
}

impl<S> tower::Layer<S> for ServiceTokenLayer {
    type Service = ServiceToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceToken {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`ServiceTokenLayer`] wraps around a gRPC router.
#[derive(Clone)]
pub struct ServiceToken<S> {
    inner: S,
    tokens: AcceptedTokens,
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
        let allowed = open
            || self
                .tokens
                .admits(request.headers().get(http::header::AUTHORIZATION));
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

    #[test]
    fn during_a_rotation_the_current_and_the_previous_token_are_accepted() {
        let (new, old) = (Secret::new("new-t0ken"), Secret::new("old-t0ken"));
        let header = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).ok();
        let both = AcceptedTokens::new(Some(&new), Some(&old));
        assert!(both.admits(header("new-t0ken").as_ref()));
        assert!(both.admits(header("old-t0ken").as_ref()));
        assert!(!both.admits(header("other").as_ref()));
        assert!(!both.admits(None));
        let after = AcceptedTokens::new(Some(&new), None);
        assert!(
            !after.admits(header("old-t0ken").as_ref()),
            "the old token is dropped"
        );
        // A previous token alone never opens anything, nor closes it.
        let previous_only = AcceptedTokens::new(None, Some(&old));
        assert!(previous_only.is_open());
    }
}
