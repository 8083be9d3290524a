//! Settings and a lazily connecting channel for calling another chat-memory
//! service over gRPC (gateway -> memory-store, worker -> memory-store).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::secret::Secret;
use crate::service_auth::AttachToken;
use crate::settings::SettingsError;
use crate::tls::ClientTls;

/// How to reach a gRPC service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// `http://host:port` (or `https://`).
    pub endpoint: String,
    pub connect_timeout_ms: u64,
    /// Deadline of each call.
    pub request_timeout_ms: u64,
    /// Bearer token presented to the service (its `service_token`).
    pub service_token: Option<Secret>,
    /// TLS for `https://` endpoints.
    pub tls: ClientTls,
}

impl Default for ClientSettings {
    /// No endpoint: each service's settings default it to where that dependency listens locally.
    fn default() -> Self {
        Self::new("")
    }
}

impl ClientSettings {
    /// Settings for `endpoint` with the default timeouts (1 s connect, 5 s per call).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
            service_token: None,
            tls: ClientTls::default(),
        }
    }

    /// # Errors
    /// [`SettingsError::Invalid`] naming `<section>.endpoint` or `<section>.request_timeout_ms`.
    pub fn validate(&self, section: &'static str) -> Result<(), SettingsError> {
        if Endpoint::from_shared(self.endpoint.clone()).is_err()
            || !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://"))
        {
            return Err(SettingsError::Invalid {
                field: section,
                reason: format!(
                    "endpoint {:?} must be an http:// or https:// URI",
                    self.endpoint
                ),
            });
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(SettingsError::Invalid {
                field: section,
                reason: "timeouts must be positive".into(),
            });
        }
        Ok(())
    }

    /// A channel that connects on first use and reconnects after failures, so a
    /// dependency that is down at start only fails calls, not the caller's start.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when the endpoint is not a URI.
    pub fn lazy_channel(&self) -> Result<Channel, SettingsError> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| SettingsError::invalid("endpoint", e.to_string()))?;
        if self.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.tls.client_config()?)
                .map_err(|e| SettingsError::invalid("tls", e.to_string()))?;
        }
        Ok(endpoint
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .timeout(Duration::from_millis(self.request_timeout_ms))
            .tcp_nodelay(true)
            .connect_lazy())
    }
}

impl ClientSettings {
    /// The interceptor that presents [`ClientSettings::service_token`].
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] when the token is not a valid header value.
    pub fn token_interceptor(&self) -> Result<AttachToken, SettingsError> {
        AttachToken::new(self.service_token.as_ref())
    }
}
