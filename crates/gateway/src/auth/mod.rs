//! Who is calling: bearer JWTs turned into a [`Principal`].
//!
//! Tokens are verified with HS256 (a shared secret) or RS256/ES256 (public keys
//! from a JWKS file, chosen by `kid`); issuer and audience must match, `exp` is
//! required and enforced with `leeway_secs`. The algorithm is fixed by the key,
//! never taken from the token, so an RS256 key can never verify an HS256 token
//! forged with the public key as the secret.
//!
//! Claims: the tenant in `tenant_claim` (default `tenant`), the user in `sub`,
//! scopes in `scope` (space-separated) and/or `scopes` (array).

mod keys;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use service_kit::secret::Secret;
use service_kit::settings::SettingsError;

pub use keys::KeySet;

/// Longest accepted tenant id and user id (`sub`).
pub const MAX_TENANT_LEN: usize = 64;
pub const MAX_USER_LEN: usize = 256;

/// A permission a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Read memories and job status.
    Read,
    /// Update and delete memories.
    Write,
    /// Read, update and delete every chat of the tenant (acts for the tenant):
    /// an agent service calling for its end users. Not the audit log.
    Service,
    /// Everything, for every user of the tenant (acts for the tenant), and the audit log.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "memory:read",
            Self::Write => "memory:write",
            Self::Service => "memory:service",
            Self::Admin => "memory:admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "memory:read" => Some(Self::Read),
            "memory:write" => Some(Self::Write),
            "memory:service" => Some(Self::Service),
            "memory:admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: String,
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    /// `memory:admin` grants every scope; `memory:service` grants reading and
    /// writing (never the audit log).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
            || self.scopes.contains(&Scope::Admin)
            || (self.scopes.contains(&Scope::Service)
                && matches!(scope, Scope::Read | Scope::Write))
    }

    /// Acts for every user of its tenant (not only its own chats).
    pub fn acts_for_tenant(&self) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&Scope::Service)
    }
}

/// Reads the JWKS file every `every` (`auth.jwks_reload_secs`), for key
/// rotation without a restart; a bad file is logged and counted, and the
/// current keys stay in force. Runs until the task is dropped.
pub async fn watch_jwks(verifier: Arc<Verifier>, every: std::time::Duration) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match verifier.reload() {
            Ok(true) => {
                crate::metrics::jwks_reload("changed");
                tracing::info!("auth.jwks_path changed: verification keys replaced");
            }
            Ok(false) => {}
            Err(e) => {
                crate::metrics::jwks_reload("failed");
                tracing::error!(error = %e, "auth.jwks_path unusable: keeping the current keys");
            }
        }
    }
}

/// Why a token was refused. Every variant is UNAUTHENTICATED; the text is for
/// the audit row and logs (it never includes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed authorization header or token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token signature or key invalid")]
    BadSignature,
    #[error("token audience not accepted")]
    WrongAudience,
    #[error("token issuer not accepted")]
    WrongIssuer,
    #[error("token claims invalid: {0}")]
    BadClaims(&'static str),
}

/// `[auth]` settings of the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Accepted `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// HS256 shared secret (one of this and `jwks_path`).
    pub hs256_secret: Option<Secret>,
    /// JWKS file with the RS256/ES256 public keys (one of this and `hs256_secret`).
    pub jwks_path: String,
    /// How often the JWKS file is read again, in seconds; a changed file
    /// replaces the keys without a restart (key rotation). 0: read at start only.
    pub jwks_reload_secs: u64,
    /// Claim that carries the tenant id.
    pub tenant_claim: String,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "chat-memory".into(),
            audience: "chat-memory".into(),
            leeway_secs: 30,
            hs256_secret: None,
            jwks_path: String::new(),
            jwks_reload_secs: 30,
            tenant_claim: "tenant".into(),
        }
    }
}

