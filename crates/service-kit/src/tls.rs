//! TLS for gRPC listeners and clients (rustls with ring, through tonic).
//!
//! A listener serves TLS when `cert_path` and `key_path` are set; with
//! `client_ca_path` it also requires client certificates signed by that CA
//! (mTLS). A client trusts `ca_path` (else the system roots) and presents
//! `cert_path`/`key_path` when set.

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::settings::SettingsError;

/// TLS of a gRPC listener. Empty paths: plain HTTP/2 (h2c).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain of the listener.
    pub cert_path: String,
    /// PEM private key of the listener.
    pub key_path: String,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca_path: String,
}

impl ServerTls {
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty()
    }

    /// # Errors
    /// [`SettingsError::Invalid`] when only one of cert and key is set.
    pub fn validate(&self, section: &'static str) -> Result<(), SettingsError> {
        if self.cert_path.is_empty() != self.key_path.is_empty() {
            return Err(SettingsError::invalid(
                section,
                "cert_path and key_path must be set together",
            ));
        }
        if !self.client_ca_path.is_empty() && !self.enabled() {
            return Err(SettingsError::invalid(
                section,
                "client_ca_path needs cert_path and key_path",
            ));
        }
        Ok(())
    }

    /// The tonic configuration, reading the files now (a missing file fails start).
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the unreadable file.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, SettingsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if !self.client_ca_path.is_empty() {
            config = config.client_ca_root(Certificate::from_pem(read(&self.client_ca_path)?));
        }
        Ok(Some(config))
    }
}

/// TLS of a gRPC client (used with an `https://` endpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA bundle to trust. Required for `https://` gRPC endpoints (tonic):
    /// the build bundles no public root store (internal services use a
    /// private CA). The worker's agent client (reqwest, `agent.tls`) uses the
    /// system's roots when it is empty.
    pub ca_path: String,
    /// Client certificate for mTLS (optional).
    pub cert_path: String,
    pub key_path: String,
    /// Server name to verify, when it differs from the endpoint's host.
    pub domain: String,
}

impl ClientTls {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the unreadable file.
    pub fn client_config(&self) -> Result<ClientTlsConfig, SettingsError> {
        let mut config = ClientTlsConfig::new();
        if !self.ca_path.is_empty() {
            config = config.ca_certificate(Certificate::from_pem(read(&self.ca_path)?));
        }
        if !self.cert_path.is_empty() {
            config = config.identity(Identity::from_pem(
                read(&self.cert_path)?,
                read(&self.key_path)?,
            ));
        }
        if !self.domain.is_empty() {
            config = config.domain_name(self.domain.clone());
        }
        Ok(config)
    }
}

fn read(path: &str) -> Result<Vec<u8>, SettingsError> {
    std::fs::read(path).map_err(|e| SettingsError::Invalid {
        field: "tls",
        reason: format!("cannot read {path}: {e}"),
    })
}

/// The MCP listeners (the agent, chat-memory-mcp) serve HTTP through axum, not
/// tonic, so they take rustls' own configuration.
#[cfg(feature = "mcp-server")]
impl ServerTls {
    /// The rustls configuration of an HTTP listener (ring; ALPN h2 and
    /// http/1.1; client certificates required when `client_ca_path` is set),
    /// reading the files now: a missing or unusable file fails start.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the file and what is wrong with it.
    pub fn rustls_config(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, SettingsError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use std::sync::Arc;

        if !self.enabled() {
            return Ok(None);
        }
        let certs = |path: &str| -> Result<Vec<CertificateDer<'static>>, SettingsError> {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| invalid_file(path, &e))?;
            if certs.is_empty() {
                return Err(invalid_file(path, &"no certificate in it"));
            }
            Ok(certs)
        };
        let chain = certs(&self.cert_path)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_path)
            .map_err(|e| invalid_file(&self.key_path, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| SettingsError::invalid("tls", e.to_string()))?;
        let builder = if self.client_ca_path.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs(&self.client_ca_path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid_file(&self.client_ca_path, &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| invalid_file(&self.client_ca_path, &e))?;
            builder.with_client_cert_verifier(verifier)
        };
        // An unsupported key, or one that is not the certificate's.
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| invalid_file(&format!("{} with {}", self.cert_path, self.key_path), &e))?;
        // HTTP/2 first: gRPC health needs it; MCP clients may use either.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

#[cfg(feature = "mcp-server")]
fn invalid_file(path: &str, error: &dyn std::fmt::Display) -> SettingsError {
    SettingsError::Invalid {
        field: "tls",
        reason: format!("{path}: {error}"),
    }
}

#[cfg(all(test, feature = "mcp-server"))]
mod tests {
    use super::*;

    #[test]
    fn an_http_listener_without_its_certificate_or_with_a_bad_key_fails_naming_the_file() {
        assert!(matches!(ServerTls::default().rustls_config(), Ok(None)));
        let missing = ServerTls {
            cert_path: "/nonexistent/chat-memory-server.crt".into(),
            key_path: "/nonexistent/chat-memory-server.key".into(),
            client_ca_path: String::new(),
        };
        let e = missing.rustls_config().err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/chat-memory-server.crt")),
            "{e:?}"
        );

        let dir = std::env::temp_dir().join(format!("chat-memory-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a PEM\n").unwrap_or_else(|e| panic!("{e}"));
        let empty = empty.to_string_lossy().into_owned();
        let no_cert = ServerTls {
            cert_path: empty.clone(),
            key_path: empty.clone(),
            client_ca_path: String::new(),
        };
        let e = no_cert.rustls_config().err().map(|e| e.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains(&empty) && e.contains("no certificate")),
            "{e:?}"
        );
    }
}
