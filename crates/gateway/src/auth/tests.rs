//! The verifier with RS256 and ES256 keys from a JWKS document (the HS256 path
//! is exercised end to end by the security tests). Keys: `testdata/`.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const JWKS: &str = include_str!("testdata/jwks.json");
const RSA: &[u8] = include_bytes!("testdata/rsa.pem");
const RSA_OTHER: &[u8] = include_bytes!("testdata/rsa-other.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa.pub.pem");
const EC: &[u8] = include_bytes!("testdata/ec.pem");

fn verifier() -> Verifier {
    Verifier {
        keys: RwLock::new(Arc::new(KeySet::from_jwks(JWKS).expect("jwks"))),
        jwks_text: RwLock::new(JWKS.to_owned()),
        settings: AuthSettings {
            jwks_path: "testdata/jwks.json".into(),
            ..AuthSettings::default()
        },
        verified: quick_cache::sync::Cache::new(16),
        generation: std::sync::atomic::AtomicU64::new(0),
    }
}

/// The JWKS with only the keys whose `kid` is in `kids`.
fn jwks_of(kids: &[&str]) -> String {
    let mut set: serde_json::Value = serde_json::from_str(JWKS).expect("jwks");
    if let Some(keys) = set["keys"].as_array_mut() {
        keys.retain(|k| k["kid"].as_str().is_some_and(|kid| kids.contains(&kid)));
    }
    set.to_string()
}

/// A verifier reading a JWKS file that holds only `rsa-1`; the file's folder
/// and path, and a token of that key.
fn file_verifier() -> (Verifier, std::path::PathBuf, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("cm-jwks-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks_of(&["rsa-1"])).expect("write");
    let v = Verifier::new(&AuthSettings {
        jwks_path: path.display().to_string(),
        ..AuthSettings::default()
    })
    .expect("verifier");
    let rsa_token = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa(),
        &claims(600, "chat-memory"),
    );
    (v, dir, path, rsa_token)
}

#[test]
fn a_changed_jwks_file_replaces_the_keys_without_a_restart_and_a_bad_one_keeps_them() {
    let (v, dir, path, rsa_token) = file_verifier();
    let ec_token = token(
        Algorithm::ES256,
        Some("ec-1"),
        &ec(),
        &claims(600, "chat-memory"),
    );
    assert!(v.verify(&rsa_token).is_ok());
    assert_eq!(v.verify(&ec_token), Err(AuthError::BadSignature));
    assert!(
        !v.reload().expect("unchanged"),
        "an unchanged file changes nothing"
    );

    // Rotation, step 1: the new key is published next to the old one.
    std::fs::write(&path, jwks_of(&["rsa-1", "ec-1"])).expect("write");
    assert!(v.reload().expect("reload"));
    assert!(v.verify(&ec_token).is_ok(), "the new key verifies");
    assert!(v.verify(&rsa_token).is_ok(), "the old key still verifies");

    // A broken file (a half-written deploy) changes nothing.
    std::fs::write(&path, "{\"keys\": [").expect("write");
    assert!(v.reload().is_err());
    assert!(v.verify(&rsa_token).is_ok() && v.verify(&ec_token).is_ok());

    // Step 2: the old key is withdrawn; its tokens stop working at once,
    // cached or not.
    std::fs::write(&path, jwks_of(&["ec-1"])).expect("write");
    assert!(v.reload().expect("reload"));
    assert_eq!(v.verify(&rsa_token), Err(AuthError::BadSignature));
    assert!(v.verify(&ec_token).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_check_under_way_while_the_keys_change_does_not_keep_a_withdrawn_key_cached() {
    let (v, dir, path, rsa_token) = file_verifier();
    // A check reads the generation and the old keys ...
    let generation = v.generation.load(std::sync::atomic::Ordering::SeqCst);
    let principal = v.verify(&rsa_token).expect("the old key verifies");
    // ... the old key is withdrawn meanwhile ...
    std::fs::write(&path, jwks_of(&["ec-1"])).expect("write");
    assert!(v.reload().expect("reload"));
    // ... and the check caches its verdict after the reload emptied the cache.
    v.verified
        .insert(rsa_token.clone(), (principal, u64::MAX, generation));
    assert_eq!(
        v.verify(&rsa_token),
        Err(AuthError::BadSignature),
        "a verdict of the old keys is not trusted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn claims(exp_offset: i64, aud: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "chat-memory",
        "aud": aud,
        "sub": "member-77",
        "tenant": "acme-health",
        "scope": "memory:read memory:write other:scope",
        "iat": now,
        "exp": now + exp_offset,
    })
}

fn token(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("encode")
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA).expect("rsa key")
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC).expect("ec key")
}

#[test]
fn an_rs256_token_signed_by_a_jwks_key_gives_its_principal() {
    let t = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa(),
        &claims(300, "chat-memory"),
    );
    let p = verifier().verify(&t).expect("valid RS256 token");
    assert_eq!(
        (p.tenant.as_str(), p.user.as_str()),
        ("acme-health", "member-77")
    );
    assert!(p.has(Scope::Read) && p.has(Scope::Write) && !p.has(Scope::Admin));
}

