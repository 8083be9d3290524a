//! Scenario 8: a worker SIGKILLed in the middle of a coalesced batch.
//!
//! The agent runs on its `openai` backend against the in-process stand-in
//! model, every call taking exactly [`MODEL_LATENCY`]; two workers consume.
//! While a chat's call runs, its next updates arrive and wait, so the chat's
//! next call coalesces them. The suite watches the first worker's `/metrics`
//! and, once it has *started* a coalesced call (the count of
//! `chat_memory_jobs_per_call` observations above 1 went up since the last
//! look, a few tens of milliseconds ago, with a call in flight), kills it
//! [`SETTLE`] later: time for the call to reach the model (the worker first
//! begins the batch in memory-store, then calls the agent, which calls the
//! model), and too little for it to commit, because the model answers only
//! after [`MODEL_LATENCY`]. Its jobs must come back after `ack_wait` and be applied
//! once, in order, by the other worker or the restarted one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_memory_loadtest::stand_in::StandIn;
use test_support::processes::ProcessStack;

use crate::scrape::{http, metrics_text, sample_sum};

/// Every model call's latency (σ = 0): long against the poll interval.
pub const MODEL_LATENCY: Duration = Duration::from_millis(1000);

/// From seeing the coalesced call start to the kill: well under [`MODEL_LATENCY`].
const SETTLE: Duration = Duration::from_millis(300);

/// How often the worker's `/metrics` is read while waiting for the moment.
const POLL: Duration = Duration::from_millis(25);

/// Longest wait for a coalesced call to start.
const WAIT: Duration = Duration::from_secs(60);

/// What one worker's `/metrics` says about its summarizer calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallFigures {
    /// Calls started (observations of `chat_memory_jobs_per_call`).
    pub started: u64,
    /// Of those, calls over more than one job.
    pub coalesced: u64,
    /// Calls running now (`chat_memory_agent_calls_in_flight`).
    pub in_flight: u64,
}

/// Parses the worker's Prometheus text; zeros for metrics not there (before
/// the first call the histogram has no series).
pub fn call_figures(text: &str) -> CallFigures {
    let count = sample_sum(text, "chat_memory_jobs_per_call_count", None).unwrap_or(0.0);
    let single =
        sample_sum(text, "chat_memory_jobs_per_call_bucket", Some(("le", "1"))).unwrap_or(0.0);
    let in_flight = sample_sum(text, "chat_memory_agent_calls_in_flight", None).unwrap_or(0.0);
    // Counts are whole numbers; the text format writes them as floats.
    let whole = |v: f64| v.max(0.0).round() as u64;
    CallFigures {
        started: whole(count),
        coalesced: whole(count - single),
        in_flight: whole(in_flight),
    }
}

/// What the worker whose metrics listen on `addr` says about its calls.
async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Result<CallFigures, String> {
    metrics_text(http, addr)
        .await
        .map(|text| call_figures(&text))
}

/// Waits until the first worker has just started a coalesced call, SIGKILLs
/// it [`SETTLE`] later (the call at the model, not committed), and starts it
/// again. `Ok`: the evidence; `Err`: the moment never came
/// (the scenario then fails: it did not test what it claims).
pub async fn strike(stack: &mut ProcessStack, model: &StandIn) -> Result<String, String> {
    let http = http()?;
    let metrics = stack.ports["summarizer-worker"].metrics;
    let deadline = Instant::now() + WAIT;
    let mut seen = scrape(&http, metrics).await.unwrap_or_default();
    let (at_kill, model_at_kill) = loop {
        tokio::time::sleep(POLL).await;
        if Instant::now() >= deadline {
            return Err(format!(
                "no coalesced call started on the first worker within {} s (last: {seen:?})",
                WAIT.as_secs()
            ));
        }
        // A failed scrape (the worker busy) is only a missed look.
        let Ok(now) = scrape(&http, metrics).await else {
            continue;
        };
        if now.coalesced > seen.coalesced && now.in_flight > 0 {
            tokio::time::sleep(SETTLE).await;
            let model_now = model.stats();
            stack.kill("summarizer-worker").await;
            break (now, model_now);
        }
        seen = now;
    };
    stack.spawn("summarizer-worker").await;
    Ok(format!(
        "SIGKILLed the first worker {} ms after it started a coalesced call: it had started {} calls, {} of them coalesced ({} new within {} ms), {} in flight; at the kill the model had {} calls in flight ({} in all), each answered after {} ms",
        SETTLE.as_millis(),
        at_kill.started,
        at_kill.coalesced,
        at_kill.coalesced - seen.coalesced,
        POLL.as_millis(),
        at_kill.in_flight,
        model_at_kill.in_flight,
        model_at_kill.calls,
        MODEL_LATENCY.as_millis()
    ))
}

/// The restarted first worker's calls, after the drain.
pub async fn after(stack: &ProcessStack, model: &StandIn) -> String {
    let figures = match http() {
        Ok(http) => scrape(&http, stack.ports["summarizer-worker"].metrics)
            .await
            .map_or_else(
                |e| e,
                |f| format!("{} calls, {} coalesced", f.started, f.coalesced),
            ),
        Err(e) => e,
    };
    let m = model.stats();
    format!(
        "after the kill: the restarted first worker made {figures}; the model took {} calls in all (max {} in flight, {} errors)",
        m.calls, m.max_in_flight, m.server_errors
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKER_METRICS: &str = r#"# HELP chat_memory_jobs_per_call Update jobs coalesced into one summarizer call
# TYPE chat_memory_jobs_per_call histogram
chat_memory_jobs_per_call_bucket{otel_scope_name="summarizer-worker",le="1"} 7
chat_memory_jobs_per_call_bucket{otel_scope_name="summarizer-worker",le="2"} 9
chat_memory_jobs_per_call_bucket{otel_scope_name="summarizer-worker",le="+Inf"} 12
chat_memory_jobs_per_call_sum{otel_scope_name="summarizer-worker"} 31
chat_memory_jobs_per_call_count{otel_scope_name="summarizer-worker"} 12
# TYPE chat_memory_agent_calls_in_flight gauge
chat_memory_agent_calls_in_flight{otel_scope_name="summarizer-worker"} 3
chat_memory_agent_calls_in_flight_other 99
"#;

    #[test]
    fn call_figures_count_calls_over_more_than_one_job_as_coalesced() {
        assert_eq!(
            call_figures(WORKER_METRICS),
            CallFigures {
                started: 12,
                coalesced: 5,
                in_flight: 3
            }
        );
    }

    #[test]
    fn a_worker_that_made_no_call_yet_shows_zero_calls() {
        let text =
            "# TYPE chat_memory_agent_calls_in_flight gauge\nchat_memory_agent_calls_in_flight 0\n";
        assert_eq!(call_figures(text), CallFigures::default());
    }
}
