//! The faults, one per scenario, struck while the workload runs.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_memory_loadtest::stand_in::StandIn;
use test_support::nats_cluster::NatsServer;
use test_support::processes::{ProcessOptions, ProcessStack};

/// The scenarios, numbered as in issue 6 (0 is the fault-free baseline; 8
/// is issue 10's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Baseline,
    AgentFlaky,
    AgentDown,
    WorkerKilled,
    StoreKilled,
    /// A private NATS server (the scenario's own) stopped and started again.
    NatsRestart,
    PostgresRestart,
    GatewayKilled,
    /// A worker SIGKILLed right after it started a coalesced call
    /// ([`super::coalesced`]).
    WorkerKilledMidBatch,
}

impl Scenario {
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Baseline,
            1 => Self::AgentFlaky,
            2 => Self::AgentDown,
            3 => Self::WorkerKilled,
            4 => Self::StoreKilled,
            5 => Self::NatsRestart,
            6 => Self::PostgresRestart,
            7 => Self::GatewayKilled,
            8 => Self::WorkerKilledMidBatch,
            _ => return None,
        })
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Baseline => "0 no faults",
            Self::AgentFlaky => "1 agent fails 10%",
            Self::AgentDown => "2 agent down",
            Self::WorkerKilled => "3 worker SIGKILL x2",
            Self::StoreKilled => "4 memory-store killed",
            Self::NatsRestart => "5 NATS restarted",
            Self::PostgresRestart => "6 Postgres restarted",
            Self::GatewayKilled => "7 gateway killed",
            Self::WorkerKilledMidBatch => "8 worker SIGKILL mid-batch",
        }
    }

    /// Whether the agent answers from the stand-in model (scenario 8) rather
    /// than the deterministic offline backend.
    pub fn uses_model(self) -> bool {
        self == Self::WorkerKilledMidBatch
    }

    /// The chats the scenario's workload spreads over: `chats`, except that
    /// scenario 8 concentrates it on so few chats that each chat's next
    /// update arrives within a quarter of a model call (at `rate` updates a
    /// second overall), so every chat has updates waiting while its call runs
    /// and the next call coalesces them. Spread over 100 chats at 50/s, a
    /// chat's updates came 2 s apart, after its 1 s call had ended: no call
    /// coalesced and the fault was never struck (DEBT D-21).
    pub fn chats(self, chats: usize, rate: f64) -> usize {
        let chats = chats.max(1);
        if self != Self::WorkerKilledMidBatch {
            return chats;
        }
        let within = super::coalesced::MODEL_LATENCY.as_secs_f64() / 4.0;
        // Saturating float-to-int cast: a huge rate gives usize::MAX.
        let enough = (rate.max(0.1) * within).floor() as usize;
        chats.min(enough.max(1))
    }

    /// Worker processes the scenario runs.
    pub fn workers(self) -> usize {
        if self == Self::WorkerKilledMidBatch {
            2
        } else {
            1
        }
    }
}

/// Settings shared by every scenario: a short agent deadline (so injected
/// timeouts are met quickly), for scenario 1 the agent's fault injection, and
/// for scenario 8 the `openai` backend pointed at `model_url` (the stand-in).
pub fn options(scenario: Scenario, ack_wait_ms: u64, model_url: Option<String>) -> ProcessOptions {
    let s = |k: &str, v: String| (k.to_owned(), v);
    let mut agent = vec![];
    if let Some(url) = model_url {
        agent.push(s("CHAT_MEMORY__BACKEND", "openai".into()));
        agent.push(s("CHAT_MEMORY__OPENAI__BASE_URL", url));
        agent.push(s("CHAT_MEMORY__OPENAI__MODEL", "stand-in".into()));
    }
    if scenario == Scenario::AgentFlaky {
        agent.push(s("CHAT_MEMORY__FAULTS__ERROR_RATE_PERCENT", "5".into()));
        agent.push(s("CHAT_MEMORY__FAULTS__TIMEOUT_RATE_PERCENT", "5".into()));
        agent.push(s("CHAT_MEMORY__FAULTS__TIMEOUT_MS", "2500".into()));
    }
    let worker = vec![
        s("CHAT_MEMORY__AGENT__CALL_TIMEOUT_MS", "2000".into()),
        s(
            "CHAT_MEMORY__CONSUMER__ACK_WAIT_MS",
            ack_wait_ms.to_string(),
        ),
        s(
            "CHAT_MEMORY__CONSUMER__PROGRESS_INTERVAL_MS",
            (ack_wait_ms / 3).to_string(),
        ),
        s("CHAT_MEMORY__RETRY__STORE_RETRY_MS", "5000".into()),
    ];
    ProcessOptions {
        otlp_endpoint: None,
        env: vec![("summarizer-agent", agent), ("summarizer-worker", worker)],
        nats_url: None,
    }
}

