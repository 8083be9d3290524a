//! The MCP front's settings: defaults, then the TOML file, then
//! `CHAT_MEMORY__<KEY>` environment variables (see `service_kit::settings`).
//!
//! There is no secret here on purpose: the front holds no key and no service
//! token. Every gateway call carries the MCP caller's own bearer token.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use service_kit::{
    settings::{SettingsError, Validate},
    telemetry::TelemetrySettings,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Everything `chat-memory-mcp` needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the one listener (MCP at `/mcp` and gRPC health) binds to.
    pub listen_addr: String,
    /// `Host` header values the MCP endpoint accepts (`host` or `host:port`).
    /// rmcp checks them against DNS rebinding and accepts loopback only by
    /// default: behind a Kubernetes Service or a load balancer, list the names
    /// clients use, or every request gets 403. An empty list disables the
    /// check. Also a comma-separated string (`CHAT_MEMORY__ALLOWED_HOSTS`).
    #[serde(deserialize_with = "service_kit::settings::list_or_comma_separated")]
    pub allowed_hosts: Vec<String>,
    /// The gateway the tools call.
    pub gateway: GatewaySettings,
    /// TLS of the listener: served when `cert_path` and `key_path` are set
    /// (agents then dial `https://`; their bearer tokens never cross the
    /// network in clear text); with `client_ca_path`, clients must present a
    /// certificate that CA signed (mTLS).
    pub tls: service_kit::tls::ServerTls,
    /// Log filter and format, traces, metrics.
    /// The tokio runtime (worker threads).
    pub runtime: service_kit::entry::RuntimeSettings,
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:50055".into(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            gateway: GatewaySettings::default(),
            tls: service_kit::tls::ServerTls::default(),
            runtime: service_kit::entry::RuntimeSettings::default(),
            telemetry: TelemetrySettings {
                // rmcp logs every stateless request's session start/end at info.
                log_filter: "info,rmcp=warn".into(),
                ..TelemetrySettings::default().with_metrics_addr("127.0.0.1:9105")
            },
        }
    }
}

/// How to reach the gateway's public gRPC API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// `http://host:port`, or `https://host:port` with `ca_path`.
    pub url: String,
    /// PEM file of the CA that signed the gateway's certificate; required for
    /// an `https://` URL (the build bundles no public roots), refused with
    /// `http://` (it would silently go unused).
    pub ca_path: String,
    /// Server name to verify when it differs from the URL's host.
    pub domain: String,
    /// TCP connect (and TLS handshake) deadline.
    pub connect_timeout_ms: u64,
    /// Deadline of each gateway call; a `read_memory` that waits gets its
    /// `wait_ms` on top.
    pub request_timeout_ms: u64,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50051".into(),
            ca_path: String::new(),
            domain: String::new(),
            connect_timeout_ms: 1_000,
            request_timeout_ms: 5_000,
        }
    }
}

impl GatewaySettings {
    fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// Deadline of one call that is not a waiting read.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// A channel that connects on first use and reconnects after failures: a
    /// gateway that is down at start fails calls (`UNAVAILABLE`), not the start.
    /// The CA file is read now, so a missing one fails the start.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming `gateway.url` or `gateway.ca_path`.
    pub fn lazy_channel(&self) -> Result<Channel, SettingsError> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| SettingsError::invalid("gateway.url", e.to_string()))?;
        if self.is_https() {
            let pem = std::fs::read(&self.ca_path).map_err(|e| {
                SettingsError::invalid(
                    "gateway.ca_path",
                    format!(
                        "cannot read {}: {e}",
                        PathBuf::from(&self.ca_path).display()
                    ),
                )
            })?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if !self.domain.is_empty() {
                tls = tls.domain_name(self.domain.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| SettingsError::invalid("gateway.ca_path", e.to_string()))?;
        }
        // No channel-wide timeout: it would cap a waiting read's longer deadline.
        // Each call sets its own (`grpc-timeout`).
        Ok(endpoint
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .tcp_nodelay(true)
            .connect_lazy())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let uri_ok = Endpoint::from_shared(self.url.clone()).is_ok();
        if !uri_ok || !(self.url.starts_with("http://") || self.is_https()) {
            return Err(SettingsError::invalid(
                "gateway.url",
                format!("{:?} must be an http:// or https:// URI", self.url),
            ));
        }
        match (self.is_https(), self.ca_path.is_empty()) {
            (true, true) => {
                return Err(SettingsError::invalid(
                    "gateway.ca_path",
                    "is required for an https:// gateway (the PEM file of the CA that signed its certificate)",
                ));
            }
            (false, false) => {
                return Err(SettingsError::invalid(
                    "gateway.ca_path",
                    "is set but gateway.url is not https://: the connection would not use TLS",
                ));
            }
            (true, false) | (false, true) => {}
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "gateway.request_timeout_ms",
                "gateway.connect_timeout_ms and gateway.request_timeout_ms must be positive",
            ));
        }
        Ok(())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.runtime.validate()?;
        self.tls.validate("tls")?;
        self.listen_addr.parse::<SocketAddr>().map_err(|e| {
            SettingsError::invalid(
                "listen_addr",
                format!("{:?} is not host:port ({e})", self.listen_addr),
            )
        })?;
        if self.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
            return Err(SettingsError::invalid(
                "allowed_hosts",
                "entries must not be blank",
            ));
        }
        self.gateway.validate()
    }
}

