//! Test harness: starts the real chat-memory stack in-process.
//!
//! Each [`TestStack`] gets its own Postgres database (migrated) and its own
//! JetStream stream, subjects and consumer names, so tests run in parallel and
//! leave nothing behind. Services listen on port 0. Nothing is mocked: the worker
//! talks to the real agent over MCP and to memory-store over gRPC, memory-store to
//! Postgres, the gateway to JetStream.
//!
//! # Layout
//! - [`auth`]: the stack's credentials and token minting for any tenant/user/scopes.
//! - [`database`]: per-test databases (`test_db`), after sweeping stale test streams.
//! - [`stack`]: the services, their addresses, and killing / adding workers.
//! - [`gate`]: an agent backend wrapper that holds calls, to kill a worker mid-job.
//! - [`switch`]: an agent backend wrapper that can be switched down, to stage an outage.
//! - [`processes`]: the stack as real OS processes (traces across processes, SIGKILL).
//! - [`otlp`]: an OTLP receiver collecting the spans services export.
//! - [`prometheus`]: a real Prometheus scraping a process stack, with alert rules.
//! - [`pki`]: a throwaway CA and certificates for TLS tests.
//! - [`nats_cluster`]: a three-node JetStream cluster of private servers (`nats.replicas = 3`).
//! - [`reach`]: channels, health checks, gateway clients, waits for a job or the audit outbox.
//! - [`requests`]: request builders the tests share, and `send` / `memory`.
//! - [`wait`]: waiting for a condition with a deadline.

pub mod auth;
pub mod database;
pub mod gate;
pub mod nats_cluster;
pub mod otlp;
pub mod pki;
pub mod processes;
pub mod prometheus;
pub mod reach;
pub mod requests;
pub mod stack;
pub mod switch;
pub mod wait;

pub use stack::{GatewayClient, StackOptions, StoreClient, TestStack};

pub use test_db::{pg_server_url, unique_suffix};

/// NATS server the tests use; override with `CHAT_MEMORY_TEST_NATS`.
pub fn nats_url() -> String {
    std::env::var("CHAT_MEMORY_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// `max_bytes` of every test stream: JetStream reserves a stream's limit from the
/// server's storage, and 1 GiB per test would exhaust it after a few dozen runs.
pub const TEST_STREAM_BYTES: i64 = 16 * 1024 * 1024;

/// Deletes test streams and key-value buckets (`CMT_`, `CMP_`, `KV_CMT_RL_`, with
/// their dead-letter streams) older than two hours: what crashed runs left behind.
/// Best effort: a NATS that is down fails the test later, with a clear message.
pub async fn sweep_streams() {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let settings = job_queue::QueueSettings {
                url: nats_url(),
                ..Default::default()
            };
            let Ok(js) = job_queue::connect(&settings, "test-sweep").await else {
                return;
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut names = js.stream_names();
            let mut stale = Vec::new();
            while let Some(Ok(name)) = futures::StreamExt::next(&mut names).await {
                let rest = ["KV_CMT_RL_", "CMT_", "CMP_"]
                    .iter()
                    .find_map(|p| name.strip_prefix(p));
                let created = rest
                    .and_then(|r| r.split('_').next())
                    .and_then(|t| t.parse::<u64>().ok());
                if created.is_some_and(|t| now.saturating_sub(t) > 7200) {
                    stale.push(name);
                }
            }
            for name in stale {
                let _ = js.delete_stream(&name).await;
            }
        })
        .await;
}
