//! `chat-memory-bench faults`: the fault-injection suite (issue 6). For each
//! scenario it starts the real service binaries ([`ProcessStack`]: a fresh
//! database and stream), drives the workload through the gateway, strikes the
//! fault mid-run, drains, checks, replays the dead letters, and prints one row.
//!
//! # Layout
//! - [`load`]: the workload (paced, idempotent, retrying) and the drain.
//! - [`scenario`]: the faults and the settings each scenario runs with.
//! - [`coalesced`]: scenario 8, a worker killed in the middle of a coalesced
//!   batch (the stand-in model, two workers, the worker's `/metrics`).
//! - [`checks`]: lost, applied twice, bad versions and out of order per chat,
//!   aware of coalescing (one call applies several jobs, one version).
//!
//! Final memories are compared with the fault-free baseline where the offline
//! agent answers (it is deterministic); scenario 8's model is the stand-in.

mod checks;
mod coalesced;
pub(crate) mod load;
mod scenario;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use chat_memory_loadtest::stand_in::{StandIn, StandInConfig};
use chat_memory_proto::v1::JobState;
use test_support::nats_cluster::NatsServer;
use test_support::processes::ProcessStack;

use self::scenario::Scenario;

/// The suite's options (see `chat-memory-bench faults --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    #[arg(long, default_value_t = 1000)]
    pub updates: usize,
    #[arg(long, default_value_t = 100)]
    pub chats: usize,
    /// Scenarios to run, comma-separated (1-8; 5 restarts a NATS server of its
    /// own, 6 this machine's Postgres). The fault-free baseline (0) always runs first.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7,8")]
    pub scenarios: Vec<u8>,
    /// Updates sent per second, overall.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long the agent is down in scenario 2.
    #[arg(long, default_value_t = 30)]
    pub agent_outage_secs: u64,
    /// The workers' ack wait (redelivery after a worker dies).
    #[arg(long, default_value_t = 3000)]
    pub ack_wait_ms: u64,
    /// Give up draining a scenario after this long.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
}

/// One scenario's figures.
#[derive(Debug, Default)]
struct Row {
    label: &'static str,
    accepted: usize,
    succeeded: usize,
    failed: usize,
    lost: usize,
    twice: usize,
    bad_versions: usize,
    out_of_order: usize,
    /// Distinct summarizer calls that applied the succeeded jobs.
    calls: usize,
    /// Of those, calls that applied more than one job.
    coalesced_calls: usize,
    drain: Duration,
    /// The chats the scenario's workload spread over ([`Scenario::chats`]).
    chats: usize,
    dead_letters: usize,
    after_replay: usize,
    /// Of the chats whose updates were grouped into calls as in the baseline,
    /// (those whose final memory equals the baseline's, all of them); `None`
    /// when not comparable (the scenario's model is not the offline backend).
    same_as_baseline: Option<(usize, usize)>,
    memories: BTreeMap<usize, String>,
    /// Per chat, the update indexes each call applied ([`checks::ChatCheck::grouping`]).
    groupings: BTreeMap<usize, Vec<Vec<usize>>>,
    /// What the fault did, when the scenario reports it.
    evidence: Vec<String>,
    /// Why the fault could not be struck as described.
    missed: Option<String>,
}

impl Row {
    fn success_pct(&self, succeeded: usize) -> f64 {
        if self.accepted == 0 {
            return 0.0;
        }
        100.0 * succeeded as f64 / self.accepted as f64
    }

    fn calls_per_update(&self) -> f64 {
        if self.succeeded == 0 {
            return 0.0;
        }
        self.calls as f64 / self.succeeded as f64
    }

    fn passes(&self) -> bool {
        self.lost == 0
            && self.twice == 0
            && self.bad_versions == 0
            && self.out_of_order == 0
            && self.missed.is_none()
            && self.success_pct(self.after_replay) >= 99.5
    }
}

