//! The stack as real OS processes: the four service binaries, started from the
//! workspace's target directory with settings passed as `CHAT_MEMORY__...`
//! environment variables. Used where a test needs what only separate processes
//! show: one trace crossing process boundaries, SIGKILL, per-service metrics.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which
//! `scripts/test.sh` does before running the tests).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::database::TestDatabase;
use crate::wait;

/// The services, by binary name.
pub const SERVICES: [&str; 4] = [
    "memory-store",
    "summarizer-agent",
    "summarizer-worker",
    "gateway",
];

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// OTLP endpoint every service exports to.
    pub otlp_endpoint: Option<String>,
    /// Extra environment per service (e.g. auth settings), by binary name.
    pub env: Vec<(&'static str, Vec<(String, String)>)>,
    /// The NATS server the services use; the machine's ([`crate::nats_url`])
    /// when `None` (the fault suite's scenario 5 brings a private one).
    pub nats_url: Option<String>,
}

/// A service's addresses.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// The running processes. Killed when dropped.
pub struct ProcessStack {
    pub database: TestDatabase,
    pub stream: String,
    pub subject_prefix: String,
    pub ports: BTreeMap<&'static str, Ports>,
    pub log_dir: PathBuf,
    env: BTreeMap<&'static str, Vec<(String, String)>>,
    children: BTreeMap<&'static str, Child>,
    /// Further processes of a service ([`Self::spawn_replica`]), e.g. a second
    /// worker; killed when dropped, terminated by [`Self::shutdown`].
    replicas: Vec<(&'static str, Child)>,
    nats_url: String,
}

/// Where cargo put the binaries: next to the current executable when it is one
/// of the workspace's binaries (`chat-memory-bench faults`), else one level up
/// (a test executable lives in `<target>/<profile>/deps/`).
///
/// # Panics
/// When the current executable's path is unknown.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let here = exe
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no directory above {}", exe.display()));
    if here.join(SERVICES[0]).exists() {
        return here;
    }
    here.parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no target dir above {}", exe.display()))
}

/// Ports a child process is told to listen on come from below Linux's
/// ephemeral range (32768-60999): a port the kernel hands out as `:0` can be
/// taken by an outgoing connection's local end between this probe and the
/// child's bind ("Address already in use"); these are never handed out that way.
const CHILD_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Starts of one service on fresh ports after losing a port race ([`ProcessStack::spawn`]).
const PORT_RACE_RETRIES: usize = 3;

/// Longest one health probe of a starting service may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits until the child at `addr` is SERVING; its exit status if it exits first.
///
/// # Panics
/// After 30 s.
async fn serving_or_exit(
    child: &mut Child,
    addr: SocketAddr,
    name: &str,
) -> Result<(), std::process::ExitStatus> {
    crate::wait::until(
        &format!("{name} at {addr} to be SERVING"),
        Duration::from_secs(30),
        || {
            let exited = child.try_wait().ok().flatten();
            async move {
                match exited {
                    Some(status) => Some(Err(status)),
                    // Bounded: a port held by a process that never answers
                    // would otherwise keep this probe waiting.
                    None => tokio::time::timeout(PROBE_TIMEOUT, crate::stack::is_serving(addr))
                        .await
                        .ok()
                        .flatten()
                        .map(Ok),
                }
            }
        },
    )
    .await
}

/// Sends `child` SIGTERM and waits for it to exit: `None` when it is still
/// running after `within`.
pub async fn sigterm(
    child: &mut Child,
    within: Duration,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    tokio::time::timeout(within, child.wait()).await.ok()
}

/// A free local address for a child process to bind (see [`CHILD_PORTS`]).
/// A port is handed out once per process: the probe's listener closes at
/// once, so without that two services of one stack could both be told the
/// same port, and the one that loses the bind would look SERVING through the
/// other's health service.
///
/// # Panics
/// When no port of the range can be bound (hundreds of tries).
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..500 {
        let port = rand::random_range(CHILD_PORTS);
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            return listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"));
        }
    }
    panic!("no free port in {CHILD_PORTS:?}")
}

