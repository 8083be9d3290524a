//! Queue settings, one section (`nats`) of both the gateway's and the worker's settings.

use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

/// Where the jobs stream lives and how it is shaped.
///
/// `stream` and `subject_prefix` must be equal in every gateway and worker of a
/// deployment: they define where a chat's jobs are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// NATS server URL, or a cluster's nodes' URLs separated by commas (any
    /// reachable one is used at start; on reconnect the others, and the
    /// servers the cluster advertises).
    pub url: String,
    /// JetStream stream holding the update jobs.
    pub stream: String,
    /// Subjects are `<subject_prefix>.jobs.<chat key>` (see [`crate::layout`]).
    pub subject_prefix: String,
    /// JetStream duplicate window: a job id seen again within it is not stored twice.
    pub duplicate_window_secs: u64,
    /// Stream limit on stored (unacknowledged) jobs; publishing beyond it fails with a full-queue error.
    pub max_jobs: i64,
    /// Stream limit in bytes (JetStream reserves it when the stream is created).
    pub max_bytes: i64,
    /// The dead-letter stream's limit in bytes, at most `max_bytes` (the
    /// smaller is used). Applies when the stream is created.
    pub dead_letter_max_bytes: i64,
    /// The audit outbox stream's limit in bytes, at most `max_bytes` (the
    /// smaller is used). Applies when the stream is created.
    pub outbox_max_bytes: i64,
    /// How long to wait for the server's publish acknowledgement.
    pub publish_timeout_ms: u64,
    /// How long to wait for the first connection at start.
    pub connect_timeout_ms: u64,
    /// Days a dead letter is kept in the dead-letter stream before JetStream
    /// removes it (its job record says FAILED either way); 0 keeps it until
    /// replayed or removed. Applies when the stream is created.
    pub dead_letter_max_age_days: u32,
    /// Replicas of every stream the service creates (jobs, dead letters, audit
    /// outbox) and of the gateway's rate-limit bucket: 1 on a single NATS
    /// server, 3 in a JetStream cluster (an acknowledged publish is then on a
    /// quorum of disks). At most 5, JetStream's limit. Applies when a stream
    /// is created; an existing one keeps its count (raise it with
    /// `nats stream edit <name> --replicas 3`, runbooks/maintenance.md).
    pub replicas: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "CHAT_MEMORY_JOBS".into(),
            subject_prefix: "chatmemory".into(),
            duplicate_window_secs: 600,
            max_jobs: 1_000_000,
            max_bytes: 1 << 30,
            dead_letter_max_bytes: 1 << 28,
            outbox_max_bytes: 1 << 28,
            publish_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            dead_letter_max_age_days: 30,
            replicas: 1,
        }
    }
}

impl QueueSettings {
    /// The servers `url` names, in order.
    pub fn servers(&self) -> Vec<&str> {
        self.url.split(',').map(str::trim).collect()
    }

    /// Checks the values that would otherwise fail late or silently.
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for server in self.servers() {
            let scheme_ok = server.starts_with("nats://") || server.starts_with("tls://");
            if !scheme_ok || server.parse::<async_nats::ServerAddr>().is_err() {
                return Err(SettingsError::invalid(
                    "nats.url",
                    format!(
                        "{server:?} is not a nats:// or tls:// URL (several are separated by commas)"
                    ),
                ));
            }
        }
        let name_ok = !self.stream.is_empty()
            && self
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(SettingsError::invalid(
                "nats.stream",
                "must be non-empty [A-Za-z0-9_-]",
            ));
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !prefix_ok {
            return Err(SettingsError::invalid(
                "nats.subject_prefix",
                "must be dot-separated [A-Za-z0-9_-] tokens",
            ));
        }
        if self.duplicate_window_secs == 0 {
            return Err(SettingsError::invalid(
                "nats.duplicate_window_secs",
                "must be at least 1",
            ));
        }
        for (field, limit) in [
            ("nats.max_jobs", self.max_jobs),
            ("nats.max_bytes", self.max_bytes),
            ("nats.dead_letter_max_bytes", self.dead_letter_max_bytes),
            ("nats.outbox_max_bytes", self.outbox_max_bytes),
        ] {
            if limit <= 0 {
                return Err(SettingsError::invalid(field, "must be positive"));
            }
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(SettingsError::invalid(
                "nats.replicas",
                "must be between 1 and 5 (1 on a single NATS server, 3 in a cluster)",
            ));
        }
        if self.publish_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "nats.publish_timeout_ms",
                "timeouts must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(QueueSettings::default().validate().is_ok());
    }

    #[test]
    fn a_clusters_nodes_are_listed_separated_by_commas() {
        let s = QueueSettings {
            url: "nats://nats-0:4222, nats://nats-1:4222,tls://nats-2:4222".into(),
            ..QueueSettings::default()
        };
        assert!(s.validate().is_ok());
        assert_eq!(
            s.servers(),
            [
                "nats://nats-0:4222",
                "nats://nats-1:4222",
                "tls://nats-2:4222"
            ]
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        type Mutation = fn(&mut QueueSettings);
        let cases: [(&str, Mutation); 11] = [
            ("nats.replicas", |s| s.replicas = 0),
            ("nats.replicas", |s| s.replicas = 6),
            ("nats.max_bytes", |s| s.max_bytes = 0),
            ("nats.dead_letter_max_bytes", |s| {
                s.dead_letter_max_bytes = -1
            }),
            ("nats.outbox_max_bytes", |s| s.outbox_max_bytes = 0),
            ("nats.url", |s| s.url = "http://x".into()),
            ("nats.url", |s| {
                s.url = "nats://a:4222,,nats://b:4222".into()
            }),
            ("nats.url", |s| s.url = "nats://a:4222,http://b:4222".into()),
            ("nats.stream", |s| s.stream = "a.b".into()),
            ("nats.subject_prefix", |s| s.subject_prefix = "a..b".into()),
            ("nats.duplicate_window_secs", |s| {
                s.duplicate_window_secs = 0
            }),
        ];
        for (field, mutate) in cases {
            let mut s = QueueSettings::default();
            mutate(&mut s);
            let err = s.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