/// Waits until `share` of `total` updates were accepted (or 60 s passed).
async fn after(accepted: &Arc<AtomicUsize>, total: usize, share: f64) {
    let target = ((total as f64) * share) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(Ordering::SeqCst) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shell(program: &str, args: &[&str]) {
    match Command::new(program).args(args).status() {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("{program} {args:?} exited with {s}"),
        Err(e) => eprintln!("{program} {args:?}: {e}"),
    }
}

fn pg_cluster_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "15".into())
}

/// Makes sure this machine's NATS and Postgres run (after scenario 6).
pub fn ensure_infrastructure() {
    shell(
        "start-stop-daemon",
        &[
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ],
    );
    let version = pg_cluster_version();
    let running = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "status"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !running {
        shell(
            "pg_ctlcluster",
            &["--skip-systemctl-redirect", &version, "main", "start"],
        );
    }
}

/// Strikes the scenario's fault into the running stack. `Ok`: evidence worth
/// printing, if any; `Err`: the fault could not be struck as the scenario
/// describes (the scenario then fails).
pub async fn strike(
    scenario: Scenario,
    stack: &mut ProcessStack,
    accepted: &Arc<AtomicUsize>,
    total: usize,
    outage: Duration,
    model: Option<&StandIn>,
    nats: Option<&mut NatsServer>,
) -> Result<Option<String>, String> {
    match scenario {
        Scenario::Baseline | Scenario::AgentFlaky => {}
        Scenario::AgentDown => {
            after(accepted, total, 0.3).await;
            stack.kill("summarizer-agent").await;
            tokio::time::sleep(outage).await;
            stack.spawn("summarizer-agent").await;
        }
        Scenario::WorkerKilled => {
            for share in [0.3, 0.6] {
                after(accepted, total, share).await;
                stack.kill("summarizer-worker").await;
                stack.spawn("summarizer-worker").await;
            }
        }
        Scenario::StoreKilled => {
            after(accepted, total, 0.3).await;
            stack.kill("memory-store").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stack.spawn("memory-store").await;
        }
        Scenario::NatsRestart => {
            // The scenario's own server: the machine's shared one is untouched.
            let nats = nats.ok_or("scenario 5 needs its private NATS server")?;
            after(accepted, total, 0.3).await;
            let at = accepted.load(Ordering::SeqCst);
            let stopped = Instant::now();
            nats.stop().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            nats.start_again().await;
            return Ok(Some(format!(
                "stopped the scenario's own NATS server (SIGTERM) after {at} acceptances and started it again on the same port and store: down {} ms",
                stopped.elapsed().as_millis()
            )));
        }
        Scenario::PostgresRestart => {
            after(accepted, total, 0.3).await;
            let version = pg_cluster_version();
            shell(
                "pg_ctlcluster",
                &["--skip-systemctl-redirect", &version, "main", "restart"],
            );
        }
        Scenario::GatewayKilled => {
            after(accepted, total, 0.3).await;
            stack.kill("gateway").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            stack.spawn("gateway").await;
        }
        Scenario::WorkerKilledMidBatch => {
            let model = model.ok_or("scenario 8 needs the stand-in model")?;
            return super::coalesced::strike(stack, model).await.map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_8_concentrates_its_load_so_a_chats_updates_come_within_a_quarter_call() {
        // The full form: 100 chats at 50/s would space a chat's updates 2 s apart.
        let chats = Scenario::WorkerKilledMidBatch.chats(100, 50.0);
        assert_eq!(chats, 12);
        let gap = chats as f64 / 50.0;
        assert!(gap <= super::super::coalesced::MODEL_LATENCY.as_secs_f64() / 4.0);
        // CI's short form already does: unchanged.
        assert_eq!(Scenario::WorkerKilledMidBatch.chats(10, 40.0), 10);
        // A trickle still has one chat.
        assert_eq!(Scenario::WorkerKilledMidBatch.chats(100, 0.5), 1);
    }

    #[test]
    fn other_scenarios_keep_the_chats_asked_for() {
        for n in 0..=7 {
            let s = Scenario::from_number(n).expect("a scenario");
            assert_eq!(s.chats(100, 50.0), 100, "{}", s.label());
        }
        assert_eq!(Scenario::Baseline.chats(0, 50.0), 1);
    }
}
