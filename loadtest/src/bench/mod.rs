//! `chat-memory-bench burst | sustained | scale-out`: the update path under a
//! hosted model's latency, measured without disturbing it.
//!
//! Each run starts its own stack from the workspace's binaries
//! ([`ProcessStack`]: a fresh database and stream names), with the agent on
//! the `openai` backend pointed at an in-process [`StandIn`] (or on the
//! `offline` backend with `--offline`). The load is sent open loop; only
//! acceptance is awaited. Accept → readable comes afterwards from the jobs
//! table (acceptance and commit time of each job), and while the run
//! drains the bench asks Postgres once a second how many jobs have ended:
//! no status polling through the gateway.
//!
//! # Layout
//! - [`load`]: the open-loop sender and the accept latencies.
//! - [`records`]: the jobs table: progress, accept → readable, the span.
//! - [`usage`]: CPU seconds and peak RSS per process from `/proc`.
//! - [`reads`]: `read-path`, the read side; [`readiness`]: the seed's
//!   acceptance checklist at its scale, written as docs/readiness.md.

mod history;
mod load;
pub mod readiness;
pub mod reads;
mod records;
mod usage;

use std::time::{Duration, Instant};

use chat_memory_loadtest::stand_in::{StandIn, StandInConfig, StatsSnapshot};
use test_support::processes::{ProcessOptions, ProcessStack};

use self::load::{Plan, Sent};
use self::records::{Counts, Records, Timings};
use self::usage::Usage;
use crate::report;

/// Options every scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Use the agent's `offline` backend instead of the stand-in model.
    #[arg(long)]
    pub offline: bool,
    /// Mean latency of a model call (lognormal).
    #[arg(long, default_value_t = 1500)]
    pub model_latency_mean_ms: u64,
    /// σ of the model latency's lognormal.
    #[arg(long, default_value_t = 0.4)]
    pub model_latency_sigma: f64,
    /// Share of model calls answered with HTTP 500.
    #[arg(long, default_value_t = 0.0)]
    pub model_error_rate: f64,
    /// The stand-in's concurrency cap: calls above it get 429 with
    /// Retry-After (0: no cap).
    #[arg(long, default_value_t = 0)]
    pub model_max_concurrency: usize,
    /// The workers' `agent.max_concurrent_calls` (model calls in flight per
    /// worker). Passed only when given: workers without the setting refuse it.
    #[arg(long)]
    pub model_concurrency: Option<u32>,
    /// Every service's `runtime.worker_threads` (tokio threads; 0 is one per
    /// CPU). Passed only when given: services without the setting refuse it.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// The workers' `store_batches.linger_ms` (how long a gathered store
    /// call waits for others). Passed only when given.
    #[arg(long)]
    pub worker_store_linger_ms: Option<u64>,
    /// The gateway's `store_batches.linger_ms`. Passed only when given.
    #[arg(long)]
    pub gateway_store_linger_ms: Option<u64>,
    /// gRPC connections the load is spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Gateway replicas; the connections go to each in turn. Each receives
    /// every chat's change events, so the extra ones show their fan-out cost.
    #[arg(long, default_value_t = 1)]
    pub gateways: usize,
    /// Give up sending and waiting this long after the start.
    #[arg(long, default_value_t = 900)]
    pub deadline_secs: u64,
    /// Seed a running deployment's history first (1 M audit rows, 1 M job
    /// records, 100,000 memories of another tenant): figures on large tables.
    #[arg(long)]
    pub history: bool,
}

/// One run's figures.
#[derive(Debug)]
struct Figures {
    sent: Sent,
    counts: Counts,
    timings: Timings,
    model: Option<StatsSnapshot>,
    usage: Vec<Usage>,
}

