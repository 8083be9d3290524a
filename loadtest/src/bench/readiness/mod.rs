//! `chat-memory-bench readiness`: the seed's acceptance checklist, at the
//! seed's scale, on a stack of its own, written as a report
//! (`docs/readiness.md`).
//!
//! One run, in this order:
//! 1. a stack of its own (fresh database and stream names, the four services
//!    as processes), the agent on the `openai` backend against the stand-in
//!    model with a share of its calls failing (HTTP 500), and a real
//!    Prometheus scraping every service every second with
//!    `monitoring/alerts.yml` loaded;
//! 2. stored memories written straight into Postgres (as `read-path` does);
//! 3. **burst**: the concurrent updates, sent at once over as many chats;
//! 4. **sustained**: one update to each active chat at a fixed rate, while 16
//!    callers read the stored memories (a share of reads NOT_FOUND);
//! 5. **isolation**: another tenant and another user of the same tenant read
//!    and write the same public chat ids;
//! 6. **alerts**: none firing after the healthy run; then memory-store is
//!    killed under reads and `ChatMemoryApiErrorRate` must fire; then
//!    memory-store is started again and reads must succeed.
//!
//! Every figure comes from the job records (acceptance and commit time), the
//! callers' own latencies and the Prometheus API: no status polling.
//!
//! # Layout
//! - [`isolation`]: the isolation checks.
//! - [`prometheus`]: the alert checks, on test-support's Prometheus.
//! - [`report`]: the Markdown report.
//!
//! `--short` is the CI form (500 chats at 50 updates/s, small enough for debug
//! builds); the full form is what the report in docs/ records.

mod isolation;
mod prometheus;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, Statement};

use chat_memory_loadtest::stand_in::{StandIn, StandInConfig};
use test_support::GatewayClient;
use test_support::auth;
use test_support::processes::ProcessStack;
use test_support::requests::get;

use test_support::prometheus::{Prometheus, which};

use super::load::{self, Plan};
use super::reads;
use super::records::{Records, RecordsError};
use super::{RunArgs, stack_options};

/// Options of `readiness`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadinessArgs {
    /// The CI form, small enough for debug builds on two cores (500 chats at
    /// 50 updates/s, a burst of 100, 1,000 stored memories).
    #[arg(long)]
    pub short: bool,
    /// Write the report (Markdown) here as well as printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Share of model calls the stand-in answers with HTTP 500.
    #[arg(long, default_value_t = 0.10)]
    pub model_error_rate: f64,
    /// Mean model latency (lognormal, σ 0.4).
    #[arg(long, default_value_t = 1500)]
    pub model_latency_mean_ms: u64,
    /// The worker's `agent.max_concurrent_calls` (default: 1,000; 256 short).
    #[arg(long)]
    pub model_concurrency: Option<u32>,
    /// Give up waiting for the updates this long after the start.
    #[arg(long, default_value_t = 900)]
    pub deadline_secs: u64,
    /// Every service's `runtime.worker_threads`: 1, as `scripts/run-local.sh`
    /// runs them on one machine (0: one thread per CPU in every process).
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
}

/// The scale of one form.
#[derive(Debug, Clone, Copy)]
struct Scale {
    chats: usize,
    burst: usize,
    memories: usize,
    rate: f64,
    reads: usize,
    model_concurrency: u32,
}

const FULL: Scale = Scale {
    chats: 10_000,
    burst: 1_000,
    memories: 10_000,
    rate: 333.0,
    reads: 20_000,
    model_concurrency: 1_000,
};
const SHORT: Scale = Scale {
    chats: 500,
    burst: 100,
    memories: 1_000,
    rate: 50.0,
    reads: 2_000,
    model_concurrency: 256,
};

/// Callers of the retrieval phase and their NOT_FOUND share.
const READERS: usize = 16;
const NOT_FOUND_SHARE: f64 = 0.1;
/// The seed's thresholds.
const SUCCESS_MIN: f64 = 0.995;
const RETRIEVAL_P99_MAX: Duration = Duration::from_millis(100);
const READABLE_P99_MAX: Duration = Duration::from_secs(2);
/// Issue 10's accept → readable target at a 1.5 s model.
const READABLE_P99_MODEL: Duration = Duration::from_secs(5);
/// How long an alert may take to fire once its fault starts: its `for` (1
/// minute) plus scrapes and evaluations.
const FIRE_WITHIN: Duration = Duration::from_secs(150);
/// The alert an unreachable memory-store must fire.
const FAULT_ALERT: &str = "ChatMemoryApiErrorRate";
/// Callers reading while memory-store is down.
const FAULT_CALLERS: usize = 4;

