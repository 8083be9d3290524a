//! The whole stack, in-process, on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use chat_memory_proto::store::memory_store_client::MemoryStoreClient;
use chat_memory_proto::v1::memory_service_client::MemoryServiceClient;
use chat_memory_proto::v1::{GetUpdateStatusResponse, JobState};
use job_queue::QueueSettings;
use service_kit::grpc_client::ClientSettings;
use summarizer_agent::backend::SummarizerBackend;

use crate::auth::{self, Bearer};
use crate::database::TestDatabase;
use crate::wait;

// Reaching a running service, kept at their old paths.
pub use crate::reach::{
    audit_relayed, channel, gateway_client, is_serving, succeeded, wait_job, wait_serving,
    wait_serving_tls,
};

/// What to start.
pub struct StackOptions {
    pub workers: usize,
    /// Short, so a killed worker's job is redelivered quickly.
    pub ack_wait_ms: u64,
    /// Backend of the agent; the offline one when `None`.
    pub backend: Option<Arc<dyn SummarizerBackend>>,
    /// Stream limit, to test a full queue.
    pub max_jobs: i64,
    /// Per-user requests per minute at the gateway; huge by default so only
    /// the rate-limit tests meet the limit.
    pub rate_limit_per_minute: u32,
    /// Failed authentications per client address per minute at the gateway;
    /// huge by default so only the test of that limit meets it.
    pub failed_auth_per_minute: u32,
    /// The gateway's `rate_limit.trusted_proxies` (none by default).
    pub trusted_proxies: Vec<String>,
    /// JetStream's duplicate window on the jobs stream (120 s by default; a
    /// test of what happens past it shortens it).
    pub duplicate_window_secs: u64,
    /// memory-store's expiry of inactive chats.
    pub expiry: memory_store::settings::ExpirySettings,
    /// The gateway's backpressure limits (the gateway's defaults unless a test
    /// wants to meet them).
    pub backpressure: gateway::backpressure::BackpressureSettings,
    /// The gateways' read cache (the gateway's defaults unless a test wants
    /// shorter TTLs).
    pub read_cache: gateway::cache::ReadCacheSettings,
    /// TLS on every gRPC listener, mTLS into memory-store, with this PKI.
    pub pki: Option<Arc<crate::pki::TestPki>>,
    /// The gateway's token verification (HS256 with the test secret when `None`).
    pub auth: Option<gateway::auth::AuthSettings>,
    /// TLS on the gateway's listener from these files (over `pki`'s, if both
    /// are set); the stack's own gateway clients then trust its CA.
    pub gateway_tls: Option<crate::pki::GatewayTls>,
    /// The NATS server (or cluster node) the services use; the machine's
    /// ([`crate::nats_url`]) when `None`.
    pub nats_url: Option<String>,
    /// `nats.replicas` of the stack's streams and rate-limit bucket.
    pub nats_replicas: usize,
}

/// A client of the public API that presents a bearer token.
pub type GatewayClient = MemoryServiceClient<InterceptedService<Channel, Bearer>>;
/// A client of memory-store that presents the service token (or not).
pub type StoreClient = MemoryStoreClient<InterceptedService<Channel, Bearer>>;

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            ack_wait_ms: 2_000,
            backend: None,
            max_jobs: 1_000_000,
            rate_limit_per_minute: 1_000_000,
            failed_auth_per_minute: 1_000_000,
            trusted_proxies: Vec::new(),
            duplicate_window_secs: 120,
            expiry: memory_store::settings::ExpirySettings::default(),
            backpressure: gateway::backpressure::BackpressureSettings::default(),
            read_cache: gateway::cache::ReadCacheSettings::default(),
            pki: None,
            auth: None,
            gateway_tls: None,
            nats_url: None,
            nats_replicas: 1,
        }
    }
}

/// A running service: its shutdown trigger and task.
struct Service {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl Service {
    async fn stop(mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(Duration::from_secs(15), &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("task failed: {join}")),
            Err(_) => {
                self.task.abort();
                Err("did not stop within 15 s".into())
            }
        }
    }
}

fn spawn<F, E>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Service
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let (tx, rx) = oneshot::channel();
    let fut = run(rx);
    let task = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
    Service {
        shutdown: Some(tx),
        task,
    }
}

