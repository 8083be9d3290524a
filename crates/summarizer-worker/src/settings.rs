//! Worker settings.

use std::net::SocketAddr;

use job_queue::QueueSettings;
use serde::{Deserialize, Serialize};
use service_kit::gather::BatchSettings;
use service_kit::grpc_client::ClientSettings;
use service_kit::settings::{SettingsError, Validate};
use service_kit::telemetry::TelemetrySettings;
use service_kit::tls::ServerTls;
use summarizer_contract::tool::TokenLimits;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address of the health endpoint (`grpc.health.v1`).
    pub listen_addr: String,
    /// TLS of the health listener (and mTLS with `tls.client_ca_path`).
    pub tls: ServerTls,
    pub nats: QueueSettings,
    pub consumer: ConsumerSettings,
    /// Folding a chat's waiting jobs into one summarizer call.
    pub coalesce: CoalesceSettings,
    pub retry: RetrySettings,
    /// The circuit breaker around the agent.
    pub circuit: CircuitSettings,
    /// How to reach memory-store.
    pub store: ClientSettings,
    /// BeginJobs calls of batches that start together, gathered into one
    /// `BeginJobsBatch` call (`max_batch` chats, `max_in_flight` calls at once).
    pub store_batches: BatchSettings,
    pub agent: AgentSettings,
    pub memory: MemoryBudget,
    /// The tokio runtime (worker threads).
    pub runtime: service_kit::entry::RuntimeSettings,
    pub telemetry: TelemetrySettings,
}

/// How jobs are taken from JetStream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// The durable consumer, shared by every worker, is `<durable_prefix>-jobs`.
    pub durable_prefix: String,
    /// A job unacknowledged this long is redelivered (its worker is presumed dead).
    /// Also the longest a chat stalls after a worker dies holding its job.
    pub ack_wait_ms: u64,
    /// Progress acks while a job is held (running or waiting); well under `ack_wait_ms`.
    pub progress_interval_ms: u64,
    /// Jobs this worker holds at once (running, or waiting behind their chat's
    /// running job). Bounds its memory and what a crash hands back.
    pub max_held_jobs: u32,
    /// The consumer's `max_ack_pending`: jobs handed out and unacknowledged
    /// over all workers. At least the sum of the workers' `max_held_jobs`.
    /// Applied when the consumer is created.
    pub max_ack_pending: i64,
    /// A job whose chat's previous job is still held by another worker is
    /// handed back with this delay (then redelivered to any worker).
    pub blocked_retry_ms: u64,
    /// On shutdown, how long an in-flight job may still run before it is handed back.
    pub shutdown_grace_ms: u64,
}

/// Coalescing: when several jobs of one chat are waiting, they go to the
/// summarizer in one call (in order), up to these bounds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CoalesceSettings {
    /// Jobs per call (1 turns coalescing off).
    pub max_jobs: u32,
    /// Chat messages per call.
    pub max_messages: u32,
    /// Estimated input tokens of the new messages per call (4 bytes a token).
    pub max_input_tokens: u32,
}

/// Retries of one delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// Agent calls per job before the job ends FAILED.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// How long one delivery keeps retrying memory-store before leaving the job to
    /// be redelivered (the job is never failed because memory-store is down).
    pub store_retry_ms: u64,
}

impl RetrySettings {
    /// The backoff between a job's retries (agent, memory-store, rate limits).
    pub fn backoff(&self) -> service_kit::backoff::Backoff {
        service_kit::backoff::Backoff::new(
            std::time::Duration::from_millis(self.initial_backoff_ms),
            std::time::Duration::from_millis(self.max_backoff_ms),
        )
    }
}

/// The circuit breaker around the agent (see [`crate::circuit`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitSettings {
    /// Off: every job calls the agent and spends its attempts (the old behaviour).
    pub enabled: bool,
    /// Outcomes of agent calls older than this are forgotten.
    pub window_ms: u64,
    /// Calls in the window before the failure rate is judged: a few unlucky
    /// calls right after start must not open the circuit.
    pub min_calls: u32,
    /// Share of failed calls in the window (1..=100) that opens the circuit.
    pub failure_rate_percent: u8,
    /// Failed calls in a row that open the circuit whatever the rate: under
    /// high traffic the window is full of successes from before an outage, and
    /// the rate alone would let jobs burn their attempts while it catches up.
    /// High enough that a provider's random errors never line up that long:
    /// at 10 % of calls failing, `k` in a row come once in about
    /// 1 / (0.9 × 0.1^k) calls (5: every 111,000 calls, every 5.6 minutes at
    /// 333 calls/s, each opening stalling every call for `open_ms`).
    pub consecutive_failures: u32,
    /// How long the circuit stays open before one probe call is let through.
    pub open_ms: u64,
    /// Calls of one job (one batch) that may fail while the circuit is not
    /// closed before the job fails as one whose attempts ran out (dead-lettered,
    /// replayable). Such failures spend no attempt, so without a bound a job
    /// that fails every call, alone on an idle agent, would keep the circuit
    /// open and wait forever; during a wide outage the probes are spread over
    /// every waiting job, so each reaches the bound far later. 0: no bound.
    pub max_failed_calls_per_job: u32,
}

