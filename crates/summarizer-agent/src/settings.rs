//! The agent's settings: defaults, then the TOML file, then
//! `CHAT_MEMORY__<KEY>` environment variables (see `service_kit::settings`).

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use service_kit::{
    settings::{SettingsError, Validate},
    telemetry::TelemetrySettings,
};

use crate::backend::{
    BackendError, SummarizerBackend,
    offline::OfflineBackend,
    openai::{OpenAiBackend, OpenAiSettings},
};

/// Everything the agent binary needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address the one listener (MCP at `/mcp` and gRPC health) binds to.
    pub listen_addr: String,
    /// `Host` header values the MCP endpoint accepts (`host` or `host:port`).
    /// The check stops DNS-rebinding attacks on a locally running agent; the
    /// default accepts loopback only. In Kubernetes, add the Service name the
    /// worker dials (e.g. `summarizer-agent`, and its
    /// `summarizer-agent.<namespace>.svc` forms), or every call gets 403. An
    /// empty list disables the check. Also accepts a comma-separated string,
    /// so `CHAT_MEMORY__ALLOWED_HOSTS=summarizer-agent,localhost` works.
    #[serde(deserialize_with = "service_kit::settings::list_or_comma_separated")]
    pub allowed_hosts: Vec<String>,
    /// Which summarizer computes the memory.
    pub backend: BackendKind,
    /// Deadline of one `summarize` call inside the agent, retries included.
    /// Keep it below the worker's `agent.call_timeout_ms`, so a slow model
    /// ends as the agent's own `Unavailable` rather than a client timeout.
    pub call_timeout_ms: u64,
    /// Model calls per `summarize` when the output fails validation (the
    /// validation error is fed back to the model each time).
    pub max_attempts: u32,
    /// The `openai` backend's endpoint, used when `backend = "openai"`.
    pub openai: OpenAiSettings,
    /// Bearer token the MCP endpoint requires (the worker's `agent.service_token`).
    /// Required unless the agent listens on loopback only; health stays open.
    pub service_token: Option<service_kit::secret::Secret>,
    /// Also accepted while a token rotation is under way (the old token);
    /// remove it once every worker presents `service_token`.
    pub service_token_previous: Option<service_kit::secret::Secret>,
    /// TLS of the listener (MCP and health): served when `cert_path` and
    /// `key_path` are set; with `client_ca_path`, workers must present a
    /// client certificate that CA signed (mTLS). Off: plain HTTP, for
    /// loopback or a mesh that adds TLS.
    pub tls: service_kit::tls::ServerTls,
    /// Test-only fault injection (the reliability suite); off by default, and
    /// only in a build with the `fault-injection` feature.
    #[cfg(feature = "fault-injection")]
    pub faults: crate::faults::FaultSettings,
    /// Log filter and format.
    /// The tokio runtime (worker threads).
    pub runtime: service_kit::entry::RuntimeSettings,
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:50053".into(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            backend: BackendKind::Offline,
            call_timeout_ms: 25_000,
            max_attempts: 3,
            openai: OpenAiSettings::default(),
            service_token: None,
            service_token_previous: None,
            tls: service_kit::tls::ServerTls::default(),
            #[cfg(feature = "fault-injection")]
            faults: crate::faults::FaultSettings::default(),
            runtime: service_kit::entry::RuntimeSettings::default(),
            telemetry: TelemetrySettings {
                // rmcp logs every stateless request's session start/end at info.
                log_filter: "info,rmcp=warn".into(),
                ..TelemetrySettings::default().with_metrics_addr("127.0.0.1:9103")
            },
        }
    }
}

/// The available summarizer backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Deterministic heuristics, no network ([`OfflineBackend`]).
    #[default]
    Offline,
    /// An OpenAI-compatible Chat Completions endpoint ([`OpenAiBackend`]):
    /// OpenAI, vLLM, Ollama, llama.cpp server.
    Openai,
}

