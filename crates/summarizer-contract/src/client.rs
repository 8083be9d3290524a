//! [`AgentClient`]: how other services call the agent's `summarize` tool.
//!
//! One MCP connection (an rmcp client over streamable HTTP) is shared by all
//! clones and tasks. It is opened on the first call, and dropped when a call
//! fails at the transport level, for example because the agent restarted; a
//! call that hit such a failure on an older connection is retried once on a
//! new one, so a restart is invisible to callers. Every call is bounded by the
//! per-call timeout, connecting included.

use std::{sync::Arc, time::Duration};

use rmcp::{
    ServiceError, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    },
    service::{ClientInitializeError, RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use service_kit::entry::cause_chain;
use tokio::sync::Mutex;

use crate::tool::{
    BACKEND_UNAVAILABLE_CODE, RATE_LIMITED_REASON, RETRY_AFTER_MS_FIELD, SummarizeInput,
    SummarizeOutput, TOOL_NAME,
};

/// Concurrent tool calls one connection carries unless the caller says
/// otherwise ([`AgentClient::with_max_concurrent_calls`]; rmcp's default is 16).
const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

type Session = RunningService<RoleClient, ClientConfig>;

/// Why a `summarize` call failed. [`AgentClientError::is_transient`] tells the
/// caller whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentClientError {
    /// The agent could not be reached, dropped the connection, did not answer
    /// within the call timeout, or reported its backend temporarily down.
    #[error("summarizer agent unavailable: {0}")]
    Unavailable(String),
    /// The model provider refused the call for its rate limit (HTTP 429);
    /// transient, and not a sign that the agent is down. `retry_after` is the
    /// provider's `Retry-After`, when it sent one: the caller waits it out.
    #[error("model rate limited: {message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The agent refused the call (invalid input, tool error); retrying the
    /// same input fails again.
    #[error("summarizer agent rejected the call: {message}")]
    Rejected {
        /// JSON-RPC error code, when the refusal was a protocol error.
        code: Option<i32>,
        /// What the agent said.
        message: String,
    },
    /// The agent answered with something that is not a `SummarizeOutput`.
    #[error("summarizer agent returned invalid output: {0}")]
    InvalidOutput(String),
    /// The client was constructed with an unusable URL or settings.
    #[error("invalid summarizer agent client configuration: {0}")]
    InvalidConfig(String),
}

impl AgentClientError {
    /// True when a later retry of the same call may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::RateLimited { .. } => true,
            Self::Rejected { .. } | Self::InvalidOutput(_) | Self::InvalidConfig(_) => false,
        }
    }

    /// The provider's `Retry-After` of a rate-limited call, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::Unavailable(_)
            | Self::Rejected { .. }
            | Self::InvalidOutput(_)
            | Self::InvalidConfig(_) => None,
        }
    }
}

/// TLS of an `https://` agent endpoint, as PEM bytes (the caller reads the
/// files, so a missing one fails where its setting is named).
#[derive(Clone, Default)]
pub struct AgentTls {
    /// CA bundle to trust instead of the system's roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and its private key, in one PEM, for an
    /// agent that requires client certificates (its `tls.client_ca_path`).
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity holds a private key: say only whether it is there.
        f.debug_struct("AgentTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("identity_pem", &self.identity_pem.is_some())
            .finish()
    }
}

impl AgentTls {
    fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.identity_pem.is_some()
    }

    /// `builder` with the CA and the client certificate.
    #[cfg(feature = "https")]
    fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, AgentClientError> {
        if let Some(pem) = &self.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                AgentClientError::InvalidConfig(format!("agent CA (agent.tls.ca_path): {e}"))
            })?;
            if roots.is_empty() {
                return Err(AgentClientError::InvalidConfig(
                    "agent CA (agent.tls.ca_path): no certificate in it".into(),
                ));
            }
            builder = builder.tls_certs_only(roots);
        }
        if let Some(pem) = &self.identity_pem {
            let identity = reqwest::Identity::from_pem(pem).map_err(|e| {
                AgentClientError::InvalidConfig(format!(
                    "client certificate (agent.tls.cert_path, agent.tls.key_path): {e}"
                ))
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }

    /// Without the `https` feature no URL that uses this gets here.
    #[cfg(not(feature = "https"))]
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, AgentClientError> {
        Ok(builder)
    }
}

/// Client of the agent's `summarize` tool. Cheap to clone; clones share one
/// connection, and any number of tasks may call it at once.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    call_timeout: Duration,
    /// Shared HTTP connection pool; survives reconnects of the MCP session.
    http: reqwest::Client,
    /// The current MCP connection: `None` before the first call and after a
    /// transport failure. A tokio mutex because connecting happens under it,
    /// so concurrent callers share one connection attempt.
    session: Mutex<Option<Arc<Session>>>,
    /// Tool calls the session carries at once.
    max_concurrent_calls: usize,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("url", &self.inner.url)
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}

/// How one attempt on one session failed.
enum Attempt {
    /// The connection is suspect: drop it, maybe retry.
    Transport(String),
    /// Anything else; final.
    Final(AgentClientError),
}

