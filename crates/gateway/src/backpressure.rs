//! Backpressure: refuse updates (`RESOURCE_EXHAUSTED` with a retry hint) when
//! the jobs stream, or the chat's partition, holds more jobs than the workers
//! can be expected to drain in time — instead of accepting work that would
//! wait for hours while the agent is down. Reads never pass through here.
//!
//! The jobs stream has work-queue retention: a message is removed when it is
//! acknowledged, so a subject's message count *is* that partition's backlog
//! (waiting plus in flight). One `STREAM.INFO` with a subject filter returns
//! every partition's count and the total; the answer is cached for `cache_ms`
//! so the check costs one NATS request per second per gateway, not one per
//! update. If the counts cannot be read, updates are accepted (the publish that
//! follows reports a NATS outage on its own).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;
use tokio::sync::Mutex;

use chat_memory_proto::jobs::{partition_for, partition_subject, stream_subjects};
use job_queue::QueueSettings;

/// `[backpressure]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct BackpressureSettings {
    pub enabled: bool,
    /// Jobs stored in the whole stream above which updates are refused.
    pub max_stream_jobs: u64,
    /// Jobs stored in one partition above which its chats' updates are refused.
    pub max_partition_jobs: u64,
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
            max_partition_jobs: 5_000,
            cache_ms: 1_000,
            retry_after_ms: 5_000,
        }
    }
}

impl BackpressureSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_stream_jobs == 0 || self.max_partition_jobs == 0 {
            return Err(SettingsError::invalid(
                "backpressure",
                "max_stream_jobs and max_partition_jobs must be positive",
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

/// Job counts at one moment.
#[derive(Debug, Clone, Default)]
struct Depths {
    total: u64,
    by_subject: HashMap<String, u64>,
}

/// The check, shared by all requests of a gateway.
pub struct Backpressure {
    js: jetstream::Context,
    queue: QueueSettings,
    settings: BackpressureSettings,
    /// The last reading; a tokio mutex so concurrent updates wait for one refresh.
    cache: Mutex<Option<(Instant, Depths)>>,
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

    /// Whether an update of `chat_id` (namespaced) may be accepted now.
    ///
    /// # Errors
    /// [`Backlogged`] when the stream or the chat's partition is over its limit.
    pub async fn admit(&self, chat_id: &str) -> Result<(), Backlogged> {
        if !self.settings.enabled {
            return Ok(());
        }
        let Some(depths) = self.depths().await else {
            return Ok(());
        };
        let partition = partition_for(chat_id, self.queue.partitions);
        let subject = partition_subject(&self.queue.subject_prefix, partition);
        let in_partition = depths.by_subject.get(&subject).copied().unwrap_or(0);
        judge(&self.settings, depths.total, partition, in_partition)
    }

    async fn depths(&self) -> Option<Depths> {
        let mut cache = self.cache.lock().await;
        let max_age = Duration::from_millis(self.settings.cache_ms);
        if let Some((at, depths)) = cache.as_ref()
            && at.elapsed() < max_age
        {
            return Some(depths.clone());
        }
        match self.read().await {
            Ok(depths) => {
                *cache = Some((Instant::now(), depths.clone()));
                Some(depths)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue depth; accepting");
                None
            }
        }
    }

    async fn read(&self) -> Result<Depths, async_nats::Error> {
        let stream = self.js.get_stream(&self.queue.stream).await?;
        let mut subjects = stream
            .info_with_subjects(stream_subjects(&self.queue.subject_prefix))
            .await?;
        let mut depths = Depths::default();
        while let Some((subject, count)) = subjects.try_next().await? {
            let count = count as u64;
            depths.total += count;
            depths.by_subject.insert(subject, count);
        }
        Ok(depths)
    }
}

/// The decision on given depths.
fn judge(
    settings: &BackpressureSettings,
    total: u64,
    partition: u32,
    in_partition: u64,
) -> Result<(), Backlogged> {
    let retry_after = Duration::from_millis(settings.retry_after_ms);
    if total >= settings.max_stream_jobs {
        return Err(Backlogged {
            what: format!("{total} jobs queued"),
            retry_after,
        });
    }
    if in_partition >= settings.max_partition_jobs {
        return Err(Backlogged {
            what: format!("{in_partition} jobs queued in partition {partition}"),
            retry_after,
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
            max_partition_jobs: 10,
            ..BackpressureSettings::default()
        }
    }

    #[test]
    fn depths_under_both_limits_are_admitted() {
        assert_eq!(judge(&settings(), 99, 3, 9), Ok(()));
    }

    #[test]
    fn a_full_partition_is_refused_with_a_retry_hint() {
        let refused = judge(&settings(), 50, 3, 10).err();
        assert_eq!(
            refused,
            Some(Backlogged {
                what: "10 jobs queued in partition 3".into(),
                retry_after: Duration::from_secs(5),
            })
        );
    }

    #[test]
    fn a_full_stream_is_refused_even_when_the_partition_is_empty() {
        assert!(judge(&settings(), 100, 3, 0).is_err());
    }

    #[test]
    fn zero_limits_are_invalid() {
        let s = BackpressureSettings {
            max_partition_jobs: 0,
            ..BackpressureSettings::default()
        };
        assert!(s.validate().is_err());
    }
}
