//! A three-node JetStream cluster of private `nats-server` processes on
//! loopback, for the tests of `nats.replicas = 3` (DEBT D-27): each node has
//! its own ports and store directory (removed on drop), the nodes route to
//! each other, and [`NatsCluster::start`] returns once the cluster places a
//! replicated stream.

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

/// Longest wait for the cluster to elect its leaders and place a stream.
const FORMING: Duration = Duration::from_secs(60);

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
            let log = std::fs::File::create(dir.join(format!("{name}.log")))
                .unwrap_or_else(|e| panic!("log: {e}"));
            let process = tokio::process::Command::new(server_binary())
                .args(["-a", "127.0.0.1", "-p", &client.port().to_string(), "-js"])
                .arg("-sd")
                .arg(&store)
                .args(["--server_name", &name])
                .args(["--cluster_name", &format!("cm-test-{suffix}")])
                .args(["--cluster", &format!("nats://{route}")])
                .args(["--routes", &routes.join(",")])
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", server_binary()));
            nodes.push(Node {
                name,
                client: *client,
                process: Some(process),
            });
        }
        let cluster = Self { nodes, dir };
        cluster.wait_formed(size).await;
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

    /// Waits until a stream of `replicas` replicas can be created through
    /// node 0 (the meta leader elected, enough peers known), then deletes it.
    async fn wait_formed(&self, replicas: usize) {
        let started = Instant::now();
        let mut last = String::from("no attempt");
        while started.elapsed() < FORMING {
            if let Ok(client) = async_nats::connect(self.url(0)).await {
                let js = jetstream::new(client);
                let name = format!("CLUSTER_PROBE_{}", crate::unique_suffix());
                let probe = jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("cluster-probe.{name}")],
                    num_replicas: replicas,
                    storage: jetstream::stream::StorageType::Memory,
                    ..Default::default()
                };
                match js.create_stream(probe).await {
                    Ok(_) => {
                        let _ = js.delete_stream(&name).await;
                        return;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "the {}-node NATS cluster did not form within {FORMING:?} (last: {last}); logs in {}",
            self.nodes.len(),
            self.dir.display()
        );
    }
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
