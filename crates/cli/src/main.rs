//! `chat-memory`: a small client of the public API, for people and runbooks.
//!
//! ```text
//! chat-memory update --chat c1 -m "user:My member ID is W123" -m "assistant:Thanks" --wait
//! chat-memory status <job-id>
//! chat-memory get c1
//! chat-memory delete c1
//! chat-memory audit --chat c1 --action delete     # needs a memory:admin token
//! chat-memory queue --nats nats://127.0.0.1:4222
//! chat-memory dlq list                            # dead-lettered jobs and why
//! chat-memory dlq replay 12                       # or: dlq replay --all
//! chat-memory streams backup --out DIR            # the JetStream streams (runbooks/backup-restore.md)
//! chat-memory streams restore --from DIR [--replace]
//! ```

/// `println!` that never panics: a closed stdout (`chat-memory queue | head`)
/// only drops the output, and the command still finishes what it was doing
/// (a replay in progress is not cut short); any other write error ends it.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        match writeln!(std::io::stdout().lock(), $($arg)*) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(format!("writing to stdout: {e}")),
        }
    }};
}

mod dlq;
mod queue;
mod render;
mod streams;
mod token;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use chat_memory_proto::client;
use chat_memory_proto::v1::{
    ChatMessage, DeleteMemoryRequest, GetMemoryRequest, GetUpdateStatusRequest, ReadCondition,
    Role, UpdateMemoryRequest,
};

/// One read-your-writes wait of `update --wait` (the gateway's default maximum).
const READ_WAIT_MS: u32 = 10_000;

#[derive(Parser)]
#[command(
    name = "chat-memory",
    about = "Client of the chat-memory gateway",
    version
)]
struct Cli {
    #[command(flatten)]
    gateway: client::GatewayArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the operator commands find the queue: NATS and the jobs stream.
#[derive(clap::Args)]
struct JetStreamArgs {
    #[arg(
        long,
        env = "CHAT_MEMORY__NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// The jobs stream (its dead letters are in `<stream>_DLQ`).
    #[arg(
        long,
        env = "CHAT_MEMORY__NATS__STREAM",
        default_value = "CHAT_MEMORY_JOBS"
    )]
    stream: String,
}

#[derive(Subcommand)]
enum Command {
    /// Send new messages of a chat; prints the job id.
    Update {
        #[arg(long)]
        chat: String,
        /// A message as `role:text` (role: user, assistant, system, tool); repeat in order.
        #[arg(short, long = "message", required = true)]
        messages: Vec<String>,
        /// Idempotency key: retrying with the same key has no second effect.
        #[arg(long)]
        key: Option<String>,
        /// Wait until the job is applied or failed (read-your-writes, no
        /// polling; at most a minute) and print its status.
        #[arg(long)]
        wait: bool,
    },
    /// Show an update job's status.
    Status { job_id: String },
    /// Show a chat's memory and its freshness.
    Get { chat_id: String },
    /// Delete a chat's memory and job records.
    Delete { chat_id: String },
    /// Show the audit log of the token's tenant, newest first (memory:admin).
    Audit {
        #[arg(long)]
        chat: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// update, read, status, delete, denied, expire or audit.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Show the update queue and the workers' shared consumer, read from JetStream (operators).
    Queue {
        #[command(flatten)]
        jetstream: JetStreamArgs,
        #[arg(
            long,
            env = "CHAT_MEMORY__CONSUMER__DURABLE_PREFIX",
            default_value = "summarizer"
        )]
        durable_prefix: String,
    },
    /// List or replay dead-lettered jobs, through JetStream (operators).
    Dlq {
        #[command(flatten)]
        jetstream: JetStreamArgs,
        #[arg(
            long,
            env = "CHAT_MEMORY__NATS__SUBJECT_PREFIX",
            default_value = "chatmemory"
        )]
        subject_prefix: String,
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Back up or restore the deployment's JetStream streams (jobs, dead
    /// letters, audit outbox) with their consumers, same sequences (operators).
    Streams {
        #[command(flatten)]
        jetstream: JetStreamArgs,
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// Sign an HS256 token for a tenant and user (local runs, benchmarks); prints it.
    Token {
        /// The gateway's `auth.hs256_secret`.
        #[arg(long, env = "CHAT_MEMORY__AUTH__HS256_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value = "chat-memory")]
        issuer: String,
        #[arg(long, default_value = "chat-memory")]
        audience: String,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// Comma-separated: memory:read, memory:write, memory:service, memory:admin.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "memory:read,memory:write"
        )]
        scopes: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