impl AuthSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let has_secret = self.hs256_secret.as_ref().is_some_and(|s| !s.is_empty());
        match (has_secret, self.jwks_path.is_empty()) {
            (false, true) => {
                return Err(SettingsError::invalid(
                    "auth",
                    "set auth.hs256_secret or auth.jwks_path: every call needs a verifiable token",
                ));
            }
            (true, false) => {
                return Err(SettingsError::invalid(
                    "auth",
                    "set only one of auth.hs256_secret and auth.jwks_path",
                ));
            }
            _ => {}
        }
        if self
            .hs256_secret
            .as_ref()
            .is_some_and(|s| !s.is_empty() && s.expose().len() < 32)
        {
            return Err(SettingsError::invalid(
                "auth.hs256_secret",
                "must be at least 32 bytes",
            ));
        }
        if self.issuer.is_empty() {
            return Err(SettingsError::invalid("auth.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(SettingsError::invalid("auth.audience", "must not be empty"));
        }
        if self.leeway_secs > 300 {
            return Err(SettingsError::invalid(
                "auth.leeway_secs",
                "must be at most 300",
            ));
        }
        if self.jwks_reload_secs > 86_400 {
            return Err(SettingsError::invalid(
                "auth.jwks_reload_secs",
                "must be at most 86400 (a day); 0 reads the file at start only",
            ));
        }
        if self.tenant_claim.is_empty() {
            return Err(SettingsError::invalid(
                "auth.tenant_claim",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// Tokens remembered after a successful verification.
const VERIFIED_TOKENS: usize = 10_000;

/// Verifies tokens against the configured keys.
pub struct Verifier {
    /// Replaced whole when the JWKS file changes ([`Verifier::reload`]).
    keys: RwLock<Arc<KeySet>>,
    /// The JWKS text the keys came from (empty with HS256).
    jwks_text: RwLock<String>,
    settings: AuthSettings,
    /// Tokens verified before -> (their principal, `exp`, the key generation
    /// that verified them): an agent service presents the same token on every
    /// call, and a signature check (RS256 in particular) costs far more than a
    /// lookup. A hit still checks expiry, and counts only when it was verified
    /// with the current keys, so a token of a removed key stops working at once,
    /// even one whose check was under way while the keys changed.
    verified: quick_cache::sync::Cache<String, (Principal, u64, u64)>,
    /// Bumped each time the keys are replaced ([`Verifier::reload`]).
    generation: std::sync::atomic::AtomicU64,
}

/// The claims we read; everything else is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// Required and checked by the validation; kept for the cache.
    exp: u64,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Verifier {
    /// # Errors
    /// [`SettingsError::Invalid`] when the JWKS file cannot be read or holds no usable key.
    pub fn new(settings: &AuthSettings) -> Result<Self, SettingsError> {
        let (keys, text) = KeySet::load(settings)?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            jwks_text: RwLock::new(text),
            settings: settings.clone(),
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Reads the JWKS file again; when it changed and holds usable keys, they
    /// replace the current ones and the verified-token cache is emptied.
    /// Returns whether the keys changed. With HS256 there is nothing to reload.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when the file is unreadable or holds no
    /// usable key: the current keys stay in force.
    pub fn reload(&self) -> Result<bool, SettingsError> {
        if self.settings.jwks_path.is_empty() {
            return Ok(false);
        }
        let text = KeySet::read_jwks(&self.settings.jwks_path)?;
        let unchanged = self
            .jwks_text
            .read()
            .map(|current| *current == text)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let keys = Arc::new(KeySet::from_jwks(&text)?);
        if let Ok(mut current) = self.keys.write() {
            *current = keys;
        }
        if let Ok(mut current) = self.jwks_text.write() {
            *current = text;
        }
        // After the swap: a check that read the old keys carries the old
        // generation, so what it caches is never trusted (see `verify`).
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.verified.clear();
        Ok(true)
    }

    fn keys(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            // A writer never panics while holding the lock (it only swaps an
            // Arc); the keys inside are whole either way.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The principal of a bearer token.
    ///
    /// # Errors
    /// An [`AuthError`] saying why the token is not acceptable.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        // Read before the keys: a reload in between makes this check's cache
        // entry stale rather than trusted.
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        if let Some((principal, exp, verified_with)) = self.verified.get(token) {
            if verified_with == generation && now <= exp.saturating_add(self.settings.leeway_secs) {
                return Ok(principal);
            }
            self.verified.remove(token);
        }
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let keys = self.keys();
        let (key, algorithm) = keys.select(&header)?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Claims>(token, key, &validation).map_err(classify)?;
        let exp = data.claims.exp;
        let principal = self.principal(data.claims)?;
        self.verified
            .insert(token.to_owned(), (principal.clone(), exp, generation));
        Ok(principal)
    }

    fn principal(&self, claims: Claims) -> Result<Principal, AuthError> {
        let tenant = claims
            .rest
            .get(&self.settings.tenant_claim)
            .and_then(serde_json::Value::as_str)
            .ok_or(AuthError::BadClaims("tenant claim missing"))?;
        if !valid_tenant(tenant) {
            return Err(AuthError::BadClaims("tenant id malformed"));
        }
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_USER_LEN
            || claims.sub.chars().any(char::is_control)
        {
            return Err(AuthError::BadClaims("sub malformed"));
        }
        let mut scopes = BTreeSet::new();
        let listed = claims.scope.iter().flat_map(|s| s.split_whitespace());
        let array = claims.scopes.iter().flatten().map(String::as_str);
        for raw in listed.chain(array) {
            // Unknown scopes (for other services) are ignored, not an error.
            if let Some(scope) = Scope::parse(raw) {
                scopes.insert(scope);
            }
        }
        Ok(Principal {
            tenant: tenant.to_owned(),
            user: claims.sub,
            scopes,
        })
    }
}

/// A tenant id: 1..=64 of `[A-Za-z0-9._-]` (never the namespace separator `/`).
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn classify(error: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::ExpiredSignature => AuthError::Expired,
        K::InvalidAudience => AuthError::WrongAudience,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidSignature
        | K::InvalidAlgorithm
        | K::InvalidEcdsaKey
        | K::InvalidEddsaKey
        | K::InvalidRsaKey(_)
        | K::InvalidKeyFormat
        | K::MissingAlgorithm
        | K::UnsupportedAlgorithm
        | K::InvalidAlgorithmName => AuthError::BadSignature,
        K::MissingRequiredClaim(_) => AuthError::BadClaims("required claim missing"),
        K::ImmatureSignature => AuthError::BadClaims("token not valid yet"),
        K::InvalidSubject => AuthError::BadClaims("sub not accepted"),
        K::InvalidClaimFormat(_) => AuthError::BadClaims("claim has the wrong type"),
        // Shape, encoding and JSON problems, and anything a future version adds.
        _ => AuthError::Malformed,
    }
}