impl AgentClient {
    /// A client for the MCP endpoint at `url` (e.g. `http://summarizer-agent:50053/mcp`).
    /// Does not connect: the agent need not be up yet.
    ///
    /// # Errors
    /// [`AgentClientError::InvalidConfig`] when `url` is not an http(s) URL or
    /// `call_timeout` is zero.
    pub fn new(url: &str, call_timeout: Duration) -> Result<Self, AgentClientError> {
        Self::with_service_token(url, call_timeout, None)
    }

    /// [`AgentClient::new`], presenting `token` as `authorization: Bearer` on
    /// every request (the agent's `service_token`).
    ///
    /// # Errors
    /// As [`AgentClient::new`]; also when the token is not a valid header value.
    pub fn with_service_token(
        url: &str,
        call_timeout: Duration,
        token: Option<&service_kit::secret::Secret>,
    ) -> Result<Self, AgentClientError> {
        Self::with_options(url, call_timeout, token, &AgentTls::default())
    }

    /// [`AgentClient::with_service_token`], with `tls` for an `https://`
    /// endpoint: its CA instead of the system's roots, and a client
    /// certificate when the agent requires mTLS.
    ///
    /// # Errors
    /// As [`AgentClient::with_service_token`]; also when a PEM is unusable,
    /// when `tls` is set for an `http://` URL, and for an `https://` URL in a
    /// build without the `https` feature.
    pub fn with_options(
        url: &str,
        call_timeout: Duration,
        token: Option<&service_kit::secret::Secret>,
        tls: &AgentTls,
    ) -> Result<Self, AgentClientError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| AgentClientError::InvalidConfig(format!("url {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AgentClientError::InvalidConfig(format!(
                "url {url:?}: not http(s)"
            )));
        }
        if call_timeout.is_zero() {
            return Err(AgentClientError::InvalidConfig(
                "call_timeout must be positive".into(),
            ));
        }
        let https = parsed.scheme() == "https";
        if !https && tls.is_set() {
            return Err(AgentClientError::InvalidConfig(format!(
                "url {url:?}: TLS settings given for a plain http:// URL"
            )));
        }
        if https && !crate::tls::HTTPS {
            return Err(AgentClientError::InvalidConfig(format!(
                "url {url:?}: this build has no TLS (build with the `https` feature)"
            )));
        }
        crate::tls::install_ring_provider();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        AgentClientError::InvalidConfig("service token: not a header value".into())
                    })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = tls
            .apply(
                reqwest::Client::builder()
                    .connect_timeout(call_timeout)
                    .default_headers(headers),
            )?
            .build()
            .map_err(|e| AgentClientError::InvalidConfig(format!("http client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                call_timeout,
                http,
                session: Mutex::new(None),
                max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            }),
        })
    }

    /// Lets the session carry `n` tool calls at once (the caller's own limit
    /// on calls in flight should not exceed it). Call before the first call.
    #[must_use]
    pub fn with_max_concurrent_calls(mut self, n: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_concurrent_calls = n.max(1);
        }
        self
    }

    /// The endpoint this client calls.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Calls `summarize` with `input`, within the call timeout.
    ///
    /// # Errors
    /// [`AgentClientError::Unavailable`] (transient) for connection failures and
    /// timeouts; [`AgentClientError::Rejected`] and
    /// [`AgentClientError::InvalidOutput`] (permanent) otherwise.
    pub async fn summarize(
        &self,
        input: &SummarizeInput,
    ) -> Result<SummarizeOutput, AgentClientError> {
        let arguments = match serde_json::to_value(input) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) | Err(_) => {
                return Err(AgentClientError::Rejected {
                    code: None,
                    message: "input does not serialise to a JSON object".into(),
                });
            }
        };
        let timeout = self.inner.call_timeout;
        match tokio::time::timeout(timeout, self.call_with_reconnect(arguments)).await {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!(url = %self.inner.url, ?timeout, "summarize call timed out");
                Err(AgentClientError::Unavailable(format!(
                    "no answer within {timeout:?}"
                )))
            }
        }
    }

    async fn call_with_reconnect(
        &self,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<SummarizeOutput, AgentClientError> {
        let (session, fresh) = self.session().await?;
        let first = call_once(&session, arguments.clone()).await;
        let Err(Attempt::Transport(reason)) = first else {
            return first.map_err(Attempt::into_error);
        };
        self.discard(&session).await;
        if fresh {
            return Err(AgentClientError::Unavailable(reason));
        }
        // The connection predates this call: the agent may have restarted
        // since. One retry on a new connection tells the two cases apart.
        tracing::info!(url = %self.inner.url, %reason, "agent connection broken, reconnecting");
        let (session, _) = self.session().await?;
        let second = call_once(&session, arguments).await;
        if matches!(second, Err(Attempt::Transport(_))) {
            self.discard(&session).await;
        }
        second.map_err(Attempt::into_error)
    }

    /// The shared session, connecting first when there is none. The flag is
    /// true when this call created it.
    async fn session(&self) -> Result<(Arc<Session>, bool), AgentClientError> {
        let mut slot = self.inner.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok((Arc::clone(session), false));
        }
        let transport = StreamableHttpClientTransport::with_client(
            self.inner.http.clone(),
            StreamableHttpClientTransportConfig::with_uri(self.inner.url.as_str())
                .max_concurrent_requests(self.inner.max_concurrent_calls),
        );
        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("summarizer-agent-client", env!("CARGO_PKG_VERSION")),
        );
        // Connect on a task of its own: rmcp keeps background tasks for the
        // session's life, and spawned from here they would hold the caller's
        // tracing span open forever (that span would never end or be exported).
        let connected = tokio::spawn(async move { config.serve(transport).await })
            .await
            .map_err(|e| AgentClientError::Unavailable(format!("connecting to the agent: {e}")))?;
        let session = Arc::new(connected.map_err(init_error)?);
        tracing::debug!(url = %self.inner.url, "connected to summarizer agent");
        *slot = Some(Arc::clone(&session));
        Ok((session, true))
    }

    /// Forgets `broken` if it is still the shared session (another task may
    /// already have replaced it). In-flight calls on it keep their handle.
    async fn discard(&self, broken: &Arc<Session>) {
        let mut slot = self.inner.session.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, broken))
        {
            *slot = None;
        }
    }
}