impl Figures {
    fn applied_per_sec(&self) -> f64 {
        if self.timings.span_secs > 0.0 {
            self.counts.succeeded as f64 / self.timings.span_secs
        } else {
            0.0
        }
    }
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    StandIn(#[from] chat_memory_loadtest::stand_in::StandInError),
    #[error(transparent)]
    Records(#[from] records::RecordsError),
    #[error("gateway client: {0}")]
    Client(String),
    #[error("seeding the history: {0}")]
    History(#[source] sea_orm::DbErr),
}

/// `burst`: `updates` updates over `chats` chats, all sent at once.
///
/// # Errors
/// [`BenchError`] when the stand-in, the gateway or the database fails.
pub async fn burst(updates: usize, chats: usize, args: &RunArgs) -> Result<(), BenchError> {
    let plan = Plan {
        updates,
        chats,
        rate: None,
    };
    let figures = run(plan, 1, args).await?;
    print("burst", plan, 1, args, &figures);
    Ok(())
}

/// `sustained`: `rate` updates a second over `chats` chats for `duration`.
///
/// # Errors
/// [`BenchError`] when the stand-in, the gateway or the database fails.
pub async fn sustained(
    chats: usize,
    rate: f64,
    duration: Duration,
    args: &RunArgs,
) -> Result<(), BenchError> {
    let updates = (rate * duration.as_secs_f64()).round() as usize;
    let plan = Plan {
        updates,
        chats,
        rate: Some(rate),
    };
    let figures = run(plan, 1, args).await?;
    print("sustained", plan, 1, args, &figures);
    Ok(())
}

/// `scale-out`: the same burst against one worker, then two.
///
/// # Errors
/// [`BenchError`] when the stand-in, the gateway or the database fails.
pub async fn scale_out(updates: usize, chats: usize, args: &RunArgs) -> Result<(), BenchError> {
    let plan = Plan {
        updates,
        chats,
        rate: None,
    };
    let one = run(plan, 1, args).await?;
    print("scale-out, 1 worker", plan, 1, args, &one);
    let two = run(plan, 2, args).await?;
    print("scale-out, 2 workers", plan, 2, args, &two);
    let ratio = if one.applied_per_sec() > 0.0 {
        two.applied_per_sec() / one.applied_per_sec()
    } else {
        0.0
    };
    println!(
        "scale-out: 2 workers apply {ratio:.2}x what 1 does ({:.1}/s vs {:.1}/s; model concurrency per worker: {})",
        two.applied_per_sec(),
        one.applied_per_sec(),
        args.model_concurrency
            .map_or_else(|| "the worker's own".to_owned(), |n| n.to_string())
    );
    Ok(())
}

/// The agent's settings to call `model` through its `openai` backend.
pub(super) fn stand_in_env(model: &StandIn) -> Vec<(String, String)> {
    vec![
        ("CHAT_MEMORY__BACKEND".to_owned(), "openai".to_owned()),
        ("CHAT_MEMORY__OPENAI__BASE_URL".to_owned(), model.base_url()),
        (
            "CHAT_MEMORY__OPENAI__MODEL".to_owned(),
            "stand-in".to_owned(),
        ),
    ]
}

/// Gives every service of `env` `runtime.worker_threads = n`, when asked for.
pub(super) fn set_worker_threads(
    env: &mut [(&'static str, Vec<(String, String)>)],
    n: Option<usize>,
) {
    if let Some(n) = n {
        for (_, vars) in env {
            vars.push((
                "CHAT_MEMORY__RUNTIME__WORKER_THREADS".to_owned(),
                n.to_string(),
            ));
        }
    }
}

pub(super) fn stack_options(args: &RunArgs, stand_in: Option<&StandIn>) -> ProcessOptions {
    let s = |k: &str, v: String| (k.to_owned(), v);
    let agent = stand_in.map(stand_in_env).unwrap_or_default();
    // Enough JetStream storage for a long run's jobs and audit rows.
    let stream_bytes = s("CHAT_MEMORY__NATS__MAX_BYTES", (256i64 << 20).to_string());
    let mut worker = vec![stream_bytes.clone()];
    if let Some(n) = args.model_concurrency {
        worker.push(s("CHAT_MEMORY__AGENT__MAX_CONCURRENT_CALLS", n.to_string()));
    }
    // The stack's gateway already gives the bench user a per-minute budget
    // no run meets (test_support::processes).
    let mut gateway = vec![stream_bytes];
    for (vars, linger) in [
        (&mut worker, args.worker_store_linger_ms),
        (&mut gateway, args.gateway_store_linger_ms),
    ] {
        if let Some(ms) = linger {
            vars.push(s("CHAT_MEMORY__STORE_BATCHES__LINGER_MS", ms.to_string()));
        }
    }
    let mut env = vec![
        ("summarizer-agent", agent),
        ("summarizer-worker", worker),
        ("gateway", gateway),
        ("memory-store", Vec::new()),
    ];
    set_worker_threads(&mut env, args.worker_threads);
    ProcessOptions {
        otlp_endpoint: None,
        env,
        nats_url: None,
    }
}

async fn run(plan: Plan, workers: usize, args: &RunArgs) -> Result<Figures, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let stand_in = if args.offline {
        None
    } else {
        let config = StandInConfig {
            latency_mean: Duration::from_millis(args.model_latency_mean_ms),
            latency_sigma: args.model_latency_sigma,
            error_rate: args.model_error_rate,
            max_concurrency: args.model_max_concurrency,
            retry_after_secs: 1,
        };
        Some(StandIn::start("127.0.0.1:0", config).await?)
    };
    let mut stack = ProcessStack::start(stack_options(args, stand_in.as_ref())).await;
    for _ in 1..workers {
        stack.spawn_replica("summarizer-worker").await;
    }
    let mut gateways = vec![stack.gateway_addr()];
    for _ in 1..args.gateways {
        gateways.push(stack.spawn_replica("gateway").await.grpc);
    }
    let clients = (0..args.connections.max(gateways.len()))
        .map(|i| crate::faults::load::client(gateways[i % gateways.len()]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BenchError::Client)?;
    if args.history {
        history::seed(&stack.database.url)
            .await
            .map_err(BenchError::History)?;
    }
    let records = Records::connect(&stack.database.url).await?;
    let run_tag = format!("{:x}", crate::run_tag());
    let mut processes = usage::tracked(&stack.pids());
    let before = usage::sample(&processes);

    eprintln!(
        "  sending {} updates over {} chats{} ({workers} worker(s))",
        plan.updates,
        plan.chats,
        plan.rate
            .map_or_else(|| " at once".to_owned(), |r| format!(" at {r}/s"))
    );
    let sent = load::send(&clients, &run_tag, plan, deadline).await;
    let counts = records.wait_ended(sent.accepted, deadline).await?;

    // Postgres backends opened during the run count too.
    for p in usage::tracked(&stack.pids()) {
        if !processes.contains(&p) {
            processes.push(p);
        }
    }
    let after = usage::sample(&processes);
    let usage = usage::usage(&processes, &before, &after);
    let timings = records.timings().await?;
    records.close().await;
    let model = stand_in.as_ref().map(StandIn::stats);
    stack.shutdown().await;
    Ok(Figures {
        sent,
        counts,
        timings,
        model,
        usage,
    })
}

fn print(name: &str, plan: Plan, workers: usize, args: &RunArgs, f: &Figures) {
    let model = if args.offline {
        "offline backend".to_owned()
    } else {
        format!(
            "stand-in model {} ms, sigma {}, errors {}, cap {}",
            args.model_latency_mean_ms,
            args.model_latency_sigma,
            args.model_error_rate,
            args.model_max_concurrency
        )
    };
    println!();
    println!(
        "== {name}: {} updates over {} chats{}, {workers} worker(s), {} gateway(s), {model} ==",
        plan.updates,
        plan.chats,
        plan.rate
            .map_or_else(|| ", at once".to_owned(), |r| format!(", {r}/s")),
        args.gateways.max(1)
    );
    let s = &f.sent;
    println!(
        "sent: {} accepted, {} refused{}, {} not sent (generator bound), {:.1} s",
        s.accepted,
        s.refused,
        s.first_refusal
            .as_ref()
            .map_or_else(String::new, |r| format!(" (first: {r})")),
        s.skipped,
        s.wall.as_secs_f64()
    );
    report::print("accept latency", &s.accept_latency);
    let mut readable = crate::histogram();
    for d in &f.timings.accept_to_readable {
        report::record(&mut readable, *d);
    }
    report::print("accept -> readable (job records)", &readable);
    let pct = if s.accepted > 0 {
        100.0 * f.counts.succeeded as f64 / s.accepted as f64
    } else {
        0.0
    };
    println!(
        "applied: {} succeeded ({pct:.1}% of accepted), {} failed; last readable {:.2} s after the first acceptance; {:.1} applied/s",
        f.counts.succeeded,
        f.counts.failed,
        f.timings.span_secs,
        f.applied_per_sec()
    );
    match f.model {
        Some(m) => println!(
            "model: max calls in flight {}, {} calls ({:.2} per update), {} answered 429, {} answered 500",
            m.max_in_flight,
            m.calls,
            if f.counts.succeeded > 0 {
                m.calls as f64 / f.counts.succeeded as f64
            } else {
                0.0
            },
            m.rate_limited,
            m.server_errors
        ),
        None => println!("model: offline backend (no model calls)"),
    }
    let applied = f.counts.succeeded.max(1) as f64;
    let total: f64 = f
        .usage
        .iter()
        .filter(|u| !u.label.starts_with("chat-memory-bench"))
        .map(|u| u.cpu_secs)
        .sum();
    println!("| process | n | CPU s | CPU ms/update | peak RSS |");
    println!("|---|---|---|---|---|");
    for u in &f.usage {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.1} MB |",
            u.label,
            u.processes,
            u.cpu_secs,
            1000.0 * u.cpu_secs / applied,
            u.peak_rss_kb as f64 / 1024.0
        );
    }
    println!(
        "CPU per update, services + postgres + nats (bench excluded): {:.2} ms",
        1000.0 * total / applied
    );
}