#[test]
fn an_es256_token_signed_by_a_jwks_key_gives_its_principal() {
    let t = token(
        Algorithm::ES256,
        Some("ec-1"),
        &ec(),
        &claims(300, "chat-memory"),
    );
    let p = verifier().verify(&t).expect("valid ES256 token");
    assert_eq!(p.user, "member-77");
}

#[test]
fn a_token_signed_by_a_key_outside_the_jwks_is_refused() {
    let forged = EncodingKey::from_rsa_pem(RSA_OTHER).expect("other key");
    let t = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &forged,
        &claims(300, "chat-memory"),
    );
    assert_eq!(verifier().verify(&t), Err(AuthError::BadSignature));
}

#[test]
fn an_hs256_token_keyed_with_the_public_rsa_key_is_refused() {
    // The classic algorithm confusion: the public key used as an HMAC secret.
    let confused = EncodingKey::from_secret(RSA_PUBLIC);
    let t = token(
        Algorithm::HS256,
        Some("rsa-1"),
        &confused,
        &claims(300, "chat-memory"),
    );
    assert_eq!(verifier().verify(&t), Err(AuthError::BadSignature));
}

#[test]
fn a_token_whose_kid_names_the_other_algorithms_key_is_refused() {
    // Signed with the RSA key but claiming the EC key's kid.
    let t = token(
        Algorithm::RS256,
        Some("ec-1"),
        &rsa(),
        &claims(300, "chat-memory"),
    );
    assert_eq!(verifier().verify(&t), Err(AuthError::BadSignature));
    let t = token(
        Algorithm::RS256,
        Some("unknown"),
        &rsa(),
        &claims(300, "chat-memory"),
    );
    assert_eq!(verifier().verify(&t), Err(AuthError::BadSignature));
}

#[test]
fn expiry_is_enforced_with_the_leeway() {
    let v = verifier();
    let within = token(
        Algorithm::ES256,
        Some("ec-1"),
        &ec(),
        &claims(-10, "chat-memory"),
    );
    assert!(
        v.verify(&within).is_ok(),
        "10 s past exp is inside the 30 s leeway"
    );
    let beyond = token(
        Algorithm::ES256,
        Some("ec-1"),
        &ec(),
        &claims(-120, "chat-memory"),
    );
    assert_eq!(v.verify(&beyond), Err(AuthError::Expired));
}

#[test]
fn a_wrong_audience_is_refused() {
    let t = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa(),
        &claims(300, "another-service"),
    );
    assert_eq!(verifier().verify(&t), Err(AuthError::WrongAudience));
}

#[test]
fn an_unsigned_token_is_refused() {
    // A valid token's claims under the header {"alg":"none","typ":"JWT","kid":"rsa-1"}, no signature.
    let valid = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa(),
        &claims(300, "chat-memory"),
    );
    let body = valid.split('.').nth(1).expect("claims segment");
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicnNhLTEifQ.{body}.");
    assert!(verifier().verify(&unsigned).is_err());
}

#[test]
fn a_jwks_without_a_usable_key_fails_at_start() {
    let only_ed25519 = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"x","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
    assert!(KeySet::from_jwks(only_ed25519).is_err());
    assert!(KeySet::from_jwks("not json").is_err());
}

#[test]
fn a_verified_token_is_answered_from_the_cache_until_its_expiry_then_verified_again() {
    let v = verifier();
    let t = token(
        Algorithm::RS256,
        Some("rsa-1"),
        &rsa(),
        &claims(3600, "chat-memory"),
    );
    let real = v.verify(&t).expect("a valid token");
    // A marked entry for the same token proves which path answers.
    let mut marked = real.clone();
    marked.user = "from-the-cache".into();
    let far = jsonwebtoken::get_current_timestamp() + 3600;
    v.verified.insert(t.clone(), (marked.clone(), far, 0));
    assert_eq!(v.verify(&t), Ok(marked.clone()), "a hit skips verification");
    // Expired as far as the cache knows: the token is verified again.
    v.verified.insert(t.clone(), (marked, 1, 0));
    assert_eq!(v.verify(&t), Ok(real));
}

#[test]
fn a_service_scope_reads_and_writes_for_its_tenant_without_the_audit_log() {
    let principal = |scopes: &[Scope]| Principal {
        tenant: "acme-health".into(),
        user: "agent-svc".into(),
        scopes: scopes.iter().copied().collect(),
    };
    let service = principal(&[Scope::Service]);
    assert!(service.has(Scope::Read) && service.has(Scope::Write));
    assert!(!service.has(Scope::Admin), "no audit log");
    assert!(service.acts_for_tenant());
    let admin = principal(&[Scope::Admin]);
    assert!(admin.has(Scope::Service) && admin.has(Scope::Admin) && admin.acts_for_tenant());
    let end_user = principal(&[Scope::Read, Scope::Write]);
    assert!(!end_user.acts_for_tenant() && !end_user.has(Scope::Service));
    assert_eq!(Scope::parse("memory:service"), Some(Scope::Service));
    assert_eq!(Scope::Service.as_str(), "memory:service");
}
