//! Credentials of the test stack: the HS256 key the gateway trusts, the
//! service token between internal services, and helpers to mint tokens for
//! any tenant, user and scopes (or deliberately broken ones).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use service_kit::secret::Secret;
use tonic::service::Interceptor;

/// The gateway's HS256 key in tests (at least 32 bytes).
pub const JWT_SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
/// `iss` and `aud` the gateway accepts in tests.
pub const ISSUER: &str = "chat-memory-tests";
pub const AUDIENCE: &str = "chat-memory";
/// The service token memory-store and the agent require in tests.
pub const SERVICE_TOKEN: &str = "test-only-service-token-9f8e7d6c";

/// The default caller of [`crate::TestStack::gateway`].
pub const TENANT: &str = "tenant-a";
pub const USER: &str = "user-1";

pub fn service_token() -> Secret {
    Secret::new(SERVICE_TOKEN)
}

/// The gateway's `[auth]` settings matching [`mint`].
pub fn gateway_auth() -> gateway::auth::AuthSettings {
    gateway::auth::AuthSettings {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_secs: 5,
        hs256_secret: Some(Secret::new(JWT_SECRET)),
        ..gateway::auth::AuthSettings::default()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The claims of a valid token (expires in 10 minutes).
pub fn claims(tenant: &str, user: &str, scopes: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user,
        "tenant": tenant,
        "scope": scopes.join(" "),
        "iat": now(),
        "exp": now() + 600,
    })
}

/// Signs `claims` with `secret` (HS256).
///
/// # Panics
/// Never for JSON claims and a byte key.
pub fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("signing a test token: {e}"))
}

/// A valid token for `tenant`/`user` with `scopes`.
pub fn mint(tenant: &str, user: &str, scopes: &[&str]) -> String {
    sign(&claims(tenant, user, scopes), JWT_SECRET)
}

/// A token that expired `secs_ago` seconds ago (beyond the 5 s leeway when > 5).
pub fn expired(tenant: &str, user: &str, scopes: &[&str], secs_ago: i64) -> String {
    let mut c = claims(tenant, user, scopes);
    c["exp"] = json!(now() - secs_ago);
    c["iat"] = json!(now() - secs_ago - 60);
    sign(&c, JWT_SECRET)
}

/// The test-only RS256/ES256 keys and their JWKS (`jwks.json`: kid `rsa-1` for
/// `rsa.pem`, kid `ec-1` for `ec.pem`; `rsa-other.pem` is outside the JWKS).
pub const JWT_KEYS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/src/auth/testdata");

/// The gateway's `[auth]` settings verifying with the test JWKS (no HS256 secret).
pub fn jwks_auth() -> gateway::auth::AuthSettings {
    gateway::auth::AuthSettings {
        hs256_secret: None,
        jwks_path: format!("{JWT_KEYS_DIR}/jwks.json"),
        ..gateway_auth()
    }
}

/// Signs `claims` with the PEM private key `key_file` of [`JWT_KEYS_DIR`].
///
/// # Panics
/// When the key file is missing or not a key of `algorithm`.
pub fn sign_with_key(
    claims: &Value,
    algorithm: jsonwebtoken::Algorithm,
    kid: &str,
    key_file: &str,
) -> String {
    let pem = std::fs::read(format!("{JWT_KEYS_DIR}/{key_file}"))
        .unwrap_or_else(|e| panic!("{key_file}: {e}"));
    let key = match algorithm {
        jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap_or_else(|e| panic!("{key_file}: {e}"));
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &key).unwrap_or_else(|e| panic!("signing a test token: {e}"))
}

/// Adds `authorization: Bearer <token>` to every call (or nothing): the
/// command-line tools' interceptor, with constructors that panic on a bad value.
#[derive(Clone, Default)]
pub struct Bearer(chat_memory_proto::client::Bearer);

impl Bearer {
    /// # Panics
    /// When `token` is not a valid header value.
    pub fn new(token: &str) -> Self {
        Self(
            chat_memory_proto::client::Bearer::new(Some(token))
                .unwrap_or_else(|e| panic!("bearer header: {e}")),
        )
    }

    /// A raw `authorization` value, for malformed-header cases.
    ///
    /// # Panics
    /// When `raw` is not a valid header value.
    pub fn raw(raw: &str) -> Self {
        Self(
            chat_memory_proto::client::Bearer::raw(raw)
                .unwrap_or_else(|e| panic!("authorization header: {e}")),
        )
    }

    /// No header at all.
    pub fn none() -> Self {
        Self::default()
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.call(request)
    }
}
