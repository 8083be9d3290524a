//! A backend wrapper that can be switched "down": while down, every call fails
//! as an unreachable model would (`Unavailable`, which the worker retries), so a
//! test can stage an agent outage and its recovery without killing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use summarizer_agent::backend::{BackendError, SummarizeFuture, SummarizerBackend};
use summarizer_agent::tool::SummarizeInput;

/// Wraps a real backend; see [`Switch::set_down`].
pub struct Switch {
    inner: Arc<dyn SummarizerBackend>,
    down: AtomicBool,
    /// Calls seen, failed or not.
    pub calls: AtomicUsize,
}

impl Switch {
    /// Starts down when `down` is true.
    pub fn new(inner: Arc<dyn SummarizerBackend>, down: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(down),
            calls: AtomicUsize::new(0),
        })
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
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
            if switch.down.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable(
                    "switched down by the test".into(),
                ));
            }
            switch.inner.summarize(input).await
        })
    }
}
