//! gRPC handlers of `chatmemory.v1.MemoryService`: each takes the caller from
//! the gate ([`CallContext`]), converts the request to domain types, calls the
//! queue or memory-store on the caller's behalf, maps the error, and writes the
//! call's one audit row.
//!
//! Isolation: chat ids are namespaced by tenant ([`ChatId::namespaced`], a
//! [`TenantChatId`]) before
//! anything downstream sees them, and every store call carries the caller's
//! [`Access`], so memory-store answers NOT_FOUND for another tenant's (or, without
//! `memory:admin`, another user's) chat or job, exactly as for a missing one.

use chrono::Utc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};
use chat_memory_proto::time::to_timestamp;
use chat_memory_proto::v1::{
    DeleteMemoryRequest, DeleteMemoryResponse, GetMemoryRequest, GetMemoryResponse,
    GetUpdateStatusRequest, GetUpdateStatusResponse, QueryAuditRequest, QueryAuditResponse,
    ReadCondition, UpdateMemoryRequest, UpdateMemoryResponse, WatchMemoryRequest,
    memory_service_server::MemoryService,
};
use job_queue::JobPublisher;

use crate::StoreClient;
use crate::audit::{Action, AuditSink, Facts, Row};
use crate::auth::layer::CallContext;
use crate::backpressure::Backpressure;
use crate::error::GatewayError;
use crate::owners::OwnerCache;
use crate::reads::Reads;
use crate::validation::{ChatId, FieldViolation, JobId, Limits, ReadQuery, UpdateCommand};
use crate::watch::{WatchStream, Watches};

/// Namespace of job ids derived from idempotency keys (UUIDv5).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_3f0e_8a2b_4c5d_9e7f_1a2b_3c4d_5e6f);

/// The job id of an update: derived from the namespaced chat and idempotency key
/// when there is one (so a retry maps to the same job, and two tenants' keys
/// never collide), else a fresh time-ordered UUIDv7.
pub fn job_id_for(namespaced_chat: &TenantChatId, idempotency_key: Option<&str>) -> Uuid {
    match idempotency_key {
        Some(key) => {
            let name = format!("{namespaced_chat}\u{0}{key}");
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())
        }
        None => Uuid::now_v7(),
    }
}

/// The public API.
pub struct MemoryApi {
    pub publisher: JobPublisher,
    pub store: StoreClient,
    pub limits: Limits,
    pub audit: AuditSink,
    /// Refuses updates while the queue is too deep; shared, it caches depths.
    pub backpressure: std::sync::Arc<Backpressure>,
    /// Chats whose owner memory-store confirmed recently.
    pub owners: std::sync::Arc<OwnerCache>,
    /// memory-store reads, and reads that wait for a version.
    pub reads: Reads,
    pub watches: Watches,
    /// Deletions are announced here (`job_queue::changes`).
    pub changes: ChangeAnnouncer,
}

/// Publishes the change events the gateway itself causes (acceptances and
/// deletions); best effort (see `job_queue::changes`).
#[derive(Clone)]
pub struct ChangeAnnouncer(pub std::sync::Arc<job_queue::changes::Publisher>);

impl ChangeAnnouncer {
    async fn announce(&self, event: job_queue::changes::MemoryChanged) {
        if let Err(e) = self.0.publish(event).await {
            tracing::warn!(error = %e, "change event not published; caches and watch streams catch up at their next check");
        }
    }
}

fn access(ctx: &CallContext) -> Access {
    Access {
        tenant: ctx.principal.tenant.clone(),
        user: ctx.principal.user.clone(),
        acts_for_tenant: ctx.principal.acts_for_tenant(),
    }
}

