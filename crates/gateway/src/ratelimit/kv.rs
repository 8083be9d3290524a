//! The shared budget in a NATS key-value bucket: one key per budget key, its
//! value the TAT as 8 big-endian bytes (epoch nanoseconds), replaced with
//! `update(key, value, revision)`, which is a compare-and-set on the key's
//! last revision.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;

use super::LimiterError;
use super::lease::{BudgetError, SharedBudget, Versioned, Written};

/// [`SharedBudget`] over a NATS KV bucket.
#[derive(Clone)]
pub struct KvBudget {
    kv: kv::Store,
}

impl KvBudget {
    /// Creates the bucket's stream by hand (NATS 2.9 cannot answer
    /// `create_key_value`, see STACK-NOTES) and opens it.
    ///
    /// # Errors
    /// [`LimiterError`] when JetStream refuses the stream or the bucket.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<Self, LimiterError> {
        let err = |reason: String| LimiterError {
            bucket: bucket.to_owned(),
            reason,
        };
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            // One value per key: the latest arrival time.
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            // A key idle for an hour has a full budget again; older state is useless.
            max_age: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(60),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            // As the queue's streams (`nats.replicas`).
            num_replicas: replicas,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| err(e.to_string()))?;
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { kv })
    }
}

impl SharedBudget for KvBudget {
    async fn read(&self, key: &str) -> Result<Option<Versioned>, BudgetError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| BudgetError::Read(e.into()))?;
        Ok(entry.map(|e| Versioned {
            revision: e.revision,
            tat: match e.operation {
                kv::Operation::Put => decode(&e.value),
                kv::Operation::Delete | kv::Operation::Purge => None,
            },
        }))
    }

    async fn write(
        &self,
        key: &str,
        tat: u64,
        expected: Option<u64>,
    ) -> Result<Written, BudgetError> {
        let value = Bytes::copy_from_slice(&tat.to_be_bytes());
        match expected {
            Some(revision) => match self.kv.update(key, value, revision).await {
                Ok(revision) => Ok(Written::Stored(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    Ok(Written::Conflict)
                }
                Err(e) => Err(BudgetError::Write(e.into())),
            },
            None => match self.kv.create(key, value).await {
                Ok(revision) => Ok(Written::Stored(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Written::Conflict),
                Err(e) => Err(BudgetError::Write(e.into())),
            },
        }
    }
}

fn decode(raw: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = raw.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}
