//! The caller's bearer token: required on every MCP request, checked by
//! nobody here, forwarded to the gateway on every call the tools make.
//!
//! The front holds no key. It only refuses requests that carry no bearer
//! token at all (HTTP 401 with `WWW-Authenticate: Bearer`, before rmcp or any
//! tool sees them). Whether a token is valid, what it may do, whose budget it
//! draws on and which tenant's chats it sees is decided by the gateway, on
//! each call, exactly as for a gRPC client: a bad token comes back from the
//! gateway as `UNAUTHENTICATED` and the tool reports it as a tool error.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tonic::metadata::{Ascii, MetadataValue};

/// The challenge of a 401 (RFC 6750: no error code when no token was sent).
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"chat-memory\"";

/// `x-forwarded-for` hops the front passes on before its own: the gateway
/// reads at most 16 from the right, the front's among them.
const FORWARDED_HOPS_KEPT: usize = 15;

/// The MCP caller as the gateway must see it: its `authorization` value,
/// normalised to `Bearer <token>` (never printed), and the `x-forwarded-for`
/// chain ending with the caller's address, so the gateway (which trusts this
/// front: `rate_limit.trusted_proxies`) limits failed authentications per
/// real client, not per front.
#[derive(Clone)]
pub struct Caller {
    token: MetadataValue<Ascii>,
    forwarded_for: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("token", &"<redacted>")
            .field("forwarded_for", &self.forwarded_for)
            .finish()
    }
}

impl Caller {
    /// The token of an `Authorization: Bearer <token>` header value; `None`
    /// without one, with another scheme, a blank token, or bytes gRPC metadata
    /// cannot carry.
    pub fn from_header(value: Option<&HeaderValue>) -> Option<Self> {
        let token = service_kit::service_auth::bearer_token(value)?;
        let token = std::str::from_utf8(token).ok()?.trim();
        if token.is_empty() {
            return None;
        }
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Self {
            token: value,
            forwarded_for: None,
        })
    }

    /// The caller with its `x-forwarded-for` chain: the chain it arrived with
    /// (its own proxies', or anything a client wrote: the gateway believes
    /// only hops its trusted proxies appended), then `peer`, the address of
    /// the connection to this front. A chain gRPC metadata cannot carry is
    /// dropped, leaving `peer` alone.
    #[must_use]
    pub fn forwarded(mut self, arrived_with: Option<&str>, peer: Option<IpAddr>) -> Self {
        let Some(peer) = peer else { return self };
        // The last hops only: the gateway reads no more from the right.
        let peer_text = peer.to_string();
        let mut hops: Vec<&str> = arrived_with
            .map(|v| {
                v.rsplit(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .take(FORWARDED_HOPS_KEPT)
                    .collect()
            })
            .unwrap_or_default();
        hops.reverse();
        hops.push(&peer_text);
        let chain = hops.join(", ");
        self.forwarded_for = MetadataValue::try_from(chain)
            .or_else(|_| MetadataValue::try_from(peer.to_string()))
            .ok();
        self
    }

    /// The `authorization` metadata value to send.
    pub fn metadata_value(&self) -> MetadataValue<Ascii> {
        self.token.clone()
    }

    /// The `x-forwarded-for` metadata value to send, if the caller's address is known.
    pub fn forwarded_for(&self) -> Option<MetadataValue<Ascii>> {
        self.forwarded_for.clone()
    }
}

/// Axum middleware in front of `/mcp`: a request without a bearer token is
/// answered 401 here; otherwise the [`Caller`] (token, and the address chain
/// ending with the connection's peer) rides along in the request's
/// extensions, where rmcp hands it to the tools (inside `http::request::Parts`).
pub async fn require_bearer(mut request: Request, next: Next) -> Response {
    match Caller::from_header(request.headers().get(header::AUTHORIZATION)) {
        Some(caller) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip());
            // Every `x-forwarded-for` line, in order; one that is not text drops them all.
            let arrived: Option<Vec<&str>> = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.to_str().ok())
                .collect();
            let arrived = arrived.map(|lines| lines.join(", "));
            let caller = caller.forwarded(arrived.as_deref(), peer);
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => {
            tracing::info!("MCP request without a bearer token refused");
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, WWW_AUTHENTICATE)],
                "a bearer token is required: Authorization: Bearer <the JWT you use with the gRPC API>\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(raw: &str) -> Option<String> {
        let value = HeaderValue::from_str(raw).ok()?;
        Caller::from_header(Some(&value))
            .and_then(|t| t.metadata_value().to_str().ok().map(str::to_owned))
    }

    #[test]
    fn a_bearer_token_is_forwarded_in_the_standard_form() {
        assert_eq!(
            token_of("Bearer abc.def.ghi"),
            Some("Bearer abc.def.ghi".into())
        );
        assert_eq!(token_of("bearer abc"), Some("Bearer abc".into()));
    }

    #[test]
    fn headers_without_a_usable_bearer_token_yield_none() {
        for raw in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Basic dXNlcjpwdw==",
            "abc",
        ] {
            assert_eq!(token_of(raw), None, "{raw:?}");
        }
        assert!(Caller::from_header(None).is_none());
    }

    #[test]
    fn the_token_never_prints() {
        let value = HeaderValue::from_static("Bearer secret-jwt");
        let token = Caller::from_header(Some(&value));
        let printed = format!("{token:?}");
        assert!(!printed.contains("secret-jwt"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    fn chain(caller: &Caller) -> Option<String> {
        caller
            .forwarded_for()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
    }

    #[test]
    fn the_callers_address_is_appended_to_the_chain_it_arrived_with() {
        let value = HeaderValue::from_static("Bearer abc");
        let caller = || Caller::from_header(Some(&value)).expect("a token");
        let peer: Option<IpAddr> = "203.0.113.7".parse().ok();
        assert_eq!(
            chain(&caller().forwarded(None, peer)).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            chain(&caller().forwarded(Some("198.51.100.1, 10.0.0.2"), peer)).as_deref(),
            Some("198.51.100.1, 10.0.0.2, 203.0.113.7")
        );
        assert_eq!(
            chain(&caller().forwarded(Some("  "), peer)).as_deref(),
            Some("203.0.113.7")
        );
        // A long chain is cut to the hops the gateway reads, nearest first.
        let long: Vec<String> = (0..40).map(|i| format!("10.0.0.{i}")).collect();
        let forwarded = caller().forwarded(Some(&long.join(", ")), peer);
        let kept = chain(&forwarded).unwrap_or_default();
        assert_eq!(kept.split(", ").count(), 16, "{kept}");
        assert!(
            kept.starts_with("10.0.0.25, ") && kept.ends_with("10.0.0.39, 203.0.113.7"),
            "{kept}"
        );
        // Unknown peer (not served with connect info): nothing is claimed.
        assert_eq!(chain(&caller().forwarded(Some("198.51.100.1"), None)), None);
        // The token is not in its Debug form.
        let debug = format!("{:?}", caller().forwarded(None, peer));
        assert!(
            !debug.contains("abc") && debug.contains("203.0.113.7"),
            "{debug}"
        );
    }
}
