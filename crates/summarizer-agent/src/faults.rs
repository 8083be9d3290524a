//! Fault injection, **for tests only** (the reliability suite,
//! `chat-memory-bench faults`): a backend wrapper that fails a share of calls
//! at random, as an error (`Unavailable`, which the worker retries) or as a
//! timeout (the call sleeps past the worker's call deadline). Off by default;
//! never enable it in production.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;

use crate::backend::{BackendError, SummarizeFuture, SummarizerBackend};
use crate::tool::SummarizeInput;

/// `[faults]`: test-only failure injection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// Share of calls (0..=100) that fail at once with `Unavailable`.
    pub error_rate_percent: u8,
    /// Share of calls (0..=100) that hang for `timeout_ms` before failing.
    pub timeout_rate_percent: u8,
    /// How long an injected timeout hangs; set it above the worker's
    /// `agent.call_timeout_ms` so the worker sees a real timeout.
    pub timeout_ms: u64,
}

impl FaultSettings {
    pub fn enabled(&self) -> bool {
        self.error_rate_percent > 0 || self.timeout_rate_percent > 0
    }

    /// # Errors
    /// When the two rates add up to more than 100.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if u16::from(self.error_rate_percent) + u16::from(self.timeout_rate_percent) > 100 {
            return Err(SettingsError::invalid(
                "faults",
                "error_rate_percent + timeout_rate_percent must be at most 100",
            ));
        }
        Ok(())
    }
}

/// Wraps a backend with the faults of `settings`.
pub struct FaultyBackend {
    inner: Arc<dyn SummarizerBackend>,
    settings: FaultSettings,
}

impl FaultyBackend {
    pub fn wrap(inner: Arc<dyn SummarizerBackend>, settings: FaultSettings) -> Arc<Self> {
        tracing::warn!(?settings, "FAULT INJECTION ENABLED: for tests only");
        Arc::new(Self { inner, settings })
    }
}

impl SummarizerBackend for FaultyBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn summarize(&self, input: SummarizeInput) -> SummarizeFuture<'_> {
        let roll: u8 = rand::rng().random_range(0..100);
        let error = self.settings.error_rate_percent;
        let timeout = self.settings.timeout_rate_percent;
        Box::pin(async move {
            if roll < error {
                return Err(BackendError::Unavailable("injected fault".into()));
            }
            if roll < error.saturating_add(timeout) {
                tokio::time::sleep(Duration::from_millis(self.settings.timeout_ms)).await;
                return Err(BackendError::Unavailable("injected timeout".into()));
            }
            self.inner.summarize(input).await
        })
    }
}
