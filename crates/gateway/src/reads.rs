//! Reads on a caller's behalf: plain reads from the gateway's cache
//! ([`crate::cache`]) or memory-store, and reads that wait for a version
//! (read-your-writes) without polling.
//!
//! A waiting read listens to its chat's change events ([`crate::changes`])
//! *before* it reads, so no commit between its read and its wait is missed.
//! Its first read is memory-store's (the cache may be behind). Woken by a
//! commit that meets its condition, it answers from the entry that commit's
//! event installed in the cache ([`crate::cache::MemoryCache::apply_event`]:
//! exactly memory-store's answer right after the commit, the caller's access
//! checked as memory-store checks it) when the entry is there and new
//! enough, and reads memory-store otherwise. A lost event makes an answer
//! later, never wrong: the wait also re-reads every [`RECHECK`], and at its
//! deadline.

use std::time::Duration;

use futures::FutureExt as _;
use tokio::time::Instant;
use uuid::Uuid;

use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};
use chat_memory_proto::v1::{JobState, ReadCondition as ConditionPb};

use std::sync::Arc;

use crate::StoreClient;
use crate::cache::{Hit, MemoryCache};
use crate::changes::{ChangeFeed, Event};
use crate::error::GatewayError;
use crate::validation::{FieldViolation, ReadCondition};
use service_kit::gather::{BatchCall, BatchSettings, Gatherer, with_single_fallback};
use store_pb::get_memory_result::Result as ReadResult;

/// A waiting read re-reads this often even without an event.
pub const RECHECK: Duration = Duration::from_secs(1);

/// memory-store reads on a caller's behalf; cheap to clone.
#[derive(Clone)]
pub struct Reads {
    store: StoreClient,
    /// Reads that miss the cache, gathered into `GetMemories` calls.
    memories: Gatherer<store_pb::GetMemoryRequest, store_pb::GetMemoryResult>,
    feed: ChangeFeed,
    cache: Arc<MemoryCache>,
}

/// Where an `after_job_id` stands.
enum JobView {
    /// Applied at this version.
    Applied(i64),
    Failed,
    /// Queued, running, or not registered yet.
    Pending {
        seen: bool,
    },
}

impl Reads {
    /// Starts the gathering of memory-store reads on the current runtime.
    pub fn new(
        store: StoreClient,
        batches: &BatchSettings,
        feed: ChangeFeed,
        cache: Arc<MemoryCache>,
    ) -> Self {
        Self {
            memories: Gatherer::start("reads", memories_call(store.clone()), batches),
            store,
            feed,
            cache,
        }
    }

    /// The cache plain reads use (dropped entries on deletion, etc.).
    pub fn cache(&self) -> &MemoryCache {
        &self.cache
    }

    pub fn feed(&self) -> &ChangeFeed {
        &self.feed
    }

    /// The chat's memory as memory-store answers it for `access`, from this
    /// gateway's cache when it holds a fresh answer ([`crate::cache`]).
    ///
    /// # Errors
    /// NOT_FOUND for a missing chat or one the caller may not see; the store's errors.
    pub async fn read(
        &self,
        access: &Access,
        chat: &TenantChatId,
    ) -> Result<store_pb::GetMemoryResponse, GatewayError> {
        match self.cache.get(chat, access) {
            Some(Hit::Memory(memory)) => {
                crate::metrics::read_cache("hit");
                return Ok(Arc::unwrap_or_clone(memory));
            }
            Some(Hit::NotFound) => {
                crate::metrics::read_cache("hit");
                return Err(GatewayError::NotFound("memory"));
            }
            None => crate::metrics::read_cache("miss"),
        }
        self.read_fresh(access, chat).await
    }

