//! `chat-memory-bench faults`: the fault-injection suite (issue 6). For each
//! scenario it starts the real service binaries ([`ProcessStack`]: a fresh
//! database and stream), drives the workload through the gateway, strikes the
//! fault mid-run, drains, checks, replays the dead letters, and prints one row.
//!
//! # Layout
//! - [`load`]: the workload (paced, idempotent, retrying) and the drain.
//! - [`scenario`]: the faults and the settings each scenario runs with.
//!
//! Checks per chat, from each job's `resulting_version` (the memory version
//! its commit produced): *applied twice* = the final version exceeds the number
//! of jobs that succeeded; *out of order* = a later update of the chat got a
//! lower version than an earlier one. Final memories are compared with the
//! fault-free baseline (the offline agent is deterministic).

pub(crate) mod load;
mod scenario;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use chat_memory_proto::v1::JobState;
use test_support::processes::ProcessStack;

use self::scenario::Scenario;

/// The suite's options (see `chat-memory-bench faults --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    #[arg(long, default_value_t = 1000)]
    pub updates: usize,
    #[arg(long, default_value_t = 100)]
    pub chats: usize,
    /// Scenarios to run, comma-separated (1-7; 5 and 6 restart this machine's
    /// NATS and Postgres). The fault-free baseline (0) always runs first.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5,6,7")]
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
    out_of_order: usize,
    drain: Duration,
    dead_letters: usize,
    after_replay: usize,
    same_as_baseline: usize,
    memories: BTreeMap<usize, String>,
}

impl Row {
    fn success_pct(&self, succeeded: usize) -> f64 {
        if self.accepted == 0 {
            return 0.0;
        }
        100.0 * succeeded as f64 / self.accepted as f64
    }

    fn passes(&self) -> bool {
        self.lost == 0
            && self.twice == 0
            && self.out_of_order == 0
            && self.success_pct(self.after_replay) >= 99.5
    }
}

/// Runs the suite; `Err` when a scenario breaks a promise.
///
/// # Errors
/// A scenario with lost, twice-applied or reordered jobs, or under 99.5 % success.
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
        if let Some(base) = rows.first() {
            row.same_as_baseline = row
                .memories
                .iter()
                .filter(|(chat, m)| base.memories.get(chat) == Some(m))
                .count();
        } else {
            row.same_as_baseline = row.memories.len();
        }
        print_row(&row, args.chats);
        rows.push(row);
    }
    println!();
    println!(
        "chat-memory-bench faults --updates {} --chats {} --scenarios {} (ack_wait {} ms, agent outage {} s): {:.0} s in all",
        args.updates,
        args.chats,
        args.scenarios
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.ack_wait_ms,
        args.agent_outage_secs,
        started.elapsed().as_secs_f64()
    );
    print_header();
    for row in &rows {
        print_line(row, args.chats);
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
    let mut stack = ProcessStack::start(scenario::options(s, args.ack_wait_ms)).await;
    let client = load::client(stack.gateway_addr())?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let begun = Instant::now();
    let sending = tokio::spawn(load::send_all(
        client.clone(),
        args.updates,
        args.chats.max(1),
        args.rate,
        accepted.clone(),
        deadline,
    ));
    scenario::strike(
        s,
        &mut stack,
        &accepted,
        args.updates,
        Duration::from_secs(args.agent_outage_secs),
    )
    .await;
    let sent = sending.await.map_err(|e| format!("load task: {e}"))?;
    let ended = load::drain(&client, &sent, deadline).await;
    let drain = begun.elapsed();

    let mut row = Row {
        label: s.label(),
        drain,
        ..Row::default()
    };
    for (chat, (jobs, ends)) in sent.iter().zip(&ended).enumerate() {
        let mut last_version = 0;
        let mut chat_succeeded = 0i64;
        for (job, end) in jobs.iter().zip(ends) {
            if job.is_none() {
                continue;
            }
            row.accepted += 1;
            match end {
                Some(e) if e.state == JobState::Succeeded => {
                    row.succeeded += 1;
                    chat_succeeded += 1;
                    let v = e.resulting_version.unwrap_or(0);
                    if v <= last_version {
                        row.out_of_order += 1;
                    }
                    last_version = last_version.max(v);
                }
                Some(_) => row.failed += 1,
                None => row.lost += 1,
            }
        }
        if let Some((version, _)) = load::memory(&client, chat).await {
            row.twice += usize::try_from((version - chat_succeeded).max(0)).unwrap_or(0);
        }
    }
    row.after_replay =
        row.succeeded + replay(&stack, &client, &sent, &ended, deadline, &mut row).await?;
    for chat in 0..args.chats {
        if let Some((_, text)) = load::memory(&client, chat).await {
            row.memories.insert(chat, text);
        }
    }
    stack.shutdown().await;
    if matches!(s, Scenario::NatsRestart | Scenario::PostgresRestart) {
        scenario::ensure_infrastructure();
    }
    Ok(row)
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
        "| {:<22} | {:>8} | {:>9} | {:>14} | {:>4} | {:>5} | {:>12} | {:>8} | {:>13} | {:>13} |",
        "scenario",
        "accepted",
        "succeeded",
        "dead-lettered",
        "lost",
        "twice",
        "out of order",
        "drain s",
        "after replay",
        "same memories"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(24),
        "-".repeat(10),
        "-".repeat(11),
        "-".repeat(16),
        "-".repeat(6),
        "-".repeat(7),
        "-".repeat(14),
        "-".repeat(10),
        "-".repeat(15),
        "-".repeat(15)
    );
}

fn print_line(r: &Row, chats: usize) {
    println!(
        "| {:<22} | {:>8} | {:>9} | {:>14} | {:>4} | {:>5} | {:>12} | {:>8.1} | {:>6} {:>5.1}% | {:>7}/{:<5} |",
        r.label,
        r.accepted,
        r.succeeded,
        format!("{} ({} DLQ)", r.failed, r.dead_letters),
        r.lost,
        r.twice,
        r.out_of_order,
        r.drain.as_secs_f64(),
        r.after_replay,
        r.success_pct(r.after_replay),
        r.same_as_baseline,
        chats
    );
}

fn print_row(r: &Row, chats: usize) {
    print_header();
    print_line(r, chats);
}
