//! `chat-memory-bench read-path`: the read side, measured on a stack of its own.
//!
//! 1. **Baseline**: a bare tonic unary RPC (`grpc.health.v1.Health/Check`
//!    served by a separate `chat-memory-bench echo-server` process), over the
//!    same connections and callers as the reads, in the same run.
//! 2. **GetMemory** over `--memories` stored memories (written straight into
//!    Postgres as the pipeline writes them, so seeding 10,000 takes a second),
//!    one caller and `--concurrency` callers, with a share of reads of chats
//!    that do not exist (NOT_FOUND) reported apart; CPU per read per process.
//!    With one caller, chats with memory and (a twentieth as many) chats
//!    without are each read twice (first from memory-store, then from the
//!    gateway's cache): a NOT_FOUND's cost next to a hit's, like for like.
//! 3. **Read-your-writes**: an update, then `GetMemory(after_job_id, wait)`;
//!    the figure is answer time minus the job's commit time (from its record).
//!    The agent calls the stand-in model (`--model-latency-mean-ms`): the
//!    offline backend would take a core and the reads would wait for CPU.
//!    Then the agent's next turn: a plain read through a second gateway 50 ms
//!    later, and another `--turn-interval-ms` (30 s, the seed's pace) after
//!    that, each with that gateway's cache hit share.
//! 4. **Watch fan-out**: `--watchers` open streams on as many chats, then
//!    updates to some of them; the figure is arrival time minus the new
//!    version's commit time (`updated_at` in the event).
//!
//! The reads wait only for their own answers: no polling anywhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::join_all;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use chat_memory_proto::v1::{
    ChatMessage, GetMemoryRequest, ReadCondition, Role, UpdateMemoryRequest, WatchMemoryRequest,
    memory_service_client::MemoryServiceClient,
};
use test_support::auth::{self, Bearer};
use test_support::processes::{ProcessOptions, ProcessStack};

use super::usage;
use crate::report;

type Client = MemoryServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Options of `read-path`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// Memories stored before the reads.
    #[arg(long, default_value_t = 10_000)]
    pub memories: usize,
    /// Reads per measured phase.
    #[arg(long, default_value_t = 20_000)]
    pub calls: usize,
    /// Callers of the concurrent phase.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Share of the concurrent reads that ask for a chat without memory.
    #[arg(long, default_value_t = 0.1)]
    pub not_found_share: f64,
    /// Read-your-writes round trips (update, then read after its job).
    #[arg(long, default_value_t = 300)]
    pub ryw: usize,
    /// Read-your-writes loops running side by side.
    #[arg(long, default_value_t = 8)]
    pub ryw_loops: usize,
    /// Open watch streams.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Updates sent to watched chats while the streams are open.
    #[arg(long, default_value_t = 300)]
    pub watched_updates: usize,
    /// gRPC connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// The gateway's `read_cache.capacity` (0: every read goes to memory-store).
    #[arg(long, default_value_t = 10_000)]
    pub cache_capacity: usize,
    /// The gateways' `read_cache.install_commits` (false: a commit's event
    /// only drops the chat's entry; the reference for the next-turn figure).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub install_commits: bool,
    /// The gateways' `read_cache.settled_ttl_ms` (how long an entry of a
    /// chat with no job pending is used); passed only when given. Set it to
    /// `ttl_ms` (10000) for the single-TTL reference.
    #[arg(long)]
    pub settled_ttl_ms: Option<u64>,
    /// Seed a running deployment's history first (1 M audit rows, 1 M job
    /// records, 100,000 memories of another tenant): figures on large tables.
    #[arg(long)]
    pub history: bool,
    /// Every service's `runtime.worker_threads` (tokio threads; 0 is one per
    /// CPU). Passed only when given.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// When the read-your-writes phase's agents take their turn after that
    /// (a plain read of the chat through the second gateway, this long after
    /// the first): the seed's chats update every 30 s.
    #[arg(long, default_value_t = 30_000)]
    pub turn_interval_ms: u64,
    /// Mean latency of the stand-in model the agent calls (lognormal, σ 0.4)
    /// for the read-your-writes and watch phases' updates. The offline
    /// backend would spend a core summarizing and the reads would wait for
    /// CPU, not for the commit.
    #[arg(long, default_value_t = 200)]
    pub model_latency_mean_ms: u64,
    /// A setting for the gateways as `KEY=VALUE` (the part after
    /// `CHAT_MEMORY__`, e.g. `AUDIT__DURABLE_POINT=store`), for an A/B in
    /// one build; repeatable.
    #[arg(long, value_parser = gateway_setting)]
    pub gateway_env: Vec<(String, String)>,
}

