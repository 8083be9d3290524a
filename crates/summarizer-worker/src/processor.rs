//! A batch of one chat's jobs (one job, or several waiting ones coalesced), start
//! to finish: `BeginJobs` (which are still to be applied? what is the prior
//! memory?), one agent call over all their messages in order, then `CommitJobs`
//! (the conditional write of the memory and every job's state, in one transaction).
//!
//! Failures are sorted here:
//! - agent unavailable or timing out: retried with backoff up to `retry.max_attempts`,
//!   then the job ends FAILED with its reason (recorded, then acknowledged);
//! - agent rejects the input or returns unusable output: FAILED at once (a
//!   coalesced batch is first split into single jobs, so only the job the agent
//!   cannot take fails);
//! - memory-store unavailable: retried for `retry.store_retry_ms`, then the delivery is
//!   abandoned unacknowledged so JetStream redelivers it; a job never fails because
//!   storage was down;
//! - agent circuit open ([`crate::circuit`]): the job waits for a permit without
//!   spending an attempt (the scheduler keeps the messages alive with progress
//!   acks meanwhile);
//! - model provider rate limited (429): waits at least its `Retry-After`, with
//!   backoff, without spending an attempt (the agent does not wait itself);
//! - the number of agent calls in flight is bounded per worker
//!   (`agent.max_concurrent_calls`); a batch waits for a slot, holding nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::{Code, Status};
use tracing::Instrument;
use uuid::Uuid;

use chat_memory_proto::jobs::v1::{MemoryChanged, UpdateJob};
use chat_memory_proto::store::{
    BeginJobRequest, BeginJobsRequest, CommitJobsRequest, CommitOutcome, CommittedJob,
    FailJobRequest, SkipReason,
};
use service_kit::gather::BatchSettings;
use summarizer_contract::client::{AgentClient, AgentClientError};
use summarizer_contract::tool::{PriorMemory, SummarizeInput, TokenLimits};

use crate::circuit::{CircuitBreaker, CircuitState, Permit};
use crate::convert::{applied_event, batch_messages, check_job, job_access, memory_content};
use crate::settings::RetrySettings;
pub use crate::store::StoreClient;
use crate::store::{Begins, Commits};

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
    /// The model provider refused the call for its rate or concurrency limit
    /// (HTTP 429, after the agent waited out any Retry-After within its
    /// deadline): back off and call again, spending no attempt.
    RateLimited(AgentClientError),
    /// memory-store refused the job's content as invalid: retrying cannot help.
    Rejected(Status),
    VersionConflict,
}

/// Runs jobs; cheap to clone (shared clients).
#[derive(Clone)]
pub struct Processor {
    store: StoreClient,
    /// BeginJobs calls of batches that start together, gathered.
    begins: Begins,
    /// CommitJobs calls of batches whose model calls end together, gathered.
    commits: Commits,
    agent: AgentClient,
    retry: RetrySettings,
    /// Shared by all chats: the agent is one dependency.
    circuit: CircuitBreaker,
    /// Agent calls in flight in this worker, at most `agent.max_concurrent_calls`.
    calls: Arc<Semaphore>,
    limits: TokenLimits,
    /// Where committed changes are announced (`job_queue::changes`); `None` in
    /// unit tests without NATS.
    changes: Option<ChangePublisher>,
}

/// Announces committed changes on core NATS, best effort: a lost event only
/// delays a watcher or waiting reader until its next check.
#[derive(Clone)]
pub struct ChangePublisher(pub Arc<job_queue::changes::Publisher>);

impl ChangePublisher {
    async fn publish(&self, event: MemoryChanged) {
        if let Err(e) = self.0.publish(event).await {
            crate::metrics::get().change_event_lost();
            tracing::warn!(error = %e, "change event not published; watchers catch up at their next check");
        }
    }
}

impl Processor {
    /// Starts the gathering of BeginJobs and CommitJobs calls on the current runtime.
    pub fn new(
        store: StoreClient,
        batches: &BatchSettings,
        agent: AgentClient,
        retry: RetrySettings,
        circuit: CircuitBreaker,
        max_concurrent_calls: u32,
        limits: TokenLimits,
    ) -> Self {
        Self {
            begins: Begins::start(store.clone(), batches),
            commits: Commits::start(store.clone(), batches),
            store,
            agent,
            retry,
            circuit,
            calls: Arc::new(Semaphore::new(max_concurrent_calls as usize)),
            limits,
            changes: None,
        }
    }