impl ProcessStack {
    /// Creates a database and stream names, then starts the four services and
    /// waits until each reports SERVING.
    ///
    /// # Panics
    /// When a binary is missing, Postgres or NATS is down, or a service does not start.
    pub async fn start(opts: ProcessOptions) -> Self {
        for name in SERVICES {
            let path = bin_dir().join(name);
            assert!(
                path.exists(),
                "{} is missing: run `cargo build --workspace --bins` first",
                path.display()
            );
        }
        let database = crate::database::create().await;
        let nats_url = opts.nats_url.clone().unwrap_or_else(crate::nats_url);
        let suffix = crate::unique_suffix();
        let stream = format!("CMP_{suffix}");
        let subject_prefix = format!("cmp.{suffix}");
        let ports: BTreeMap<&'static str, Ports> = SERVICES
            .iter()
            .map(|&s| {
                (
                    s,
                    Ports {
                        grpc: free_addr(),
                        metrics: free_addr(),
                    },
                )
            })
            .collect();
        let log_dir = bin_dir().join("test-logs").join(&suffix);
        std::fs::create_dir_all(&log_dir).unwrap_or_else(|e| panic!("log dir: {e}"));

        // Each service gets only its own settings: unknown settings fail the start.
        let nats = [
            ("CHAT_MEMORY__NATS__URL", nats_url.clone()),
            ("CHAT_MEMORY__NATS__STREAM", stream.clone()),
            ("CHAT_MEMORY__NATS__SUBJECT_PREFIX", subject_prefix.clone()),
            // Small reservations of JetStream storage (see `TEST_STREAM_BYTES`).
            (
                "CHAT_MEMORY__NATS__MAX_BYTES",
                crate::TEST_STREAM_BYTES.to_string(),
            ),
        ];
        let store = (
            "CHAT_MEMORY__STORE__ENDPOINT",
            format!("http://{}", ports["memory-store"].grpc),
        );
        let mut env: BTreeMap<&'static str, Vec<(String, String)>> = BTreeMap::new();
        let mut add = |service: &'static str, pairs: Vec<(&str, String)>| {
            env.entry(service)
                .or_default()
                .extend(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
        };
        add(
            "memory-store",
            vec![("CHAT_MEMORY__DATABASE__URL", database.url.clone())],
        );
        // Credentials (docs/security.md): the service token between services,
        // the JWT key of the gateway, and a budget no test meets.
        let token = crate::auth::SERVICE_TOKEN.to_owned();
        add(
            "memory-store",
            vec![("CHAT_MEMORY__SERVICE_TOKEN", token.clone())],
        );
        add(
            "summarizer-agent",
            vec![("CHAT_MEMORY__SERVICE_TOKEN", token.clone())],
        );
        add(
            "summarizer-worker",
            vec![
                ("CHAT_MEMORY__STORE__SERVICE_TOKEN", token.clone()),
                ("CHAT_MEMORY__AGENT__SERVICE_TOKEN", token.clone()),
            ],
        );
        add(
            "gateway",
            vec![
                ("CHAT_MEMORY__STORE__SERVICE_TOKEN", token),
                (
                    "CHAT_MEMORY__AUTH__HS256_SECRET",
                    crate::auth::JWT_SECRET.to_owned(),
                ),
                ("CHAT_MEMORY__AUTH__ISSUER", crate::auth::ISSUER.to_owned()),
                (
                    "CHAT_MEMORY__AUTH__AUDIENCE",
                    crate::auth::AUDIENCE.to_owned(),
                ),
                ("CHAT_MEMORY__RATE_LIMIT__PER_MINUTE", "1000000".to_owned()),
                (
                    "CHAT_MEMORY__RATE_LIMIT__BUCKET",
                    format!("CMT_RL_{suffix}"),
                ),
            ],
        );
        add("gateway", nats.to_vec());
        add("gateway", vec![store.clone()]);
        add("summarizer-worker", nats.to_vec());
        add(
            "summarizer-worker",
            vec![
                store,
                (
                    "CHAT_MEMORY__AGENT__URL",
                    format!("http://{}/mcp", ports["summarizer-agent"].grpc),
                ),
                ("CHAT_MEMORY__CONSUMER__DURABLE_PREFIX", "p".to_owned()),
                ("CHAT_MEMORY__CONSUMER__ACK_WAIT_MS", "3000".to_owned()),
                (
                    "CHAT_MEMORY__CONSUMER__PROGRESS_INTERVAL_MS",
                    "1000".to_owned(),
                ),
            ],
        );
        for service in SERVICES {
            let mut common = vec![
                (
                    "CHAT_MEMORY__TELEMETRY__OTLP_METRICS_INTERVAL_MS",
                    "1000".to_owned(),
                ),
                ("RUST_LOG", "info,rmcp=warn".to_owned()),
            ];
            if let Some(endpoint) = &opts.otlp_endpoint {
                common.push(("CHAT_MEMORY__TELEMETRY__OTLP_ENDPOINT", endpoint.clone()));
            }
            add(service, common);
        }
        for (service, pairs) in opts.env {
            add(
                service,
                pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
            );
        }
        let mut stack = Self {
            database,
            stream,
            subject_prefix,
            ports,
            log_dir,
            env,
            children: BTreeMap::new(),
            replicas: Vec::new(),
            nats_url,
        };
        for name in SERVICES {
            stack.spawn(name).await;
        }
        stack
    }