/// How to reach the summarizer agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// MCP streamable-HTTP endpoint of the agent.
    pub url: String,
    /// Deadline of one agent call.
    pub call_timeout_ms: u64,
    /// Summarizer calls this worker makes at once (a model provider's
    /// concurrency limit, divided among the workers).
    pub max_concurrent_calls: u32,
    /// Bearer token the agent's MCP endpoint requires (its `service_token`).
    pub service_token: Option<service_kit::secret::Secret>,
    /// TLS of an `https://` agent: `ca_path` (the CA that signed the
    /// agent's certificate; empty: the system's roots), and `cert_path` with
    /// `key_path` when the agent requires client certificates. `domain` is
    /// not supported here: the URL's host is the name verified.
    pub tls: service_kit::tls::ClientTls,
}

impl AgentSettings {
    /// The agent client's TLS, its files read now (a missing file fails start
    /// naming its setting).
    ///
    /// # Errors
    /// [`SettingsError::Invalid`] naming the unreadable file's setting.
    pub fn tls_pem(&self) -> Result<summarizer_contract::client::AgentTls, SettingsError> {
        let read = |field: &'static str, path: &str| -> Result<Option<Vec<u8>>, SettingsError> {
            if path.is_empty() {
                return Ok(None);
            }
            std::fs::read(path)
                .map(Some)
                .map_err(|e| SettingsError::invalid(field, format!("cannot read {path}: {e}")))
        };
        let ca_pem = read("agent.tls.ca_path", &self.tls.ca_path)?;
        let identity_pem = match (
            read("agent.tls.cert_path", &self.tls.cert_path)?,
            read("agent.tls.key_path", &self.tls.key_path)?,
        ) {
            (Some(mut cert), Some(key)) => {
                // reqwest's rustls identity: the chain and the key in one PEM.
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                Some(cert)
            }
            _ => None,
        };
        Ok(summarizer_contract::client::AgentTls {
            ca_pem,
            identity_pem,
        })
    }
}

/// Token budget of each memory field, counted with the cl100k BPE.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryBudget {
    pub user_confirmed_tokens: u32,
    pub llm_inferred_tokens: u32,
    pub general_summary_tokens: u32,
    /// Budget of the three fields together.
    pub total_tokens: u32,
}

impl MemoryBudget {
    pub fn limits(&self) -> TokenLimits {
        TokenLimits {
            user_confirmed: self.user_confirmed_tokens,
            llm_inferred: self.llm_inferred_tokens,
            general_summary: self.general_summary_tokens,
            total: self.total_tokens,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen_addr: "127.0.0.1:50054".into(),
            tls: ServerTls::default(),
            nats: QueueSettings::default(),
            consumer: ConsumerSettings::default(),
            coalesce: CoalesceSettings::default(),
            retry: RetrySettings::default(),
            circuit: CircuitSettings::default(),
            store: ClientSettings::new("http://127.0.0.1:50052"),
            // Begins and commits wait up to 20 ms for each other: a job is
            // readable after a model call of seconds, and at a steady rate
            // they come one by one (docs/benchmarks.md, ninth session).
            store_batches: BatchSettings {
                linger_ms: 20,
                ..BatchSettings::default()
            },
            agent: AgentSettings::default(),
            memory: MemoryBudget::default(),
            runtime: service_kit::entry::RuntimeSettings::default(),
            telemetry: TelemetrySettings::default().with_metrics_addr("127.0.0.1:9104"),
        }
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            durable_prefix: "summarizer".into(),
            ack_wait_ms: 30_000,
            progress_interval_ms: 5_000,
            shutdown_grace_ms: 10_000,
            max_held_jobs: 2_000,
            max_ack_pending: 20_000,
            blocked_retry_ms: 200,
        }
    }
}

