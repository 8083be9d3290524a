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
    /// PEM CA bundle to trust. Required for `https://` endpoints: the build
    /// bundles no public root store (internal services use a private CA).
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