async fn call_once(
    session: &Session,
    arguments: serde_json::Map<String, serde_json::Value>,
) -> Result<SummarizeOutput, Attempt> {
    let mut params = CallToolRequestParams::new(TOOL_NAME).with_arguments(arguments);
    // W3C trace context in `_meta` (MCP SEP-414): the agent's span joins the caller's trace.
    let mut meta = rmcp::model::RequestMetaObject::new();
    for (key, value) in service_kit::telemetry::propagation::current_context_fields() {
        match key.as_str() {
            "traceparent" => meta.set_traceparent(value),
            "tracestate" => meta.set_tracestate(value),
            _ => {}
        }
    }
    if meta.get_traceparent().is_some() {
        params.meta = Some(meta);
    }
    let result = session.call_tool(params).await.map_err(service_error)?;
    parse_output(result).map_err(Attempt::Final)
}

/// The structured content as a [`SummarizeOutput`]; the text content is the
/// fallback for servers that only send text.
fn parse_output(result: CallToolResult) -> Result<SummarizeOutput, AgentClientError> {
    let text = || {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if result.is_error == Some(true) {
        return Err(AgentClientError::Rejected {
            code: None,
            message: text(),
        });
    }
    let parsed = match &result.structured_content {
        Some(value) => serde_json::from_value::<SummarizeOutput>(value.clone()),
        None => serde_json::from_str::<SummarizeOutput>(&text()),
    };
    parsed.map_err(|e| AgentClientError::InvalidOutput(e.to_string()))
}

fn service_error(error: ServiceError) -> Attempt {
    match error {
        ServiceError::McpError(e) if e.code.0 == BACKEND_UNAVAILABLE_CODE => {
            let data = e.data.as_ref();
            let rate_limited = data
                .and_then(|d| d.get("reason"))
                .and_then(serde_json::Value::as_str)
                == Some(RATE_LIMITED_REASON);
            let message = e.message.into_owned();
            Attempt::Final(if rate_limited {
                AgentClientError::RateLimited {
                    message,
                    retry_after: data
                        .and_then(|d| d.get(RETRY_AFTER_MS_FIELD))
                        .and_then(serde_json::Value::as_u64)
                        .map(Duration::from_millis),
                }
            } else {
                AgentClientError::Unavailable(message)
            })
        }
        ServiceError::McpError(e) => Attempt::Final(AgentClientError::Rejected {
            code: Some(e.code.0),
            message: e.message.into_owned(),
        }),
        e @ (ServiceError::TransportSend(_)
        | ServiceError::TransportClosed
        | ServiceError::Cancelled { .. }
        | ServiceError::Timeout { .. }) => Attempt::Transport(cause_chain(&e)),
        e @ ServiceError::UnexpectedResponse => {
            Attempt::Final(AgentClientError::InvalidOutput(e.to_string()))
        }
        // Subscription and input-required errors cannot come from a plain
        // tool call; treat anything unforeseen as permanent.
        e => Attempt::Final(AgentClientError::Rejected {
            code: None,
            message: e.to_string(),
        }),
    }
}

fn init_error(error: ClientInitializeError) -> AgentClientError {
    match error {
        ClientInitializeError::JsonRpcError(e) => AgentClientError::Rejected {
            code: Some(e.code.0),
            message: e.message.into_owned(),
        },
        e @ (ClientInitializeError::TransportError { .. }
        | ClientInitializeError::ConnectionClosed(_)
        | ClientInitializeError::Cancelled) => AgentClientError::Unavailable(cause_chain(&e)),
        // Protocol mismatches: retrying will not help.
        e => AgentClientError::Rejected {
            code: None,
            message: cause_chain(&e),
        },
    }
}

impl Attempt {
    fn into_error(self) -> AgentClientError {
        match self {
            Self::Transport(reason) => AgentClientError::Unavailable(reason),
            Self::Final(error) => error,
        }
    }
}
