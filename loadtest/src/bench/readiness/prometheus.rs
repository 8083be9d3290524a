//! A Prometheus of the run's own, scraping the stack and evaluating
//! `monitoring/alerts.yml`, queried through its HTTP API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use test_support::GatewayClient;
use test_support::processes::ProcessStack;

use test_support::requests::get;

use super::{FAULT_CALLERS, ReadinessError};

pub(super) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

/// A Prometheus of the run's own: scrapes every service each second and
/// evaluates `monitoring/alerts.yml` each second.
pub(super) struct Prometheus {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    pub(super) targets: usize,
}

impl Prometheus {
    pub(super) async fn start(bin: &Path, stack: &ProcessStack) -> Result<Self, ReadinessError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            ReadinessError::Prometheus(format!("{what}: {e}"))
        };
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/alerts.yml");
        let rules = rules
            .canonicalize()
            .map_err(|e| err(&format!("alert rules {}", rules.display()), &e))?;
        let dir = stack.log_dir.join("prometheus");
        std::fs::create_dir_all(&dir).map_err(|e| err("directory", &e))?;
        let targets: Vec<String> = stack
            .ports
            .values()
            .map(|p| format!("'{}'", p.metrics))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\nscrape_configs:\n  - job_name: chat-memory\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).map_err(|e| err("config", &e))?;
        let port = test_support::processes::free_addr().port();
        let log = std::fs::File::create(dir.join("prometheus.log")).map_err(|e| err("log", &e))?;
        let child = tokio::process::Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err("start", &e))?;
        let prometheus = Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            targets: targets.len(),
        };
        // Every target scraped and up before the run starts.
        let started = Instant::now();
        loop {
            let up = prometheus
                .query("count(up == 1)")
                .await
                .ok()
                .and_then(|v| {
                    v["data"]["result"][0]["value"][1]
                        .as_str()
                        .map(str::to_owned)
                })
                .and_then(|s| s.parse::<usize>().ok());
            if up == Some(prometheus.targets) {
                return Ok(prometheus);
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(ReadinessError::Prometheus(format!(
                    "{:?} of {} targets up after 60 s (see {})",
                    up,
                    prometheus.targets,
                    dir.join("prometheus.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<serde_json::Value, ReadinessError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| ReadinessError::Prometheus(format!("{path}: {e}")))?;
        self.http
            .get(url)
            .send()
            .await
            .map_err(|e| ReadinessError::Prometheus(format!("{path}: {e}")))?
            .json()
            .await
            .map_err(|e| ReadinessError::Prometheus(format!("{path}: {e}")))
    }

    async fn query(&self, q: &str) -> Result<serde_json::Value, ReadinessError> {
        self.get("/api/v1/query", &[("query", q)]).await
    }

    /// Alerting rules loaded.
    pub(super) async fn rules(&self) -> Result<usize, ReadinessError> {
        let v = self.get("/api/v1/rules", &[("type", "alert")]).await?;
        Ok(v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| g["rules"].as_array().map_or(0, Vec::len))
            .sum())
    }

    /// Alerts pending or firing, as `name (state)`.
    async fn active(&self) -> Result<Vec<(String, String)>, ReadinessError> {
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

    /// The alerts active after the healthy run, once the rules have been
    /// evaluated on fresh scrapes (a few evaluation intervals).
    pub(super) async fn quiet_check(&self) -> Result<Vec<String>, ReadinessError> {
        if self.rules().await? == 0 {
            return Err(ReadinessError::Prometheus(
                "no alerting rules loaded".to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(self
            .active()
            .await?
            .into_iter()
            .map(|(name, state)| format!("{name} ({state})"))
            .collect())
    }

    /// Sends reads that need memory-store (chats never read before) from
    /// [`FAULT_CALLERS`] callers until `alert` fires or `within` passes;
    /// returns when it fired. The callers are many so that errors soon
    /// outweigh the healthy run's calls in the alert's 10-minute window.
    pub(super) async fn fire_under_errors(
        &self,
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
            let firing = self
                .active()
                .await?
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
}
