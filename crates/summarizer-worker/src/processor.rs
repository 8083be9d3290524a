//! One job, start to finish: `BeginJob` (is it still to be applied? what is the
//! prior memory?), the agent call, then `CommitJob` (the conditional write).
//!
//! Failures are sorted here:
//! - agent unavailable or timing out: retried with backoff up to `retry.max_attempts`,
//!   then the job ends FAILED with its reason (recorded, then acknowledged);
//! - agent rejects the input or returns unusable output: FAILED at once;
//! - memory-store unavailable: retried for `retry.store_retry_ms`, then the delivery is
//!   abandoned unacknowledged so JetStream redelivers it; a job never fails because
//!   storage was down.

use std::time::{Duration, Instant};

use tonic::{Code, Status, transport::Channel};
use tracing::Instrument;
use uuid::Uuid;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::store::{
    BeginJobRequest, CommitJobRequest, CommitOutcome, FailJobRequest, MemoryContent, SkipReason,
    memory_store_client::MemoryStoreClient,
};
use chat_memory_proto::v1::{Role as ProtoRole, TokenCounts};
use summarizer_agent::client::{AgentClient, AgentClientError};
use summarizer_agent::tool::{
    InputMessage, PriorMemory, Role, SummarizeInput, SummarizeOutput, TokenLimits,
};

use crate::backoff;
use crate::settings::RetrySettings;

/// A job as delivered by JetStream.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job: UpdateJob,
    /// Stream sequence: the job's place in acceptance order.
    pub stream_seq: u64,
    /// JetStream delivery count (1 on first delivery).
    pub delivered: u32,
}

/// What happened to a job that is finished with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The memory now includes this job, at `version`.
    Applied { version: i64 },
    /// Not applied, on purpose (already applied, superseded, chat deleted, already failed).
    Skipped(SkipReason),
    /// Ended FAILED, with the reason recorded in memory-store.
    Failed(String),
    /// The message is not a valid job; nothing could be recorded.
    Poison(String),
}

/// What to do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Finished: acknowledge.
    Ack(Outcome),
    /// Could not finish now: leave unacknowledged; JetStream redelivers after ack_wait.
    Abandon,
}

#[derive(Debug)]
enum StepError {
    Store(Status),
    Agent(AgentClientError),
    /// memory-store refused the job's content as invalid: retrying cannot help.
    Rejected(Status),
    VersionConflict,
}

/// Runs jobs; cheap to clone (shared clients).
#[derive(Clone)]
pub struct Processor {
    store: StoreClient,
    agent: AgentClient,
    retry: RetrySettings,
    limits: TokenLimits,
}

impl Processor {
    pub fn new(
        store: StoreClient,
        agent: AgentClient,
        retry: RetrySettings,
        limits: TokenLimits,
    ) -> Self {
        Self {
            store,
            agent,
            retry,
            limits,
        }
    }

    /// Processes one delivery to a disposition. Never panics on input.
    pub async fn handle(&self, d: &Delivery) -> Disposition {
        if let Err(reason) = check_job(&d.job) {
            return Disposition::Ack(Outcome::Poison(reason));
        }
        let started = Instant::now();
        let store_budget = Duration::from_millis(self.retry.store_retry_ms);
        let (mut agent_failures, mut store_retries) = (0u32, 0u32);
        loop {
            let attempt = d.delivered.saturating_add(agent_failures);
            let error = match self.try_once(d, attempt).await {
                Ok(outcome) => return Disposition::Ack(outcome),
                Err(e) => e,
            };
            match error {
                StepError::VersionConflict | StepError::Store(_) => {
                    if let StepError::Store(s) = &error {
                        tracing::warn!(job_id = %d.job.job_id, code = ?s.code(), error = %s.message(), "memory-store call failed");
                    }
                    if started.elapsed() >= store_budget {
                        tracing::warn!(job_id = %d.job.job_id, "leaving the job for redelivery");
                        return Disposition::Abandon;
                    }
                    store_retries += 1;
                    tokio::time::sleep(self.backoff(store_retries)).await;
                }
                StepError::Agent(e) if e.is_transient() => {
                    agent_failures += 1;
                    crate::metrics::get().update("retried");
                    tracing::warn!(job_id = %d.job.job_id, attempt, error = %e, "agent call failed");
                    if agent_failures >= self.retry.max_attempts {
                        return self
                            .fail(
                                d,
                                attempt,
                                format!("agent unavailable after {agent_failures} attempts: {e}"),
                            )
                            .await;
                    }
                    crate::metrics::get().update("retried");
                    self.record_attempt(d, attempt, &e.to_string()).await;
                    tokio::time::sleep(self.backoff(agent_failures)).await;
                }
                StepError::Agent(e) => {
                    return self
                        .fail(d, attempt, format!("agent rejected the job: {e}"))
                        .await;
                }
                StepError::Rejected(s) => {
                    return self
                        .fail(
                            d,
                            attempt,
                            format!("memory-store rejected the job: {}", s.message()),
                        )
                        .await;
                }
            }
        }
    }

