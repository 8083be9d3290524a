//! The one start-up sequence of every service binary: parse `--config` /
//! `--print-config`, load the typed settings, build the tokio runtime
//! (`[runtime]`), start telemetry, bind `listen_addr`, and run until SIGINT
//! or SIGTERM. Every failure ends the process with exit code 1 and one line
//! on stderr naming the service.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as _, FromArgMatches as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::settings::{self, CommonArgs, SettingsError, Validate};
use crate::telemetry::TelemetrySettings;

/// What the entry needs from a service's settings.
pub trait ServiceSettings: Default + Serialize + DeserializeOwned + Validate {
    /// The address the service's main listener binds.
    fn listen_addr(&self) -> &str;
    fn telemetry(&self) -> &TelemetrySettings;
    fn runtime(&self) -> &RuntimeSettings;
}

/// `[runtime]`: the process's tokio runtime and its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Threads running the service's tasks; 0 (the default) is one per CPU
    /// the process may use. Where several services share a few cores (every
    /// service on one 2-core machine), 1 costs less CPU per request: fewer
    /// cross-thread wake-ups (docs/benchmarks.md, "Capacity planning").
    pub worker_threads: usize,
    /// After SIGTERM or SIGINT, how long the service may drain (finish the
    /// calls and streams under way) before it stops with them cut off. Keep
    /// it below the orchestrator's own grace (Kubernetes: 30 s by default).
    pub shutdown_grace_ms: u64,
}

/// The default drain deadline: below Kubernetes' 30 s grace, above the
/// longest wait a call may ask for (a read's 10 s `wait_ms`).
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 25_000;

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
        }
    }
}

impl RuntimeSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming `runtime.worker_threads` or
    /// `runtime.shutdown_grace_ms`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.worker_threads > 1024 {
            return Err(SettingsError::invalid(
                "runtime.worker_threads",
                "must be at most 1024 (0: one per CPU)",
            ));
        }
        if !(1..=3_600_000).contains(&self.shutdown_grace_ms) {
            return Err(SettingsError::invalid(
                "runtime.shutdown_grace_ms",
                "must be 1..=3600000",
            ));
        }
        Ok(())
    }

    /// A multi-thread runtime with every driver enabled.
    ///
    /// # Errors
    /// The operating system refused a thread or the I/O driver.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if self.worker_threads > 0 {
            builder.worker_threads(self.worker_threads);
        }
        builder.build()
    }
}

/// Implements [`ServiceSettings`] for a settings type whose main listener is
/// its `listen_addr` field, whose telemetry is its `telemetry` field and whose
/// runtime is its `runtime` field.
#[macro_export]
macro_rules! service_settings {
    ($settings:ty) => {
        impl $crate::entry::ServiceSettings for $settings {
            fn listen_addr(&self) -> &str {
                &self.listen_addr
            }

            fn telemetry(&self) -> &$crate::telemetry::TelemetrySettings {
                &self.telemetry
            }

            fn runtime(&self) -> &$crate::entry::RuntimeSettings {
                &self.runtime
            }
        }
    };
}