impl Default for CoalesceSettings {
    fn default() -> Self {
        Self {
            max_jobs: 16,
            max_messages: 200,
            max_input_tokens: 16_000,
        }
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
            store_retry_ms: 20_000,
        }
    }
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window_ms: 30_000,
            min_calls: 10,
            failure_rate_percent: 50,
            // 10 % random errors line this up once in 1.1e12 calls; a real
            // outage (every call failing, concurrently) reaches it in
            // milliseconds at high traffic.
            consecutive_failures: 12,
            open_ms: 5_000,
            // With open_ms 5 s: a job failing alone fails after about 5 min.
            max_failed_calls_per_job: 60,
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:50053/mcp".into(),
            call_timeout_ms: 30_000,
            max_concurrent_calls: 64,
            service_token: None,
            tls: service_kit::tls::ClientTls::default(),
        }
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        let d = TokenLimits::default();
        Self {
            user_confirmed_tokens: d.user_confirmed,
            llm_inferred_tokens: d.llm_inferred,
            general_summary_tokens: d.general_summary,
            total_tokens: d.total,
        }
    }
}

/// How long the worker's last acks may take to reach NATS at shutdown,
/// after its jobs are finished or handed back.
pub const FINAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// What the process's drain deadline must leave beyond `consumer.shutdown_grace_ms`:
/// the final flush, and a second for handing jobs back and joining the loops.
const SHUTDOWN_MARGIN_MS: u64 = FINAL_FLUSH.as_secs() * 1_000 + 1_000;

impl Settings {
    /// `agent.tls` fits `agent.url` and this build.
    fn validate_agent_tls(&self) -> Result<(), SettingsError> {
        let tls = &self.agent.tls;
        let https = self.agent.url.starts_with("https://");
        if !tls.domain.is_empty() {
            return Err(SettingsError::invalid(
                "agent.tls.domain",
                "is not supported for the agent: the host of agent.url is the name verified",
            ));
        }
        if tls.cert_path.is_empty() != tls.key_path.is_empty() {
            return Err(SettingsError::invalid(
                "agent.tls.cert_path",
                "cert_path and key_path must be set together",
            ));
        }
        let set = !(tls.ca_path.is_empty() && tls.cert_path.is_empty());
        if set && !https {
            return Err(SettingsError::invalid(
                "agent.tls",
                "is set, but agent.url is not https://",
            ));
        }
        if https && !summarizer_contract::tls::HTTPS {
            return Err(SettingsError::invalid(
                "agent.url",
                "is https://, but this build has no TLS (build with the `https` feature)",
            ));
        }
        Ok(())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.runtime.validate()?;
        // The process's drain deadline must leave the worker's own time to
        // finish or hand back its jobs, and then to flush those acks.
        let needed = self
            .consumer
            .shutdown_grace_ms
            .saturating_add(SHUTDOWN_MARGIN_MS);
        if self.runtime.shutdown_grace_ms < needed {
            return Err(SettingsError::invalid(
                "runtime.shutdown_grace_ms",
                format!(
                    "must be at least consumer.shutdown_grace_ms + {SHUTDOWN_MARGIN_MS} ({needed}): \
                     the jobs' grace, then the last acks' flush"
                ),
            ));
        }
        self.listen_addr
            .parse::<SocketAddr>()
            .map_err(|e| SettingsError::invalid("listen_addr", e.to_string()))?;
        self.tls.validate("tls")?;
        self.nats.validate()?;
        self.store.validate("store")?;
        self.store_batches.validate()?;
        let c = &self.consumer;
        if c.durable_prefix.is_empty()
            || !c
                .durable_prefix
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
        {
            return Err(SettingsError::invalid(
                "consumer.durable_prefix",
                "must be non-empty [A-Za-z0-9_-]",
            ));
        }
        if c.ack_wait_ms < 1_000 {
            return Err(SettingsError::invalid(
                "consumer.ack_wait_ms",
                "must be at least 1000",
            ));
        }
        // A job waiting behind its chat's batches can go two intervals and the
        // batches' acks without a progress ack: a third keeps that under ack_wait.
        if c.progress_interval_ms == 0 || c.progress_interval_ms.saturating_mul(3) > c.ack_wait_ms {
            return Err(SettingsError::invalid(
                "consumer.progress_interval_ms",
                "must be positive and at most a third of ack_wait_ms",
            ));
        }
        if c.max_held_jobs == 0 {
            return Err(SettingsError::invalid(
                "consumer.max_held_jobs",
                "must be at least 1",
            ));
        }
        if c.max_ack_pending < i64::from(c.max_held_jobs) {
            return Err(SettingsError::invalid(
                "consumer.max_ack_pending",
                "must be at least consumer.max_held_jobs",
            ));
        }
        if c.blocked_retry_ms == 0 {
            return Err(SettingsError::invalid(
                "consumer.blocked_retry_ms",
                "must be positive",
            ));
        }
        let k = &self.coalesce;
        if k.max_jobs == 0 || k.max_messages == 0 || k.max_input_tokens == 0 {
            return Err(SettingsError::invalid(
                "coalesce",
                "max_jobs, max_messages and max_input_tokens must be positive",
            ));
        }
        if self.agent.max_concurrent_calls == 0 {
            return Err(SettingsError::invalid(
                "agent.max_concurrent_calls",
                "must be at least 1",
            ));
        }
        let r = &self.retry;
        if r.max_attempts == 0 {
            return Err(SettingsError::invalid(
                "retry.max_attempts",
                "must be at least 1",
            ));
        }
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            return Err(SettingsError::invalid(
                "retry.max_backoff_ms",
                "backoffs must be positive and max >= initial",
            ));
        }
        let b = &self.circuit;
        if b.window_ms == 0 || b.open_ms == 0 || b.min_calls == 0 || b.consecutive_failures == 0 {
            return Err(SettingsError::invalid(
                "circuit",
                "window_ms, open_ms, min_calls and consecutive_failures must be positive",
            ));
        }
        if !(1..=100).contains(&b.failure_rate_percent) {
            return Err(SettingsError::invalid(
                "circuit.failure_rate_percent",
                "must be between 1 and 100",
            ));
        }
        if !(self.agent.url.starts_with("http://") || self.agent.url.starts_with("https://")) {
            return Err(SettingsError::invalid(
                "agent.url",
                "must be an http:// or https:// URL",
            ));
        }
        self.validate_agent_tls()?;
        if self.agent.call_timeout_ms == 0 {
            return Err(SettingsError::invalid(
                "agent.call_timeout_ms",
                "must be positive",
            ));
        }
        let m = &self.memory;
        if m.user_confirmed_tokens == 0
            || m.llm_inferred_tokens == 0
            || m.general_summary_tokens == 0
            || m.total_tokens == 0
        {
            return Err(SettingsError::invalid(
                "memory",
                "every token budget must be positive",
            ));
        }
        Ok(())
    }
}

