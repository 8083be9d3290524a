//! A circuit breaker around the summarizer agent, shared by every chat of one
//! worker process.
//!
//! Why: when the agent is down, every chat would otherwise keep calling it,
//! each job burning its attempts on calls that cannot succeed until it ends
//! FAILED. With the breaker open, jobs *wait* (the scheduler keeps sending
//! progress acks) and spend no attempts; one probe call at a time tests whether
//! the agent is back.
//!
//! States (the `chat_memory_agent_circuit_state` gauge):
//! - **closed** (0): calls go through; outcomes are kept for `window_ms`. Once at
//!   least `min_calls` outcomes are in the window and the share of failures
//!   reaches `failure_rate_percent`, the circuit opens; so it does after
//!   `consecutive_failures` failed calls in a row (a sudden outage under high
//!   traffic, when the window is still full of earlier successes; 12 by
//!   default, which a provider's random errors do not line up).
//! - **open** (2): calls are refused at once for `open_ms`.
//! - **half-open** (1): after `open_ms`, one probe call is let through; success
//!   closes the circuit, failure opens it again for another `open_ms`.
//!
//! A job whose call fails while (or by) the circuit opening spends no attempt
//! on it (see `processor`): that failure is the agent's outage, not the job's.
//!
//! Only transient agent failures (unreachable, timeout, backend down) count as
//! failures: an agent that rejects an input is up and working.
//!
//! Every method takes `now` so the state machine is tested without a clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::settings::CircuitSettings;

/// How long a caller refused while a probe is in flight waits before asking again.
const PROBE_RECHECK: Duration = Duration::from_millis(250);

/// The breaker's state as reported in metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

impl Phase {
    fn state(&self) -> CircuitState {
        match self {
            Self::Closed => CircuitState::Closed,
            Self::Open { .. } => CircuitState::Open,
            Self::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Outcomes of calls in the window while closed: (when, failed).
    outcomes: VecDeque<(Instant, bool)>,
    /// How many of `outcomes` failed (kept with them: the window holds one
    /// outcome per call, thousands at a high rate).
    failures: usize,
    /// Failed calls since the last success, while closed.
    consecutive: u32,
}

/// Shared breaker; clones see the same state.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: CircuitSettings,
    inner: Arc<Mutex<Inner>>,
}

/// Permission to make one agent call. Report its outcome with
/// [`CircuitBreaker::record`]; dropped unreported (the job was skipped before
/// calling, or the task was cancelled), it frees the probe slot it may hold.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut inner = self.breaker.lock();
            if let Phase::HalfOpen { probing } = &mut inner.phase {
                *probing = false;
            }
        }
    }
}

impl CircuitBreaker {
    pub fn new(settings: CircuitSettings) -> Self {
        let breaker = Self {
            settings,
            inner: Arc::new(Mutex::new(Inner {
                phase: Phase::Closed,
                outcomes: VecDeque::new(),
                failures: 0,
                consecutive: 0,
            })),
        };
        crate::metrics::get().circuit_state(CircuitState::Closed.gauge());
        breaker
    }

    /// `circuit.max_failed_calls_per_job` (0: no bound), or no bound when the
    /// breaker is off (every failure then spends an attempt).
    pub fn max_failed_calls_per_job(&self) -> Option<u32> {
        let max = self.settings.max_failed_calls_per_job;
        (self.settings.enabled && max > 0).then_some(max)
    }

    /// The current state (an elapsed open period still reads as open until
    /// someone asks for a permit).
    pub fn state(&self) -> CircuitState {
        self.lock().phase.state()
    }

