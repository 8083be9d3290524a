//! `chat-memory-bench`: benchmarks and the fault suite of chat-memory.
//!
//! ```text
//! chat-memory-bench burst --updates 1000 --chats 1000          # all at once, stand-in model
//! chat-memory-bench sustained --chats 10000 --rate 333 --duration-secs 300
//! chat-memory-bench scale-out --updates 1000 --model-concurrency 16
//! chat-memory-bench stand-in-model --listen 127.0.0.1:8089     # the model alone
//! chat-memory-bench read-path --memories 10000 --watchers 1000 # reads vs a bare unary, ryw, watch
//! chat-memory-bench reads --calls 10000 --concurrency 16       # GetMemory against a running gateway
//! chat-memory-bench faults --updates 100 --chats 10 --scenarios 1,3,4,7  # fault-injection suite
//! ```
//!
//! `burst`, `sustained`, `scale-out` and `faults` start their own stacks
//! from the binaries next to this one (build them first: `cargo build
//! --workspace --bins`, `--release` for figures) and need local Postgres and
//! NATS; `reads` needs a running gateway (`--gateway`, `--token`).
//!
//! Every run stops by itself (bounded counts and a deadline) and sends
//! traffic only to 127.0.0.1 or the gateway address given.

mod bench;
mod faults;
mod procs;
mod report;
mod scrape;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::future::join_all;
use hdrhistogram::Histogram;

use chat_memory_loadtest::stand_in::{self, StandInConfig};
use chat_memory_proto::client;
use chat_memory_proto::v1::{ChatMessage, GetMemoryRequest, Role, UpdateMemoryRequest};

#[derive(Parser)]
#[command(
    name = "chat-memory-bench",
    about = "Benchmarks a running chat-memory gateway"
)]
struct Cli {
    #[command(flatten)]
    gateway: client::GatewayArgs,
    /// Prefix of the chat ids used, so runs do not mix.
    #[arg(long, global = true, default_value = "bench")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `updates` updates over `chats` chats, sent at once, against a stack
    /// of its own; accept -> readable from the job records.
    Burst {
        #[arg(long, default_value_t = 1000)]
        updates: usize,
        #[arg(long, default_value_t = 1000)]
        chats: usize,
        #[command(flatten)]
        run: bench::RunArgs,
    },
    /// Many active chats at a fixed rate for a duration (open loop), against
    /// a stack of its own.
    Sustained {
        #[arg(long, default_value_t = 10_000)]
        chats: usize,
        /// Updates a second, overall.
        #[arg(long, default_value_t = 333.0)]
        rate: f64,
        #[arg(long, default_value_t = 300)]
        duration_secs: u64,
        #[command(flatten)]
        run: bench::RunArgs,
    },
    /// The same burst against 1 worker, then 2; prints the ratio of applied/s.
    /// Give `--model-concurrency N` for the per-worker model concurrency cap.
    ScaleOut {
        #[arg(long, default_value_t = 1000)]
        updates: usize,
        #[arg(long, default_value_t = 1000)]
        chats: usize,
        #[command(flatten)]
        run: bench::RunArgs,
    },
    /// An OpenAI-compatible stand-in for a hosted model (POST
    /// /v1/chat/completions, GET /stats), until interrupted.
    StandInModel {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: String,
        #[arg(long, default_value_t = 1500)]
        latency_mean_ms: u64,
        /// σ of the latency's lognormal.
        #[arg(long, default_value_t = 0.4)]
        latency_sigma: f64,
        /// Share of calls answered with HTTP 500.
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Calls in flight above which a call gets 429 + Retry-After (0: no cap).
        #[arg(long, default_value_t = 0)]
        max_concurrency: usize,
        /// The Retry-After sent with a 429, in seconds.
        #[arg(long, default_value_t = 1)]
        retry_after_secs: u64,
    },
    /// The fault-injection suite against the real binaries (docs/reliability.md).
    Faults(faults::FaultArgs),
    /// Reads memories of `--chats` chats (seeded first) from `--concurrency`
    /// callers, against the running gateway at `--gateway`.
    /// The read side on a stack of its own: GetMemory over stored memories
    /// (with a NOT_FOUND share) against a bare tonic unary baseline,
    /// read-your-writes latency, and watch fan-out.
    ReadPath(bench::reads::ReadArgs),
    /// The seed's acceptance checklist at the seed's scale on a stack of its
    /// own (stand-in model failing 10 % of calls, a real Prometheus with the
    /// alert rules), printed and written as a report (`--out docs/readiness.md`).
    Readiness(bench::readiness::ReadinessArgs),
    /// The baseline server of `read-path` (grpc.health.v1 on --listen).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        listen: String,
    },
    Reads {
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 100)]
        chats: usize,
    },
}

