//! A backend wrapper that holds the first agent call until released, so a test
//! can kill a worker while it is provably in the middle of a job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use summarizer_agent::backend::{SummarizeFuture, SummarizerBackend};
use summarizer_agent::tool::SummarizeInput;
use tokio::sync::{Notify, Semaphore};

/// Wraps a real backend; the first call waits for [`Gate::release`].
pub struct Gate {
    inner: Arc<dyn SummarizerBackend>,
    /// Notified when the first call has arrived and is held.
    entered: Notify,
    armed: AtomicBool,
    release: Semaphore,
    /// Calls seen, held or not.
    pub calls: AtomicUsize,
}

impl Gate {
    pub fn new(inner: Arc<dyn SummarizerBackend>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            entered: Notify::new(),
            armed: AtomicBool::new(true),
            release: Semaphore::new(0),
            calls: AtomicUsize::new(0),
        })
    }

    /// Waits until the first call is held inside the backend.
    pub async fn wait_entered(&self) {
        self.entered.notified().await;
    }

    /// Holds the next call too (the gate holds only the first one by itself).
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Lets the held call continue.
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

/// The gate as a backend (newtype so `Arc<Gate>` can be shared with the test).
pub struct GatedBackend(pub Arc<Gate>);

impl SummarizerBackend for GatedBackend {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_> {
        Box::pin(async move {
            let gate = &self.0;
            gate.calls.fetch_add(1, Ordering::SeqCst);
            if gate.armed.swap(false, Ordering::SeqCst) {
                gate.entered.notify_one();
                if let Ok(permit) = gate.release.acquire().await {
                    permit.forget();
                }
            }
            gate.inner.summarize(input).await
        })
    }
}