service_kit::service_settings!(Settings);

#[cfg(test)]
mod tests {
    use super::*;

    use service_kit::settings::env_vars as env;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        service_kit::settings::load_from::<Settings, _>(None, env(pairs)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_listen_on_loopback_and_call_the_local_gateway() {
        let s = load(&[]);
        assert_eq!(s, Ok(Settings::default()));
        let s = Settings::default();
        assert_eq!(s.listen_addr, "127.0.0.1:50055");
        assert_eq!(s.gateway.url, "http://127.0.0.1:50051");
    }

    #[test]
    fn an_unknown_key_fails_with_one_line() {
        let err = load(&[("CHAT_MEMORY__GATEWAY__ENDPOINT", "http://x:1")])
            .err()
            .unwrap_or_default();
        assert!(err.contains("endpoint"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn invalid_settings_are_refused_naming_the_setting() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("CHAT_MEMORY__LISTEN_ADDR", "localhost")],
                "settings: invalid listen_addr:",
            ),
            (
                &[("CHAT_MEMORY__GATEWAY__URL", "grpc://gateway:50051")],
                "settings: invalid gateway.url:",
            ),
            (
                &[("CHAT_MEMORY__GATEWAY__URL", "https://gateway:50051")],
                "settings: invalid gateway.ca_path: is required",
            ),
            (
                &[("CHAT_MEMORY__GATEWAY__CA_PATH", "/etc/ca.crt")],
                "settings: invalid gateway.ca_path: is set but",
            ),
            (
                &[("CHAT_MEMORY__GATEWAY__REQUEST_TIMEOUT_MS", "0")],
                "settings: invalid gateway.request_timeout_ms:",
            ),
        ];
        for (vars, expected) in cases {
            let err = load(vars).err().unwrap_or_default();
            assert!(err.starts_with(expected), "{vars:?}: {err}");
        }
    }

    #[test]
    fn allowed_hosts_can_be_set_from_one_environment_variable() {
        let s = load(&[(
            "CHAT_MEMORY__ALLOWED_HOSTS",
            "chat-memory-mcp, chat-memory-mcp:50055",
        )]);
        assert_eq!(
            s.map(|s| s.allowed_hosts),
            Ok(vec![
                "chat-memory-mcp".to_owned(),
                "chat-memory-mcp:50055".to_owned()
            ])
        );
    }

    #[test]
    fn an_https_gateway_whose_ca_file_is_missing_fails_when_the_channel_is_built() {
        let s = load(&[
            ("CHAT_MEMORY__GATEWAY__URL", "https://localhost:50051"),
            ("CHAT_MEMORY__GATEWAY__CA_PATH", "/nonexistent/ca.crt"),
        ]);
        let err = s
            .map_err(|e| format!("loading: {e}"))
            .and_then(|s| s.gateway.lazy_channel().map_err(|e| e.to_string()))
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("settings: invalid gateway.ca_path: cannot read /nonexistent/ca.crt"),
            "{err}"
        );
    }
}