    /// [`Reads::read`] from memory-store itself (what a waiting read or a
    /// watch stream confirms with); the answer refreshes the cache.
    ///
    /// # Errors
    /// As [`Reads::read`].
    pub async fn read_fresh(
        &self,
        access: &Access,
        chat: &TenantChatId,
    ) -> Result<store_pb::GetMemoryResponse, GatewayError> {
        let ticket = self.cache.ticket();
        let read = self
            .memories
            .call(store_pb::GetMemoryRequest {
                chat_id: chat.as_str().to_owned(),
                access: Some(access.clone()),
            })
            .await
            .map_err(|status| GatewayError::from_store(status, "memory"))?;
        match read.result {
            Some(ReadResult::Memory(answer)) => {
                self.cache.store_memory(chat.as_str(), ticket, &answer);
                Ok(answer)
            }
            Some(ReadResult::Absent(_)) => {
                self.cache.store_absent(chat.as_str(), ticket);
                Err(GatewayError::NotFound("memory"))
            }
            Some(ReadResult::NotFound(_)) => Err(GatewayError::NotFound("memory")),
            Some(ReadResult::Invalid(reason)) => Err(GatewayError::from_store(
                tonic::Status::invalid_argument(reason),
                "memory",
            )),
            None => Err(GatewayError::from_store(
                tonic::Status::internal("memory-store answered a read with no result"),
                "memory",
            )),
        }
    }

    /// Reads once `condition` holds or its wait is over, whichever is first.
    ///
    /// # Errors
    /// NOT_FOUND when there is no memory at the deadline (or `after_job_id` was
    /// never found); INVALID_ARGUMENT when `after_job_id` is of another chat.
    pub async fn read_when(
        &self,
        access: &Access,
        chat: &TenantChatId,
        condition: &ReadCondition,
    ) -> Result<(store_pb::GetMemoryResponse, ConditionPb), GatewayError> {
        let mut events = (!condition.wait.is_zero()).then(|| self.feed.listen(chat.as_str()));
        let deadline = Instant::now() + condition.wait;
        let mut target = condition.min_version.unwrap_or(0);
        let mut job_pending = condition.after_job;
        let mut job_seen = false;
        // Woken by an event that met the condition: its installed entry may answer.
        let mut met_by_event = false;
        loop {
            if let Some(job) = job_pending {
                match self.job(access, chat, job).await? {
                    JobView::Applied(version) => {
                        target = target.max(version);
                        job_pending = None;
                    }
                    JobView::Failed => {
                        // The caller may see the job, so the chat is theirs:
                        // an answer without memory reveals nothing.
                        let current = match self.read_fresh(access, chat).await {
                            Err(GatewayError::NotFound(_)) => store_pb::GetMemoryResponse {
                                chat_id: chat.as_str().to_owned(),
                                ..Default::default()
                            },
                            other => other?,
                        };
                        return Ok((current, ConditionPb::JobFailed));
                    }
                    JobView::Pending { seen } => job_seen |= seen,
                }
            }
            let installed = if met_by_event && job_pending.is_none() {
                self.cached_at_least(access, chat, target)
            } else {
                None
            };
            let current = match installed {
                Some(answer) => Ok(answer),
                None => self.read_fresh(access, chat).await,
            };
            met_by_event = false;
            let version = match &current {
                Ok(r) => r.memory.as_ref().map_or(0, |m| m.version),
                Err(GatewayError::NotFound(_)) => 0,
                Err(_) => return current.map(|r| (r, ConditionPb::Met)),
            };
            if job_pending.is_none() && version >= target && current.is_ok() {
                return current.map(|r| (r, ConditionPb::Met));
            }
            let now = Instant::now();
            if now >= deadline {
                if job_pending.is_some() && !job_seen {
                    return Err(GatewayError::NotFound("job"));
                }
                return current.map(|r| (r, ConditionPb::TimedOut));
            }
            let Some(events) = events.as_mut() else {
                return current.map(|r| (r, ConditionPb::TimedOut));
            };
            let wake = deadline.min(now + RECHECK);
            // Wait for an event that may satisfy the condition.
            loop {
                match tokio::time::timeout_at(wake, events.next()).await {
                    Err(_elapsed) => break,
                    Ok(Event::Changed(event)) => {
                        if event.deleted {
                            break;
                        }
                        if let Some(job) = job_pending {
                            let job = job.to_string();
                            if event.failed_job_ids.contains(&job) {
                                break;
                            }
                            if event.applied_job_ids.contains(&job) {
                                if let Some(m) = &event.memory {
                                    target = target.max(m.version);
                                }
                                job_pending = None;
                                job_seen = true;
                                met_by_event = true;
                                break;
                            }
                        } else if event.memory.as_ref().is_some_and(|m| m.version >= target) {
                            met_by_event = true;
                            break;
                        }
                    }
                    Ok(Event::Lagged(_)) => break,
                    Ok(Event::Closed) => {
                        tokio::time::sleep_until(wake).await;
                        break;
                    }
                }
            }
        }
    }

