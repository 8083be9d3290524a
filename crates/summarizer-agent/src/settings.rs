//! The agent's settings: defaults, then the TOML file, then
//! `CHAT_MEMORY__<KEY>` environment variables (see `service_kit::settings`).

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use service_kit::{
    settings::{SettingsError, Validate},
    telemetry::TelemetrySettings,
};

use crate::backend::{SummarizerBackend, offline::OfflineBackend};

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
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub allowed_hosts: Vec<String>,
    /// Which summarizer computes the memory.
    pub backend: BackendKind,
    /// Log filter and format.
    pub telemetry: TelemetrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:50053".into(),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            backend: BackendKind::Offline,
            telemetry: TelemetrySettings {
                // rmcp logs every stateless request's session start/end at info.
                log_filter: "info,rmcp=warn".into(),
                ..TelemetrySettings::default()
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
}

impl BackendKind {
    /// Builds the backend this kind names.
    pub fn build(self) -> Arc<dyn SummarizerBackend> {
        match self {
            Self::Offline => Arc::new(OfflineBackend::new()),
        }
    }
}

/// Environment variables are strings: accept `"a,b"` as well as `["a", "b"]`.
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(deserializer)? {
        ListOrString::List(list) => list,
        ListOrString::String(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

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