impl Settings {
    /// Builds the backend `backend` names.
    ///
    /// # Errors
    /// [`BackendError::Internal`] when the openai backend cannot be built
    /// (its HTTP client or output schema).
    pub fn build_backend(&self) -> Result<Arc<dyn SummarizerBackend>, BackendError> {
        let backend: Arc<dyn SummarizerBackend> = match self.backend {
            BackendKind::Offline => Arc::new(OfflineBackend::new()),
            BackendKind::Openai => Arc::new(OpenAiBackend::new(
                &self.openai,
                std::time::Duration::from_millis(self.call_timeout_ms),
                self.max_attempts,
            )?),
        };
        #[cfg(feature = "fault-injection")]
        let backend = if self.faults.enabled() {
            crate::faults::FaultyBackend::wrap(backend, self.faults.clone())
        } else {
            backend
        };
        Ok(backend)
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.runtime.validate()?;
        self.tls.validate("tls")?;
        #[cfg(feature = "fault-injection")]
        self.faults.validate()?;
        let addr = self.listen_addr.parse::<SocketAddr>().map_err(|e| {
            SettingsError::invalid(
                "listen_addr",
                format!("{:?} is not host:port ({e})", self.listen_addr),
            )
        })?;
        // Reachable from other hosts: the MCP endpoint must not be anonymous.
        if !addr.ip().is_loopback()
            && self
                .service_token
                .as_ref()
                .is_none_or(service_kit::secret::Secret::is_empty)
        {
            return Err(SettingsError::invalid(
                "service_token",
                "is required when listen_addr is not a loopback address",
            ));
        }
        if self.call_timeout_ms == 0 || self.max_attempts == 0 {
            return Err(SettingsError::invalid(
                "call_timeout_ms",
                "call_timeout_ms and max_attempts must be positive",
            ));
        }
        if self.backend == BackendKind::Openai {
            self.openai.validate()?;
        }
        if self.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
            return Err(SettingsError::invalid(
                "allowed_hosts",
                "entries must not be blank",
            ));
        }
        Ok(())
    }
}

service_kit::service_settings!(Settings);

#[cfg(test)]
mod tests {
    use super::*;

    use service_kit::settings::env_vars as env;

    #[test]
    fn defaults_listen_on_loopback_with_the_offline_backend() {
        let s: Result<Settings, _> = service_kit::settings::load_from(None, env(&[]));
        assert_eq!(s.ok(), Some(Settings::default()));
    }

    #[test]
    fn a_listen_addr_that_is_not_a_socket_address_is_rejected() {
        let err = service_kit::settings::load_from::<Settings, _>(
            None,
            env(&[("CHAT_MEMORY__LISTEN_ADDR", "localhost")]),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.starts_with("settings: invalid listen_addr:"), "{err}");
    }

    #[test]
    fn an_unknown_backend_is_rejected() {
        let result = service_kit::settings::load_from::<Settings, _>(
            None,
            env(&[("CHAT_MEMORY__BACKEND", "gpt")]),
        );
        assert!(result.is_err());
    }

    #[test]
    fn the_openai_backend_is_configured_from_the_environment_and_its_key_never_prints() {
        let s = service_kit::settings::load_from::<Settings, _>(
            None,
            env(&[
                ("CHAT_MEMORY__BACKEND", "openai"),
                ("CHAT_MEMORY__OPENAI__BASE_URL", "http://127.0.0.1:8000/v1"),
                ("CHAT_MEMORY__OPENAI__MODEL", "qwen2.5-7b-instruct"),
                ("CHAT_MEMORY__OPENAI__API_KEY", "sk-very-secret"),
            ]),
        );
        let s = match s {
            Ok(s) => s,
            Err(e) => panic!("settings: {e}"),
        };
        assert_eq!(s.backend, BackendKind::Openai);
        assert_eq!(s.openai.model, "qwen2.5-7b-instruct");
        assert_eq!(
            s.openai.api_key.as_ref().map(|k| k.expose()),
            Some("sk-very-secret")
        );
        let printed = format!("{s:?}\n{}", service_kit::settings::render(&s));
        assert!(!printed.contains("sk-very-secret"), "{printed}");
    }

    #[test]
    fn an_openai_base_url_that_is_not_http_is_rejected() {
        let result = service_kit::settings::load_from::<Settings, _>(
            None,
            env(&[
                ("CHAT_MEMORY__BACKEND", "openai"),
                ("CHAT_MEMORY__OPENAI__BASE_URL", "ftp://example.com"),
            ]),
        );
        assert!(result.is_err());
    }

    #[test]
    fn allowed_hosts_can_be_set_from_one_environment_variable() {
        let s = service_kit::settings::load_from::<Settings, _>(
            None,
            env(&[(
                "CHAT_MEMORY__ALLOWED_HOSTS",
                "summarizer-agent, summarizer-agent.chat.svc",
            )]),
        );
        assert_eq!(
            s.ok().map(|s| s.allowed_hosts),
            Some(vec![
                "summarizer-agent".to_owned(),
                "summarizer-agent.chat.svc".to_owned()
            ])
        );
    }
}
