//! The gate in front of every gRPC service of the gateway: authentication,
//! scope, rate limit, and the audit row of every refusal.
//!
//! It runs before any handler, on the raw HTTP/2 request, so a new RPC is
//! protected the day it is added: only [`OPEN_PATH_PREFIXES`] pass without a
//! token, and an RPC missing from [`required_scope`] is refused for everyone
//! (PERMISSION_DENIED) until someone decides which scope it needs.
//!
//! Health (probes carry no credentials) and server reflection (it describes
//! the public API, which is no secret, and keeps `grpcurl` usable) stay open.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use uuid::Uuid;

use crate::audit::{Action, AuditSink, Facts, Row};
use crate::auth::{AuthError, Principal, Scope, Verifier};
use crate::error::GatewayError;
use crate::ratelimit::{FailedAuthLimiter, Limiters};

/// Paths served without a token.
pub const OPEN_PATH_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The public service's path prefix.
const SERVICE_PREFIX: &str = "/chatmemory.v1.MemoryService/";

/// The scope an RPC needs; `None` for an RPC nobody decided on yet (refused).
pub fn required_scope(path: &str) -> Option<Scope> {
    match path.strip_prefix(SERVICE_PREFIX)? {
        "UpdateMemory" | "DeleteMemory" => Some(Scope::Write),
        "GetMemory" | "GetUpdateStatus" | "WatchMemory" => Some(Scope::Read),
        "QueryAudit" => Some(Scope::Admin),
        _ => None,
    }
}

/// What a handler learns about its call from the gate.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub principal: Principal,
    /// Also the audit row's id.
    pub request_id: Uuid,
}

/// Everything the gate needs; shared by all connections.
pub struct Gate {
    /// Shared with the JWKS reload task ([`crate::auth::watch_jwks`]).
    pub verifier: Arc<Verifier>,
    pub limiters: Limiters,
    /// Failed authentications per client IP address.
    pub failed_auth: FailedAuthLimiter,
    pub audit: AuditSink,
}

impl Gate {
    /// The caller, if it may make this call.
    async fn admit(
        &self,
        headers: &HeaderMap,
        path: &str,
        peer: Option<IpAddr>,
    ) -> Result<Principal, Denial> {
        // A method this listener does not serve (memory-store's internal API, a
        // typo) is UNIMPLEMENTED for everyone, as gRPC says, before any token check.
        let Some(needed) = required_scope(path) else {
            return Err(Denial::new(
                None,
                GatewayError::Unimplemented(path.to_owned()),
            ));
        };
        let principal = bearer(headers)
            .and_then(|token| self.verifier.verify(token))
            .map_err(|e| self.unauthenticated(e, peer, headers))?;
        if !principal.has(needed) {
            return Err(Denial::new(
                Some(principal),
                GatewayError::PermissionDenied(needed.as_str()),
            ));
        }
        if let Err(retry_after) = self.limiters.check(&principal).await {
            return Err(Denial::new(
                Some(principal),
                GatewayError::RateLimited { retry_after },
            ));
        }
        Ok(principal)
    }

    /// The denial of a call without a valid token: UNAUTHENTICATED, or
    /// RESOURCE_EXHAUSTED once its client's address failed too often (behind
    /// a trusted proxy, the address it forwarded).
    fn unauthenticated(
        &self,
        error: AuthError,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Denial {
        let client = peer.map(|peer| self.failed_auth.client(peer, headers));
        let limited = client.and_then(|ip| self.failed_auth.check(ip).err());
        match limited {
            Some(retry_after) => {
                tracing::warn!(client = ?client, peer = ?peer, reason = %error, "failed authentications over the per-address limit");
                Denial::new(None, GatewayError::AuthFailuresLimited { retry_after })
            }
            None => Denial::new(None, GatewayError::Unauthenticated(error)),
        }
    }
}

/// The client's IP address, as the connection shows it (plain or TLS).
fn peer_ip<B>(request: &Request<B>) -> Option<IpAddr> {
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|tls| tls.get_ref().remote_addr())
        })
        .map(|addr| addr.ip())
}

/// A refused call: who (when known) and why.
struct Denial {
    principal: Option<Principal>,
    error: GatewayError,
}

impl Denial {
    fn new(principal: Option<Principal>, error: GatewayError) -> Self {
        Self { principal, error }
    }
}

/// The bearer token of the `authorization` header.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let token = service_kit::service_auth::bearer_token(Some(value)).ok_or(AuthError::Malformed)?;
    std::str::from_utf8(token).map_err(|_| AuthError::Malformed)
}

/// Puts the [`Gate`] in front of a service.
#[derive(Clone)]
pub struct GateLayer {
    gate: Arc<Gate>,
}

impl GateLayer {
    pub fn new(gate: Arc<Gate>) -> Self {
        Self { gate }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: Arc::clone(&self.gate),
        }
    }
}

/// The service [`GateLayer`] wraps around the gateway's router.
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Arc<Gate>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<Request<B>> for GateService<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        if OPEN_PATH_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Box::pin(self.inner.call(request));
        }
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = Arc::clone(&self.gate);
        let peer = peer_ip(&request);
        Box::pin(async move {
            let request_id = Uuid::now_v7();
            match gate.admit(request.headers(), &path, peer).await {
                Ok(principal) => {
                    request.extensions_mut().insert(CallContext {
                        principal,
                        request_id,
                    });
                    inner.call(request).await
                }
                Err(denial) => {
                    let status = Status::from(denial.error);
                    let (tenant, user) = denial
                        .principal
                        .map(|p| (p.tenant, p.user))
                        .unwrap_or_default();
                    // A row neither sink took is logged and counted by the sink.
                    let _ = gate
                        .audit
                        .record(Row {
                            request_id,
                            tenant,
                            user,
                            action: Action::Denied,
                            outcome: status.code(),
                            facts: Facts {
                                detail: format!("{path}: {}", status.message()),
                                ..Facts::default()
                            },
                        })
                        .await;
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_rpc_has_a_declared_scope_and_unknown_ones_none() {
        for (method, scope) in [
            ("UpdateMemory", Scope::Write),
            ("DeleteMemory", Scope::Write),
            ("GetMemory", Scope::Read),
            ("GetUpdateStatus", Scope::Read),
            ("WatchMemory", Scope::Read),
            ("QueryAudit", Scope::Admin),
        ] {
            assert_eq!(
                required_scope(&format!("{SERVICE_PREFIX}{method}")),
                Some(scope)
            );
        }
        assert_eq!(required_scope("/chatmemory.v1.MemoryService/Other"), None);
        assert_eq!(required_scope("/other.Service/GetMemory"), None);
    }
}