/// The gateway client with the bearer token on every call.
type Client = client::GatewayClient;

#[tokio::main]
async fn main() -> Result<(), String> {
    let cli = Cli::parse();
    match cli.command {
        Command::Faults(args) => faults::run(args).await,
        Command::ReadPath(args) => said(bench::reads::read_path(&args).await),
        Command::Readiness(args) => said(bench::readiness::readiness(&args).await),
        Command::EchoServer { listen } => bench::reads::echo_server(&listen).await,
        Command::Burst {
            updates,
            chats,
            run,
        } => said(bench::burst(updates, chats, &run).await),
        Command::Sustained {
            chats,
            rate,
            duration_secs,
            run,
        } => said(bench::sustained(chats, rate, Duration::from_secs(duration_secs), &run).await),
        Command::ScaleOut {
            updates,
            chats,
            run,
        } => said(bench::scale_out(updates, chats, &run).await),
        Command::StandInModel {
            listen,
            latency_mean_ms,
            latency_sigma,
            error_rate,
            max_concurrency,
            retry_after_secs,
        } => {
            let config = StandInConfig {
                latency_mean: Duration::from_millis(latency_mean_ms),
                latency_sigma,
                error_rate,
                max_concurrency,
                retry_after_secs,
            };
            said(stand_in::serve_until_interrupted(&listen, config).await)
        }
        Command::Reads {
            calls,
            concurrency,
            chats,
        } => {
            let client = cli.gateway.client().await?;
            run_reads(client, &cli.prefix, calls, concurrency.max(1), chats.max(1)).await?;
            procs::print_peak_memory();
            Ok(())
        }
    }
}

/// A command's failure, as `main` prints it.
fn said<E: std::fmt::Display>(result: Result<(), E>) -> Result<(), String> {
    result.map_err(|e| e.to_string())
}

pub(crate) fn message(chat: usize, i: usize) -> Vec<ChatMessage> {
    let user = format!(
        "My member ID is M{chat:05}. Claim CLM-{i:04} for my visit to Dr. Rivera on March {} was billed at ${}.",
        i % 28 + 1,
        100 + i * 7
    );
    let assistant = format!(
        "It sounds like claim CLM-{i:04} may apply to your deductible; I will check coverage."
    );
    vec![
        ChatMessage {
            role: Role::User as i32,
            content: user,
            ..Default::default()
        },
        ChatMessage {
            role: Role::Assistant as i32,
            content: assistant,
            ..Default::default()
        },
    ]
}

async fn run_reads(
    client: Client,
    prefix: &str,
    calls: usize,
    concurrency: usize,
    chats: usize,
) -> Result<(), String> {
    let tag = run_tag();
    let ids: Vec<String> = (0..chats)
        .map(|c| format!("{prefix}-read-{tag}-{c}"))
        .collect();
    // Seed one memory per chat and wait until each is readable.
    let seeded = join_all(ids.iter().enumerate().map(|(c, id)| {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let req = UpdateMemoryRequest {
                chat_id: id.clone(),
                messages: message(c, 0),
                idempotency_key: String::new(),
            };
            client.update_memory(req).await.map_err(|s| s.to_string())?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(120) {
                if client
                    .get_memory(GetMemoryRequest {
                        chat_id: id.clone(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(format!("{id} was not readable within 120 s"))
        }
    }))
    .await;
    seeded.into_iter().collect::<Result<Vec<()>, String>>()?;

    let start = Instant::now();
    let per_caller = calls.div_ceil(concurrency);
    let tasks = (0..concurrency).map(|w| {
        let mut client = client.clone();
        let ids = ids.clone();
        async move {
            let mut h = histogram();
            let mut errors = 0usize;
            for i in 0..per_caller {
                let chat_id = ids[(w * per_caller + i) % ids.len()].clone();
                let t = Instant::now();
                match client
                    .get_memory(GetMemoryRequest {
                        chat_id,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => report::record(&mut h, t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (h, errors)
        }
    });
    let results = join_all(tasks).await;
    let wall = start.elapsed();
    let mut all = histogram();
    let mut errors = 0;
    for (h, e) in results {
        let _ = all.add(&h);
        errors += e;
    }
    println!(
        "reads: {} ok, {errors} errors, {concurrency} callers, wall {:.2}s, {:.0} reads/s",
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64()
    );
    report::print("GetMemory latency", &all);
    Ok(())
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 us .. 10 min, 3 significant figures; these bounds are constants.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn run_tag() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