async fn signal(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    (l, addr)
}

/// The running stack. Call [`TestStack::shutdown`] at the end of a test to drop
/// its database and stream (a later run sweeps what a panicking test leaves).
pub struct TestStack {
    pub database: TestDatabase,
    pub queue: QueueSettings,
    pub gateway_addr: SocketAddr,
    pub store_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub worker_settings: summarizer_worker::Settings,
    gateway: Option<Service>,
    /// Further gateway replicas ([`TestStack::add_gateway`]).
    extra_gateways: Vec<Service>,
    gateway_settings: gateway::Settings,
    store_settings: memory_store::settings::Settings,
    store: Option<Service>,
    agent: Option<Service>,
    workers: Vec<Option<Service>>,
    /// Health addresses of the workers, by index.
    pub worker_addrs: Vec<SocketAddr>,
    /// Set when every listener serves TLS.
    pub pki: Option<Arc<crate::pki::TestPki>>,
    /// Set when the gateway serves TLS from files of its own ([`StackOptions::gateway_tls`]).
    gateway_tls: Option<crate::pki::GatewayTls>,
}

impl TestStack {
    /// Starts everything with the default options.
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts memory-store, the agent, `workers` workers and the gateway, and
    /// waits until the gateway and every worker report SERVING.
    ///
    /// # Panics
    /// When Postgres or NATS is unreachable, or a service fails to start.
    pub async fn start_with(opts: StackOptions) -> Self {
        let database = crate::database::create().await;
        let suffix = crate::unique_suffix();
        let queue = QueueSettings {
            url: opts.nats_url.clone().unwrap_or_else(crate::nats_url),
            replicas: opts.nats_replicas,
            stream: format!("CMT_{suffix}"),
            subject_prefix: format!("cmt.{suffix}"),
            max_jobs: opts.max_jobs,
            // JetStream reserves a stream's max_bytes from the server's storage:
            // keep test streams small so many runs never exhaust it.
            max_bytes: crate::TEST_STREAM_BYTES,
            duplicate_window_secs: opts.duplicate_window_secs,
            ..QueueSettings::default()
        };

        let (store_listener, store_addr) = bind().await;
        let mut store_settings = memory_store::settings::Settings::default();
        store_settings.database.url = database.url.clone();
        store_settings.database.max_connections = 16;
        store_settings.service_token = Some(auth::service_token());
        store_settings.expiry = opts.expiry.clone();
        let pki = opts.pki.clone();
        let store_client = internal_client(store_addr, pki.as_deref());
        if let Some(pki) = &pki {
            store_settings.tls = pki.server_tls(true);
        }
        let run_store = store_settings.clone();
        let store = spawn(|rx| memory_store::run(run_store, store_listener, signal(rx)));

        let (agent_listener, agent_addr) = bind().await;
        // With a PKI the agent serves TLS and wants the worker's client
        // certificate, as memory-store does.
        let agent_settings = summarizer_agent::settings::Settings {
            service_token: Some(auth::service_token()),
            tls: pki
                .as_deref()
                .map(|pki| pki.server_tls(true))
                .unwrap_or_default(),
            ..summarizer_agent::settings::Settings::default()
        };
        let backend = opts.backend.unwrap_or_else(|| {
            agent_settings
                .build_backend()
                .unwrap_or_else(|e| panic!("agent backend: {e}"))
        });
        let agent = spawn(|rx| {
            summarizer_agent::server::run_with_backend(
                agent_settings,
                backend,
                agent_listener,
                signal(rx),
            )
        });

        let mut worker_settings = summarizer_worker::Settings {
            nats: queue.clone(),
            store: store_client.clone(),
            ..summarizer_worker::Settings::default()
        };
        if let Some(pki) = &pki {
            worker_settings.tls = pki.server_tls(false);
        }
        worker_settings.agent.service_token = Some(auth::service_token());
        worker_settings.agent.url = format!("http://{agent_addr}/mcp");
        if let Some(pki) = &pki {
            worker_settings.agent.url = format!("https://{agent_addr}/mcp");
            worker_settings.agent.tls = service_kit::tls::ClientTls {
                domain: String::new(),
                ..pki.client_tls()
            };
        }
        worker_settings.agent.call_timeout_ms = 10_000;
        worker_settings.consumer.durable_prefix = "w".into();
        worker_settings.consumer.ack_wait_ms = opts.ack_wait_ms;
        worker_settings.consumer.progress_interval_ms = (opts.ack_wait_ms / 4).max(100);
        worker_settings.consumer.shutdown_grace_ms = 2_000;
        worker_settings.retry.initial_backoff_ms = 20;
        worker_settings.retry.max_backoff_ms = 200;
        worker_settings.retry.store_retry_ms = 2_000;

        let (gateway_listener, gateway_addr) = bind().await;
        let mut gateway_settings = gateway::Settings {
            nats: queue.clone(),
            store: store_client,
            auth: opts.auth.clone().unwrap_or_else(auth::gateway_auth),
            ..gateway::Settings::default()
        };
        if let Some(pki) = &pki {
            gateway_settings.tls = pki.server_tls(false);
        }
        if let Some(tls) = &opts.gateway_tls {
            gateway_settings.tls = tls.server.clone();
        }
        gateway_settings.rate_limit.per_minute = opts.rate_limit_per_minute;
        gateway_settings.rate_limit.failed_auth_per_minute_per_ip = opts.failed_auth_per_minute;
        gateway_settings.rate_limit.trusted_proxies = opts.trusted_proxies.clone();
        gateway_settings.backpressure = opts.backpressure.clone();
        gateway_settings.read_cache = opts.read_cache.clone();
        gateway_settings.rate_limit.bucket = format!("CMT_RL_{suffix}");
        let run_gateway = gateway_settings.clone();
        let gateway = spawn(|rx| gateway::run(run_gateway, gateway_listener, signal(rx)));

        let mut stack = Self {
            database,
            queue,
            gateway_addr,
            store_addr,
            agent_addr,
            worker_settings,
            gateway: Some(gateway),
            extra_gateways: Vec::new(),
            gateway_settings,
            store_settings,
            store: Some(store),
            agent: Some(agent),
            workers: Vec::new(),
            worker_addrs: Vec::new(),
            pki,
            gateway_tls: opts.gateway_tls,
        };
        stack.wait_gateway_serving(gateway_addr, "gateway").await;
        stack.wait_serving(store_addr, "memory-store").await;
        for _ in 0..opts.workers {
            stack.add_worker().await;
        }
        stack
    }