    /// Announces every commit and every final failure on `changes`.
    #[must_use]
    pub fn with_changes(mut self, changes: ChangePublisher) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Processes one delivery to a disposition. Never panics on input.
    pub async fn handle(&self, d: &Delivery) -> Disposition {
        self.handle_batch(std::slice::from_ref(d))
            .await
            .pop()
            .unwrap_or(Disposition::Abandon)
    }

    /// Processes a batch of one chat's deliveries (increasing sequence) to one
    /// disposition per delivery, in order. Never panics on input.
    pub async fn handle_batch(&self, batch: &[Delivery]) -> Vec<Disposition> {
        if let Some(poison) = batch.iter().find_map(|d| check_job(&d.job).err()) {
            if batch.len() == 1 {
                return vec![Disposition::Ack(Outcome::Poison(poison))];
            }
            return self.one_by_one(batch).await;
        }
        match self.run_batch(batch).await {
            BatchResult::Done(dispositions) => dispositions,
            BatchResult::Split => self.one_by_one(batch).await,
        }
    }

    /// The jobs of a batch the agent refused, each on its own, in order: only
    /// the job it cannot take fails.
    async fn one_by_one(&self, batch: &[Delivery]) -> Vec<Disposition> {
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            let disposition = Box::pin(self.handle_batch(std::slice::from_ref(d)))
                .await
                .pop()
                .unwrap_or(Disposition::Abandon);
            if push_in_order(&mut out, disposition, batch.len()) {
                break;
            }
        }
        out
    }

    async fn run_batch(&self, batch: &[Delivery]) -> BatchResult {
        let Some(d) = batch.first() else {
            return BatchResult::Done(Vec::new());
        };
        let all = |disposition: Disposition| BatchResult::Done(vec![disposition; batch.len()]);
        // memory-store's retries are bounded from its first failure in a
        // row (not from the batch's start: waits for a rate limit or an open
        // circuit, and the model call itself, spend none of it).
        let mut store_failing_since: Option<Instant> = None;
        let store_budget = Duration::from_millis(self.retry.store_retry_ms);
        let (mut agent_failures, mut store_retries, mut rate_limits) = (0u32, 0u32, 0u32);
        let mut outages = 0u32;
        loop {
            let attempt = d.delivered.saturating_add(agent_failures);
            let permit = self.agent_permit(d).await;
            let mut called_at = None;
            let error = match self.try_once(batch, attempt, permit, &mut called_at).await {
                Ok(outcomes) => {
                    return BatchResult::Done(outcomes.into_iter().map(Disposition::Ack).collect());
                }
                Err(e) => e,
            };
            if !matches!(error, StepError::VersionConflict | StepError::Store(_)) {
                // Every other failure comes after a BeginJobs that succeeded.
                store_failing_since = None;
            }
            match error {
                StepError::VersionConflict | StepError::Store(_) => {
                    if let StepError::Store(s) = &error {
                        tracing::warn!(job_id = %d.job.job_id, code = ?s.code(), error = %s.message(), "memory-store call failed");
                    }
                    let since = *store_failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= store_budget {
                        tracing::warn!(job_id = %d.job.job_id, jobs = batch.len(), "leaving the jobs for redelivery");
                        return all(Disposition::Abandon);
                    }
                    store_retries += 1;
                    tokio::time::sleep(self.backoff(store_retries)).await;
                }
                StepError::AgentOutage(e) => {
                    outages = outages.saturating_add(1);
                    if self
                        .circuit
                        .max_failed_calls_per_job()
                        .is_some_and(|max| outages >= max)
                    {
                        // Its own calls keep failing while the circuit is
                        // open: likely this job, not the agent (D-19). A
                        // coalesced batch is tried job by job first, so one
                        // such job does not fail the others with it.
                        if batch.len() > 1 {
                            return BatchResult::Split;
                        }
                        crate::metrics::get().update("outage_bound");
                        let reason = format!(
                            "agent unavailable: {outages} calls of this job failed while the circuit was open: {e}"
                        );
                        return BatchResult::Done(self.fail_all(batch, attempt, &reason).await);
                    }
                    tracing::warn!(job_id = %d.job.job_id, attempt, outages, error = %e, "agent call failed and the circuit is open; the job waits without spending an attempt");
                    self.record_attempts(batch, attempt, &e.to_string()).await;
                }
                StepError::RateLimited(e) => {
                    rate_limits = rate_limits.saturating_add(1);
                    crate::metrics::get().update("rate_limited");
                    // The provider's Retry-After, if it sent one, is the least
                    // wait; the backoff grows past it while the limit lasts.
                    let wait = self
                        .backoff(rate_limits)
                        .max(e.retry_after().unwrap_or_default());
                    tracing::info!(job_id = %d.job.job_id, attempt, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %e, "model rate limited; waiting without spending an attempt");
                    tokio::time::sleep(wait).await;
                }
                StepError::Agent(e) if e.is_transient() => {
                    agent_failures += 1;
                    crate::metrics::get().update("retried");
                    tracing::warn!(job_id = %d.job.job_id, attempt, error = %e, "agent call failed");
                    if agent_failures >= self.retry.max_attempts {
                        // A coalesced batch is tried job by job first: one
                        // job (or the batch's size) may be what fails, and a
                        // job memory-store said to skip must not be failed.
                        if batch.len() > 1 {
                            return BatchResult::Split;
                        }
                        let reason =
                            format!("agent unavailable after {agent_failures} attempts: {e}");
                        return BatchResult::Done(self.fail_all(batch, attempt, &reason).await);
                    }
                    self.record_attempts(batch, attempt, &e.to_string()).await;
                    let since_call = called_at.map(|at: Instant| at.elapsed());
                    tokio::time::sleep(retry_wait(self.backoff(agent_failures), since_call)).await;
                }
                StepError::Agent(_) | StepError::Rejected(_) if batch.len() > 1 => {
                    return BatchResult::Split;
                }
                StepError::Agent(e) => {
                    let reason = format!("agent rejected the job: {e}");
                    return BatchResult::Done(self.fail_all(batch, attempt, &reason).await);
                }
                StepError::Rejected(s) => {
                    let reason = format!("memory-store rejected the job: {}", s.message());
                    return BatchResult::Done(self.fail_all(batch, attempt, &reason).await);
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

    /// One attempt over the batch. `permit` (from the circuit breaker) is
    /// reported with the agent call's outcome, or dropped unused when no job
    /// needs a call.
    async fn try_once(
        &self,
        batch: &[Delivery],
        attempt: u32,
        permit: Permit,
        called_at: &mut Option<Instant>,
    ) -> Result<Vec<Outcome>, StepError> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let chat_id = first.job.chat_id.clone();
        let begin = self
            .begins
            .begin(BeginJobsRequest {
                chat_id: chat_id.clone(),
                jobs: batch.iter().map(|d| begin_request(d, attempt)).collect(),
            })
            .await
            .map_err(classify_store)?;
        if begin.skips.len() != batch.len() {
            return Err(StepError::Store(Status::internal(format!(
                "BeginJobs answered {} decisions for {} jobs",
                begin.skips.len(),
                batch.len()
            ))));
        }
        let skips: Vec<SkipReason> = begin
            .skips
            .iter()
            .map(|s| SkipReason::try_from(*s).unwrap_or(SkipReason::Unspecified))
            .collect();
        let apply: Vec<&Delivery> = batch
            .iter()
            .zip(&skips)
            .filter(|(_, s)| **s == SkipReason::Unspecified)
            .map(|(d, _)| d)
            .collect();
        if apply.is_empty() {
            return Ok(skips.into_iter().map(Outcome::Skipped).collect());
        }
        let input = SummarizeInput {
            chat_id: chat_id.clone(),
            prior: begin.prior.map(|p| PriorMemory {
                user_confirmed: p.user_confirmed,
                llm_inferred: p.llm_inferred,
                general_summary: p.general_summary,
                state_json: (!p.state_json.is_empty()).then_some(p.state_json),
            }),
            messages: batch_messages(apply.iter().map(|d| &d.job)),
            limits: self.limits,
        };
        let span = tracing::info_span!(
            "call summarizer agent",
            otel.name = "tools/call summarize",
            otel.kind = "client",
            mcp.method.name = "tools/call",
            gen_ai.tool.name = "summarize",
            attempt,
            coalesced_jobs = apply.len(),
        );
        let output = {
            // The provider's concurrency limit: wait for a slot, then call.
            let _slot = self.calls.acquire().await;
            let m = crate::metrics::get();
            m.call_started(apply.len());
            let called = Instant::now();
            *called_at = Some(called);
            let output = self.agent.summarize(&input).instrument(span).await;
            m.call_finished();
            m.agent_call(output.is_ok(), called.elapsed());
            output
        };
        let unavailable = output.as_ref().is_err_and(AgentClientError::is_transient);
        let rate_limited = output.as_ref().is_err_and(is_rate_limited);
        // A provider's rate limit is not an outage: it does not count towards
        // opening the circuit.
        let state = self
            .circuit
            .record(permit, unavailable && !rate_limited, Instant::now());
        let output = output.map_err(|e| {
            if rate_limited {
                StepError::RateLimited(e)
            } else if unavailable && state != CircuitState::Closed {
                StepError::AgentOutage(e)
            } else {
                StepError::Agent(e)
            }
        })?;
        let content = memory_content(output);
        let commit = self
            .commits
            .commit(CommitJobsRequest {
                chat_id: chat_id.clone(),
                jobs: apply
                    .iter()
                    .map(|d| CommittedJob {
                        job_id: d.job.job_id.clone(),
                        stream_seq: d.stream_seq,
                        attempt,
                    })
                    .collect(),
                expected_version: begin.prior_version,
                content: Some(content.clone()),
                call_id: Uuid::now_v7().to_string(),
                ..CommitJobsRequest::default()
            })
            .await
            .map_err(classify_store)?;
        let applied = match CommitOutcome::try_from(commit.outcome) {
            Ok(CommitOutcome::Applied) => {
                if let Some(changes) = &self.changes {
                    changes
                        .publish(applied_event(
                            &chat_id,
                            apply.iter().map(|d| d.job.job_id.clone()).collect(),
                            content,
                            &commit,
                        ))
                        .await;
                }
                Outcome::Applied {
                    version: commit.version,
                }
            }
            Ok(CommitOutcome::AlreadyApplied) => Outcome::Skipped(SkipReason::AlreadyApplied),
            Ok(CommitOutcome::Superseded) => Outcome::Skipped(SkipReason::Superseded),
            Ok(CommitOutcome::ChatDeleted) => Outcome::Skipped(SkipReason::ChatDeleted),
            Ok(CommitOutcome::VersionConflict) => return Err(StepError::VersionConflict),
            Ok(CommitOutcome::Unspecified) | Err(_) => {
                return Err(StepError::Store(Status::internal(format!(
                    "unknown commit outcome {}",
                    commit.outcome
                ))));
            }
        };
        Ok(skips
            .into_iter()
            .map(|s| {
                if s == SkipReason::Unspecified {
                    applied.clone()
                } else {
                    Outcome::Skipped(s)
                }
            })
            .collect())
    }

    /// Ends every job of the batch FAILED, in order. A job whose failure could
    /// not be recorded is left for redelivery, and so are the jobs after it
    /// (they would otherwise end before it).
    async fn fail_all(&self, batch: &[Delivery], attempt: u32, reason: &str) -> Vec<Disposition> {
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            let disposition = self.fail(d, attempt, reason.to_owned()).await;
            if push_in_order(&mut out, disposition, batch.len()) {
                break;
            }
        }
        out
    }

    /// Records a transient failure on every job of the batch; best effort.
    async fn record_attempts(&self, batch: &[Delivery], attempt: u32, error: &str) {
        for d in batch {
            self.record_attempt(d, attempt, error).await;
        }
    }

    /// Ends the job FAILED. If that cannot be recorded, the delivery is abandoned
    /// (redelivered later) rather than acknowledged with no trace.
    async fn fail(&self, d: &Delivery, attempt: u32, reason: String) -> Disposition {
        tracing::error!(job_id = %d.job.job_id, attempt, reason = %reason, "job failed");
        let request = fail_request(d, attempt, &reason, true);
        match self.store.clone().fail_job(request).await {
            Ok(_) => {
                if let Some(changes) = &self.changes {
                    changes
                        .publish(MemoryChanged {
                            chat_id: d.job.chat_id.clone(),
                            failed_job_ids: vec![d.job.job_id.clone()],
                            failed_job_seqs: vec![d.stream_seq],
                            ..Default::default()
                        })
                        .await;
                }
                Disposition::Ack(Outcome::Failed(reason))
            }
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
        self.retry.backoff().delay(retry)
    }
}

/// What a batch came to.
enum BatchResult {
    Done(Vec<Disposition>),
    /// The agent or memory-store refused the coalesced batch: run its jobs one by one.
    Split,
}

fn begin_request(d: &Delivery, attempt: u32) -> BeginJobRequest {
    let job = &d.job;
    BeginJobRequest {
        job_id: job.job_id.clone(),
        chat_id: job.chat_id.clone(),
        stream_seq: d.stream_seq,
        attempt,
        message_count: u32::try_from(job.messages.len()).unwrap_or(u32::MAX),
        accepted_at: job.accepted_at,
        access: job_access(job),
        replay: d.replay,
        // Stored by memory-store if the gateway's registration never was.
        accept_audit: job.accept_audit.clone(),
        // A keyed job's digest: kept if this registers the job, compared with
        // the registered one (a reused key is skipped, never applied).
        request_hash: if job.idempotency_key.is_empty() {
            String::new()
        } else {
            job_queue::digest::request_digest(&job.messages)
        },
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

/// The wait before retrying a failed agent call: the `backoff`, counted from
/// the failed call's start (`since_call` ago), and at least a tenth of it. A
/// call that took as long as the backoff to fail (a model answering 500 after
/// seconds) has spaced the attempts already, so its retry goes after that
/// tenth (the backoff's jitter, so calls that failed together do not all
/// retry together); one that failed fast (the agent unreachable) waits the
/// whole backoff. A lasting outage opens the circuit ([`crate::circuit`]).
fn retry_wait(backoff: Duration, since_call: Option<Duration>) -> Duration {
    backoff
        .saturating_sub(since_call.unwrap_or_default())
        .max(backoff / 10)
}

/// Whether the agent reported the model provider's rate limit (HTTP 429), as
/// the contract's `rate_limited` reason (`AgentClientError::RateLimited`).
fn is_rate_limited(e: &AgentClientError) -> bool {
    match e {
        AgentClientError::RateLimited { .. } => true,
        AgentClientError::Unavailable(_)
        | AgentClientError::Rejected { .. }
        | AgentClientError::InvalidOutput(_)
        | AgentClientError::InvalidConfig(_) => false,
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

/// Adds the next job's disposition to a batch's `out` (of `len` in all). A
/// job left for redelivery holds back the chat's later ones: they are
/// abandoned too, and `true` says the batch is done.
fn push_in_order(out: &mut Vec<Disposition>, disposition: Disposition, len: usize) -> bool {
    let abandon = disposition == Disposition::Abandon;
    out.push(disposition);
    if abandon {
        out.resize(len, Disposition::Abandon);
    }
    abandon
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_waits_the_backoff_counted_from_the_failed_calls_start() {
        let backoff = Duration::from_millis(200);
        assert_eq!(retry_wait(backoff, None), backoff, "no call was made");
        assert_eq!(
            retry_wait(backoff, Some(Duration::from_millis(5))),
            Duration::from_millis(195),
            "a call that failed fast"
        );
        assert_eq!(
            retry_wait(backoff, Some(Duration::from_millis(1_500))),
            Duration::from_millis(20),
            "a call that took longer than the backoff to fail waits a tenth of it"
        );
    }

    #[test]
    fn only_the_contracts_rate_limited_error_is_a_rate_limit() {
        assert!(is_rate_limited(&AgentClientError::RateLimited {
            message: "model endpoint answered 429".to_owned(),
            retry_after: None,
        }));
        // The text no longer decides: an outage that mentions 429 is an outage.
        assert!(!is_rate_limited(&AgentClientError::Unavailable(
            "model endpoint answered 429 Too Many Requests".to_owned()
        )));
        assert!(!is_rate_limited(&AgentClientError::InvalidOutput(
            "answered 429".to_owned()
        )));
    }
}