fn gateway_setting(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => {
            Ok((format!("CHAT_MEMORY__{key}"), value.to_owned()))
        }
        _ => Err(format!("`{arg}` is not KEY=VALUE")),
    }
}

/// Why the run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReadBenchError {
    #[error("seeding the database: {0}")]
    Seed(#[source] sea_orm::DbErr),
    #[error("echo server: {0}")]
    Echo(String),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error(transparent)]
    StandIn(#[from] chat_memory_loadtest::stand_in::StandInError),
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 us .. 10 min, 3 significant figures; these bounds are constants.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn channel(addr: std::net::SocketAddr) -> Result<Channel, String> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

fn client(addr: std::net::SocketAddr) -> Result<Client, String> {
    let token = auth::mint(auth::TENANT, auth::USER, &["memory:read", "memory:write"]);
    Ok(MemoryServiceClient::with_interceptor(
        channel(addr)?,
        Bearer::new(&token),
    ))
}

/// Runs every phase and prints its figures.
///
/// # Errors
/// [`ReadBenchError`] when a part of the stack fails.
pub async fn read_path(args: &ReadArgs) -> Result<(), ReadBenchError> {
    let echo = EchoProcess::start().await?;
    let model = chat_memory_loadtest::stand_in::StandIn::start(
        "127.0.0.1:0",
        chat_memory_loadtest::stand_in::StandInConfig {
            latency_mean: Duration::from_millis(args.model_latency_mean_ms),
            latency_sigma: 0.4,
            error_rate: 0.0,
            max_concurrency: 0,
            retry_after_secs: 1,
        },
    )
    .await?;
    let mut env = vec![
        (
            "gateway",
            vec![
                (
                    "CHAT_MEMORY__WATCH__MAX_STREAMS".to_owned(),
                    (args.watchers + 100).to_string(),
                ),
                (
                    "CHAT_MEMORY__READ_CACHE__CAPACITY".to_owned(),
                    args.cache_capacity.to_string(),
                ),
                (
                    "CHAT_MEMORY__READ_CACHE__INSTALL_COMMITS".to_owned(),
                    args.install_commits.to_string(),
                ),
            ],
        ),
        ("memory-store", Vec::new()),
        ("summarizer-worker", Vec::new()),
        ("summarizer-agent", super::stand_in_env(&model)),
    ];
    if let Some(ttl) = args.settled_ttl_ms
        && let Some((_, gateway)) = env.iter_mut().find(|(name, _)| *name == "gateway")
    {
        gateway.push((
            "CHAT_MEMORY__READ_CACHE__SETTLED_TTL_MS".to_owned(),
            ttl.to_string(),
        ));
    }
    if let Some((_, gateway)) = env.iter_mut().find(|(name, _)| *name == "gateway") {
        gateway.extend(args.gateway_env.iter().cloned());
    }
    super::set_worker_threads(&mut env, args.worker_threads);
    let mut stack = ProcessStack::start(ProcessOptions {
        otlp_endpoint: None,
        env,
        nats_url: None,
    })
    .await;
    let tag = format!("{:x}", crate::run_tag());
    if args.history {
        super::history::seed(&stack.database.url)
            .await
            .map_err(ReadBenchError::Seed)?;
    }
    seed(&stack.database.url, &tag, args.memories).await?;
    println!(
        "== read-path: {} stored memories, {} calls per phase, {} connections, gateway read cache {} ==",
        args.memories,
        args.calls,
        args.connections,
        if args.cache_capacity == 0 {
            "off".to_owned()
        } else {
            format!("{} entries", args.cache_capacity)
        }
    );

    let echo_clients: Vec<HealthClient<Channel>> = (0..args.connections.max(1))
        .map(|_| channel(echo.addr).map(HealthClient::new))
        .collect::<Result<_, _>>()
        .map_err(ReadBenchError::Echo)?;
    let clients: Vec<Client> = (0..args.connections.max(1))
        .map(|_| client(stack.gateway_addr()))
        .collect::<Result<_, _>>()
        .map_err(ReadBenchError::Gateway)?;

    // Warm both paths (connections, the gateway's token cache) on chats the
    // one-caller phases do not read (the last `warm` of the cycle).
    let warm = args.calls.min(2_000);
    echo_phase(&echo_clients, 1, warm).await;
    let warm_first = args.memories.saturating_sub(warm);
    read_phase(&clients, &tag, args.memories, (warm_first, 1), warm, 0.0).await;

    let echo_one = echo_phase(&echo_clients, 1, args.calls / 4).await;
    echo_one.print("bare tonic unary (health Check), 1 caller");
    let echo_many = echo_phase(&echo_clients, args.concurrency, args.calls).await;
    echo_many.print(&format!(
        "bare tonic unary (health Check), {} callers",
        args.concurrency
    ));

    // One caller, each chat read for the first time (memory-store answers),
    // then the same chats again (the gateway's cache answers).
    let cold = read_phase(&clients, &tag, args.memories, (0, 1), args.calls / 4, 0.0).await;
    cold.print("GetMemory, 1 caller, first reads (memory-store)");
    let cached = read_phase(&clients, &tag, args.memories, (0, 1), args.calls / 4, 0.0).await;
    cached.print("GetMemory, 1 caller, the same chats again (cached)");
    // The same two passes over a twentieth as many chats without memory
    // (NOT_FOUND): what a NOT_FOUND costs next to a hit, first from
    // memory-store, then cached. Few enough that their cache entries leave
    // room for the concurrent phase's (the cache admits newcomers only where
    // there is room: it resists scans).
    let absent = || read_phase(&clients, &tag, args.memories, (0, 1), args.calls / 20, 1.0);
    absent()
        .await
        .print("GetMemory, 1 caller, chats without memory, first reads (memory-store)");
    absent()
        .await
        .print("GetMemory, 1 caller, the same chats without memory again (cached)");
    let processes = usage::tracked(&stack.pids());
    let counters_before = ReadCounters::read(&stack).await;
    let before = usage::sample(&processes);
    let many = read_phase(
        &clients,
        &tag,
        args.memories,
        (0, args.concurrency),
        args.calls,
        args.not_found_share,
    )
    .await;
    let after = usage::sample(&processes);
    let counters_after = ReadCounters::read(&stack).await;
    many.print(&format!(
        "GetMemory, {} callers, {:.0}% NOT_FOUND",
        args.concurrency,
        args.not_found_share * 100.0
    ));
    report::print("  hits", &many.hits);
    report::print("  NOT_FOUND", &many.not_found);
    println!(
        "GetMemory / bare unary throughput at {} callers: {:.2}x",
        args.concurrency,
        many.per_sec() / echo_many.per_sec().max(1e-9)
    );
    let reads = (many.hits.len() + many.not_found.len()).max(1) as f64;
    ReadCounters::print_since(&counters_after, &counters_before, reads);
    let table = usage::usage(&processes, &before, &after);
    let total: f64 = table
        .iter()
        .filter(|u| !u.label.starts_with("chat-memory-bench"))
        .map(|u| u.cpu_secs)
        .sum();
    println!("CPU per read (ms), {} callers phase:", args.concurrency);
    for u in &table {
        println!(
            "  {:<36} {:>8.3} ms/read  peak RSS {:>7} kB",
            u.label,
            u.cpu_secs * 1000.0 / reads,
            u.peak_rss_kb
        );
    }
    println!(
        "  {:<36} {:>8.3} ms/read",
        "all but the load generator",
        total * 1000.0 / reads
    );

    ryw_phase(&clients, &mut stack, &tag, args).await?;
    // A server takes a bounded number of streams per connection (HTTP/2):
    // one connection per 100 streams.
    let watch_clients: Vec<Client> = (0..args.watchers.div_ceil(100).max(1))
        .map(|_| client(stack.gateway_addr()))
        .collect::<Result<_, _>>()
        .map_err(ReadBenchError::Gateway)?;
    watch_phase(&watch_clients, &clients[0], &stack, &tag, args).await?;

    stack.shutdown().await;
    drop(echo);
    Ok(())
}

/// The gateway's read cache and audit outbox counters, read before and after
/// a phase (none of this counts against the reads: two scrapes per phase).
#[derive(Debug, Clone, Copy, Default)]
struct ReadCounters {
    hits: f64,
    misses: f64,
    rows: f64,
    /// Messages published to the audit outbox stream (its last sequence).
    messages: f64,
    /// memory-store read calls the gateway made for the misses.
    store_calls: f64,
}

impl ReadCounters {
    async fn read(stack: &ProcessStack) -> Option<Self> {
        Self::read_at(stack, stack.ports["gateway"].metrics).await
    }

    /// The counters of the gateway whose metrics are served at `metrics`.
    async fn read_at(stack: &ProcessStack, metrics: std::net::SocketAddr) -> Option<Self> {
        let http = crate::scrape::http().ok()?;
        let text = crate::scrape::metrics_text(&http, metrics).await.ok()?;
        let count = |result: &str| {
            crate::scrape::sample_sum(
                &text,
                "chat_memory_read_cache_total",
                Some(("result", result)),
            )
            .unwrap_or(0.0)
        };
        let settings = stack.queue_settings();
        let js = job_queue::connect(&settings, "chat-memory-bench-read-path")
            .await
            .ok()?;
        let mut outbox = js
            .get_stream(job_queue::audit_outbox::outbox_stream_name(&settings))
            .await
            .ok()?;
        let messages = outbox.info().await.ok()?.state.last_sequence as f64;
        Some(Self {
            hits: count("hit"),
            misses: count("miss"),
            rows: crate::scrape::sample_sum(
                &text,
                "chat_memory_audit_rows_total",
                Some(("result", "outboxed")),
            )
            .unwrap_or(0.0),
            messages,
            store_calls: crate::scrape::sample_sum(
                &text,
                "chat_memory_gathered_batch_size_count",
                Some(("call", "reads")),
            )
            .unwrap_or(0.0),
        })
    }

    /// Prints the cache's hit share and the rows per outbox message of the phase.
    fn print_since(after: &Option<Self>, before: &Option<Self>, reads: f64) {
        let (Some(after), Some(before)) = (after, before) else {
            println!("  (the gateway's counters could not be read)");
            return;
        };
        let hits = after.hits - before.hits;
        let misses = after.misses - before.misses;
        let rows = after.rows - before.rows;
        let messages = after.messages - before.messages;
        let store_calls = after.store_calls - before.store_calls;
        println!(
            "  read cache: {:.1}% hits ({hits:.0} hits, {misses:.0} misses in {store_calls:.0} memory-store calls, {:.2} per call); audit outbox: {rows:.0} rows for {reads:.0} reads in {messages:.0} messages ({:.2} rows per message)",
            100.0 * hits / (hits + misses).max(1.0),
            misses / store_calls.max(1.0),
            rows / messages.max(1.0)
        );
    }
}

/// Stores `n` memories of the bench user, as the pipeline writes them.
pub(super) async fn seed(url: &str, tag: &str, n: usize) -> Result<(), ReadBenchError> {
    let db = Database::connect(url).await.map_err(ReadBenchError::Seed)?;
    let tenant = auth::TENANT;
    let user = auth::USER;
    let text = "- Member ID W123456789; plan Aetna Choice POS II; deductible $1,500, about $1,600 paid this year; pharmacy CVS on Main St.";
    let sql = format!(
        "INSERT INTO memories (chat_id, user_confirmed, llm_inferred, general_summary, \
           tokens_user_confirmed, tokens_llm_inferred, tokens_general_summary, state, version, \
           last_job_id, last_applied_seq, created_at, updated_at) \
         SELECT '{tenant}/read-{tag}-' || i, '{text}', '- It sounds like the deductible is met.', \
           '- The user asked about claim CLM-' || i || ' and coverage of a specialist visit.', \
           40, 12, 20, '{{}}'::jsonb, 1, gen_random_uuid(), 0, now(), now() \
         FROM generate_series(0, {last}) AS i; \
         INSERT INTO chat_owners (chat_id, tenant, owner_user, created_at, last_activity_at) \
         SELECT '{tenant}/read-{tag}-' || i, '{tenant}', '{user}', now(), now() \
         FROM generate_series(0, {last}) AS i",
        last = n.saturating_sub(1)
    );
    db.execute_unprepared(&sql)
        .await
        .map_err(ReadBenchError::Seed)?;
    db.close().await.map_err(ReadBenchError::Seed)?;
    Ok(())
}

/// One measured phase.
pub(super) struct Phase {
    pub(super) hits: Histogram<u64>,
    pub(super) not_found: Histogram<u64>,
    pub(super) errors: usize,
    wall: Duration,
}

impl Phase {
    pub(super) fn per_sec(&self) -> f64 {
        (self.hits.len() + self.not_found.len()) as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn print(&self, what: &str) {
        let mut all = histogram();
        let _ = all.add(&self.hits);
        let _ = all.add(&self.not_found);
        println!(
            "{what}: {:.0} calls/s, {} errors, wall {:.2}s",
            self.per_sec(),
            self.errors,
            self.wall.as_secs_f64()
        );
        report::print("  latency", &all);
    }
}

async fn echo_phase(clients: &[HealthClient<Channel>], callers: usize, calls: usize) -> Phase {
    let per_caller = calls.div_ceil(callers.max(1));
    let started = Instant::now();
    let results = join_all((0..callers.max(1)).map(|c| {
        let mut client = clients[c % clients.len()].clone();
        async move {
            let mut h = histogram();
            let mut errors = 0;
            for _ in 0..per_caller {
                let t = Instant::now();
                match client.check(HealthCheckRequest::default()).await {
                    Ok(_) => report::record(&mut h, t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (h, errors)
        }
    }))
    .await;
    let wall = started.elapsed();
    let mut hits = histogram();
    let mut errors = 0;
    for (h, e) in results {
        let _ = hits.add(&h);
        errors += e;
    }
    Phase {
        hits,
        not_found: histogram(),
        errors,
        wall,
    }
}

/// `calls` reads by `callers` callers side by side (caller `c` makes reads
/// `c`, `c + callers`, ...); read `n` (from `first`) asks for chat
/// `(n * 7919) % memories` (a permutation: `memories` consecutive reads see
/// each chat once), or, for every
/// `1 / not_found_share`-th read, a chat without memory.
pub(super) async fn read_phase(
    clients: &[Client],
    tag: &str,
    memories: usize,
    (first, callers): (usize, usize),
    calls: usize,
    not_found_share: f64,
) -> Phase {
    let per_caller = calls.div_ceil(callers.max(1));
    // Every n-th read asks for a chat without memory.
    let every = if not_found_share > 0.0 {
        (1.0 / not_found_share).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    let started = Instant::now();
    let results = join_all((0..callers.max(1)).map(|c| {
        let mut client = clients[c % clients.len()].clone();
        let tag = tag.to_owned();
        async move {
            let (mut hits, mut missing, mut errors) = (histogram(), histogram(), 0);
            for i in 0..per_caller {
                // Interleaved: the phase's reads go in order of n whoever
                // makes them, so a chat's second read comes a pass after its
                // first (with contiguous blocks per caller, callers c and
                // c + memories / per_caller asked for the same chats at the
                // same moment, and the cache's hit rate was a race).
                let n = first + i * callers.max(1) + c;
                let absent = n % every == every - 1;
                let chat_id = if absent {
                    format!("read-{tag}-absent-{n}")
                } else {
                    format!("read-{tag}-{}", (n * 7919) % memories.max(1))
                };
                let t = Instant::now();
                let read = client
                    .get_memory(GetMemoryRequest {
                        chat_id,
                        ..Default::default()
                    })
                    .await;
                match read {
                    Ok(_) if !absent => report::record(&mut hits, t.elapsed()),
                    Err(s) if absent && s.code() == tonic::Code::NotFound => {
                        report::record(&mut missing, t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (hits, missing, errors)
        }
    }))
    .await;
    let wall = started.elapsed();
    let (mut hits, mut not_found, mut errors) = (histogram(), histogram(), 0);
    for (h, m, e) in results {
        let _ = hits.add(&h);
        let _ = not_found.add(&m);
        errors += e;
    }
    Phase {
        hits,
        not_found,
        errors,
        wall,
    }
}

fn update(chat_id: String, i: usize) -> UpdateMemoryRequest {
    UpdateMemoryRequest {
        chat_id,
        messages: vec![ChatMessage {
            role: Role::User as i32,
            content: format!("My claim CLM-{i:05} for the MRI was denied; I appealed on the 3rd."),
            ..Default::default()
        }],
        idempotency_key: String::new(),
    }
}

/// An agent's pause between reading its update's result and its next turn's
/// read (far beyond a change event's trip to every gateway).
const THINK: Duration = Duration::from_millis(50);

/// Update, then read after its job (answer time minus commit time), then, as
/// an agent's next turn would, a plain read of the same chat through a second
/// gateway (as behind a load balancer): that gateway never read the chat, so
/// only the commit's change event can have put it in its cache.
async fn ryw_phase(
    clients: &[Client],
    stack: &mut ProcessStack,
    tag: &str,
    args: &ReadArgs,
) -> Result<(), ReadBenchError> {
    let second = stack.spawn_replica("gateway").await;
    let stack = &*stack;
    let url = stack.database.url.as_str();
    let loops = args.ryw_loops.max(1);
    let per_loop = args.ryw.div_ceil(loops);
    let turn_client = client(second.grpc).map_err(ReadBenchError::Gateway)?;
    let counters_before = ReadCounters::read_at(stack, second.metrics).await;
    let interval = Duration::from_millis(args.turn_interval_ms);
    let results = join_all((0..loops).map(|l| {
        let mut client = clients[l % clients.len()].clone();
        let mut turn_client = turn_client.clone();
        let tag = tag.to_owned();
        async move {
            let mut later_turns = Vec::new();
            let mut answered = Vec::new();
            let mut total = histogram();
            let mut next_turn = histogram();
            let mut errors = 0;
            for i in 0..per_loop {
                let n = l * per_loop + i;
                let chat_id = format!("read-{tag}-{n}");
                let sent = Instant::now();
                let job = match client.update_memory(update(chat_id.clone(), n)).await {
                    Ok(r) => r.into_inner().job_id,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                let read = client
                    .get_memory(GetMemoryRequest {
                        chat_id: chat_id.clone(),
                        after_job_id: job.clone(),
                        wait_ms: 10_000,
                        ..Default::default()
                    })
                    .await;
                match read {
                    Ok(r) if r.get_ref().condition == ReadCondition::Met as i32 => {
                        answered.push((job, SystemTime::now()));
                        report::record(&mut total, sent.elapsed());
                    }
                    _ => {
                        errors += 1;
                        continue;
                    }
                }
                tokio::time::sleep(THINK).await;
                let turn = Instant::now();
                match turn_client
                    .get_memory(GetMemoryRequest {
                        chat_id: chat_id.clone(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => report::record(&mut next_turn, turn.elapsed()),
                    Err(_) => errors += 1,
                }
                // The turn after, `interval` later (nothing changed the chat).
                let mut later_client = turn_client.clone();
                later_turns.push(tokio::spawn(async move {
                    tokio::time::sleep_until((turn + interval).into()).await;
                    let sent = Instant::now();
                    later_client
                        .get_memory(GetMemoryRequest {
                            chat_id,
                            ..Default::default()
                        })
                        .await
                        .ok()
                        .map(|_| sent.elapsed())
                }));
            }
            (answered, total, next_turn, errors, later_turns)
        }
    }))
    .await;
    let counters_after = ReadCounters::read_at(stack, second.metrics).await;
    let (results, later_turns): (Vec<_>, Vec<_>) = results
        .into_iter()
        .map(|(answered, t, turns, e, later)| ((answered, t, turns, e), later))
        .unzip();
    let mut later = histogram();
    let mut later_errors = 0;
    for handle in later_turns.into_iter().flatten() {
        match handle.await {
            Ok(Some(latency)) => report::record(&mut later, latency),
            _ => later_errors += 1,
        }
    }
    let counters_later = ReadCounters::read_at(stack, second.metrics).await;
    let db = Database::connect(url).await.map_err(ReadBenchError::Seed)?;
    let mut after_commit = histogram();
    let mut total = histogram();
    let mut next_turns = histogram();
    let mut errors = 0;
    for (answered, t, turns, e) in results {
        let _ = total.add(&t);
        let _ = next_turns.add(&turns);
        errors += e;
        for (job, at) in answered {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!(
                        "SELECT extract(epoch FROM updated_at)::float8 AS committed FROM jobs WHERE job_id = '{job}'"
                    ),
                ))
                .await
                .map_err(ReadBenchError::Seed)?;
            let committed: Option<f64> = row.and_then(|r| r.try_get("", "committed").ok());
            let answered = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if let Some(c) = committed {
                report::record(
                    &mut after_commit,
                    Duration::from_secs_f64((answered - c).max(0.0)),
                );
            }
        }
    }
    db.close().await.map_err(ReadBenchError::Seed)?;
    println!(
        "read-your-writes: {} round trips ({loops} loops side by side), {errors} errors",
        total.len()
    );
    report::print(
        "  update sent -> read answered (includes the summarizer)",
        &total,
    );
    report::print("  commit -> read answered", &after_commit);
    report::print(
        &format!(
            "  the next turn's plain read, {} ms after, through a second gateway",
            THINK.as_millis()
        ),
        &next_turns,
    );
    // Only those plain reads count here: a read that waits for its job
    // always asks memory-store and counts neither a hit nor a miss.
    ReadCounters::print_since(&counters_after, &counters_before, next_turns.len() as f64);
    report::print(
        &format!(
            "  the turn after that, {} s later, same gateway ({later_errors} errors)",
            interval.as_secs_f64()
        ),
        &later,
    );
    ReadCounters::print_since(&counters_later, &counters_after, later.len() as f64);
    Ok(())
}

/// Opens the streams, updates watched chats, measures commit -> arrival.
async fn watch_phase(
    clients: &[Client],
    writer: &Client,
    stack: &ProcessStack,
    tag: &str,
    args: &ReadArgs,
) -> Result<(), ReadBenchError> {
    let watchers = args.watchers.min(args.memories);
    let arrivals = Arc::new(Mutex::new(histogram()));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers.max(1));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut streams = Vec::with_capacity(watchers);
    // from_version 0: each stream starts with its chat's current version.
    for w in 0..watchers {
        let mut client = clients[w % clients.len()].clone();
        let chat_id = format!("read-{tag}-{w}");
        let arrivals = arrivals.clone();
        let ready = ready_tx.clone();
        let done = done_tx.clone();
        streams.push(tokio::spawn(async move {
            let mut stream = match client
                .watch_memory(WatchMemoryRequest {
                    chat_id,
                    from_version: 0,
                })
                .await
            {
                Ok(s) => s.into_inner(),
                Err(_) => return,
            };
            // The first event is the current version: the stream is live.
            if !matches!(stream.message().await, Ok(Some(_))) {
                return;
            }
            let _ = ready.send(()).await;
            while let Ok(Some(event)) = stream.message().await {
                let now = SystemTime::now();
                let committed = event
                    .memory
                    .and_then(|m| m.updated_at)
                    .and_then(|t| SystemTime::try_from(t).ok());
                if let Some(c) = committed {
                    let lag = now.duration_since(c).unwrap_or_default();
                    if let Ok(mut h) = arrivals.lock() {
                        report::record(&mut h, lag);
                    }
                }
                let _ = done.send(());
            }
        }));
    }
    drop(ready_tx);
    let mut open = 0;
    let opening = Instant::now();
    while open < watchers {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => open += 1,
            _ => break,
        }
    }
    println!(
        "watch: {open} streams open in {:.2}s",
        opening.elapsed().as_secs_f64()
    );
    let gateway_rss = gateway_rss(stack);
    let updates = args.watched_updates.min(open);
    let mut client = writer.clone();
    let mut sent = 0;
    for i in 0..updates {
        // Spread over the watched chats, about 50 a second.
        let chat_id = format!("read-{tag}-{}", (i * 37) % open.max(1));
        if client.update_memory(update(chat_id, i)).await.is_ok() {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut received = 0;
    while received < sent {
        match tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await {
            Ok(Some(())) => received += 1,
            _ => break,
        }
    }
    for s in &streams {
        s.abort();
    }
    println!(
        "watch: {sent} updates to watched chats, {received} events received, gateway RSS with the streams open {gateway_rss} kB"
    );
    if let Ok(h) = arrivals.lock() {
        report::print("  commit -> event at the watcher", &h);
    }
    Ok(())
}

fn gateway_rss(stack: &ProcessStack) -> u64 {
    stack
        .pids()
        .iter()
        .find(|(name, _)| *name == "gateway")
        .and_then(|(_, pid)| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The baseline's server: this binary's `echo-server` subcommand.
struct EchoProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl EchoProcess {
    async fn start() -> Result<Self, ReadBenchError> {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| ReadBenchError::Echo(e.to_string()))?;
        let addr = probe
            .local_addr()
            .map_err(|e| ReadBenchError::Echo(e.to_string()))?;
        drop(probe);
        let exe = std::env::current_exe().map_err(|e| ReadBenchError::Echo(e.to_string()))?;
        let child = std::process::Command::new(exe)
            .args(["echo-server", "--listen", &addr.to_string()])
            .spawn()
            .map_err(|e| ReadBenchError::Echo(e.to_string()))?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(ReadBenchError::Echo(format!("nothing listens on {addr}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, addr })
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `grpc.health.v1.Health` (SERVING) on `listen` until killed: the
/// bare tonic unary baseline.
///
/// # Errors
/// When the address cannot be bound.
pub async fn echo_server(listen: &str) -> Result<(), String> {
    let (_reporter, service) = tonic_health::server::health_reporter();
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| format!("--listen: {e}"))?;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve(addr)
        .await
        .map_err(|e| e.to_string())
}
