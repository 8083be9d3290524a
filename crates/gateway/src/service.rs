//! gRPC handlers of `chatmemory.v1.MemoryService`: each takes the caller from
//! the gate ([`CallContext`]), converts the request to domain types, calls the
//! domain ([`crate::accept`], [`crate::reads`], [`crate::watch`]) or
//! memory-store ([`crate::store`]) on the caller's behalf, maps the error, and
//! writes the call's one audit row.
//!
//! Isolation: chat ids are namespaced by tenant ([`ChatId::namespaced`], a
//! [`TenantChatId`]) before anything downstream sees them, and every store call
//! carries the caller's [`Access`], so memory-store answers NOT_FOUND for
//! another tenant's (or, without `memory:service` or `memory:admin`, another user's) chat or job,
//! exactly as for a missing one.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::Access;
use chat_memory_proto::v1::{
    DeleteMemoryRequest, DeleteMemoryResponse, GetMemoryRequest, GetMemoryResponse,
    GetUpdateStatusRequest, GetUpdateStatusResponse, QueryAuditRequest, QueryAuditResponse,
    ReadCondition, UpdateMemoryRequest, UpdateMemoryResponse, WatchMemoryRequest,
    memory_service_server::MemoryService,
};
use job_queue::JobPublisher;

use crate::accept::{Acceptor, Refused, Update};
use crate::audit::{Action, AuditSink, Facts, Row};
use crate::changes::ChangeAnnouncer;
use crate::error::GatewayError;
use crate::gate::CallContext;
use crate::owners::OwnerCache;
use crate::reads::Reads;
use crate::store::Store;
use crate::validation::{ChatId, JobId, Limits, ReadQuery, UpdateCommand};
use crate::watch::{WatchStream, Watches};

/// The public API.
pub struct MemoryApi {
    /// The acceptance workflow of `UpdateMemory` ([`crate::accept`]).
    pub accept: Acceptor,
    /// Where a deletion reads the sequence of the last accepted job.
    pub publisher: JobPublisher,
    pub store: Store,
    pub limits: Limits,
    pub audit: AuditSink,
    /// Chats whose owner memory-store confirmed recently (a deletion forgets one).
    pub owners: Arc<OwnerCache>,
    /// memory-store reads, and reads that wait for a version.
    pub reads: Reads,
    pub watches: Watches,
    /// Deletions are announced here (`job_queue::changes`).
    pub changes: ChangeAnnouncer,
}

fn access(ctx: &CallContext) -> Access {
    Access {
        tenant: ctx.principal.tenant.clone(),
        user: ctx.principal.user.clone(),
        acts_for_tenant: ctx.principal.acts_for_tenant(),
    }
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
        // The row an acceptance writes, sent along with its job.
        let audit = self
            .audit
            .carries_with_job()
            .then(|| row(ctx, Action::Update, tonic::Code::Ok, facts.clone()).entry());
        facts.prepared.clone_from(&audit);
        let update = Update {
            chat: cmd.chat_id.namespaced(&ctx.principal.tenant)?,
            messages: cmd.messages.into_iter().map(|m| m.0).collect(),
            idempotency_key: cmd.idempotency_key,
            audit,
        };
        match self.accept.accept(&access(ctx), update).await {
            Ok(accepted) => {
                facts.job_id = accepted.job_id.to_string();
                facts.audited_with_job = accepted.audited_with_job;
                Ok(UpdateMemoryResponse {
                    job_id: accepted.job_id.to_string(),
                    deduplicated: accepted.deduplicated,
                })
            }
            Err(Refused { job_id, error }) => {
                if let Some(job_id) = job_id {
                    facts.job_id = job_id.to_string();
                }
                Err(error)
            }
        }
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
        let job = self.store.get_job(job_id.0, &access(ctx)).await?;
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
        // Every gateway learns the deletion is coming before it is made, and
        // keeps nothing of the chat longer than its short TTL from then: if
        // this gateway dies between the commit and the `deleted` event
        // below, no other one answers the deleted memory for the settled TTL.
        let deleting = job_queue::changes::MemoryChanged {
            chat_id: namespaced.as_str().to_owned(),
            deleting: true,
            ..Default::default()
        };
        self.changes
            .announce_before(deleting.clone())
            .await
            .map_err(GatewayError::ChangesUnavailable)?;
        let resp = match self
            .store
            .delete_chat(&namespaced, through, &access(ctx))
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                // memory-store may have deleted it all the same (an answer
                // lost or late): keep every gateway's window open from now.
                self.changes.announce(deleting).await;
                return Err(e);
            }
        };
        facts.detail = format!(
            "memory_deleted={} jobs_removed={}",
            resp.memory_deleted, resp.jobs_removed
        );
        // This gateway's cache forgets the chat before the answer goes out;
        // other gateways and watch streams learn it from the event (and find
        // it at their next read if the event is lost).
        self.reads.cache().drop_deleted(namespaced.as_str());
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
        let entries = self.store.query_audit(&ctx.principal.tenant, req).await?;
        Ok(QueryAuditResponse { entries })
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
        let recorded = self.audit.record(row(ctx, action, outcome, facts)).await;
        match recorded {
            // A memory is never handed out unaudited (see `Action::answers_only_audited`).
            Err(e) if action.answers_only_audited() && outcome == tonic::Code::Ok => {
                Err(GatewayError::Unaudited(e).into())
            }
            _ => answer,
        }
    }
}

/// The audit row of a call.
fn row(ctx: &CallContext, action: Action, outcome: tonic::Code, facts: Facts) -> Row {
    Row {
        request_id: ctx.request_id,
        tenant: ctx.principal.tenant.clone(),
        user: ctx.principal.user.clone(),
        action,
        outcome,
        facts,
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
