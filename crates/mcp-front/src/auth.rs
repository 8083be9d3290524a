//! The caller's bearer token: required on every MCP request, checked by
//! nobody here, forwarded to the gateway on every call the tools make.
//!
//! The front holds no key. It only refuses requests that carry no bearer
//! token at all (HTTP 401 with `WWW-Authenticate: Bearer`, before rmcp or any
//! tool sees them). Whether a token is valid, what it may do, whose budget it
//! draws on and which tenant's chats it sees is decided by the gateway, on
//! each call, exactly as for a gRPC client: a bad token comes back from the
//! gateway as `UNAUTHENTICATED` and the tool reports it as a tool error.

use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tonic::metadata::{Ascii, MetadataValue};

/// The challenge of a 401 (RFC 6750: no error code when no token was sent).
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"chat-memory\"";

/// The MCP caller's `authorization` value, normalised to `Bearer <token>`,
/// as gRPC metadata for the gateway. Never printed.
#[derive(Clone)]
pub struct CallerToken(MetadataValue<Ascii>);

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerToken(<redacted>)")
    }
}

impl CallerToken {
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
        Some(Self(value))
    }

    /// The `authorization` metadata value to send.
    pub fn metadata_value(&self) -> MetadataValue<Ascii> {
        self.0.clone()
    }
}

/// Axum middleware in front of `/mcp`: a request without a bearer token is
/// answered 401 here; otherwise the token rides along in the request's
/// extensions, where rmcp hands it to the tools (inside `http::request::Parts`).
pub async fn require_bearer(mut request: Request, next: Next) -> Response {
    match CallerToken::from_header(request.headers().get(header::AUTHORIZATION)) {
        Some(token) => {
            request.extensions_mut().insert(token);
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
        CallerToken::from_header(Some(&value))
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
        assert!(CallerToken::from_header(None).is_none());
    }

    #[test]
    fn the_token_never_prints() {
        let value = HeaderValue::from_static("Bearer secret-jwt");
        let token = CallerToken::from_header(Some(&value));
        assert_eq!(format!("{token:?}"), "Some(CallerToken(<redacted>))");
    }
}