    async fn try_once(&self, d: &Delivery, attempt: u32) -> Result<Outcome, StepError> {
        let job = &d.job;
        let begin = self
            .store
            .clone()
            .begin_job(BeginJobRequest {
                job_id: job.job_id.clone(),
                chat_id: job.chat_id.clone(),
                stream_seq: d.stream_seq,
                attempt,
                message_count: u32::try_from(job.messages.len()).unwrap_or(u32::MAX),
                accepted_at: job.accepted_at,
                access: job_access(job),
            })
            .await
            .map_err(classify_store)?
            .into_inner();
        let skip = SkipReason::try_from(begin.skip).unwrap_or(SkipReason::Unspecified);
        if skip != SkipReason::Unspecified {
            return Ok(Outcome::Skipped(skip));
        }
        let input = SummarizeInput {
            chat_id: job.chat_id.clone(),
            prior: begin.prior.map(|p| PriorMemory {
                user_confirmed: p.user_confirmed,
                llm_inferred: p.llm_inferred,
                general_summary: p.general_summary,
                state_json: (!p.state_json.is_empty()).then_some(p.state_json),
            }),
            messages: input_messages(job),
            limits: self.limits,
        };
        let span = tracing::info_span!(
            "call summarizer agent",
            otel.name = "tools/call summarize",
            otel.kind = "client",
            mcp.method.name = "tools/call",
            gen_ai.tool.name = "summarize",
            attempt,
        );
        let called = Instant::now();
        let output = self.agent.summarize(&input).instrument(span).await;
        crate::metrics::get().agent_call(output.is_ok(), called.elapsed());
        let output = output.map_err(StepError::Agent)?;
        let commit = self
            .store
            .clone()
            .commit_job(CommitJobRequest {
                job_id: job.job_id.clone(),
                chat_id: job.chat_id.clone(),
                stream_seq: d.stream_seq,
                expected_version: begin.prior_version,
                content: Some(memory_content(output)),
                attempt,
            })
            .await
            .map_err(classify_store)?
            .into_inner();
        match CommitOutcome::try_from(commit.outcome) {
            Ok(CommitOutcome::Applied) => Ok(Outcome::Applied {
                version: commit.version,
            }),
            Ok(CommitOutcome::AlreadyApplied) => Ok(Outcome::Skipped(SkipReason::AlreadyApplied)),
            Ok(CommitOutcome::Superseded) => Ok(Outcome::Skipped(SkipReason::Superseded)),
            Ok(CommitOutcome::ChatDeleted) => Ok(Outcome::Skipped(SkipReason::ChatDeleted)),
            Ok(CommitOutcome::VersionConflict) => Err(StepError::VersionConflict),
            Ok(CommitOutcome::Unspecified) | Err(_) => Err(StepError::Store(Status::internal(
                format!("unknown commit outcome {}", commit.outcome),
            ))),
        }
    }

    /// Ends the job FAILED. If that cannot be recorded, the delivery is abandoned
    /// (redelivered later) rather than acknowledged with no trace.
    async fn fail(&self, d: &Delivery, attempt: u32, reason: String) -> Disposition {
        tracing::error!(job_id = %d.job.job_id, attempt, reason = %reason, "job failed");
        let request = fail_request(d, attempt, &reason, true);
        match self.store.clone().fail_job(request).await {
            Ok(_) => Disposition::Ack(Outcome::Failed(reason)),
            Err(s) if s.code() == Code::InvalidArgument => {
                Disposition::Ack(Outcome::Poison(reason))
            }
            Err(s) => {
                tracing::warn!(job_id = %d.job.job_id, code = ?s.code(), "could not record the failure; leaving the job for redelivery");
                Disposition::Abandon
            }
        }
    }

    /// Records a transient failure so `GetUpdateStatus` shows it; best effort.
    async fn record_attempt(&self, d: &Delivery, attempt: u32, error: &str) {
        if let Err(s) = self
            .store
            .clone()
            .fail_job(fail_request(d, attempt, error, false))
            .await
        {
            tracing::debug!(job_id = %d.job.job_id, code = ?s.code(), "could not record attempt");
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        backoff::delay(
            retry,
            Duration::from_millis(self.retry.initial_backoff_ms),
            Duration::from_millis(self.retry.max_backoff_ms),
        )
    }
}

fn fail_request(d: &Delivery, attempt: u32, error: &str, terminal: bool) -> FailJobRequest {
    FailJobRequest {
        job_id: d.job.job_id.clone(),
        chat_id: d.job.chat_id.clone(),
        stream_seq: d.stream_seq,
        attempt,
        error: error.to_owned(),
        terminal,
    }
}

/// memory-store's answer sorted into retry-later and give-up.
fn classify_store(s: Status) -> StepError {
    match s.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StepError::Rejected(s)
        }
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => StepError::Store(s),
    }
}

