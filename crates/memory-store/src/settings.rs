//! memory-store's settings: defaults, then a TOML file, then
//! `CHAT_MEMORY__<SECTION>__<KEY>` variables (see `service_kit::settings`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::{
    settings::{SettingsError, Validate},
    telemetry::TelemetrySettings,
};

/// Everything memory-store reads at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// gRPC listen address, `host:port`.
    pub listen_addr: String,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
}

/// The Postgres pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
    /// Upper bound of pooled connections; each in-flight write holds one
    /// (possibly while waiting for its chat's lock).
    pub max_connections: u32,
    /// Connections kept open while idle, so the first requests do not pay the handshake.
    pub min_connections: u32,
    /// Deadline of one TCP + authentication handshake.
    pub connect_timeout_ms: u64,
    /// How long a request waits for a pooled connection before `UNAVAILABLE`.
    pub acquire_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:50052".into(),
            database: DatabaseSettings::default(),
            telemetry: TelemetrySettings::default(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/chat_memory".into(),
            max_connections: 32,
            min_connections: 2,
            connect_timeout_ms: 3000,
            acquire_timeout_ms: 2000,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        if self.listen_addr.parse::<SocketAddr>().is_err() {
            return Err(SettingsError::invalid(
                "listen_addr",
                "must be host:port, e.g. 127.0.0.1:50052",
            ));
        }
        let db = &self.database;
        if !(db.url.starts_with("postgres://") || db.url.starts_with("postgresql://")) {
            return Err(SettingsError::invalid(
                "database.url",
                "must start with postgres://",
            ));
        }
        if db.max_connections == 0 {
            return Err(SettingsError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if db.min_connections == 0 || db.min_connections > db.max_connections {
            return Err(SettingsError::invalid(
                "database.min_connections",
                "must be at least 1 and at most max_connections",
            ));
        }
        if db.connect_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "database.connect_timeout_ms",
                "must be at least 1",
            ));
        }
        if db.acquire_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "database.acquire_timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use service_kit::settings::load_from;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s: Settings = load_from(None, env(&[])).expect("defaults load");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn the_database_url_comes_from_the_environment() {
        let url = "postgres://app@db:5432/cm";
        let s: Settings =
            load_from(None, env(&[("CHAT_MEMORY__DATABASE__URL", url)])).expect("load");
        assert_eq!(s.database.url, url);
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            ("CHAT_MEMORY__LISTEN_ADDR", "nowhere", "listen_addr"),
            ("CHAT_MEMORY__DATABASE__URL", "mysql://x/y", "database.url"),
            (
                "CHAT_MEMORY__DATABASE__MAX_CONNECTIONS",
                "0",
                "database.max_connections",
            ),
            (
                "CHAT_MEMORY__DATABASE__MIN_CONNECTIONS",
                "0",
                "database.min_connections",
            ),
            (
                "CHAT_MEMORY__DATABASE__ACQUIRE_TIMEOUT_MS",
                "0",
                "database.acquire_timeout_ms",
            ),
        ];
        for (key, value, field) in cases {
            let err = load_from::<Settings, _>(None, env(&[(key, value)])).expect_err(key);
            assert!(err.to_string().contains(field), "{key}={value}: {err}");
        }
    }
}