service_kit::service_settings!(Settings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_acks_more_than_a_third_of_ack_wait_apart_are_refused_naming_the_field() {
        let mut settings = Settings::default();
        assert!(settings.validate().is_ok());
        settings.consumer.ack_wait_ms = 30_000;
        settings.consumer.progress_interval_ms = 10_000;
        assert!(settings.validate().is_ok(), "a third is allowed");
        settings.consumer.progress_interval_ms = 15_000;
        let refused = settings.validate().err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("consumer.progress_interval_ms")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_drain_deadline_without_room_for_the_jobs_grace_and_the_flush_is_refused_naming_the_field()
    {
        let mut settings = Settings::default();
        settings.consumer.shutdown_grace_ms = 10_000;
        settings.runtime.shutdown_grace_ms = 16_000;
        assert!(settings.validate().is_ok());
        settings.runtime.shutdown_grace_ms = 15_999;
        let refused = settings.validate().err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("runtime.shutdown_grace_ms")),
            "{refused:?}"
        );
    }

    #[test]
    fn agent_tls_that_does_not_fit_the_url_is_refused_naming_the_field() {
        let refused = |settings: &Settings| settings.validate().err().map(|e| e.to_string());
        let mut settings = Settings::default();
        settings.agent.url = "https://summarizer-agent:50053/mcp".into();
        settings.agent.tls.ca_path = "/etc/chat-memory/ca.crt".into();
        assert_eq!(refused(&settings), None);

        let mut plain = settings.clone();
        plain.agent.url = "http://summarizer-agent:50053/mcp".into();
        let e = refused(&plain);
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("agent.tls") && e.contains("not https://")),
            "{e:?}"
        );

        let mut domain = settings.clone();
        domain.agent.tls.domain = "agent.internal".into();
        let e = refused(&domain);
        assert!(
            e.as_deref().is_some_and(|e| e.contains("agent.tls.domain")),
            "{e:?}"
        );

        let mut half = settings;
        half.agent.tls.cert_path = "/etc/chat-memory/worker.crt".into();
        let e = refused(&half);
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("agent.tls.cert_path")),
            "{e:?}"
        );
    }

    #[test]
    fn an_unreadable_agent_ca_fails_start_naming_its_setting() {
        let mut settings = Settings::default();
        settings.agent.url = "https://summarizer-agent:50053/mcp".into();
        settings.agent.tls.ca_path = "/nonexistent/chat-memory-ca.crt".into();
        let e = settings.agent.tls_pem().err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("agent.tls.ca_path")
                && e.contains("/nonexistent/chat-memory-ca.crt")),
            "{e:?}"
        );
        assert!(Settings::default().agent.tls_pem().is_ok());
    }
}
