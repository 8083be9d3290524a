//! One job, start to finish: `BeginJob` (is it still to be applied? what is the
//! prior memory?), the agent call, then `CommitJob` (the conditional write).
//!
//! Failures are sorted here:
//! - agent unavailable or timing out: retried with backoff up to `retry.max_attempts`,
//!   then the job ends FAILED with its reason (recorded, then acknowledged);
//! - agent rejects the input or returns unusable output: FAILED at once;
//! - memory-store unavailable: retried for `retry.store_retry_ms`, then the delivery is
//!   abandoned unacknowledged so JetStream redelivers it; a job never fails because
//!   storage was down;
//! - agent circuit open ([`crate::circuit`]): the job waits for a permit without
//!   spending an attempt (the partition loop keeps the message alive with
//!   progress acks meanwhile).

use std::time::{Duration, Instant};

use tonic::{Code, Status, transport::Channel};
use tracing::Instrument;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::store::{
    BeginJobRequest, CommitJobRequest, CommitOutcome, FailJobRequest, SkipReason,
    memory_store_client::MemoryStoreClient,
};
use summarizer_agent::client::{AgentClient, AgentClientError};
use summarizer_agent::tool::{PriorMemory, SummarizeInput, TokenLimits};

use crate::backoff;
use crate::circuit::{CircuitBreaker, CircuitState, Permit};
use crate::convert::{check_job, input_messages, job_access, memory_content};
use crate::settings::RetrySettings;

/// A job as delivered by JetStream.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub job: UpdateJob,
    /// Stream sequence: the job's place in acceptance order.
    pub stream_seq: u64,
    /// JetStream delivery count (1 on first delivery).
    pub delivered: u32,
    /// An operator's replay of a dead-lettered job; `stream_seq` is then the
    /// job's original sequence, so the order checks are those of the original.
    pub replay: bool,
    /// This message's own sequence (differs from `stream_seq` for a replay).
    pub message_seq: u64,
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
    /// A transient agent failure after which the circuit is not closed (this
    /// call opened it, or was the failed probe): an outage of the agent, not a
    /// problem of the job, so it spends no attempt.
    AgentOutage(AgentClientError),
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
    /// Shared by all partitions: the agent is one dependency.
    circuit: CircuitBreaker,
    limits: TokenLimits,
}

impl Processor {
    pub fn new(
        store: StoreClient,
        agent: AgentClient,
        retry: RetrySettings,
        circuit: CircuitBreaker,
        limits: TokenLimits,
    ) -> Self {
        Self {
            store,
            agent,
            retry,
            circuit,
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
            let permit = self.agent_permit(d).await;
            let error = match self.try_once(d, attempt, permit).await {
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
                StepError::AgentOutage(e) => {
                    tracing::warn!(job_id = %d.job.job_id, attempt, error = %e, "agent call failed and the circuit is open; the job waits without spending an attempt");
                    self.record_attempt(d, attempt, &e.to_string()).await;
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

    /// Waits until the circuit breaker allows an agent call. The wait spends no
    /// attempt: the job is held, not failed.
    async fn agent_permit(&self, d: &Delivery) -> Permit {
        let mut logged = false;
        loop {
            match self.circuit.try_acquire(Instant::now()) {
                Ok(permit) => return permit,
                Err(wait) => {
                    if !logged {
                        tracing::info!(job_id = %d.job.job_id, "agent circuit open; the job waits");
                        logged = true;
                    }
                    tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                }
            }
        }
    }

    /// One attempt. `permit` (from the circuit breaker) is reported with the
    /// agent call's outcome, or dropped unused when the job needs no call.
    async fn try_once(
        &self,
        d: &Delivery,
        attempt: u32,
        permit: Permit,
    ) -> Result<Outcome, StepError> {
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
                replay: d.replay,
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
        let unavailable = output.as_ref().is_err_and(AgentClientError::is_transient);
        let state = self.circuit.record(permit, unavailable, Instant::now());
        let output = output.map_err(|e| {
            if unavailable && state != CircuitState::Closed {
                StepError::AgentOutage(e)
            } else {
                StepError::Agent(e)
            }
        })?;
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

/// memory-store's client, presenting the service token on every call.
pub type StoreClient = MemoryStoreClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        service_kit::service_auth::AttachToken,
    >,
>;
