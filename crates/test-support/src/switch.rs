//! A backend wrapper that can be switched "down": while down, every call fails
//! as an unreachable model would (`Unavailable`, which the worker retries), so a
//! test can stage an agent outage and its recovery without killing anything.
//! It can also answer the next calls as a provider's rate limit would
//! (`RateLimited` with a `Retry-After`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use summarizer_agent::backend::{BackendError, SummarizeFuture, SummarizerBackend};
use summarizer_agent::tool::SummarizeInput;

/// Wraps a real backend; see [`Switch::set_down`].
pub struct Switch {
    inner: Arc<dyn SummarizerBackend>,
    down: AtomicBool,
    /// Calls still to answer as rate limited, and the Retry-After they carry.
    rate_limited: std::sync::Mutex<(usize, Duration)>,
    /// Calls with a message containing this text fail as if the agent were down.
    poison: std::sync::Mutex<Option<String>>,
    /// Calls seen, failed or not.
    pub calls: AtomicUsize,
    /// Calls that carried more than one new message (coalesced jobs).
    pub coalesced_calls: AtomicUsize,
}

impl Switch {
    /// Starts down when `down` is true.
    pub fn new(inner: Arc<dyn SummarizerBackend>, down: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(down),
            rate_limited: std::sync::Mutex::new((0, Duration::ZERO)),
            poison: std::sync::Mutex::new(None),
            calls: AtomicUsize::new(0),
            coalesced_calls: AtomicUsize::new(0),
        })
    }

    /// Every call with a message containing `marker` fails as if the agent
    /// were down (a job that times out every call); other calls answer.
    pub fn poison(&self, marker: &str) {
        *self
            .poison
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(marker.to_owned());
    }

    fn poisoned(&self, input: &SummarizeInput) -> bool {
        self.poison
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_deref()
            .is_some_and(|m| input.messages.iter().any(|msg| msg.content.contains(m)))
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `calls` calls are refused as a provider's 429 asking to come
    /// back after `retry_after`.
    pub fn rate_limit_next(&self, calls: usize, retry_after: Duration) {
        *self
            .rate_limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (calls, retry_after);
    }

    /// The Retry-After of this call when it is to be refused as rate limited.
    fn take_rate_limit(&self) -> Option<Duration> {
        let mut left = self
            .rate_limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (left.0 > 0).then(|| {
            left.0 -= 1;
            left.1
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The switch as a backend (newtype so `Arc<Switch>` can be shared with the test).
pub struct SwitchedBackend(pub Arc<Switch>);

impl SummarizerBackend for SwitchedBackend {
    fn name(&self) -> &'static str {
        "switched"
    }

    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_> {
        Box::pin(async move {
            let switch = &self.0;
            switch.calls.fetch_add(1, Ordering::SeqCst);
            if input.messages.len() > 1 {
                switch.coalesced_calls.fetch_add(1, Ordering::SeqCst);
            }
            if switch.down.load(Ordering::SeqCst) || switch.poisoned(&input) {
                return Err(BackendError::Unavailable(
                    "switched down by the test".into(),
                ));
            }
            if let Some(retry_after) = switch.take_rate_limit() {
                return Err(BackendError::RateLimited {
                    reason: "rate limited by the test".into(),
                    retry_after: Some(retry_after),
                });
            }
            switch.inner.summarize(input).await
        })
    }
}
