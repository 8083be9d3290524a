//! A real Prometheus over a [`ProcessStack`]: scrapes every service's
//! `/metrics` each second and, given alert rules, evaluates them each second;
//! queried through its HTTP API. The observability tests and
//! `chat-memory-bench readiness` use it. Needs the `prometheus` binary
//! (`scripts/services.sh --with-prometheus`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::processes::{ProcessStack, free_addr};

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

/// A running Prometheus, stopped when dropped.
pub struct Prometheus {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    /// Services it scrapes.
    pub targets: usize,
}

impl Prometheus {
    /// Starts Prometheus (config, data and log under the stack's log
    /// directory) and waits until every service is scraped and up.
    ///
    /// # Errors
    /// The binary or the rules file missing, or a target not up within 60 s.
    pub async fn start(stack: &ProcessStack, rules: Option<&Path>) -> Result<Self, String> {
        let bin = which("prometheus").ok_or(
            "prometheus is not installed (scripts/services.sh --with-prometheus installs it)",
        )?;
        let dir = stack.log_dir.join("prometheus");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let targets: Vec<String> = stack
            .ports
            .values()
            .map(|p| format!("'{}'", p.metrics))
            .collect();
        let rule_files = match rules {
            Some(rules) => {
                let rules = rules
                    .canonicalize()
                    .map_err(|e| format!("alert rules {}: {e}", rules.display()))?;
                format!("rule_files:\n  - '{}'\n", rules.display())
            }
            None => String::new(),
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}scrape_configs:\n  - job_name: chat-memory\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).map_err(|e| format!("prometheus.yml: {e}"))?;
        let port = free_addr().port();
        let log_file = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_file).map_err(|e| format!("prometheus.log: {e}"))?;
        let child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting prometheus: {e}"))?;
        let prometheus = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            http: {
                // reqwest has rustls without a provider in this workspace (`summarizer_contract::tls`).
                summarizer_agent::install_ring_provider();
                reqwest::Client::new()
            },
            targets: targets.len(),
        };
        let started = Instant::now();
        loop {
            let up = prometheus.query("count(up == 1)").await.ok().and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<usize>().ok())
            });
            if up == Some(prometheus.targets) {
                return Ok(prometheus);
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "{up:?} of {} targets up after 60 s (see {})",
                    prometheus.targets,
                    log_file.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `GET <path>?<query>` of the HTTP API, as JSON.
    ///
    /// # Errors
    /// The request or its JSON failed.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        self.http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{path}: {e}"))
    }

    /// An instant query.
    ///
    /// # Errors
    /// As [`Prometheus::get`].
    pub async fn query(&self, q: &str) -> Result<Value, String> {
        self.get("/api/v1/query", &[("query", q)]).await
    }

    /// How many series `q` returns, when any.
    pub async fn series(&self, q: &str) -> Option<usize> {
        let n = self.query(q).await.ok()?["data"]["result"]
            .as_array()?
            .len();
        (n > 0).then_some(n)
    }

    /// Alerting rules loaded.
    ///
    /// # Errors
    /// As [`Prometheus::get`].
    pub async fn alert_rules(&self) -> Result<usize, String> {
        let v = self.get("/api/v1/rules", &[("type", "alert")]).await?;
        Ok(v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g["rules"].as_array().map_or(0, Vec::len))
            .sum())
    }

    /// Alerts pending or firing, as `(name, state)`.
    ///
    /// # Errors
    /// As [`Prometheus::get`].
    pub async fn active_alerts(&self) -> Result<Vec<(String, String)>, String> {
        let v = self.get("/api/v1/alerts", &[]).await?;
        Ok(v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("?").to_owned(),
                    a["state"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect())
    }
}
