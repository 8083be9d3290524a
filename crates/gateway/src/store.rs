//! memory-store, as the gateway's handlers and [`crate::accept`] call it on a
//! caller's behalf: requests are built here from domain values (a
//! [`TenantChatId`], the caller's [`Access`], a job id), and each failure is
//! classified once ([`GatewayError::from_store`], naming what was not found).
//!
//! Reads ([`crate::reads`]) and audit rows ([`crate::audit`]) use the
//! generated client themselves: they keep their own caches and fallbacks.

use futures::FutureExt as _;
use uuid::Uuid;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};
use chat_memory_proto::v1::{AuditEntry, QueryAuditRequest};

use crate::StoreClient;
use crate::error::GatewayError;
use service_kit::gather::{BatchCall, BatchSettings, Gatherer, with_single_fallback};

/// memory-store's client for the calls below; cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: StoreClient,
    /// Ownership claims, gathered into `ClaimChats` calls.
    claims: Gatherer<store_pb::ClaimChatRequest, store_pb::ClaimChatResult>,
    /// Registrations of accepted jobs, gathered into `RecordAcceptedBatch` calls.
    registrations: Gatherer<store_pb::RecordAcceptedRequest, store_pb::RecordAcceptedResult>,
}

/// What memory-store made of a published job's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Registered now, or known already. `earlier_acceptance`: the job id was
    /// accepted before as another stream message (a request repeated beyond
    /// JetStream's duplicate window).
    Recorded { earlier_acceptance: bool },
    /// The job id is known with other messages: its idempotency key was
    /// reused for a different request.
    KeyReused,
}

impl Store {
    /// Starts the gathering of claims and registrations on the current runtime.
    pub fn new(client: StoreClient, batches: &BatchSettings) -> Self {
        Self {
            claims: Gatherer::start("claims", claims_call(client.clone()), batches),
            registrations: Gatherer::start(
                "registrations",
                registrations_call(client.clone()),
                batches,
            ),
            client,
        }
    }

    /// Claims `chat` for `access` (the first writer owns a chat), or confirms
    /// that it may write it.
    ///
    /// # Errors
    /// NOT_FOUND (`chat`) for a chat of another owner; [`GatewayError::StoreUnavailable`]
    /// while memory-store is down; the store's other errors.
    pub async fn claim_chat(
        &self,
        chat: &TenantChatId,
        access: &Access,
    ) -> Result<(), GatewayError> {
        let verdict = self
            .claims
            .call(store_pb::ClaimChatRequest {
                chat_id: chat.to_string(),
                access: Some(access.clone()),
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "chat"))?;
        if !verdict.invalid.is_empty() {
            // This claim alone was refused (the others gathered with it stand).
            return Err(GatewayError::from_store(
                tonic::Status::invalid_argument(verdict.invalid),
                "chat",
            ));
        }
        if verdict.denied {
            return Err(GatewayError::NotFound("chat"));
        }
        Ok(())
    }

    /// Registers a job JetStream acknowledged at `stream_seq`, so its status
    /// and its chat's pending count are visible at once; memory-store stores
    /// `audit` (the acceptance's row, carried in the job message) with it.
    ///
    /// # Errors
    /// The store's status as it came: a registration that failed does not fail
    /// the acceptance (the worker registers the job when it runs it).
    pub async fn record_accepted(
        &self,
        job: &UpdateJob,
        stream_seq: u64,
        message_count: u32,
        request_hash: String,
        audit: Option<&chat_memory_proto::v1::AuditEntry>,
    ) -> Result<Registration, tonic::Status> {
        let request = store_pb::RecordAcceptedRequest {
            job_id: job.job_id.clone(),
            chat_id: job.chat_id.clone(),
            stream_seq,
            message_count,
            idempotency_key: job.idempotency_key.clone(),
            accepted_at: job.accepted_at,
            request_hash,
            audit: audit.cloned(),
        };
        let result = self.registrations.call(request).await?;
        if !result.invalid.is_empty() {
            // This registration alone was refused (the others gathered with it stand).
            return Err(tonic::Status::invalid_argument(result.invalid));
        }
        Ok(if result.key_reused {
            Registration::KeyReused
        } else {
            Registration::Recorded {
                earlier_acceptance: result.earlier_acceptance,
            }
        })
    }