/// Why the run could not complete (a failed criterion is not an error: it is
/// a row of the report).
#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error(transparent)]
    StandIn(#[from] chat_memory_loadtest::stand_in::StandInError),
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("gateway client: {0}")]
    Client(String),
    #[error("database: {0}")]
    Database(#[source] sea_orm::DbErr),
    #[error(transparent)]
    Reads(#[from] reads::ReadBenchError),
    #[error("prometheus: {0}")]
    Prometheus(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed} gating criteria failed: {names}")]
    Gating { failed: usize, names: String },
}

/// One row of the checklist.
struct Row {
    criterion: String,
    threshold: String,
    measured: String,
    pass: bool,
    /// Correctness, not speed: a failure fails the command (CI's short form).
    gating: bool,
}

/// Runs the checklist and writes the report.
///
/// # Errors
/// [`ReadinessError`] when the stack cannot run, or a gating (non-latency)
/// criterion fails.
pub async fn readiness(args: &ReadinessArgs) -> Result<(), ReadinessError> {
    let scale = if args.short { SHORT } else { FULL };
    let started_at = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    // Fail before starting anything when Prometheus is missing.
    if which("prometheus").is_none() {
        return Err(ReadinessError::Prometheus(
            "prometheus is not installed (scripts/services.sh --with-prometheus installs it)"
                .to_owned(),
        ));
    }
    let model = StandIn::start(
        "127.0.0.1:0",
        StandInConfig {
            latency_mean: Duration::from_millis(args.model_latency_mean_ms),
            latency_sigma: 0.4,
            error_rate: args.model_error_rate,
            max_concurrency: 0,
            retry_after_secs: 1,
        },
    )
    .await?;
    let run_args = RunArgs {
        offline: false,
        model_latency_mean_ms: args.model_latency_mean_ms,
        model_latency_sigma: 0.4,
        model_error_rate: args.model_error_rate,
        model_max_concurrency: 0,
        model_concurrency: Some(args.model_concurrency.unwrap_or(scale.model_concurrency)),
        connections: 8,
        gateways: 1,
        deadline_secs: args.deadline_secs,
        history: false,
        worker_threads: Some(args.worker_threads),
        worker_store_linger_ms: None,
        gateway_store_linger_ms: None,
    };
    let mut stack = ProcessStack::start(stack_options(&run_args, Some(&model))).await;
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/alerts.yml");
    let prometheus = Prometheus::start(&stack, Some(&rules))
        .await
        .map_err(ReadinessError::Prometheus)?;
    let clients = (0..run_args.connections)
        .map(|_| crate::faults::load::client(stack.gateway_addr()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ReadinessError::Client)?;
    let tag = format!("{:x}", crate::run_tag());
    let mut rows = Vec::new();

    eprintln!("  readiness: seeding {} stored memories", scale.memories);
    reads::seed(&stack.database.url, &tag, scale.memories).await?;

    // Burst: the concurrent updates, sent at once.
    eprintln!("  readiness: {} updates sent at once", scale.burst);
    let records = Records::connect(&stack.database.url).await?;
    let burst_plan = Plan {
        updates: scale.burst,
        chats: scale.burst,
        rate: None,
    };
    let burst = load::send(&clients, &format!("{tag}b"), burst_plan, deadline).await;
    let burst_counts = records.wait_ended(burst.accepted, deadline).await?;
    let mut failures = records.failure_reasons().await?;
    records.close().await;
    let burst_p99 = quantile(&burst.accept_latency, 0.99);
    rows.push(Row {
        criterion: format!("{} concurrent updates", scale.burst),
        threshold: "all accepted".to_owned(),
        measured: format!(
            "{} of {} accepted, {} refused; accept p50 {} / p99 {}",
            burst.accepted,
            scale.burst,
            burst.refused,
            ms(quantile(&burst.accept_latency, 0.5)),
            ms(burst_p99)
        ),
        pass: burst.accepted == scale.burst as u64,
        gating: true,
    });

    // Sustained: every active chat updated once at the rate, and as many
    // reads alongside (an agent reads its memory before each answer).
    eprintln!(
        "  readiness: {} chats at {}/s, reads at the same rate alongside",
        scale.chats, scale.rate
    );
    let records = Records::connect(&stack.database.url).await?;
    let cpu_before = cpu_ticks();
    let plan = Plan {
        updates: scale.chats,
        chats: scale.chats,
        rate: Some(scale.rate),
    };
    let reading = tokio::spawn(open_loop_reads(
        clients.clone(),
        tag.clone(),
        scale.memories,
        scale.rate,
        scale.chats,
    ));
    let sustained = load::send(&clients, &format!("{tag}s"), plan, deadline).await;
    let retrieval = reading
        .await
        .map_err(|e| ReadinessError::Client(format!("the readers stopped: {e}")))?;
    let counts = records.wait_ended(sustained.accepted, deadline).await?;
    failures.extend(records.failure_reasons().await?);
    let busy = cpu_busy(cpu_before, cpu_ticks());
    let timings = records.timings().await?;
    records.close().await;
    let mut readable = crate::histogram();
    for d in &timings.accept_to_readable {
        crate::report::record(&mut readable, *d);
    }
    let chats_applied = applied_chats(&stack.database.url, &format!("{tag}s")).await?;
    let chats_failed_by_model =
        chats_failed_by_the_model(&stack.database.url, &format!("{tag}s")).await?;
    rows.push(Row {
        criterion: format!("{} active chats", scale.chats),
        threshold: "every chat's update applied, or failed for good only by the injected model errors (counted in the success row)".to_owned(),
        measured: format!(
            "{chats_applied} of {} chats applied{}; {} accepted at {}/s, accept p50 {} / p99 {}; the machine's CPU {:.0} % busy until the last was applied",
            scale.chats,
            if chats_failed_by_model > 0 {
                format!(
                    ", {chats_failed_by_model} failed for good after every attempt met an injected model error (dead-lettered, replayable)"
                )
            } else {
                String::new()
            },
            sustained.accepted,
            scale.rate,
            ms(quantile(&sustained.accept_latency, 0.5)),
            ms(quantile(&sustained.accept_latency, 0.99)),
            busy * 100.0
        ),
        pass: chats_applied + chats_failed_by_model == scale.chats as u64,
        gating: true,
    });
    let accepted = burst.accepted + sustained.accepted;
    let succeeded = burst_counts.succeeded + counts.succeeded;
    let failed = burst_counts.failed + counts.failed;
    let stats = model.stats();
    let success = succeeded as f64 / accepted.max(1) as f64;
    rows.push(Row {
        criterion: format!(
            "update success with {:.0} % of model calls failing",
            args.model_error_rate * 100.0
        ),
        threshold: format!("≥ {:.1} %", SUCCESS_MIN * 100.0),
        measured: format!(
            "{:.2} % ({succeeded} of {accepted} accepted; {failed} failed{}; the model answered {} of {} calls with HTTP 500)",
            success * 100.0,
            failures
                .iter()
                .map(|(error, n)| format!(": {n} × \"{error}\""))
                .collect::<String>(),
            stats.server_errors,
            stats.requests
        ),
        pass: success >= SUCCESS_MIN,
        gating: true,
    });
    let readable_p99 = quantile(&readable, 0.99);
    rows.push(Row {
        criterion: "updates readable (accept → commit, p99, sustained)".to_owned(),
        threshold: format!("< {}", ms(READABLE_P99_MAX)),
        measured: format!(
            "p50 {} / p99 {} (the model alone: {} mean, lognormal σ 0.4)",
            ms(quantile(&readable, 0.5)),
            ms(readable_p99),
            ms(Duration::from_millis(args.model_latency_mean_ms))
        ),
        pass: readable_p99 < READABLE_P99_MAX,
        gating: false,
    });
    rows.push(Row {
        criterion: "updates readable at a hosted model's latency (issue 10)".to_owned(),
        threshold: format!("p99 ≤ {}", ms(READABLE_P99_MODEL)),
        measured: ms(readable_p99),
        pass: readable_p99 <= READABLE_P99_MODEL,
        gating: false,
    });
    rows.push(Row {
        criterion: format!(
            "retrieval p99 during the sustained updates (one read per update, open loop, {:.0} % NOT_FOUND)",
            NOT_FOUND_SHARE * 100.0
        ),
        threshold: format!("< {}", ms(RETRIEVAL_P99_MAX)),
        measured: format!(
            "{} ({} reads at {}/s, {} errors; p50 {})",
            ms(quantile(&retrieval.latency, 0.99)),
            retrieval.latency.len(),
            scale.rate,
            retrieval.errors,
            ms(quantile(&retrieval.latency, 0.5)),
        ),
        pass: quantile(&retrieval.latency, 0.99) < RETRIEVAL_P99_MAX && retrieval.errors == 0,
        gating: false,
    });
    // Then as fast as 16 callers can read (no updates running).
    let stress = reads::read_phase(
        &clients,
        &tag,
        scale.memories,
        (0, READERS),
        scale.reads,
        NOT_FOUND_SHARE,
    )
    .await;
    let stress_p99 = {
        let mut all = crate::histogram();
        let _ = all.add(&stress.hits);
        let _ = all.add(&stress.not_found);
        quantile(&all, 0.99)
    };
    rows.push(Row {
        criterion: format!(
            "retrieval p99 at saturation ({READERS} callers back to back, {:.0} % NOT_FOUND)",
            NOT_FOUND_SHARE * 100.0
        ),
        threshold: format!("< {}", ms(RETRIEVAL_P99_MAX)),
        measured: format!(
            "{} ({} reads at {:.0}/s, {} errors; hits p50 {}, NOT_FOUND p50 {})",
            ms(stress_p99),
            stress.hits.len() + stress.not_found.len(),
            stress.per_sec(),
            stress.errors,
            ms(quantile(&stress.hits, 0.5)),
            ms(quantile(&stress.not_found, 0.5))
        ),
        pass: stress_p99 < RETRIEVAL_P99_MAX && stress.errors == 0,
        gating: false,
    });
    let stored = count(&stack.database.url, "SELECT count(*) AS n FROM memories").await?;
    rows.push(Row {
        criterion: "stored memories".to_owned(),
        threshold: format!("≥ {}", scale.memories),
        measured: format!("{stored} memories in Postgres"),
        pass: stored >= scale.memories as u64,
        gating: true,
    });

    eprintln!("  readiness: isolation between tenants and users");
    let isolation = isolation::isolation(&stack, &clients[0], &tag).await;
    rows.push(Row {
        criterion: "memory isolation between chats, users and tenants".to_owned(),
        threshold: "every check holds".to_owned(),
        measured: isolation.summary(),
        pass: isolation.failures.is_empty(),
        gating: true,
    });

    eprintln!("  readiness: alerts after the healthy run");
    let firing = prometheus::quiet_check(&prometheus).await?;
    rows.push(Row {
        criterion:
            "every alert quiet during the healthy run (real Prometheus, monitoring/alerts.yml)"
                .to_owned(),
        threshold: "no alert pending or firing".to_owned(),
        measured: if firing.is_empty() {
            format!(
                "none of {} alerts pending or firing; {} targets up",
                prometheus
                    .alert_rules()
                    .await
                    .map_err(ReadinessError::Prometheus)?,
                prometheus.targets
            )
        } else {
            format!("active: {}", firing.join(", "))
        },
        pass: firing.is_empty(),
        gating: true,
    });

    eprintln!("  readiness: memory-store killed under reads; waiting for {FAULT_ALERT}");
    stack.kill("memory-store").await;
    let fired =
        prometheus::fire_under_errors(&prometheus, &clients[0], &tag, FAULT_ALERT, FIRE_WITHIN)
            .await?;
    stack.spawn("memory-store").await;
    let recovered = recovered(&clients[0], &tag, Duration::from_secs(30)).await;
    rows.push(Row {
        criterion: format!("the matching alert fires during an injected fault (memory-store killed → {FAULT_ALERT})"),
        threshold: format!("firing within {} s", FIRE_WITHIN.as_secs()),
        measured: match fired {
            Some(after) => format!(
                "firing {:.0} s after the kill (its `for` is 1 minute); reads answered again {} after memory-store restarted",
                after.as_secs_f64(),
                recovered.map_or_else(|| "never (30 s)".to_owned(), ms)
            ),
            None => format!("not firing after {} s", FIRE_WITHIN.as_secs()),
        },
        pass: fired.is_some() && recovered.is_some(),
        gating: true,
    });
    drop(prometheus);
    stack.shutdown().await;

    let report = report::render(args, scale, started_at, &rows);
    println!("{report}");
    if let Some(path) = &args.out {
        std::fs::write(path, &report).map_err(|source| ReadinessError::Write {
            path: path.clone(),
            source,
        })?;
        eprintln!("  readiness: report written to {}", path.display());
    }
    let gating: Vec<&Row> = rows.iter().filter(|r| r.gating && !r.pass).collect();
    if gating.is_empty() {
        Ok(())
    } else {
        Err(ReadinessError::Gating {
            failed: gating.len(),
            names: gating
                .iter()
                .map(|r| r.criterion.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// Latencies of reads sent open loop.
struct OpenLoopReads {
    latency: hdrhistogram::Histogram<u64>,
    errors: usize,
}

/// `n` reads at `rate` a second, each on its own task at its scheduled time
/// (whatever the ones before did); every tenth asks for a chat without memory.
async fn open_loop_reads(
    clients: Vec<GatewayClient>,
    tag: String,
    memories: usize,
    rate: f64,
    n: usize,
) -> OpenLoopReads {
    let every = (1.0 / NOT_FOUND_SHARE).round().max(1.0) as usize;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        let due = start + Duration::from_secs_f64(k as f64 / rate.max(0.001));
        tokio::time::sleep_until(due.into()).await;
        let Some(client) = clients.get(k % clients.len().max(1)) else {
            break;
        };
        let mut client = client.clone();
        let absent = k % every == every - 1;
        let chat = if absent {
            format!("read-{tag}-absent-open-{k}")
        } else {
            format!("read-{tag}-{}", (k * 7919) % memories.max(1))
        };
        tasks.spawn(async move {
            let sent = Instant::now();
            let answer = client.get_memory(get(&chat)).await;
            let ok = match answer {
                Ok(_) => !absent,
                Err(s) => absent && s.code() == tonic::Code::NotFound,
            };
            (sent.elapsed(), ok)
        });
    }
    let mut figures = OpenLoopReads {
        latency: crate::histogram(),
        errors: 0,
    };
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((latency, true)) => crate::report::record(&mut figures.latency, latency),
            _ => figures.errors += 1,
        }
    }
    figures
}

/// (busy, total) CPU ticks of the whole machine (`/proc/stat`); zeros when unreadable.
fn cpu_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The share of the machine's CPU time that was busy between two readings.
fn cpu_busy(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 / total as f64
}

fn quantile(h: &hdrhistogram::Histogram<u64>, q: f64) -> Duration {
    if h.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_micros(h.value_at_quantile(q))
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

async fn count(url: &str, sql: &str) -> Result<u64, ReadinessError> {
    let db = Database::connect(url)
        .await
        .map_err(ReadinessError::Database)?;
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .map_err(ReadinessError::Database)?;
    let _ = db.close().await;
    Ok(row
        .and_then(|r| r.try_get::<i64>("", "n").ok())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0))
}

/// A `LIKE` pattern matching the namespaced chat ids of run `run`.
fn run_chats(run: &str) -> String {
    let first = load::chat_id(run, 0);
    format!("{}/{}%", auth::TENANT, first.trim_end_matches('0'))
}

/// Chats of run `run` whose memory has a version (an update applied).
async fn applied_chats(url: &str, run: &str) -> Result<u64, ReadinessError> {
    count(
        url,
        &format!(
            "SELECT count(*) AS n FROM memories WHERE chat_id LIKE '{}' AND version >= 1",
            run_chats(run)
        ),
    )
    .await
}

/// Chats of `run` without a memory whose update failed for good because the
/// summarizer's model failed every attempt (the stand-in's injected HTTP
/// 500s: with 10 % of calls failing, one job in 100,000 meets five in a row).
/// Any other failure, and any chat neither applied nor failed, fails the row.
async fn chats_failed_by_the_model(url: &str, run: &str) -> Result<u64, ReadinessError> {
    count(
        url,
        &format!(
            "SELECT count(DISTINCT j.chat_id) AS n FROM jobs j \
              WHERE j.chat_id LIKE '{}' AND j.state = 'failed' \
                AND j.error LIKE 'agent unavailable after % attempts: %500 Internal Server Error%' \
                AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.chat_id = j.chat_id AND m.version >= 1)",
            run_chats(run)
        ),
    )
    .await
}

/// Time until a read of a stored memory succeeds again.
async fn recovered(client: &GatewayClient, tag: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < within {
        n += 1;
        // A chat not read before: the gateway's cache cannot answer it.
        let chat = format!("read-{tag}-recovery-{n}");
        let mut client = client.clone();
        if let Err(s) = client.get_memory(get(&chat)).await
            && s.code() == tonic::Code::NotFound
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