    /// The cached answer for `access`, when it holds version `target` or later.
    fn cached_at_least(
        &self,
        access: &Access,
        chat: &TenantChatId,
        target: i64,
    ) -> Option<store_pb::GetMemoryResponse> {
        match self.cache.get(chat, access)? {
            Hit::Memory(m) if m.memory.as_ref().is_some_and(|m| m.version >= target) => {
                Some(Arc::unwrap_or_clone(m))
            }
            Hit::Memory(_) | Hit::NotFound => None,
        }
    }

    async fn job(
        &self,
        access: &Access,
        chat: &TenantChatId,
        job: Uuid,
    ) -> Result<JobView, GatewayError> {
        let found = self
            .store
            .clone()
            .get_job(store_pb::GetJobRequest {
                job_id: job.to_string(),
                access: Some(access.clone()),
            })
            .await;
        let job = match found {
            Ok(r) => r.into_inner(),
            // Not registered yet (the worker registers a job whose
            // acceptance memory-store missed), or not the caller's.
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Ok(JobView::Pending { seen: false });
            }
            Err(s) => return Err(GatewayError::from_store(s, "job")),
        };
        if job.chat_id != chat.as_str() {
            return Err(GatewayError::Invalid(FieldViolation {
                field: "after_job_id".to_owned(),
                reason: "is a job of another chat".to_owned(),
            }));
        }
        Ok(match JobState::try_from(job.state) {
            Ok(JobState::Succeeded) => JobView::Applied(job.resulting_version.unwrap_or(0)),
            Ok(JobState::Failed) => JobView::Failed,
            Ok(JobState::Queued | JobState::Running | JobState::Unspecified) | Err(_) => {
                JobView::Pending { seen: true }
            }
        })
    }
}

/// `GetMemories` on `client` (one GetMemory at a time for an older
/// memory-store, its NOT_FOUND and INVALID_ARGUMENT turned into the result
/// `GetMemories` would give).
fn memories_call(
    client: StoreClient,
) -> BatchCall<store_pb::GetMemoryRequest, store_pb::GetMemoryResult> {
    with_single_fallback(
        client,
        |mut client, reads| {
            async move {
                let batch = store_pb::GetMemoriesRequest { reads };
                let answer = client.get_memories(batch).await?;
                Ok(answer.into_inner().results)
            }
            .boxed()
        },
        |mut client, read| {
            async move {
                let result = match client.get_memory(read).await {
                    Ok(r) => ReadResult::Memory(r.into_inner()),
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        if s.metadata().get(store_pb::ABSENT_METADATA).is_some() {
                            ReadResult::Absent(true)
                        } else {
                            ReadResult::NotFound(true)
                        }
                    }
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        ReadResult::Invalid(s.message().to_owned())
                    }
                    Err(s) => return Err(s),
                };
                Ok(store_pb::GetMemoryResult {
                    result: Some(result),
                })
            }
            .boxed()
        },
    )
}
