//! Backpressure: refuse updates (`RESOURCE_EXHAUSTED` with a retry hint) when
//! the jobs stream, or the chat, holds more unfinished jobs than the workers can
//! be expected to drain in time — instead of accepting work that would wait for
//! hours while the agent is down. Reads never pass through here.
//!
//! The jobs stream has work-queue retention: a message is removed when it is
//! acknowledged, so the stream's message count *is* the backlog (waiting plus
//! in flight). It is read with one `STREAM.INFO`, cached for `cache_ms`, so the
//! check costs one NATS request per second per gateway, not one per update.
//! If it cannot be read, updates are accepted (the publish that follows reports
//! a NATS outage on its own). The per-chat limit (`max_chat_jobs`) is checked by
//! the publisher, and only for a chat that has unfinished jobs
//! (`job_queue::JobPublisher::with_chat_limit`).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;
use tokio::sync::Mutex;

use job_queue::QueueSettings;

/// `[backpressure]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureSettings {
    pub enabled: bool,
    /// Jobs stored in the whole stream above which updates are refused.
    pub max_stream_jobs: u64,
    /// Unfinished jobs of one chat at which its updates are refused.
    pub max_chat_jobs: u64,
    /// How long one reading of the depths is reused (0: read on every update).
    pub cache_ms: u64,
    /// The retry delay suggested to refused callers (RetryInfo, `retry-after`).
    pub retry_after_ms: u64,
}

impl Default for BackpressureSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_stream_jobs: 100_000,
            max_chat_jobs: 1_000,
            cache_ms: 1_000,
            retry_after_ms: 5_000,
        }
    }
}

impl BackpressureSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_stream_jobs == 0 || self.max_chat_jobs == 0 {
            return Err(SettingsError::invalid(
                "backpressure",
                "max_stream_jobs and max_chat_jobs must be positive",
            ));
        }
        if self.retry_after_ms == 0 {
            return Err(SettingsError::invalid(
                "backpressure.retry_after_ms",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlogged {
    pub what: String,
    pub retry_after: Duration,
}

/// The check, shared by all requests of a gateway.
pub struct Backpressure {
    js: jetstream::Context,
    queue: QueueSettings,
    settings: BackpressureSettings,
    /// The last reading; a tokio mutex so concurrent updates wait for one refresh.
    cache: Mutex<Option<(Instant, u64)>>,
}

impl Backpressure {
    pub fn new(
        js: jetstream::Context,
        queue: QueueSettings,
        settings: BackpressureSettings,
    ) -> Self {
        Self {
            js,
            queue,
            settings,
            cache: Mutex::new(None),
        }
    }

    /// The retry delay suggested to refused callers.
    pub fn retry_after(&self) -> Duration {
        Duration::from_millis(self.settings.retry_after_ms)
    }

    /// Whether an update may be accepted now, as far as the whole stream goes.
    ///
    /// # Errors
    /// [`Backlogged`] when the stream is over its limit.
    pub async fn admit(&self) -> Result<(), Backlogged> {
        if !self.settings.enabled {
            return Ok(());
        }
        let Some(total) = self.depth().await else {
            return Ok(());
        };
        judge(&self.settings, total)
    }

    async fn depth(&self) -> Option<u64> {
        let mut cache = self.cache.lock().await;
        let max_age = Duration::from_millis(self.settings.cache_ms);
        if let Some((at, depth)) = cache.as_ref()
            && at.elapsed() < max_age
        {
            return Some(*depth);
        }
        match self.read().await {
            Ok(depth) => {
                *cache = Some((Instant::now(), depth));
                Some(depth)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue depth; accepting");
                None
            }
        }
    }

    async fn read(&self) -> Result<u64, async_nats::Error> {
        let mut stream = self.js.get_stream(&self.queue.stream).await?;
        Ok(stream.info().await?.state.messages)
    }
}

/// The decision on a given depth.
fn judge(settings: &BackpressureSettings, total: u64) -> Result<(), Backlogged> {
    if total >= settings.max_stream_jobs {
        return Err(Backlogged {
            what: format!("{total} jobs queued"),
            retry_after: Duration::from_millis(settings.retry_after_ms),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BackpressureSettings {
        BackpressureSettings {
            max_stream_jobs: 100,
            ..BackpressureSettings::default()
        }
    }

    #[test]
    fn a_depth_under_the_limit_is_admitted() {
        assert_eq!(judge(&settings(), 99), Ok(()));
    }

    #[test]
    fn a_full_stream_is_refused_with_a_retry_hint() {
        assert_eq!(
            judge(&settings(), 100).err(),
            Some(Backlogged {
                what: "100 jobs queued".into(),
                retry_after: Duration::from_secs(5),
            })
        );
    }

    #[test]
    fn zero_limits_are_invalid() {
        let s = BackpressureSettings {
            max_chat_jobs: 0,
            ..BackpressureSettings::default()
        };
        assert!(s.validate().is_err());
    }
}
