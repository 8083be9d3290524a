//! memory-store's settings: defaults, then a TOML file, then
//! `CHAT_MEMORY__<SECTION>__<KEY>` variables (see `service_kit::settings`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::{
    secret::Secret,
    settings::{SettingsError, Validate},
    telemetry::TelemetrySettings,
    tls::ServerTls,
};

/// Everything memory-store reads at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// gRPC listen address, `host:port`.
    pub listen_addr: String,
    pub database: DatabaseSettings,
    /// Bearer token every caller (gateway, worker) must present; health stays open.
    pub service_token: Option<Secret>,
    /// Also accepted while a token rotation is under way (the old token);
    /// remove it once every caller presents `service_token`.
    pub service_token_previous: Option<Secret>,
    /// Serve without a service token. Only for a developer's machine: memory-store
    /// holds every tenant's data, so `validate()` refuses a missing token otherwise.
    pub insecure_no_service_token: bool,
    /// TLS of the listener (and mTLS with `tls.client_ca_path`).
    pub tls: ServerTls,
    pub expiry: ExpirySettings,
    pub retention: RetentionSettings,
    /// The tokio runtime (worker threads).
    pub runtime: service_kit::entry::RuntimeSettings,
    pub telemetry: TelemetrySettings,
}

/// Bounded data growth: how long audit rows and ended job records are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days of `audit_log` kept: whole days (UTC) older than this are dropped
    /// (0 keeps every row).
    pub audit_days: u32,
    /// Days an ended (succeeded or failed) job record is kept after it ended
    /// (0 keeps every record). Also the window in which a repeated
    /// idempotency key is recognised.
    pub job_days: u32,
    /// Days of audit partitions created ahead of today.
    pub partitions_ahead_days: u32,
    /// Time between two retention passes.
    pub sweep_interval_ms: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            audit_days: 90,
            job_days: 30,
            partitions_ahead_days: 3,
            sweep_interval_ms: 3_600_000,
        }
    }
}

/// Short-term memory: inactive chats are purged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ExpirySettings {
    /// A chat not written for this long is purged (0 disables expiry).
    pub inactive_after_secs: u64,
    /// Time between two sweeps.
    pub sweep_interval_ms: u64,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        Self {
            inactive_after_secs: 30 * 24 * 3600,
            sweep_interval_ms: 60_000,
        }
    }
}

impl ExpirySettings {
    /// How long a chat lives unwritten; `None` when expiry is off (0) or the
    /// setting is beyond what a time can hold (hundreds of billions of
    /// years: never).
    pub fn inactive_after(&self) -> Option<chrono::Duration> {
        if self.inactive_after_secs == 0 {
            return None;
        }
        i64::try_from(self.inactive_after_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
    }
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
            service_token: None,
            service_token_previous: None,
            insecure_no_service_token: false,
            tls: ServerTls::default(),
            expiry: ExpirySettings::default(),
            retention: RetentionSettings::default(),
            runtime: service_kit::entry::RuntimeSettings::default(),
            telemetry: TelemetrySettings::default().with_metrics_addr("127.0.0.1:9102"),
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
        self.runtime.validate()?;
        if self.listen_addr.parse::<SocketAddr>().is_err() {
            return Err(SettingsError::invalid(
                "listen_addr",
                "must be host:port, e.g. 127.0.0.1:50052",
            ));
        }
        if self.service_token.as_ref().is_none_or(Secret::is_empty)
            && !self.insecure_no_service_token
        {
            return Err(SettingsError::invalid(
                "service_token",
                "is required (or set insecure_no_service_token = true on a developer machine)",
            ));
        }
        self.tls.validate("tls")?;
        if self.expiry.sweep_interval_ms == 0 {
            return Err(SettingsError::invalid(
                "expiry.sweep_interval_ms",
                "must be at least 1",
            ));
        }
        if self.retention.sweep_interval_ms == 0 {
            return Err(SettingsError::invalid(
                "retention.sweep_interval_ms",
                "must be at least 1",
            ));
        }
        if self.retention.partitions_ahead_days == 0 || self.retention.partitions_ahead_days > 60 {
            return Err(SettingsError::invalid(
                "retention.partitions_ahead_days",
                "must be between 1 and 60",
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

service_kit::service_settings!(Settings);

#[cfg(test)]
mod tests {
    use service_kit::settings::load_from;

    use super::*;

    use service_kit::settings::env_vars as env;

    const TOKEN: (&str, &str) = ("CHAT_MEMORY__SERVICE_TOKEN", "t0ken");

    #[test]
    fn defaults_with_a_service_token_are_valid() {
        let s: Settings = load_from(None, env(&[TOKEN])).expect("defaults load");
        assert_eq!(
            s,
            Settings {
                service_token: Some(Secret::new("t0ken")),
                ..Settings::default()
            }
        );
    }

    #[test]
    fn a_missing_service_token_is_refused_and_never_printed_when_set() {
        let err = load_from::<Settings, _>(None, env(&[])).expect_err("no token");
        assert!(err.to_string().contains("service_token"), "{err}");
        let s: Settings = load_from(None, env(&[TOKEN])).expect("load");
        let printed = service_kit::settings::render(&s);
        assert!(!printed.contains("t0ken"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn the_database_url_comes_from_the_environment() {
        let url = "postgres://app@db:5432/cm";
        let s: Settings =
            load_from(None, env(&[("CHAT_MEMORY__DATABASE__URL", url), TOKEN])).expect("load");
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
            let err = load_from::<Settings, _>(None, env(&[(key, value), TOKEN])).expect_err(key);
            assert!(err.to_string().contains(field), "{key}={value}: {err}");
        }
    }
}