    /// Starts (or restarts) one service and waits until it is SERVING.
    ///
    /// A port probed free can be taken by another test's process before the
    /// child binds it: a child that exits with "Address already in use" is
    /// started again on fresh ports (every other service's settings follow).
    ///
    /// # Panics
    /// When the service exits for another reason, or is not SERVING in 30 s.
    pub async fn spawn(&mut self, name: &'static str) {
        let log = format!("{name}.log");
        for attempt in 1..=PORT_RACE_RETRIES {
            let ports = self.ports[name];
            let mut child = self.start_process(name, ports, &log);
            match serving_or_exit(&mut child, ports.grpc, name).await {
                Ok(()) => {
                    self.children.insert(name, child);
                    return;
                }
                Err(status) => {
                    let said = std::fs::read_to_string(self.log_dir.join(&log)).unwrap_or_default();
                    assert!(
                        said.contains("Address already in use") && attempt < PORT_RACE_RETRIES,
                        "{name} exited with {status} before SERVING (log: {})",
                        self.log_dir.display()
                    );
                    self.move_ports(name);
                }
            }
        }
    }

    /// Gives `name` fresh ports; every setting that named the old ones follows.
    fn move_ports(&mut self, name: &'static str) {
        let old = self.ports[name];
        let new = Ports {
            grpc: free_addr(),
            metrics: free_addr(),
        };
        for value in self.env.values_mut().flatten().map(|(_, v)| v) {
            *value = value
                .replace(&old.grpc.to_string(), &new.grpc.to_string())
                .replace(&old.metrics.to_string(), &new.metrics.to_string());
        }
        self.ports.insert(name, new);
    }

    /// Starts one more process of `name` (another worker or gateway) with the
    /// same settings on ports of its own, and waits until it is SERVING.
    pub async fn spawn_replica(&mut self, name: &'static str) -> Ports {
        let n = self.replicas.len() + 1;
        let ports = Ports {
            grpc: free_addr(),
            metrics: free_addr(),
        };
        let child = self.start_process(name, ports, &format!("{name}-{n}.log"));
        self.replicas.push((name, child));
        crate::stack::wait_serving(ports.grpc, name).await;
        ports
    }

