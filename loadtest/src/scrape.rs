//! Reading a service's Prometheus `/metrics` text: the fault suite watches a
//! worker's calls with it, `read-path` the gateway's cache and audit rows.

use std::net::SocketAddr;
use std::time::Duration;

/// An HTTP client for scrapes (1 s timeout).
///
/// # Errors
/// The client could not be built.
pub fn http() -> Result<reqwest::Client, String> {
    // reqwest has rustls without a provider in this workspace (`summarizer_contract::tls`).
    summarizer_contract::tls::install_ring_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The `/metrics` text of the process whose metrics listen on `addr`.
///
/// # Errors
/// The request failed or was refused.
pub async fn metrics_text(http: &reqwest::Client, addr: SocketAddr) -> Result<String, String> {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("GET http://{addr}/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET http://{addr}/metrics: {e}"))
}

/// The sum of a metric's samples named exactly `name`, keeping only those
/// with the label `label` (name, value) when one is given; `None` when no
/// sample matched.
pub fn sample_sum(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.chars().next() {
            Some('{') => match rest.split_once('}') {
                Some((labels, value)) => (labels.trim_start_matches('{'), value),
                None => continue,
            },
            Some(' ') => ("", rest),
            _ => continue,
        };
        if let Some(wanted) = &wanted
            && !labels.split(',').any(|l| l == wanted)
        {
            continue;
        }
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n\
        chat_memory_read_cache_total{otel_scope_name=\"gateway\",result=\"hit\"} 7\n\
        chat_memory_read_cache_total{otel_scope_name=\"gateway\",result=\"miss\"} 3\n\
        chat_memory_read_cache_total_other{result=\"hit\"} 100\n\
        chat_memory_up 1\n";

    #[test]
    fn samples_are_summed_by_exact_name_and_label() {
        assert_eq!(
            sample_sum(TEXT, "chat_memory_read_cache_total", None),
            Some(10.0)
        );
        assert_eq!(
            sample_sum(
                TEXT,
                "chat_memory_read_cache_total",
                Some(("result", "hit"))
            ),
            Some(7.0)
        );
        assert_eq!(sample_sum(TEXT, "chat_memory_up", None), Some(1.0));
        assert_eq!(
            sample_sum(
                TEXT,
                "chat_memory_read_cache_total",
                Some(("result", "cleared"))
            ),
            None
        );
    }
}