    /// A permit for one call, or how long to wait before asking again.
    ///
    /// # Errors
    /// The wait, while the circuit is open or a probe is in flight.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit, Duration> {
        if !self.settings.enabled {
            return Ok(self.permit(false));
        }
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => Ok(self.permit(false)),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen { probing: true };
                drop(inner);
                self.transition(CircuitState::HalfOpen);
                Ok(self.permit(true))
            }
            Phase::HalfOpen { probing: true } => Err(PROBE_RECHECK),
            Phase::HalfOpen { probing: false } => {
                inner.phase = Phase::HalfOpen { probing: true };
                Ok(self.permit(true))
            }
        }
    }

    /// Reports the outcome of the call `permit` allowed; `failed` only for
    /// transient failures. Returns the state after it.
    pub fn record(&self, mut permit: Permit, failed: bool, now: Instant) -> CircuitState {
        permit.reported = true;
        if !self.settings.enabled {
            return CircuitState::Closed;
        }
        let window = Duration::from_millis(self.settings.window_ms);
        let open_for = Duration::from_millis(self.settings.open_ms);
        let mut inner = self.lock();
        let changed = match inner.phase {
            Phase::HalfOpen { .. } if permit.probe => {
                inner.outcomes.clear();
                inner.failures = 0;
                inner.consecutive = 0;
                if failed {
                    inner.phase = Phase::Open {
                        until: now + open_for,
                    };
                    Some(CircuitState::Open)
                } else {
                    inner.phase = Phase::Closed;
                    Some(CircuitState::Closed)
                }
            }
            // A call let through before the circuit opened, finishing late:
            // the probe decides, not it.
            Phase::HalfOpen { .. } | Phase::Open { .. } => None,
            Phase::Closed => {
                inner.outcomes.push_back((now, failed));
                inner.failures += usize::from(failed);
                inner.consecutive = if failed { inner.consecutive + 1 } else { 0 };
                while let Some(&(at, old_failed)) = inner.outcomes.front()
                    && now.saturating_duration_since(at) > window
                {
                    inner.outcomes.pop_front();
                    inner.failures -= usize::from(old_failed);
                }
                let total = inner.outcomes.len();
                let failures = inner.failures;
                let threshold = usize::from(self.settings.failure_rate_percent);
                let by_rate = total >= self.settings.min_calls as usize
                    && failures * 100 >= threshold * total;
                if failed && (by_rate || inner.consecutive >= self.settings.consecutive_failures) {
                    inner.outcomes.clear();
                    inner.failures = 0;
                    inner.consecutive = 0;
                    inner.phase = Phase::Open {
                        until: now + open_for,
                    };
                    Some(CircuitState::Open)
                } else {
                    None
                }
            }
        };
        let state = inner.phase.state();
        drop(inner);
        if let Some(state) = changed {
            self.transition(state);
        }
        state
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit {
            breaker: self.clone(),
            probe,
            reported: false,
        }
    }

    fn transition(&self, state: CircuitState) {
        crate::metrics::get().circuit_state(state.gauge());
        match state {
            CircuitState::Open => tracing::warn!(
                open_ms = self.settings.open_ms,
                "agent circuit opened: jobs wait instead of calling the agent"
            ),
            CircuitState::HalfOpen => {
                tracing::info!("agent circuit half-open: probing the agent with one call")
            }
            CircuitState::Closed => tracing::info!("agent circuit closed: the agent answers again"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the state inconsistent
        // (every update is a single assignment), so a poisoned lock is usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitSettings {
            enabled: true,
            window_ms: 10_000,
            min_calls: 4,
            failure_rate_percent: 50,
            consecutive_failures: 3,
            open_ms: 1_000,
            max_failed_calls_per_job: 0,
        })
    }

    #[test]
    fn the_per_job_bound_applies_only_when_set_and_the_breaker_is_on() {
        let with = |enabled, max| {
            CircuitBreaker::new(CircuitSettings {
                enabled,
                max_failed_calls_per_job: max,
                ..CircuitSettings::default()
            })
            .max_failed_calls_per_job()
        };
        assert_eq!(with(true, 60), Some(60));
        assert_eq!(with(true, 0), None, "0: no bound");
        assert_eq!(with(false, 60), None, "breaker off: attempts bound the job");
    }

    fn call(b: &CircuitBreaker, now: Instant, failed: bool) {
        let permit = b
            .try_acquire(now)
            .unwrap_or_else(|wait| panic!("refused for {wait:?}"));
        let _ = b.record(permit, failed, now);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_when_the_failure_rate_reaches_the_threshold_over_min_calls() {
        let (b, t) = (breaker(), Instant::now());
        call(&b, t, false);
        call(&b, t, true);
        call(&b, t, false);
        assert_eq!(b.state(), CircuitState::Closed, "3 calls < min_calls");
        call(&b, t, true);
        assert_eq!(b.state(), CircuitState::Open, "2 of 4 failed = 50%");
    }

    #[test]
    fn with_the_defaults_ten_percent_random_errors_at_the_seeds_rate_never_open_it_in_a_year() {
        // Runs of k failures in independent calls failing with probability p
        // start at about (1 - p) p^k of the calls.
        let k = CircuitSettings::default().consecutive_failures;
        let per_call = 0.9 * 0.1f64.powi(i32::try_from(k).unwrap_or(i32::MAX));
        let calls_per_year = 333.0 * 3600.0 * 24.0 * 365.0;
        assert!(
            per_call * calls_per_year < 0.01,
            "{k} failures in a row would open the circuit {:.1} times a year",
            per_call * calls_per_year
        );
        // And the rate rule still needs more than a handful of calls.
        let rate = CircuitSettings::default();
        assert!(rate.min_calls >= 10 && rate.failure_rate_percent >= 50);
    }

    #[test]
    fn consecutive_failures_open_it_even_after_many_successes() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..100 {
            call(&b, t, false);
        }
        call(&b, t, true);
        call(&b, t, true);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "2 in a row, 2% of the window"
        );
        call(&b, t, true);
        assert_eq!(b.state(), CircuitState::Open, "3 in a row");
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        // A rate threshold of 100% leaves only the run of failures to judge.
        let b = CircuitBreaker::new(CircuitSettings {
            failure_rate_percent: 100,
            consecutive_failures: 3,
            ..CircuitSettings::default()
        });
        let t = Instant::now();
        for _ in 0..30 {
            call(&b, t, false);
            call(&b, t, true);
            call(&b, t, true);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn stays_closed_below_the_threshold() {
        let (b, t) = (breaker(), Instant::now());
        for i in 0..20 {
            call(&b, t, i % 3 == 2);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let (b, t) = (breaker(), Instant::now());
        call(&b, t, true);
        call(&b, t, true);
        let later = t + ms(10_001);
        call(&b, later, false);
        call(&b, later, false);
        call(&b, later, false);
        call(&b, later, true);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "1 failure in the 4 recent calls = 25%"
        );
    }

    #[test]
    fn refuses_while_open_and_says_how_long_to_wait() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..3 {
            call(&b, t, true);
        }
        let wait = b.try_acquire(t + ms(400)).err();
        assert_eq!(wait, Some(ms(600)));
    }

    #[test]
    fn half_opens_after_open_ms_with_a_single_probe() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..3 {
            call(&b, t, true);
        }
        let probe = b.try_acquire(t + ms(1_000));
        assert!(probe.is_ok(), "the probe goes through");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.try_acquire(t + ms(1_001)).err(), Some(PROBE_RECHECK));
    }

    #[test]
    fn a_successful_probe_closes_the_circuit() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..3 {
            call(&b, t, true);
        }
        call(&b, t + ms(1_000), false);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.try_acquire(t + ms(1_001)).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..3 {
            call(&b, t, true);
        }
        call(&b, t + ms(1_000), true);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.try_acquire(t + ms(1_500)).err(), Some(ms(500)));
    }

    #[test]
    fn a_dropped_probe_frees_the_slot_for_another() {
        let (b, t) = (breaker(), Instant::now());
        for _ in 0..3 {
            call(&b, t, true);
        }
        let probe = b.try_acquire(t + ms(1_000));
        drop(probe);
        assert!(b.try_acquire(t + ms(1_001)).is_ok());
    }

    #[test]
    fn a_late_failure_from_before_opening_does_not_reopen_or_close() {
        let (b, t) = (breaker(), Instant::now());
        let late = b.try_acquire(t).unwrap_or_else(|_| panic!("closed"));
        for _ in 0..3 {
            call(&b, t, true);
        }
        let probe = b.try_acquire(t + ms(1_000));
        let after = b.record(late, false, t + ms(1_001));
        assert_eq!(after, CircuitState::HalfOpen);
        assert_eq!(b.state(), CircuitState::HalfOpen, "only the probe decides");
        drop(probe);
    }

    #[test]
    fn a_disabled_breaker_never_refuses() {
        let b = CircuitBreaker::new(CircuitSettings {
            enabled: false,
            ..CircuitSettings::default()
        });
        let t = Instant::now();
        for _ in 0..100 {
            call(&b, t, true);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
