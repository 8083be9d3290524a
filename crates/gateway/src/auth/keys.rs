//! Verification keys: one HS256 secret, or the RS256/ES256 keys of a JWKS file.
//!
//! Each key carries the one algorithm it verifies; a token whose header names
//! another algorithm is refused before any signature check (no algorithm
//! confusion, no `none`).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use service_kit::settings::SettingsError;

use super::{AuthError, AuthSettings};

/// One verification key.
struct Key {
    /// `kid` of the JWK; `None` matches tokens without a `kid`.
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys tokens are verified with.
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// # Errors
    /// [`SettingsError::Invalid`] when the JWKS file is unreadable or has no RS256/ES256 key.
    /// The keys of `settings`, and the JWKS text they came from (empty for HS256).
    pub fn load(settings: &AuthSettings) -> Result<(Self, String), SettingsError> {
        if let Some(secret) = settings.hs256_secret.as_ref().filter(|s| !s.is_empty()) {
            let keys = Self {
                keys: vec![Key {
                    kid: None,
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret.expose().as_bytes()),
                }],
            };
            return Ok((keys, String::new()));
        }
        let text = Self::read_jwks(&settings.jwks_path)?;
        Ok((Self::from_jwks(&text)?, text))
    }

    /// The text of the JWKS file at `path`.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming `auth.jwks_path` when it cannot be read.
    pub fn read_jwks(path: &str) -> Result<String, SettingsError> {
        std::fs::read_to_string(path)
            .map_err(|e| SettingsError::invalid("auth.jwks_path", format!("{path}: {e}")))
    }

    /// The RS256 and ES256 (P-256) keys of a JWKS document; other keys are skipped.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when the document does not parse or has no usable key.
    pub fn from_jwks(text: &str) -> Result<Self, SettingsError> {
        let set: JwkSet = serde_json::from_str(text)
            .map_err(|e| SettingsError::invalid("auth.jwks_path", format!("not a JWKS: {e}")))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                // Other key types (and any a later jsonwebtoken adds: the enum is
                // non-exhaustive) are not accepted for verification.
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                SettingsError::invalid("auth.jwks_path", format!("unusable key: {e}"))
            })?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err(SettingsError::invalid(
                "auth.jwks_path",
                "holds no RS256 or ES256 (P-256) key",
            ));
        }
        Ok(Self { keys })
    }

    /// The key for a token: by `kid` when the token names one, else the only key
    /// without a `kid` (or the only key at all).
    ///
    /// # Errors
    /// [`AuthError::BadSignature`] when no key matches the `kid` and algorithm.
    pub(super) fn select(&self, header: &Header) -> Result<(&DecodingKey, Algorithm), AuthError> {
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()) || k.kid.is_none())
                .collect(),
            None if self.keys.len() == 1 => self.keys.iter().collect(),
            None => self.keys.iter().filter(|k| k.kid.is_none()).collect(),
        };
        candidates
            .into_iter()
            .find(|k| k.algorithm == header.alg)
            .map(|k| (&k.key, k.algorithm))
            .ok_or(AuthError::BadSignature)
    }
}
