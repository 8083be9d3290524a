//! `chat-memory token`: signs an HS256 bearer token for a tenant and user, for
//! local runs, benchmarks and break-glass operations. In production tokens come
//! from the identity provider; this needs the gateway's `auth.hs256_secret`.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

/// What to sign.
pub struct TokenRequest<'a> {
    pub secret: &'a str,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub tenant: &'a str,
    pub user: &'a str,
    pub scopes: &'a [String],
    pub ttl_secs: u64,
}

/// The signed token.
///
/// # Errors
/// A secret shorter than 32 bytes (the gateway rejects those) or a signing failure.
pub fn sign(r: &TokenRequest<'_>) -> Result<String, String> {
    if r.secret.len() < 32 {
        return Err("--secret must be at least 32 bytes (as the gateway requires)".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = json!({
        "iss": r.issuer,
        "aud": r.audience,
        "sub": r.user,
        "tenant": r.tenant,
        "scope": r.scopes.join(" "),
        "iat": now,
        "exp": now + r.ttl_secs,
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(r.secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_secret_is_refused() {
        let scopes = vec!["memory:read".to_owned()];
        let r = TokenRequest {
            secret: "short",
            issuer: "i",
            audience: "a",
            tenant: "t",
            user: "u",
            scopes: &scopes,
            ttl_secs: 60,
        };
        assert!(sign(&r).is_err());
    }

    #[test]
    fn a_token_has_three_parts() {
        let scopes = vec!["memory:read".to_owned(), "memory:write".to_owned()];
        let secret = "x".repeat(32);
        let r = TokenRequest {
            secret: &secret,
            issuer: "chat-memory",
            audience: "chat-memory",
            tenant: "demo",
            user: "alice",
            scopes: &scopes,
            ttl_secs: 60,
        };
        let token = sign(&r).expect("signed");
        assert_eq!(token.split('.').count(), 3);
    }
}
