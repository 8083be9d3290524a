//! `grpc.health.v1`: SERVING while Postgres answers, NOT_SERVING while it does not.
//!
//! memory-store is useless without its database, so the health of the process
//! is the health of its pool: load balancers and probes stop routing to a
//! replica that lost Postgres, and resume once a ping succeeds again.

use std::time::Duration;

use chat_memory_proto::store::memory_store_server::SERVICE_NAME;
use sea_orm::DatabaseConnection;
use tonic_health::{ServingStatus, server::HealthReporter};

use service_kit::entry::cause_chain;

/// Time between two database pings.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// A ping slower than this counts as a failure.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets the status of the whole server ("") and of the MemoryStore service.
pub async fn report(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Pings the database forever and reports each change of status.
/// Runs as a task that `run` aborts when the server stops.
pub async fn watch_database(db: DatabaseConnection, reporter: HealthReporter) {
    let mut last = ServingStatus::Serving;
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let status = match tokio::time::timeout(PING_TIMEOUT, db.ping()).await {
            Ok(Ok(())) => ServingStatus::Serving,
            Ok(Err(e)) => {
                if last == ServingStatus::Serving {
                    tracing::warn!(error = %cause_chain(&e), "database ping failed");
                }
                ServingStatus::NotServing
            }
            Err(_) => {
                if last == ServingStatus::Serving {
                    tracing::warn!(
                        timeout_ms = PING_TIMEOUT.as_millis(),
                        "database ping timed out"
                    );
                }
                ServingStatus::NotServing
            }
        };
        if status != last {
            tracing::info!(serving = status == ServingStatus::Serving, "health changed");
            report(&reporter, status).await;
            last = status;
        }
    }
}