#[derive(Subcommand)]
enum StreamsCommand {
    /// Snapshot every stream into a directory (`<stream>.json`, `<stream>.snapshot`).
    Backup {
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Restore the streams of a backup directory.
    Restore {
        #[arg(long)]
        from: std::path::PathBuf,
        /// Delete a stream that exists (and what it holds) before restoring it.
        #[arg(long)]
        replace: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-memory: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Token {
        secret,
        issuer,
        audience,
        tenant,
        user,
        scopes,
        ttl_secs,
    } = &cli.command
    {
        let request = token::TokenRequest {
            secret,
            issuer,
            audience,
            tenant,
            user,
            scopes,
            ttl_secs: *ttl_secs,
        };
        out!("{}", token::sign(&request)?);
        return Ok(());
    }
    if let Command::Queue {
        jetstream,
        durable_prefix,
    } = &cli.command
    {
        return queue::print(&jetstream.nats, &jetstream.stream, durable_prefix).await;
    }
    if let Command::Dlq {
        jetstream,
        subject_prefix,
        command,
    } = &cli.command
    {
        return dlq::run(&jetstream.nats, &jetstream.stream, subject_prefix, command).await;
    }
    if let Command::Streams { jetstream, command } = &cli.command {
        return match command {
            StreamsCommand::Backup { out } => {
                streams::backup(&jetstream.nats, &jetstream.stream, out).await
            }
            StreamsCommand::Restore { from, replace } => {
                streams::restore(&jetstream.nats, &jetstream.stream, from, *replace).await
            }
        };
    }
    let mut client = cli.gateway.client().await?;
    match cli.command {
        Command::Update {
            chat,
            messages,
            key,
            wait,
        } => {
            let messages = messages
                .iter()
                .map(|m| parse_message(m))
                .collect::<Result<Vec<_>, _>>()?;
            let req_chat = chat.clone();
            let req = UpdateMemoryRequest {
                chat_id: chat,
                messages,
                idempotency_key: key.unwrap_or_default(),
            };
            let resp = client
                .update_memory(req)
                .await
                .map_err(render::status)?
                .into_inner();
            if !wait {
                out!(
                    "{}",
                    serde_json::json!({ "job_id": resp.job_id, "deduplicated": resp.deduplicated })
                );
                return Ok(());
            }
            // Read-your-writes: the gateway answers as soon as the job is
            // applied (or failed), without polling; up to a minute in all.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let read = client
                    .get_memory(GetMemoryRequest {
                        chat_id: req_chat.clone(),
                        after_job_id: resp.job_id.clone(),
                        wait_ms: READ_WAIT_MS,
                        ..Default::default()
                    })
                    .await;
                match read {
                    Ok(r) if r.get_ref().condition != ReadCondition::TimedOut as i32 => break,
                    Ok(_) => {}
                    // No memory yet by the end of this wait: wait again.
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(render::status(s)),
                }
            }
            let s = client
                .get_update_status(GetUpdateStatusRequest {
                    job_id: resp.job_id.clone(),
                })
                .await
                .map_err(render::status)?
                .into_inner();
            out!("{}", render::job(&s));
            return Ok(());
        }
        Command::Status { job_id } => {
            let s = client
                .get_update_status(GetUpdateStatusRequest { job_id })
                .await
                .map_err(render::status)?;
            out!("{}", render::job(&s.into_inner()));
        }
        Command::Get { chat_id } => {
            let m = client
                .get_memory(GetMemoryRequest {
                    chat_id,
                    ..Default::default()
                })
                .await
                .map_err(render::status)?;
            out!("{}", render::memory(&m.into_inner()));
        }
        Command::Queue { .. }
        | Command::Dlq { .. }
        | Command::Streams { .. }
        | Command::Token { .. } => {}
        Command::Audit {
            chat,
            user,
            action,
            limit,
        } => {
            let rows = client
                .query_audit(chat_memory_proto::v1::QueryAuditRequest {
                    chat_id: chat.unwrap_or_default(),
                    user: user.unwrap_or_default(),
                    action: action.unwrap_or_default(),
                    before: None,
                    limit,
                })
                .await
                .map_err(render::status)?
                .into_inner();
            for e in rows.entries {
                out!("{}", render::audit(&e));
            }
        }
        Command::Delete { chat_id } => {
            let d = client
                .delete_memory(DeleteMemoryRequest { chat_id })
                .await
                .map_err(render::status)?
                .into_inner();
            out!(
                "{}",
                serde_json::json!({ "memory_deleted": d.memory_deleted, "jobs_removed": d.jobs_removed })
            );
        }
    }
    Ok(())
}

fn parse_message(raw: &str) -> Result<ChatMessage, String> {
    let (role, text) = raw
        .split_once(':')
        .ok_or_else(|| format!("message {raw:?}: expected role:text"))?;
    let role = match role.trim() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "tool" => Role::Tool,
        other => {
            return Err(format!(
                "message role {other:?}: expected user, assistant, system or tool"
            ));
        }
    };
    Ok(ChatMessage {
        role: role as i32,
        content: text.trim().to_owned(),
        ..Default::default()
    })
}