/// A job that cannot be processed at all (the gateway validated it, so this means
/// a foreign or corrupted message).
fn check_job(job: &UpdateJob) -> Result<(), String> {
    if Uuid::parse_str(&job.job_id).is_err() {
        return Err("job_id is not a UUID".into());
    }
    if job.chat_id.is_empty() {
        return Err("chat_id is empty".into());
    }
    if job.messages.is_empty() {
        return Err("job has no messages".into());
    }
    Ok(())
}

/// Messages for the agent; each carries an id for provenance: the client's own
/// message id, or `<job_id>#<index>`.
fn input_messages(job: &UpdateJob) -> Vec<InputMessage> {
    job.messages
        .iter()
        .enumerate()
        .map(|(i, m)| InputMessage {
            id: if m.client_message_id.is_empty() {
                format!("{}#{i}", job.job_id)
            } else {
                m.client_message_id.clone()
            },
            role: match ProtoRole::try_from(m.role) {
                Ok(ProtoRole::Assistant) => Role::Assistant,
                Ok(ProtoRole::System) => Role::System,
                Ok(ProtoRole::Tool) => Role::Tool,
                // The gateway admits only the four roles; anything else is treated as
                // the least trusted source rather than as the user.
                Ok(ProtoRole::User) => Role::User,
                Ok(ProtoRole::Unspecified) | Err(_) => Role::Tool,
            },
            content: m.content.clone(),
            // RFC 3339, so the agent can anchor "yesterday" to a date.
            sent_at: m.sent_at.as_ref().map(ToString::to_string),
        })
        .collect()
}

fn memory_content(out: SummarizeOutput) -> MemoryContent {
    MemoryContent {
        user_confirmed: out.user_confirmed,
        llm_inferred: out.llm_inferred,
        general_summary: out.general_summary,
        token_counts: Some(TokenCounts {
            user_confirmed: out.token_counts.user_confirmed,
            llm_inferred: out.token_counts.llm_inferred,
            general_summary: out.token_counts.general_summary,
            total: out.token_counts.total,
        }),
        state_json: out.state_json,
    }
}

/// memory-store's client, presenting the service token on every call.
pub type StoreClient = MemoryStoreClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        service_kit::service_auth::AttachToken,
    >,
>;

/// The requester of a job, for memory-store's ownership check: the namespace
/// is the chat id's prefix (`<tenant>/<chat>`). Jobs from before issue 4 carry
/// no owner and are applied as before.
fn job_access(
    job: &chat_memory_proto::jobs::v1::UpdateJob,
) -> Option<chat_memory_proto::store::Access> {
    let (tenant, _) = job.chat_id.split_once('/')?;
    (!job.owner_user.is_empty()).then(|| chat_memory_proto::store::Access {
        tenant: tenant.to_owned(),
        user: job.owner_user.clone(),
        acts_for_tenant: job.acts_for_tenant,
    })
}

#[cfg(test)]
mod tests {
    use chat_memory_proto::v1::ChatMessage;

    use super::*;

    fn job(messages: Vec<ChatMessage>) -> UpdateJob {
        UpdateJob {
            job_id: Uuid::nil().to_string(),
            chat_id: "c".into(),
            messages,
            ..Default::default()
        }
    }

    #[test]
    fn message_ids_prefer_the_clients_own() {
        let j = job(vec![
            ChatMessage {
                role: ProtoRole::User as i32,
                content: "a".into(),
                client_message_id: "m-1".into(),
                sent_at: None,
            },
            ChatMessage {
                role: ProtoRole::Assistant as i32,
                content: "b".into(),
                ..Default::default()
            },
        ]);
        let ids: Vec<_> = input_messages(&j).into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec!["m-1".to_owned(), format!("{}#1", Uuid::nil())]);
    }

    #[test]
    fn an_unknown_role_is_never_treated_as_the_user() {
        let j = job(vec![ChatMessage {
            role: 99,
            content: "x".into(),
            ..Default::default()
        }]);
        assert_eq!(input_messages(&j)[0].role, Role::Tool);
    }

    #[test]
    fn invalid_jobs_are_poison() {
        assert!(check_job(&job(vec![])).is_err());
        let mut j = job(vec![ChatMessage::default()]);
        j.job_id = "nope".into();
        assert!(check_job(&j).is_err());
    }
}