/// The shutdown signal handed to a service's `run`.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a service: see the module documentation. `about` is its `--help` line.
/// Call it from a plain `fn main` (it builds the runtime).
pub fn main<S, R, Fut, E>(name: &'static str, about: &'static str, run: R) -> ExitCode
where
    S: ServiceSettings,
    R: FnOnce(S, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    let command = CommonArgs::augment_args(clap::Command::new(name))
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let common = match CommonArgs::from_arg_matches(&command.get_matches()) {
        Ok(common) => common,
        Err(e) => e.exit(),
    };
    let settings: S = match settings::load(common.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return failed(name, &e.to_string()),
    };
    if common.print_config {
        println!("{}", settings::render(&settings));
        return ExitCode::SUCCESS;
    }
    let runtime = match settings.runtime().build() {
        Ok(rt) => rt,
        Err(e) => return failed(name, &format!("cannot start the runtime: {e}")),
    };
    let code = runtime.block_on(serve(name, settings, run));
    // Blocking tasks still running (a model call on the blocking pool, say)
    // must not hold the exit past the drain deadline.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// How long the runtime's leftover tasks may take once `run` has returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

async fn serve<S, R, Fut, E>(name: &'static str, settings: S, run: R) -> ExitCode
where
    S: ServiceSettings,
    R: FnOnce(S, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    let _telemetry = match crate::telemetry::start(name, settings.telemetry()).await {
        Ok(guard) => guard,
        Err(e) => return failed(name, &e),
    };
    let listener = match TcpListener::bind(settings.listen_addr()).await {
        Ok(l) => l,
        Err(e) => {
            let line = format!("cannot bind listen_addr {}: {e}", settings.listen_addr());
            tracing::error!(error = %line, "cannot start");
            return failed(name, &line);
        }
    };
    let grace = Duration::from_millis(settings.runtime().shutdown_grace_ms);
    let ran = drain_within(crate::shutdown::signal(), grace, |shutdown| {
        run(settings, listener, shutdown)
    })
    .await;
    match ran {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            let line = cause_chain(&e);
            tracing::error!(error = %line, "stopped with an error");
            failed(name, &line)
        }
        None => {
            tracing::warn!(
                grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                "drain deadline passed: stopping with calls still under way"
            );
            ExitCode::SUCCESS
        }
    }
}

/// Runs `run` with a shutdown future that resolves once `signal` has; from
/// then on, `run` has `grace` to finish before it is dropped (its calls and
/// streams cut off). `None` when the deadline ended it.
async fn drain_within<T, F>(
    signal: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    run: impl FnOnce(Shutdown) -> F,
) -> Option<T>
where
    F: Future<Output = T>,
{
    let (signalled, seen) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(async move {
        signal.await;
        let _ = signalled.send(true);
    });
    let shutdown: Shutdown = Box::pin(signalled_on(seen.clone()));
    let deadline = async move {
        signalled_on(seen).await;
        tokio::time::sleep(grace).await;
    };
    let ran = tokio::select! {
        out = run(shutdown) => Some(out),
        () = deadline => None,
    };
    listener.abort();
    ran
}

/// Resolves once the signal was seen; never when the listener is gone
/// without one.
async fn signalled_on(mut seen: tokio::sync::watch::Receiver<bool>) {
    if seen.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The one line a start-up or run failure prints, and its exit code.
fn failed(name: &str, line: &str) -> ExitCode {
    eprintln!("{name}: {line}");
    ExitCode::FAILURE
}

/// `error: cause: cause ...`, skipping a cause whose text the previous one
/// already ends with (many wrappers print their source themselves).
pub fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Inner);

    #[test]
    fn the_runtime_has_the_threads_the_setting_asks_for() {
        let one = RuntimeSettings {
            worker_threads: 1,
            ..RuntimeSettings::default()
        }
        .build()
        .expect("runtime");
        assert_eq!(one.metrics().num_workers(), 1);
        let three = RuntimeSettings {
            worker_threads: 3,
            ..RuntimeSettings::default()
        }
        .build()
        .expect("runtime");
        assert_eq!(three.metrics().num_workers(), 3);
        let per_cpu = RuntimeSettings::default().build().expect("runtime");
        // tokio's own default: TOKIO_WORKER_THREADS when set, else one per CPU.
        let cpus = std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        assert_eq!(per_cpu.metrics().num_workers(), cpus);
        let e = RuntimeSettings {
            worker_threads: 5000,
            ..RuntimeSettings::default()
        }
        .validate()
        .expect_err("too many");
        assert!(e.to_string().contains("runtime.worker_threads"), "{e}");
        let e = RuntimeSettings {
            shutdown_grace_ms: 0,
            ..RuntimeSettings::default()
        }
        .validate()
        .expect_err("no drain");
        assert!(e.to_string().contains("runtime.shutdown_grace_ms"), "{e}");
    }

    /// A signal the test fires.
    fn fired() -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (tx, async move {
            let _ = rx.await;
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_drains_in_time_ends_with_its_own_result() {
        let (fire, signal) = fired();
        let started = tokio::time::Instant::now();
        let ran = drain_within(signal, Duration::from_secs(25), |shutdown| async move {
            shutdown.await;
            tokio::time::sleep(Duration::from_secs(3)).await; // draining
            "drained"
        });
        fire.send(()).expect("fire");
        assert_eq!(ran.await, Some("drained"));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_still_busy_at_the_deadline_is_stopped_there() {
        let (fire, signal) = fired();
        let started = tokio::time::Instant::now();
        let ran = drain_within(signal, Duration::from_secs(25), |shutdown| async move {
            shutdown.await;
            std::future::pending::<()>().await; // a call that never ends
        });
        fire.send(()).expect("fire");
        assert_eq!(ran.await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_signal_there_is_no_deadline() {
        let (_keep, signal) = fired();
        let ran = drain_within(signal, Duration::from_millis(1), |_shutdown| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "ran its course"
        });
        assert_eq!(ran.await, Some("ran its course"));
    }

    #[test]
    fn a_cause_is_printed_once() {
        assert_eq!(cause_chain(&Outer(Inner)), "outer: inner");
        assert_eq!(cause_chain(&Wrapper(Inner)), "wrapper: inner");
    }
}