/// SHA-256 of the messages' protobuf encoding, hex: equal for a retry of the
/// same request, different when a key is reused for other messages.
fn request_digest<'a>(
    messages: impl Iterator<Item = &'a chat_memory_proto::v1::ChatMessage>,
) -> String {
    use prost::Message as _;
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for m in messages {
        hasher.update(m.encode_length_delimited_to_vec());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who writes, as far as ownership goes: the user, or the whole tenant for a
/// service token acting for it.
fn writer_key(ctx: &CallContext) -> String {
    format!(
        "{}\u{0}{}",
        ctx.principal.user,
        ctx.principal.acts_for_tenant()
    )
}

/// The chat id a client may see: the public part of a namespaced id of its tenant.
fn public_chat(ctx: &CallContext, namespaced: &str) -> Result<String, GatewayError> {
    TenantChatId::parse_in(&ctx.principal.tenant, namespaced)
        .map(|id| id.chat().to_owned())
        // memory-store already checked the namespace; this is a second lock.
        .ok_or(GatewayError::NotFound("chat"))
}

impl MemoryApi {
    async fn update(
        &self,
        ctx: &CallContext,
        facts: &mut Facts,
        req: UpdateMemoryRequest,
    ) -> Result<UpdateMemoryResponse, GatewayError> {
        let cmd = UpdateCommand::parse(req, &self.limits)?;
        facts.chat_id = cmd.chat_id.as_str().to_owned();
        let chat_id = cmd.chat_id.namespaced(&ctx.principal.tenant)?;
        self.backpressure
            .admit()
            .await
            .map_err(|b| GatewayError::Backlogged {
                what: b.what,
                retry_after: b.retry_after,
            })?;
        // First writer owns the chat. While memory-store is down the update is
        // still accepted; memory-store then checks ownership before applying it.
        // A writer confirmed recently skips the round trip (see `owners`).
        let writer = writer_key(ctx);
        if !self.owners.confirmed(chat_id.as_str(), &writer) {
            let claim = store_pb::ClaimChatRequest {
                chat_id: chat_id.to_string(),
                access: Some(access(ctx)),
            };
            match self.store.clone().claim_chat(claim).await {
                Ok(_) => self.owners.remember(chat_id.as_str(), &writer),
                Err(status) => match GatewayError::from_store(status, "chat") {
                    GatewayError::StoreUnavailable(s) => {
                        tracing::warn!(code = ?s.code(), "ownership not checked now: memory-store unavailable");
                    }
                    other => return Err(other),
                },
            }
        }
        let job_id = job_id_for(&chat_id, cmd.idempotency_key.as_deref());
        // A keyed update's digest: the same key with other messages is refused
        // below rather than answered "deduplicated" while its messages are dropped.
        let request_hash = cmd
            .idempotency_key
            .as_ref()
            .map(|_| request_digest(cmd.messages.iter().map(|m| &m.0)))
            .unwrap_or_default();
        facts.job_id = job_id.to_string();
        let message_count = u32::try_from(cmd.messages.len()).unwrap_or(u32::MAX);
        let job = UpdateJob {
            job_id: job_id.to_string(),
            chat_id: chat_id.into_string(),
            messages: cmd.messages.into_iter().map(|m| m.0).collect(),
            accepted_at: Some(to_timestamp(Utc::now())),
            idempotency_key: cmd.idempotency_key.clone().unwrap_or_default(),
            owner_user: ctx.principal.user.clone(),
            acts_for_tenant: ctx.principal.acts_for_tenant(),
        };
        let published = self.publisher.publish(&job).await.map_err(|e| match e {
            job_queue::QueueError::ChatBacklogged { depth, .. } => GatewayError::Backlogged {
                what: format!("{depth} jobs queued for this chat"),
                retry_after: self.backpressure.retry_after(),
            },
            other => GatewayError::from_queue(other),
        })?;
        tracing::info!(job_id = %job.job_id, stream_seq = published.sequence, messages = message_count, duplicate = published.duplicate, "update accepted");
        // The job is durable now. Registering it makes its status and the chat's
        // pending count visible at once; if memory-store is down, the worker
        // registers it when it runs, so the update is still accepted.
        let record = store_pb::RecordAcceptedRequest {
            job_id: job.job_id.clone(),
            chat_id: job.chat_id.clone(),
            stream_seq: published.sequence,
            message_count,
            idempotency_key: job.idempotency_key.clone(),
            accepted_at: job.accepted_at,
            request_hash,
        };
        let repeated = match self.store.clone().record_accepted(record).await {
            Ok(r) => r.into_inner().earlier_acceptance,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(GatewayError::Invalid(FieldViolation {
                    field: "idempotency_key".to_owned(),
                    reason: "already used for a different request in this chat; \
                             send new messages with a new key"
                        .to_owned(),
                }));
            }
            Err(status) => {
                tracing::warn!(job_id = %job.job_id, code = ?status.code(), "could not register accepted job; the worker will");
                false
            }
        };
        // The chat's pending count changed: cached reads of it are dropped.
        self.changes
            .announce(job_queue::changes::MemoryChanged {
                chat_id: job.chat_id,
                accepted_job_ids: vec![job.job_id.clone()],
                ..Default::default()
            })
            .await;
        Ok(UpdateMemoryResponse {
            job_id: job.job_id,
            deduplicated: published.duplicate || repeated,
        })
    }

    async fn get(
        &self,
        ctx: &CallContext,
        facts: &mut Facts,
        req: GetMemoryRequest,
    ) -> Result<GetMemoryResponse, GatewayError> {
        let query = ReadQuery::parse(&req, &self.limits)?;
        facts.chat_id = query.chat_id.as_str().to_owned();
        let chat_id = query.chat_id.namespaced(&ctx.principal.tenant)?;
        let (resp, condition) = match &query.condition {
            None => (
                self.reads.read(&access(ctx), &chat_id).await?,
                ReadCondition::Unspecified,
            ),
            Some(condition) => {
                let (resp, met) = self
                    .reads
                    .read_when(&access(ctx), &chat_id, condition)
                    .await?;
                facts.detail = format!("condition={}", met.as_str_name());
                (resp, met)
            }
        };
        Ok(GetMemoryResponse {
            chat_id: public_chat(ctx, &resp.chat_id)?,
            memory: resp.memory,
            freshness: resp.freshness,
            condition: condition.into(),
        })
    }

    async fn status(
        &self,
        ctx: &CallContext,
        facts: &mut Facts,
        req: GetUpdateStatusRequest,
    ) -> Result<GetUpdateStatusResponse, GatewayError> {
        let job_id = JobId::parse(&req.job_id)?;
        facts.job_id = job_id.0.to_string();
        let job = self
            .store
            .clone()
            .get_job(store_pb::GetJobRequest {
                job_id: job_id.0.to_string(),
                access: Some(access(ctx)),
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "job"))?
            .into_inner();
        let chat_id = public_chat(ctx, &job.chat_id)?;
        facts.chat_id.clone_from(&chat_id);
        Ok(GetUpdateStatusResponse {
            job_id: job.job_id,
            chat_id,
            state: job.state,
            attempts: job.attempts,
            error: job.error,
            resulting_version: job.resulting_version,
            accepted_at: job.accepted_at,
            updated_at: job.updated_at,
            applied_in_call: job.applied_in_call,
        })
    }

    async fn delete(
        &self,
        ctx: &CallContext,
        facts: &mut Facts,
        req: DeleteMemoryRequest,
    ) -> Result<DeleteMemoryResponse, GatewayError> {
        let chat_id = ChatId::parse(&req.chat_id, &self.limits)?;
        facts.chat_id = chat_id.as_str().to_owned();
        let namespaced = chat_id.namespaced(&ctx.principal.tenant)?;
        self.owners.forget(namespaced.as_str());
        // Every job accepted before this point has a sequence <= through: those
        // still queued are discarded by the worker instead of re-creating the memory.
        let through = self
            .publisher
            .last_sequence()
            .await
            .map_err(GatewayError::from_queue)?;
        let resp = self
            .store
            .clone()
            .delete_chat(store_pb::DeleteChatRequest {
                chat_id: namespaced.to_string(),
                through_stream_seq: through,
                access: Some(access(ctx)),
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "memory"))?
            .into_inner();
        facts.detail = format!(
            "memory_deleted={} jobs_removed={}",
            resp.memory_deleted, resp.jobs_removed
        );
        // This gateway's cache forgets the chat before the answer goes out;
        // other gateways and watch streams learn it from the event (and find
        // it at their next read if the event is lost).
        self.reads.cache().drop_chat(namespaced.as_str());
        self.changes
            .announce(job_queue::changes::MemoryChanged {
                chat_id: namespaced.into_string(),
                deleted: true,
                ..Default::default()
            })
            .await;
        Ok(DeleteMemoryResponse {
            memory_deleted: resp.memory_deleted,
            jobs_removed: resp.jobs_removed,
        })
    }

    async fn audit_query(
        &self,
        ctx: &CallContext,
        facts: &mut Facts,
        req: QueryAuditRequest,
    ) -> Result<QueryAuditResponse, GatewayError> {
        if !req.chat_id.is_empty() {
            facts.chat_id = ChatId::parse(&req.chat_id, &self.limits)?
                .as_str()
                .to_owned();
        }
        let resp = self
            .store
            .clone()
            .query_audit(store_pb::QueryAuditRequest {
                tenant: ctx.principal.tenant.clone(),
                filter: Some(req),
            })
            .await
            .map_err(|s| GatewayError::from_store(s, "audit"))?
            .into_inner();
        Ok(QueryAuditResponse {
            entries: resp.entries,
        })
    }

    /// Writes the call's audit row and turns the result into the gRPC answer.
    async fn finish<T>(
        &self,
        ctx: &CallContext,
        action: Action,
        facts: Facts,
        result: Result<T, GatewayError>,
    ) -> Result<Response<T>, Status> {
        let (answer, outcome) = match result {
            Ok(value) => (Ok(Response::new(value)), tonic::Code::Ok),
            Err(e) => {
                let status = Status::from(e);
                let code = status.code();
                (Err(status), code)
            }
        };
        let recorded = self
            .audit
            .record(Row {
                request_id: ctx.request_id,
                tenant: ctx.principal.tenant.clone(),
                user: ctx.principal.user.clone(),
                action,
                outcome,
                facts,
            })
            .await;
        match recorded {
            // A memory is never handed out unaudited. Other calls keep their answer:
            // an accepted update stays accepted, a refusal stays a refusal (the lost
            // row is logged and counted).
            Err(e)
                if matches!(action, Action::Read | Action::Watch) && outcome == tonic::Code::Ok =>
            {
                Err(GatewayError::Unaudited(e).into())
            }
            _ => answer,
        }
    }
}

/// The caller the gate admitted. Missing only if a service was mounted without
/// the gate: refuse rather than serve anonymously.
fn context<T>(request: &Request<T>) -> Result<CallContext, Status> {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .ok_or_else(|| {
            Status::from(GatewayError::Unauthenticated(
                crate::auth::AuthError::Missing,
            ))
        })
}

#[tonic::async_trait]
impl MemoryService for MemoryApi {
    async fn update_memory(
        &self,
        request: Request<UpdateMemoryRequest>,
    ) -> Result<Response<UpdateMemoryResponse>, Status> {
        let ctx = context(&request)?;
        let mut facts = Facts::default();
        let result = self.update(&ctx, &mut facts, request.into_inner()).await;
        self.finish(&ctx, Action::Update, facts, result).await
    }

    async fn get_memory(
        &self,
        request: Request<GetMemoryRequest>,
    ) -> Result<Response<GetMemoryResponse>, Status> {
        let ctx = context(&request)?;
        let mut facts = Facts::default();
        let waits = request.get_ref().wait_ms > 0;
        let result = self.get(&ctx, &mut facts, request.into_inner()).await;
        let mut answer = self.finish(&ctx, Action::Read, facts, result).await?;
        if waits {
            answer.extensions_mut().insert(crate::metrics::WaitedRead);
        }
        Ok(answer)
    }

    type WatchMemoryStream = WatchStream;

    async fn watch_memory(
        &self,
        request: Request<WatchMemoryRequest>,
    ) -> Result<Response<Self::WatchMemoryStream>, Status> {
        let ctx = context(&request)?;
        let mut facts = Facts::default();
        let opened = self
            .watches
            .open(access(&ctx), &mut facts, request.into_inner())
            .await;
        // The opening row is written (durably) before the first event goes out.
        let opened = self.finish(&ctx, Action::Watch, facts, opened).await?;
        Ok(Response::new(self.watches.serve(ctx, opened.into_inner())))
    }

    async fn get_update_status(
        &self,
        request: Request<GetUpdateStatusRequest>,
    ) -> Result<Response<GetUpdateStatusResponse>, Status> {
        let ctx = context(&request)?;
        let mut facts = Facts::default();
        let result = self.status(&ctx, &mut facts, request.into_inner()).await;
        self.finish(&ctx, Action::Status, facts, result).await
    }

    async fn delete_memory(
        &self,
        request: Request<DeleteMemoryRequest>,
    ) -> Result<Response<DeleteMemoryResponse>, Status> {
        let ctx = context(&request)?;
        let mut facts = Facts::default();
        let result = self.delete(&ctx, &mut facts, request.into_inner()).await;
        self.finish(&ctx, Action::Delete, facts, result).await
    }

    async fn query_audit(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<QueryAuditResponse>, Status> {
        let ctx = context(&request)?;
        let mut facts = Facts::default();
        let result = self
            .audit_query(&ctx, &mut facts, request.into_inner())
            .await;
        self.finish(&ctx, Action::Audit, facts, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_idempotency_key_gives_the_same_job_id_per_tenant_and_chat() {
        let id = |s: &str| TenantChatId::parse(s).expect("valid");
        let (ta, tb, ua) = (id("t/a"), id("t/b"), id("u/a"));
        assert_eq!(job_id_for(&ta, Some("k1")), job_id_for(&ta, Some("k1")));
        assert_ne!(job_id_for(&ta, Some("k1")), job_id_for(&ta, Some("k2")));
        assert_ne!(job_id_for(&ta, Some("k1")), job_id_for(&tb, Some("k1")));
        assert_ne!(job_id_for(&ta, Some("k1")), job_id_for(&ua, Some("k1")));
        assert_ne!(job_id_for(&ta, None), job_id_for(&ta, None));
    }
}
