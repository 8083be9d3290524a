//! A stand-in for a hosted model: an OpenAI-compatible Chat Completions
//! server that answers the summarizer agent's `openai` backend the way a
//! provider does, with a provider's latency, errors and concurrency limit,
//! and counts what it was asked.
//!
//! It replaces only the hosted LLM: the agent, its HTTP client, its schema
//! validation and its retries all run for real against it.
//!
//! ```text
//! POST /v1/chat/completions ─▶ over the cap? ── yes ─▶ 429 + Retry-After
//!                                   │ no
//!                                   ▼
//!                     lognormal sleep ─▶ error roll ── hit ─▶ 500
//!                                   │ miss
//!                                   ▼
//!              200: a draft citing the request's message ids ([`answer`])
//! GET /stats ─▶ calls, in flight, max in flight, 429s, 500s ([`StatsSnapshot`])
//! ```

mod answer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use self::answer::AnswerError;

/// How the stand-in behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct StandInConfig {
    /// Mean of the lognormal latency of an admitted call.
    pub latency_mean: Duration,
    /// σ of the underlying normal (0: every call takes exactly the mean).
    pub latency_sigma: f64,
    /// Share of admitted calls answered with HTTP 500 (0.0..=1.0).
    pub error_rate: f64,
    /// Calls in flight above which a call gets 429 (0: no cap).
    pub max_concurrency: usize,
    /// The `Retry-After` (seconds) sent with a 429.
    pub retry_after_secs: u64,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            latency_mean: Duration::from_millis(1500),
            latency_sigma: 0.4,
            error_rate: 0.0,
            max_concurrency: 0,
            retry_after_secs: 1,
        }
    }
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("invalid stand-in setting {0}: {1}")]
    Invalid(&'static str, String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stand-in server: {0}")]
    Serve(#[source] std::io::Error),
}

impl StandInConfig {
    /// # Errors
    /// [`StandInError::Invalid`] for a negative or non-finite σ or an error
    /// rate outside 0..=1.
    pub fn validate(&self) -> Result<(), StandInError> {
        if !self.latency_sigma.is_finite() || self.latency_sigma < 0.0 {
            return Err(StandInError::Invalid(
                "latency_sigma",
                format!("{} is not a finite value >= 0", self.latency_sigma),
            ));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(StandInError::Invalid(
                "error_rate",
                format!("{} is not within 0..=1", self.error_rate),
            ));
        }
        Ok(())
    }

    /// One call's latency: lognormal with mean `latency_mean`, i.e.
    /// `exp(μ + σZ)` with `μ = ln(mean) − σ²/2` and Z standard normal.
    fn sample_latency(&self) -> Duration {
        let mean = self.latency_mean.as_secs_f64();
        if mean <= 0.0 || self.latency_sigma == 0.0 {
            return self.latency_mean;
        }
        let sigma = self.latency_sigma;
        let mu = mean.ln() - sigma * sigma / 2.0;
        // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
        let u1: f64 = 1.0 - rand::random::<f64>();
        let u2: f64 = rand::random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64((mu + sigma * z).exp().min(600.0))
    }
}

/// What the stand-in has seen, as `GET /stats` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Requests received, 429s included.
    pub requests: u64,
    /// Requests admitted under the cap (each a model call a provider would bill).
    pub calls: u64,
    /// Calls answered with a completion.
    pub completions: u64,
    /// Calls answered with HTTP 500 (the error rate).
    pub server_errors: u64,
    /// Requests refused with 429 (the concurrency cap).
    pub rate_limited: u64,
    /// Requests refused with 400 (not the request the agent sends).
    pub bad_requests: u64,
    /// Calls in flight now.
    pub in_flight: u64,
    /// Most calls in flight at once since the start.
    pub max_in_flight: u64,
}

#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    calls: AtomicU64,
    completions: AtomicU64,
    server_errors: AtomicU64,
    rate_limited: AtomicU64,
    bad_requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        StatsSnapshot {
            requests: get(&self.requests),
            calls: get(&self.calls),
            completions: get(&self.completions),
            server_errors: get(&self.server_errors),
            rate_limited: get(&self.rate_limited),
            bad_requests: get(&self.bad_requests),
            in_flight: get(&self.in_flight),
            max_in_flight: get(&self.max_in_flight),
        }
    }
}

/// One call in flight; leaving the count when dropped, so a call the client
/// abandons (its deadline passed, the connection closed) is counted out too.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Shared {
    config: StandInConfig,
    stats: Stats,
}

/// A running stand-in. Stops when dropped.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Ends the server; dropping it (with the handle) stops serving.
    _stop: oneshot::Sender<()>,
}

impl StandIn {
    /// Starts serving on `listen` (`127.0.0.1:0` for any free port).
    ///
    /// # Errors
    /// [`StandInError`] for an invalid `config` or an address that cannot be bound.
    pub async fn start(listen: &str, config: StandInConfig) -> Result<Self, StandInError> {
        config.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StandInError::Bind {
                addr: listen.to_owned(),
                source,
            })?;
        let addr = listener.local_addr().map_err(StandInError::Serve)?;
        let shared = Arc::new(Shared {
            config,
            stats: Stats::default(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(Arc::clone(&shared));
        tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                eprintln!("stand-in model: {e}");
            }
        });
        Ok(Self {
            addr,
            shared,
            _stop: stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `base_url` to give the agent's `openai` backend.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }
}

/// Serves on `listen` until the process is interrupted (the CLI command).
///
/// # Errors
/// [`StandInError`] for an invalid `config` or an address that cannot be bound.
pub async fn serve_until_interrupted(
    listen: &str,
    config: StandInConfig,
) -> Result<(), StandInError> {
    let stand_in = StandIn::start(listen, config).await?;
    println!(
        "stand-in model listening: base_url {} (stats: http://{}/stats); Ctrl-C stops it",
        stand_in.base_url(),
        stand_in.addr()
    );
    tokio::signal::ctrl_c().await.map_err(StandInError::Serve)?;
    println!(
        "{}",
        serde_json::to_string(&stand_in.stats()).unwrap_or_default()
    );
    Ok(())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/stats", get(stats))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<StatsSnapshot> {
    Json(shared.stats.snapshot())
}

async fn completions(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let stats = &shared.stats;
    let config = &shared.config;
    stats.requests.fetch_add(1, Ordering::SeqCst);
    // A malformed request is refused at once, as a provider does, and is no call.
    let reply = match answer::complete(&body) {
        Ok(reply) => reply,
        Err(e) => {
            stats.bad_requests.fetch_add(1, Ordering::SeqCst);
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            );
        }
    };
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let guard = InFlight(&stats.in_flight);
    if config.max_concurrency > 0 && now > config.max_concurrency as u64 {
        drop(guard);
        stats.rate_limited.fetch_add(1, Ordering::SeqCst);
        return rate_limited(config.retry_after_secs);
    }
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    stats.calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(config.sample_latency()).await;
    if config.error_rate > 0.0 && rand::random::<f64>() < config.error_rate {
        stats.server_errors.fetch_add(1, Ordering::SeqCst);
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "injected failure",
        );
    }
    stats.completions.fetch_add(1, Ordering::SeqCst);
    drop(guard);
    Json(reply).into_response()
}

fn rate_limited(retry_after_secs: u64) -> Response {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        "too many concurrent requests",
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// An error in the shape OpenAI sends.
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": kind}
    });
    (status, Json(body)).into_response()
}
