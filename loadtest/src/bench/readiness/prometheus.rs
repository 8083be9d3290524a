//! The alert checks of the run, on test-support's Prometheus (scraping the
//! stack and evaluating `monitoring/alerts.yml`).

use std::time::{Duration, Instant};

use test_support::GatewayClient;
use test_support::prometheus::Prometheus;
use test_support::requests::get;

use super::{FAULT_CALLERS, ReadinessError};

fn error(e: String) -> ReadinessError {
    ReadinessError::Prometheus(e)
}

/// The alerts active after the healthy run, once the rules have been
/// evaluated on fresh scrapes (a few evaluation intervals).
pub(super) async fn quiet_check(prometheus: &Prometheus) -> Result<Vec<String>, ReadinessError> {
    if prometheus.alert_rules().await.map_err(error)? == 0 {
        return Err(error("no alerting rules loaded".to_owned()));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(prometheus
        .active_alerts()
        .await
        .map_err(error)?
        .into_iter()
        .map(|(name, state)| format!("{name} ({state})"))
        .collect())
}

/// Sends reads that need memory-store (chats never read before) from
/// [`FAULT_CALLERS`] callers until `alert` fires or `within` passes; returns
/// when it fired. The callers are many so that errors soon outweigh the
/// healthy run's calls in the alert's 10-minute window.
pub(super) async fn fire_under_errors(
    prometheus: &Prometheus,
    client: &GatewayClient,
    tag: &str,
    alert: &str,
    within: Duration,
) -> Result<Option<Duration>, ReadinessError> {
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..FAULT_CALLERS)
        .map(|c| {
            let (mut client, stop, tag) = (client.clone(), stop.clone(), tag.to_owned());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let chat = format!("read-{tag}-fault-{c}-{n}");
                    if client.get_memory(get(&chat)).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    let mut fired = None;
    while started.elapsed() < within {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let firing = prometheus
            .active_alerts()
            .await
            .map_err(error)?
            .into_iter()
            .any(|(name, state)| name == alert && state == "firing");
        if firing {
            fired = Some(started.elapsed());
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    Ok(fired)
}