    /// A job's status, if `access` may see it.
    ///
    /// # Errors
    /// NOT_FOUND (`job`) for a missing job or one of another tenant or owner;
    /// the store's other errors.
    pub async fn get_job(
        &self,
        job_id: Uuid,
        access: &Access,
    ) -> Result<store_pb::GetJobResponse, GatewayError> {
        self.client
            .clone()
            .get_job(store_pb::GetJobRequest {
                job_id: job_id.to_string(),
                access: Some(access.clone()),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| GatewayError::from_store(s, "job"))
    }

    /// Deletes `chat`'s memory and its jobs accepted up to `through_stream_seq`.
    ///
    /// # Errors
    /// NOT_FOUND (`memory`) for a chat `access` may not see; the store's other errors.
    pub async fn delete_chat(
        &self,
        chat: &TenantChatId,
        through_stream_seq: u64,
        access: &Access,
    ) -> Result<store_pb::DeleteChatResponse, GatewayError> {
        self.client
            .clone()
            .delete_chat(store_pb::DeleteChatRequest {
                chat_id: chat.to_string(),
                through_stream_seq,
                access: Some(access.clone()),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| GatewayError::from_store(s, "memory"))
    }

    /// `tenant`'s audit rows that match `filter`.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn query_audit(
        &self,
        tenant: &str,
        filter: QueryAuditRequest,
    ) -> Result<Vec<AuditEntry>, GatewayError> {
        self.client
            .clone()
            .query_audit(store_pb::QueryAuditRequest {
                tenant: tenant.to_owned(),
                filter: Some(filter),
            })
            .await
            .map(|r| r.into_inner().entries)
            .map_err(|s| GatewayError::from_store(s, "audit"))
    }
}

/// `RecordAcceptedBatch` on `client` (one job's RecordAccepted at a time for
/// an older memory-store).
fn registrations_call(
    client: StoreClient,
) -> BatchCall<store_pb::RecordAcceptedRequest, store_pb::RecordAcceptedResult> {
    with_single_fallback(
        client,
        |mut client, jobs| {
            async move {
                let batch = store_pb::RecordAcceptedBatchRequest { jobs };
                let answer = client.record_accepted_batch(batch).await?;
                Ok(answer.into_inner().results)
            }
            .boxed()
        },
        |mut client, job| {
            async move {
                match client.record_accepted(job).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        Ok(store_pb::RecordAcceptedResult {
                            inserted: r.inserted,
                            earlier_acceptance: r.earlier_acceptance,
                            ..Default::default()
                        })
                    }
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        Ok(store_pb::RecordAcceptedResult {
                            key_reused: true,
                            ..Default::default()
                        })
                    }
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        Ok(store_pb::RecordAcceptedResult {
                            invalid: s.message().to_owned(),
                            ..Default::default()
                        })
                    }
                    Err(s) => Err(s),
                }
            }
            .boxed()
        },
    )
}

/// `ClaimChats` on `client` (one ClaimChat at a time for an older memory-store).
fn claims_call(
    client: StoreClient,
) -> BatchCall<store_pb::ClaimChatRequest, store_pb::ClaimChatResult> {
    with_single_fallback(
        client,
        |mut client, claims| {
            async move {
                let batch = store_pb::ClaimChatsRequest { claims };
                let answer = client.claim_chats(batch).await?;
                Ok(answer.into_inner().results)
            }
            .boxed()
        },
        |mut client, claim| {
            async move {
                match client.claim_chat(claim).await {
                    Ok(r) => Ok(store_pb::ClaimChatResult {
                        claimed: r.into_inner().claimed,
                        ..Default::default()
                    }),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(store_pb::ClaimChatResult {
                        denied: true,
                        ..Default::default()
                    }),
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        Ok(store_pb::ClaimChatResult {
                            invalid: s.message().to_owned(),
                            ..Default::default()
                        })
                    }
                    Err(s) => Err(s),
                }
            }
            .boxed()
        },
    )
}