    /// Runs the binary `name` with the stack's settings on `ports`, logging to `log`.
    fn start_process(&self, name: &'static str, ports: Ports, log: &str) -> Child {
        let log = std::fs::File::create(self.log_dir.join(log))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        Command::new(bin_dir().join(name))
            .envs(self.env.get(name).into_iter().flatten().cloned())
            .env("CHAT_MEMORY__LISTEN_ADDR", ports.grpc.to_string())
            .env(
                "CHAT_MEMORY__TELEMETRY__METRICS_ADDR",
                ports.metrics.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
    }

    /// The running processes and their pids (replicas included), for
    /// per-process CPU and memory figures.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children
            .iter()
            .map(|(name, child)| (*name, child))
            .chain(self.replicas.iter().map(|(name, child)| (*name, child)))
            .filter_map(|(name, child)| child.id().map(|pid| (name, pid)))
            .collect()
    }

    /// SIGKILL, as a crash: no cleanup in the process.
    pub async fn kill(&mut self, name: &'static str) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then wait for the process to exit by itself.
    ///
    /// # Panics
    /// When it does not exit within 20 s or exits non-zero.
    pub async fn terminate(&mut self, name: &'static str) {
        let Some(mut child) = self.children.remove(name) else {
            return;
        };
        let status = sigterm(&mut child, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{name} did not exit within 20 s of SIGTERM"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM (log: {})",
            self.log_dir.display()
        );
    }

    /// Sets (or replaces) an environment variable of `name` for its next [`Self::spawn`].
    pub fn set_env(&mut self, name: &'static str, key: &str, value: &str) {
        let vars = self.env.entry(name).or_default();
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value.to_owned()));
    }

    /// The queue settings the services were started with.
    pub fn queue_settings(&self) -> job_queue::QueueSettings {
        job_queue::QueueSettings {
            url: self.nats_url.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            ..job_queue::QueueSettings::default()
        }
    }

    /// Waits until every audit row made durable in the JetStream outbox so
    /// far is stored in memory-store ([`crate::stack::audit_relayed`]).
    ///
    /// # Panics
    /// When NATS is unreachable, or the outbox is not drained within 30 s.
    pub async fn audit_relayed(&self) {
        let queue = self.queue_settings();
        let js = job_queue::connect(&queue, "test-support-audit")
            .await
            .unwrap_or_else(|e| panic!("NATS for the audit outbox: {e}"));
        crate::stack::audit_relayed(&js, &queue).await;
    }

    /// The gateway's gRPC address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.ports["gateway"].grpc
    }

    /// Stops every service with SIGTERM, then removes the stream and database.
    pub async fn shutdown(mut self) {
        for (_, mut child) in std::mem::take(&mut self.replicas) {
            let _ = sigterm(&mut child, Duration::from_secs(20)).await;
        }
        for name in SERVICES.iter().rev() {
            self.terminate(name).await;
        }
        if let Ok(js) = job_queue::connect(
            &job_queue::QueueSettings {
                url: self.nats_url.clone(),
                ..Default::default()
            },
            "test-cleanup",
        )
        .await
        {
            let _ = js.delete_stream(&self.stream).await;
            let _ = js.delete_stream(format!("{}_DLQ", self.stream)).await;
            let _ = js.delete_stream(format!("{}_AUDIT", self.stream)).await;
        }
        self.database.drop_now().await;
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }

    /// Polls until `check` holds, reporting the log directory on timeout.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, timeout: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        wait::until(
            &format!("{what} (logs: {})", self.log_dir.display()),
            timeout,
            check,
        )
        .await
    }
}

/// A client of the gateway of `stack` (with whatever credentials the stack needs).
///
/// # Panics
/// When the gateway is unreachable.
pub async fn gateway_client(stack: &ProcessStack) -> crate::stack::GatewayClient {
    let token = crate::auth::mint(
        crate::auth::TENANT,
        crate::auth::USER,
        &["memory:read", "memory:write"],
    );
    crate::stack::gateway_client(stack.gateway_addr(), crate::auth::Bearer::new(&token)).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_port_is_handed_out_twice() {
        let ports: std::collections::BTreeSet<u16> =
            (0..300).map(|_| super::free_addr().port()).collect();
        assert_eq!(ports.len(), 300);
    }
}
