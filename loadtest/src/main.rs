//! `chat-memory-bench`: load against a running gateway, printing figures.
//!
//! ```text
//! chat-memory-bench updates --updates 1000 --chats 100   # accept -> readable latency
//! chat-memory-bench reads --calls 10000 --concurrency 16 # GetMemory latency and throughput
//! chat-memory-bench faults --updates 100 --chats 10 --scenarios 1,3,4,7  # fault-injection suite
//! ```
//!
//! `faults` starts its own stacks from the workspace's binaries (build them
//! first: `cargo build --workspace --bins`) and needs local Postgres and NATS.
//!
//! Both stop by themselves (bounded counts and a deadline) and send traffic only
//! to the gateway address given.

mod faults;
mod procs;
mod report;

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::future::join_all;
use hdrhistogram::Histogram;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::Channel;

use chat_memory_proto::client;
use chat_memory_proto::time::from_timestamp;
use chat_memory_proto::v1::{
    ChatMessage, GetMemoryRequest, GetUpdateStatusRequest, JobState, Role, UpdateMemoryRequest,
    memory_service_client::MemoryServiceClient,
};

#[derive(Parser)]
#[command(
    name = "chat-memory-bench",
    about = "Benchmarks a running chat-memory gateway"
)]
struct Cli {
    #[arg(
        long,
        global = true,
        env = "CHAT_MEMORY_GATEWAY",
        default_value = "http://127.0.0.1:50051"
    )]
    gateway: String,
    /// PEM CA certificate to trust for an `https://` gateway (required for one);
    /// `CHAT_MEMORY_TLS=1 scripts/run-local.sh` makes `.local/tls/ca.crt`.
    #[arg(long, global = true, env = "CHAT_MEMORY_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Bearer token (scopes memory:read and memory:write); `scripts/run-local.sh`
    /// writes one to `.local/token`. Every call counts against its user's rate limit.
    #[arg(long, global = true, env = "CHAT_MEMORY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Prefix of the chat ids used, so runs do not mix.
    #[arg(long, global = true, default_value = "bench")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends updates (each chat's in sequence, chats in parallel) and measures
    /// how long each takes from acceptance until it is readable.
    Updates {
        #[arg(long, default_value_t = 1000)]
        updates: usize,
        #[arg(long, default_value_t = 100)]
        chats: usize,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        deadline_secs: u64,
    },
    /// The fault-injection suite against the real binaries (docs/reliability.md).
    Faults(faults::FaultArgs),
    /// Reads memories of `--chats` chats (seeded first) from `--concurrency` callers.
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
type Client = MemoryServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    fn new(token: Option<&str>) -> Result<Self, String> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| "--token: not a valid header value".to_owned())
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let cli = Cli::parse();
    if let Command::Faults(args) = cli.command {
        return faults::run(args).await;
    }
    let channel = client::connect(&cli.gateway, cli.ca_cert.as_deref())
        .await
        .map_err(|e| client::error_chain(&e))?;
    let bearer = Bearer::new(cli.token.as_deref())?;
    let client = MemoryServiceClient::with_interceptor(channel, bearer);
    match cli.command {
        Command::Updates {
            updates,
            chats,
            deadline_secs,
        } => {
            run_updates(
                client,
                &cli.prefix,
                updates,
                chats.max(1),
                Duration::from_secs(deadline_secs),
            )
            .await
        }
        Command::Reads {
            calls,
            concurrency,
            chats,
        } => run_reads(client, &cli.prefix, calls, concurrency.max(1), chats.max(1)).await,
        Command::Faults(_) => Ok(()),
    }?;
    procs::print_peak_memory();
    Ok(())
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

/// Accept -> readable for each update: the server's commit time minus its
/// acceptance time (both from the job record), plus what the client observed
/// (acceptance response -> first status poll seeing it, an upper bound with 20 ms polls).
async fn run_updates(
    client: Client,
    prefix: &str,
    updates: usize,
    chats: usize,
    deadline: Duration,
) -> Result<(), String> {
    let run = Instant::now();
    let per_chat = updates.div_ceil(chats);
    let tasks = (0..chats).map(|c| {
        let mut client = client.clone();
        let chat_id = format!("{prefix}-{}-{c}", run_tag());
        async move {
            let mut server = Vec::new();
            let mut observed = Vec::new();
            let mut failures = 0usize;
            for i in 0..per_chat {
                let req = UpdateMemoryRequest {
                    chat_id: chat_id.clone(),
                    messages: message(c, i),
                    idempotency_key: String::new(),
                };
                let Ok(resp) = client.update_memory(req).await else {
                    failures += 1;
                    continue;
                };
                let job_id = resp.into_inner().job_id;
                let accepted = Instant::now();
                loop {
                    if run.elapsed() > deadline {
                        failures += 1;
                        break;
                    }
                    let st = client
                        .get_update_status(GetUpdateStatusRequest {
                            job_id: job_id.clone(),
                        })
                        .await;
                    if let Ok(st) = st.map(tonic::Response::into_inner) {
                        match JobState::try_from(st.state) {
                            Ok(JobState::Succeeded) => {
                                observed.push(accepted.elapsed());
                                let times = st
                                    .accepted_at
                                    .as_ref()
                                    .and_then(from_timestamp)
                                    .zip(st.updated_at.as_ref().and_then(from_timestamp));
                                if let Some((a, u)) = times {
                                    server.push((u - a).to_std().unwrap_or_default());
                                }
                                break;
                            }
                            Ok(JobState::Failed) => {
                                failures += 1;
                                break;
                            }
                            _ => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (server, observed, failures)
        }
    });
    let results = join_all(tasks).await;
    let wall = run.elapsed();
    let mut server = histogram();
    let mut observed = histogram();
    let mut failures = 0;
    for (s, o, f) in results {
        s.iter().for_each(|d| report::record(&mut server, *d));
        o.iter().for_each(|d| report::record(&mut observed, *d));
        failures += f;
    }
    println!(
        "updates: {} sent over {chats} chats, {} applied, {failures} failed, wall {:.2}s, {:.0} updates/s",
        per_chat * chats,
        server.len(),
        wall.as_secs_f64(),
        server.len() as f64 / wall.as_secs_f64()
    );
    report::print("accept -> readable (server clocks)", &server);
    report::print("accept -> seen by client (20 ms polls)", &observed);
    Ok(())
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
                match client.get_memory(GetMemoryRequest { chat_id }).await {
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