/// Runs the suite; `Err` when a scenario breaks a promise.
///
/// # Errors
/// A scenario with lost, twice-applied or reordered jobs, versions not made by
/// exactly one call, under 99.5 % success, or a fault that could not be struck.
pub async fn run(args: FaultArgs) -> Result<(), String> {
    let mut scenarios = vec![Scenario::Baseline];
    for n in &args.scenarios {
        let s = Scenario::from_number(*n).ok_or_else(|| format!("no scenario {n}"))?;
        if s != Scenario::Baseline {
            scenarios.push(s);
        }
    }
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for s in scenarios {
        eprintln!("== scenario {} ==", s.label());
        let mut row = run_one(s, &args).await?;
        row.same_as_baseline = match rows.first() {
            _ if s.uses_model() => None,
            Some(base) => Some(same_memories(base, &row)),
            None => Some((row.memories.len(), row.memories.len())),
        };
        print_row(&row);
        rows.push(row);
    }
    println!();
    println!(
        "chat-memory-bench faults --updates {} --chats {} --scenarios {} --rate {} (ack_wait {} ms, agent outage {} s): {:.0} s in all",
        args.updates,
        args.chats,
        args.scenarios
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.rate,
        args.ack_wait_ms,
        args.agent_outage_secs,
        started.elapsed().as_secs_f64()
    );
    print_header();
    for row in &rows {
        print_line(row);
    }
    for row in &rows {
        print_notes(row);
    }
    let failing: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passes())
        .map(|r| r.label)
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(format!("scenarios failing their promises: {failing:?}"))
    }
}