    /// Starts one more worker; returns its index once it is consuming.
    pub async fn add_worker(&mut self) -> usize {
        let (listener, addr) = bind().await;
        let settings = self.worker_settings.clone();
        let worker = spawn(|rx| summarizer_worker::run(settings, listener, signal(rx)));
        self.workers.push(Some(worker));
        self.worker_addrs.push(addr);
        self.wait_serving(addr, "summarizer-worker").await;
        self.workers.len() - 1
    }

    /// Kills worker `i` as a crash would: no NAK, no ack, no goodbye.
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(w) = self.workers.get_mut(i).and_then(Option::take) {
            w.task.abort();
        }
    }

    /// Stops memory-store (gracefully); [`TestStack::restart_store`] brings it back on the same port.
    pub async fn stop_store(&mut self) {
        if let Some(s) = self.store.take() {
            s.stop()
                .await
                .unwrap_or_else(|e| panic!("memory-store did not stop: {e}"));
        }
    }

    /// Starts memory-store again on its old address.
    pub async fn restart_store(&mut self) {
        let listener = TcpListener::bind(self.store_addr)
            .await
            .unwrap_or_else(|e| panic!("rebind {}: {e}", self.store_addr));
        let settings = self.store_settings.clone();
        self.store = Some(spawn(|rx| {
            memory_store::run(settings, listener, signal(rx))
        }));
        self.wait_serving(self.store_addr, "memory-store").await;
    }

    /// Stops the first gateway (gracefully: its watch streams end with
    /// UNAVAILABLE); [`TestStack::restart_gateway`] brings it back on the same port.
    pub async fn stop_gateway(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.stop()
                .await
                .unwrap_or_else(|e| panic!("gateway did not stop: {e}"));
        }
    }

    /// Starts the first gateway again on its old address.
    pub async fn restart_gateway(&mut self) {
        let listener = TcpListener::bind(self.gateway_addr)
            .await
            .unwrap_or_else(|e| panic!("rebind {}: {e}", self.gateway_addr));
        let settings = self.gateway_settings.clone();
        self.gateway = Some(spawn(|rx| gateway::run(settings, listener, signal(rx))));
        self.wait_gateway_serving(self.gateway_addr, "gateway")
            .await;
    }

    /// A client of the public API, as [`auth::USER`] of [`auth::TENANT`] with
    /// `memory:read` and `memory:write`.
    pub async fn gateway(&self) -> GatewayClient {
        let claims = auth::claims(auth::TENANT, auth::USER, &["memory:read", "memory:write"]);
        let token = if self.gateway_settings.auth.jwks_path.is_empty() {
            auth::sign(&claims, auth::JWT_SECRET)
        } else {
            // A stack verifying with the test JWKS ([`auth::jwks_auth`]).
            auth::sign_with_key(&claims, jsonwebtoken::Algorithm::RS256, "rsa-1", "rsa.pem")
        };
        self.gateway_as(&token).await
    }

    /// A client of the public API presenting `token`.
    pub async fn gateway_as(&self, token: &str) -> GatewayClient {
        MemoryServiceClient::with_interceptor(
            self.gateway_channel(self.gateway_addr).await,
            Bearer::new(token),
        )
    }

    /// A channel to one of the stack's listeners (over TLS, with the client
    /// certificate, when the stack serves TLS).
    ///
    /// # Panics
    /// When nothing listens there or the handshake fails.
    pub async fn channel(&self, addr: SocketAddr) -> Channel {
        match &self.pki {
            Some(pki) => pki
                .channel(addr, true)
                .await
                .unwrap_or_else(|e| panic!("TLS connection to {addr}: {e:?}")),
            None => channel(addr).await,
        }
    }

    /// A channel to a gateway listener: [`TestStack::channel`], or TLS trusting
    /// the CA of [`StackOptions::gateway_tls`] when set.
    ///
    /// # Panics
    /// When nothing listens there or the handshake fails.
    pub async fn gateway_channel(&self, addr: SocketAddr) -> Channel {
        match &self.gateway_tls {
            Some(tls) => crate::pki::try_tls_channel(addr, &tls.client)
                .await
                .unwrap_or_else(|| panic!("TLS connection to the gateway at {addr} failed")),
            None => self.channel(addr).await,
        }
    }

    /// Starts one more gateway replica on the same queue, store and rate-limit
    /// bucket; returns its address once it is SERVING.
    pub async fn add_gateway(&mut self) -> SocketAddr {
        let (listener, addr) = bind().await;
        let settings = self.gateway_settings.clone();
        self.extra_gateways
            .push(spawn(|rx| gateway::run(settings, listener, signal(rx))));
        self.wait_gateway_serving(addr, "gateway replica").await;
        addr
    }

    /// Waits until every audit row made durable in the JetStream outbox so
    /// far is stored in memory-store (the relay consumer holds and has nothing).
    ///
    /// # Panics
    /// When the outbox is not drained within 30 s.
    pub async fn audit_relayed(&self) {
        audit_relayed(&self.jetstream().await, &self.queue).await;
    }

    /// A client of memory-store's internal API, presenting the service token.
    pub async fn store(&self) -> StoreClient {
        MemoryStoreClient::with_interceptor(
            self.channel(self.store_addr).await,
            Bearer::new(auth::SERVICE_TOKEN),
        )
    }

    /// A JetStream context on the test's NATS server.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        job_queue::connect(&self.queue, "test")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for every job of `chat` (its ids in acceptance order) and checks
    /// the order and exactly-once promise: each succeeded, each summarizer
    /// call applied a contiguous run of them (several when coalesced) and made
    /// exactly the next version, and the chat's memory has one version per
    /// call. Returns the number of calls.
    ///
    /// # Panics
    /// When a job did not succeed within `timeout`, or a promise is broken.
    pub async fn assert_applied_in_order(
        &self,
        chat: &str,
        jobs: &[String],
        timeout: Duration,
    ) -> i64 {
        let mut previous: Option<(i64, String)> = None;
        let mut calls = 0i64;
        for (i, job) in jobs.iter().enumerate() {
            let status = self.wait_job_done(job, timeout).await;
            assert_eq!(
                status.state,
                JobState::Succeeded as i32,
                "{chat}: {status:?}"
            );
            let version = status.resulting_version.unwrap_or_default();
            let call = status.applied_in_call.clone();
            match &previous {
                Some((v, prev_call)) if *prev_call == call => {
                    assert_eq!(version, *v, "{chat} job {i}: one call, one version");
                }
                Some((v, _)) => assert_eq!(version, v + 1, "{chat} job {i} applied out of order"),
                None => assert_eq!(version, 1, "{chat} job 0 applied out of order"),
            }
            if previous
                .as_ref()
                .is_none_or(|(_, prev_call)| *prev_call != call)
            {
                calls += 1;
            }
            previous = Some((version, call));
        }
        let mut client = self.gateway().await;
        let memory = crate::requests::memory(&mut client, chat).await;
        assert_eq!(
            memory.memory.map(|m| m.version),
            Some(calls),
            "{chat}: one version per summarizer call"
        );
        calls
    }

    /// Waits until the job is SUCCEEDED or FAILED and returns its status.
    pub async fn wait_job_done(&self, job_id: &str, timeout: Duration) -> GetUpdateStatusResponse {
        let client = self.gateway().await;
        wait_job(&client, job_id, "finish", timeout, |s| {
            matches!(
                JobState::try_from(s.state),
                Ok(JobState::Succeeded | JobState::Failed)
            )
        })
        .await
    }

    async fn wait_gateway_serving(&self, addr: SocketAddr, what: &str) {
        match &self.gateway_tls {
            Some(tls) => {
                wait::until(
                    &format!("{what} at {addr} to be SERVING over TLS"),
                    Duration::from_secs(30),
                    || async move {
                        crate::reach::serving(crate::pki::try_tls_channel(addr, &tls.client).await?)
                            .await
                    },
                )
                .await;
            }
            None => self.wait_serving(addr, what).await,
        }
    }

    async fn wait_serving(&self, addr: SocketAddr, what: &str) {
        match &self.pki {
            Some(pki) => wait_serving_tls(pki, addr, what).await,
            None => wait_serving(addr, what).await,
        }
    }

    /// Stops every service gracefully, then deletes the stream and the database.
    ///
    /// # Panics
    /// When a service stopped with an error: shutting down cleanly is part of the contract.
    pub async fn shutdown(mut self) {
        let mut errors = Vec::new();
        if let Some(g) = self.gateway.take() {
            g.stop()
                .await
                .unwrap_or_else(|e| errors.push(format!("gateway: {e}")));
        }
        for g in self.extra_gateways.drain(..) {
            g.stop()
                .await
                .unwrap_or_else(|e| errors.push(format!("gateway replica: {e}")));
        }
        for w in self.workers.drain(..).flatten() {
            w.stop()
                .await
                .unwrap_or_else(|e| errors.push(format!("worker: {e}")));
        }
        if let Some(a) = self.agent.take() {
            a.stop()
                .await
                .unwrap_or_else(|e| errors.push(format!("agent: {e}")));
        }
        if let Some(s) = self.store.take() {
            s.stop()
                .await
                .unwrap_or_else(|e| errors.push(format!("memory-store: {e}")));
        }
        if let Ok(js) = job_queue::connect(&self.queue, "test-cleanup").await {
            let _ = js.delete_stream(&self.queue.stream).await;
            let _ = js
                .delete_stream(job_queue::dlq::dlq_stream_name(&self.queue))
                .await;
            let _ = js
                .delete_stream(job_queue::audit_outbox::outbox_stream_name(&self.queue))
                .await;
            let bucket = &self.gateway_settings.rate_limit.bucket;
            let _ = js.delete_stream(format!("KV_{bucket}")).await;
        }
        self.database.drop_now().await;
        assert!(
            errors.is_empty(),
            "services did not stop cleanly: {errors:?}"
        );
    }
}

/// Settings to reach an internal service at `addr` with the service token.
fn internal_client(addr: SocketAddr, pki: Option<&crate::pki::TestPki>) -> ClientSettings {
    match pki {
        Some(pki) => ClientSettings {
            service_token: Some(auth::service_token()),
            tls: pki.client_tls(),
            ..ClientSettings::new(format!("https://{addr}"))
        },
        None => ClientSettings {
            service_token: Some(auth::service_token()),
            ..ClientSettings::new(format!("http://{addr}"))
        },
    }
}
