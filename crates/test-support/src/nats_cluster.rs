//! Private `nats-server` processes on loopback, each with its own ports and
//! store directory (removed on drop):
//! - [`NatsServer`]: one server, stopped and started again by the fault
//!   suite's scenario 5 (the machine's shared server stays untouched);
//! - [`NatsCluster`]: a three-node JetStream cluster whose nodes route to each
//!   other, for the tests of `nats.replicas = 3` (DEBT D-27);
//!   [`NatsCluster::start`] returns once the cluster places a replicated stream.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;

/// One node: its name, client port and process (`None` once killed).
struct Node {
    name: String,
    client: std::net::SocketAddr,
    process: Option<tokio::process::Child>,
}

/// The running cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// The `nats-server` binary: `CHAT_MEMORY_TEST_NATS_SERVER`, else Debian's
/// `/usr/sbin/nats-server` (what `scripts/services.sh` installs), else `PATH`'s.
fn server_binary() -> String {
    std::env::var("CHAT_MEMORY_TEST_NATS_SERVER").unwrap_or_else(|_| {
        let debian = "/usr/sbin/nats-server";
        if std::path::Path::new(debian).exists() {
            debian.to_owned()
        } else {
            "nats-server".to_owned()
        }
    })
}

/// Longest wait for a server to answer, or a cluster to elect its leaders
/// and place a stream.
const FORMING: Duration = Duration::from_secs(60);

/// Starts `nats-server` with JetStream on `client` (loopback) and `store`,
/// its log appended to `log`, with `extra` arguments (a cluster's).
fn spawn_server(
    client: std::net::SocketAddr,
    store: &std::path::Path,
    log: &std::path::Path,
    extra: &[String],
) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    tokio::process::Command::new(server_binary())
        .args(["-a", "127.0.0.1", "-p", &client.port().to_string(), "-js"])
        .arg("-sd")
        .arg(store)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", server_binary()))
}

/// Waits until a stream of `replicas` replicas can be created through
/// `url` (JetStream answers and, in a cluster, the meta leader is elected
/// and enough peers are known); panics naming `what` and `logs` after
/// [`FORMING`]. (async-nats' account query cannot read NATS 2.9's answer.)
async fn wait_for_jetstream(url: &str, replicas: usize, what: &str, logs: &std::path::Path) {
    let started = Instant::now();
    loop {
        let last = match async_nats::connect(url).await {
            Ok(client) => match create_probe(&jetstream::new(client), replicas).await {
                Ok(()) => return,
                Err(e) => e,
            },
            Err(e) => e.to_string(),
        };
        assert!(
            started.elapsed() < FORMING,
            "{what} did not answer within {FORMING:?} (last: {last}); logs in {}",
            logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl NatsCluster {
    /// Starts `size` nodes and waits until a stream of `size` replicas can be
    /// created through the first.
    ///
    /// # Panics
    /// When a node cannot start or the cluster does not form within a minute.
    pub async fn start(size: usize) -> Self {
        let suffix = crate::unique_suffix();
        let dir = std::env::temp_dir().join(format!("chat-memory-nats-cluster-{suffix}"));
        let addrs: Vec<(std::net::SocketAddr, std::net::SocketAddr)> = (0..size)
            .map(|_| (crate::processes::free_addr(), crate::processes::free_addr()))
            .collect();
        let routes: Vec<String> = addrs
            .iter()
            .map(|(_, route)| format!("nats://{route}"))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, (client, route)) in addrs.iter().enumerate() {
            let name = format!("cm-test-{suffix}-n{i}");
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
            let process = spawn_server(
                *client,
                &store,
                &dir.join(format!("{name}.log")),
                &[
                    "--server_name".into(),
                    name.clone(),
                    "--cluster_name".into(),
                    format!("cm-test-{suffix}"),
                    "--cluster".into(),
                    format!("nats://{route}"),
                    "--routes".into(),
                    routes.join(","),
                ],
            );
            nodes.push(Node {
                name,
                client: *client,
                process: Some(process),
            });
        }
        let cluster = Self { nodes, dir };
        let what = format!("the {size}-node NATS cluster");
        wait_for_jetstream(&cluster.url(0), size, &what, &cluster.dir).await;
        cluster
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://{}", self.nodes[i].client)
    }

    /// Which node a `server_name` (as JetStream reports a leader) is.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == server_name)
    }

    /// SIGKILLs node `i` (its store stays; the others must carry on).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            let _ = process.kill().await;
        }
    }
}

/// Creates and deletes a small in-memory stream of `replicas` replicas: `Ok`
/// once JetStream (and, in a cluster, enough peers) answers.
async fn create_probe(js: &jetstream::Context, replicas: usize) -> Result<(), String> {
    let name = format!("PROBE_{}", crate::unique_suffix());
    let probe = jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("probe.{name}")],
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    js.create_stream(probe).await.map_err(|e| e.to_string())?;
    let _ = js.delete_stream(&name).await;
    Ok(())
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                let _ = process.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One private JetStream server on a loopback port of its own, with its own
/// store directory (removed on drop): what the fault suite restarts in
/// scenario 5 instead of the machine's shared server.
pub struct NatsServer {
    client: std::net::SocketAddr,
    store: PathBuf,
    process: Option<tokio::process::Child>,
}

impl NatsServer {
    /// Starts the server and waits until JetStream answers.
    ///
    /// # Panics
    /// When it cannot start or JetStream does not answer within a minute.
    pub async fn start() -> Self {
        let store =
            std::env::temp_dir().join(format!("chat-memory-nats-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&store).unwrap_or_else(|e| panic!("{}: {e}", store.display()));
        let mut server = Self {
            client: crate::processes::free_addr(),
            store,
            process: None,
        };
        server.start_again().await;
        server
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.client)
    }

    /// Stops the server as `start-stop-daemon --stop` does (SIGTERM: it
    /// flushes its store), waiting for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take()
            && crate::processes::sigterm(&mut process, Duration::from_secs(20))
                .await
                .is_none()
        {
            let _ = process.kill().await;
        }
    }

    /// Starts the server (again) on the same port and store, and waits until
    /// JetStream answers.
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub async fn start_again(&mut self) {
        self.process = Some(spawn_server(
            self.client,
            &self.store,
            &self.store.join("server.log"),
            &[],
        ));
        let what = format!("the private NATS server on {}", self.client);
        wait_for_jetstream(&self.url(), 1, &what, &self.store).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            let _ = process.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