async fn run_one(s: Scenario, args: &FaultArgs) -> Result<Row, String> {
    let model = if s.uses_model() {
        let config = StandInConfig {
            latency_mean: coalesced::MODEL_LATENCY,
            latency_sigma: 0.0,
            error_rate: 0.0,
            max_concurrency: 0,
            retry_after_secs: 1,
        };
        Some(
            StandIn::start("127.0.0.1:0", config)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let chats = s.chats(args.chats, args.rate);
    let mut options = scenario::options(s, args.ack_wait_ms, model.as_ref().map(StandIn::base_url));
    // Scenario 5 restarts a NATS server of its own, never the machine's.
    let mut nats = if s == Scenario::NatsRestart {
        let server = NatsServer::start().await;
        options.nats_url = Some(server.url());
        Some(server)
    } else {
        None
    };
    let mut stack = ProcessStack::start(options).await;
    for _ in 1..s.workers() {
        stack.spawn_replica("summarizer-worker").await;
    }
    let client = load::client(stack.gateway_addr())?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let begun = Instant::now();
    let sending = tokio::spawn(load::send_all(
        client.clone(),
        args.updates,
        chats,
        args.rate,
        accepted.clone(),
        deadline,
    ));
    let struck = scenario::strike(
        s,
        &mut stack,
        &accepted,
        args.updates,
        Duration::from_secs(args.agent_outage_secs),
        model.as_ref(),
        nats.as_mut(),
    )
    .await;
    let sent = sending.await.map_err(|e| format!("load task: {e}"))?;
    let ended = load::drain(&client, &sent, deadline).await;
    let drain = begun.elapsed();

    let mut row = Row {
        label: s.label(),
        drain,
        chats,
        ..Row::default()
    };
    match struck {
        Ok(evidence) => row.evidence.extend(evidence),
        Err(why) => row.missed = Some(why),
    }
    for (chat, (jobs, ends)) in sent.iter().zip(&ended).enumerate() {
        let ends: Vec<Option<Option<&load::Ended>>> = jobs
            .iter()
            .zip(ends)
            .map(|(job, end)| job.as_ref().map(|_| end.as_ref()))
            .collect();
        let version = load::memory(&client, chat).await.map(|(v, _)| v);
        let c = checks::check_chat(&ends, version);
        row.accepted += c.accepted;
        row.succeeded += c.succeeded;
        row.failed += c.failed;
        row.lost += c.lost;
        row.twice += c.twice;
        row.bad_versions += c.bad_versions;
        row.out_of_order += c.out_of_order;
        row.calls += c.calls;
        row.coalesced_calls += c.coalesced_calls;
        row.groupings.insert(chat, c.grouping);
    }
    if let Some(model) = &model {
        row.evidence.push(coalesced::after(&stack, model).await);
        row.evidence.push(format!(
            "job records: {} calls applied {} jobs, {} of the calls coalesced; the model made {} calls, so {} model calls applied nothing (the killed worker's calls in flight, and any re-run)",
            row.calls,
            row.succeeded,
            row.coalesced_calls,
            model.stats().calls,
            usize::try_from(model.stats().calls)
                .unwrap_or(usize::MAX)
                .saturating_sub(row.calls)
        ));
    }
    row.after_replay =
        row.succeeded + replay(&stack, &client, &sent, &ended, deadline, &mut row).await?;
    if chats != args.chats {
        row.evidence.push(format!(
            "the workload spread over {chats} chats instead of {} (each chat's next update within a quarter of a model call, so calls coalesce)",
            args.chats
        ));
    }
    for chat in 0..chats {
        if let Some((_, text)) = load::memory(&client, chat).await {
            row.memories.insert(chat, text);
        }
    }
    stack.shutdown().await;
    drop(nats);
    if s == Scenario::PostgresRestart {
        scenario::ensure_infrastructure();
    }
    Ok(row)
}

/// Of the chats `row` grouped into calls as `base` did: (those whose memory
/// equals the base's, all of them). Coalescing groups a chat's updates by
/// timing, and the offline agent's memory depends on the grouping, so only
/// alike-grouped chats must end alike.
fn same_memories(base: &Row, row: &Row) -> (usize, usize) {
    let alike: Vec<&usize> = row
        .groupings
        .iter()
        .filter(|(chat, g)| base.groupings.get(chat) == Some(g))
        .map(|(chat, _)| chat)
        .collect();
    let same = alike
        .iter()
        .filter(|chat| {
            let (ours, theirs) = (row.memories.get(chat), base.memories.get(chat));
            ours.is_some() && ours == theirs
        })
        .count();
    (same, alike.len())
}

/// Replays every dead letter and counts the replayed jobs that then succeed.
async fn replay(
    stack: &ProcessStack,
    client: &test_support::GatewayClient,
    sent: &[load::ChatJobs],
    ended: &[Vec<Option<load::Ended>>],
    deadline: Instant,
    row: &mut Row,
) -> Result<usize, String> {
    let queue = stack.queue_settings();
    let js = job_queue::connect(&queue, "chat-memory-bench-faults")
        .await
        .map_err(|e| e.to_string())?;
    let letters = job_queue::dlq::list(&js, &queue, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    row.dead_letters = letters.len();
    for l in &letters {
        job_queue::dlq::replay(&js, &queue, l.dlq_seq)
            .await
            .map_err(|e| format!("replay {}: {e}", l.dlq_seq))?;
    }
    let failed: Vec<&String> = sent
        .iter()
        .flatten()
        .zip(ended.iter().flatten())
        .filter_map(|(job, end)| match (job, end) {
            (Some(id), Some(e)) if e.state == JobState::Failed => Some(id),
            _ => None,
        })
        .collect();
    let mut recovered = 0;
    for id in failed {
        let end = load::wait_end(client.clone(), id, deadline, |e| {
            e.state == JobState::Succeeded || e.error.contains("superseded")
        })
        .await;
        if end.is_some_and(|e| e.state == JobState::Succeeded) {
            recovered += 1;
        }
    }
    Ok(recovered)
}

fn print_header() {
    println!(
        "| {:<26} | {:>8} | {:>9} | {:>14} | {:>4} | {:>5} | {:>12} | {:>12} | {:>17} | {:>12} | {:>7} | {:>13} | {:>13} |",
        "scenario",
        "accepted",
        "succeeded",
        "dead-lettered",
        "lost",
        "twice",
        "bad versions",
        "out of order",
        "calls (coalesced)",
        "calls/update",
        "drain s",
        "after replay",
        "same memories"
    );
    let widths = [28, 10, 11, 16, 6, 7, 14, 14, 19, 14, 9, 15, 15];
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|{}|", dashes.join("|"));
}

fn print_line(r: &Row) {
    let chats = r.chats;
    let same = r.same_as_baseline.map_or_else(
        || "n/a (model)".to_owned(),
        |(same, alike)| format!("{same}/{alike} of {chats}"),
    );
    println!(
        "| {:<26} | {:>8} | {:>9} | {:>14} | {:>4} | {:>5} | {:>12} | {:>12} | {:>17} | {:>12.2} | {:>7.1} | {:>6} {:>5.1}% | {:>13} |",
        r.label,
        r.accepted,
        r.succeeded,
        format!("{} ({} DLQ)", r.failed, r.dead_letters),
        r.lost,
        r.twice,
        r.bad_versions,
        r.out_of_order,
        format!("{} ({})", r.calls, r.coalesced_calls),
        r.calls_per_update(),
        r.drain.as_secs_f64(),
        r.after_replay,
        r.success_pct(r.after_replay),
        same
    );
}

/// The scenario's evidence and, if so, why its fault was not struck.
fn print_notes(r: &Row) {
    for e in &r.evidence {
        println!("{}: {e}", r.label);
    }
    if let Some(why) = &r.missed {
        println!("{}: FAULT NOT STRUCK: {why}", r.label);
    }
}

fn print_row(r: &Row) {
    print_header();
    print_line(r);
    print_notes(r);
}
