//! Observability and operations on the real processes: one update produces one
//! trace across gateway, worker, agent and memory-store (collected by an OTLP
//! receiver inside the test), a real Prometheus scraping the services sees every
//! metric the alerts use, and the deployment settings files load in every binary.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chat_memory_proto::v1::{QueryAuditRequest, UpdateMemoryRequest};
use test_support::otlp::{OtlpReceiver, ReceivedSpan};
use test_support::processes::{ProcessOptions, ProcessStack};
use test_support::prometheus::Prometheus;
use test_support::requests::{assistant, get, update, user};

/// An update of `chat_id`: the user's `text` and a guess of the assistant's.
fn exchange(chat_id: &str, text: &str) -> UpdateMemoryRequest {
    update(
        chat_id,
        vec![
            user(text),
            assistant("It sounds like this claim may be covered under your plan."),
        ],
    )
}

fn print_tree(spans: &[ReceivedSpan]) {
    let by_parent: BTreeMap<&str, Vec<&ReceivedSpan>> =
        spans.iter().fold(BTreeMap::new(), |mut m, s| {
            m.entry(s.parent_span_id.as_str()).or_default().push(s);
            m
        });
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    fn walk(s: &ReceivedSpan, depth: usize, by_parent: &BTreeMap<&str, Vec<&ReceivedSpan>>) {
        println!(
            "{}{} [{}] {}",
            "  ".repeat(depth),
            s.name,
            s.service,
            s.span_id
        );
        for child in by_parent.get(s.span_id.as_str()).into_iter().flatten() {
            walk(child, depth + 1, by_parent);
        }
    }
    for root in spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
    {
        walk(root, 0, &by_parent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_update_produces_one_trace_across_every_service() {
    let receiver = OtlpReceiver::start().await;
    let stack = ProcessStack::start(ProcessOptions {
        otlp_endpoint: Some(receiver.endpoint.clone()),
        ..Default::default()
    })
    .await;
    let mut client = test_support::processes::gateway_client(&stack).await;

    let job_id = client
        .update_memory(exchange(
            "trace-chat",
            "My claim CLM-4411 for the MRI on May 2 was denied.",
        ))
        .await
        .expect("accepted")
        .into_inner()
        .job_id;
    test_support::stack::wait_job(
        &client,
        &job_id,
        "succeed",
        Duration::from_secs(30),
        test_support::stack::succeeded,
    )
    .await;

    // The worker's span carries the job id; its trace must hold every hop.
    let trace = stack
        .wait_until(
            "the spans of every service to be exported",
            Duration::from_secs(30),
            || {
                let spans = receiver.spans();
                let job_id = job_id.clone();
                async move {
                    let worker = spans.iter().find(|s| {
                        s.name == "process update job"
                            && s.attribute("job_id") == Some(job_id.as_str())
                    })?;
                    let trace: Vec<ReceivedSpan> = spans
                        .iter()
                        .filter(|s| s.trace_id == worker.trace_id)
                        .cloned()
                        .collect();
                    let services: std::collections::HashSet<&str> =
                        trace.iter().map(|s| s.service.as_str()).collect();
                    let complete = [
                        "gateway",
                        "summarizer-worker",
                        "summarizer-agent",
                        "memory-store",
                    ]
                    .iter()
                    .all(|s| services.contains(s))
                        && trace.iter().any(|s| s.name.ends_with("CommitJobs"))
                        // The gateway's server span ends after the response: last to arrive.
                        && trace.iter().any(|s| s.attribute("rpc.method") == Some("UpdateMemory"));
                    complete.then_some(trace)
                }
            },
        )
        .await;
    println!("trace {} of job {job_id}:", trace[0].trace_id);
    print_tree(&trace);

    let by_id: HashMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let find = |pred: &dyn Fn(&ReceivedSpan) -> bool, what: &str| -> ReceivedSpan {
        trace
            .iter()
            .find(|s| pred(s))
            .cloned()
            .unwrap_or_else(|| panic!("no {what} span in the trace"))
    };
    let receive = find(
        &|s| {
            s.service == "gateway"
                && s.kind == 2
                && s.attribute("rpc.method") == Some("UpdateMemory")
        },
        "gateway UpdateMemory server",
    );
    assert_eq!(receive.attribute("rpc.system"), Some("grpc"));
    let publish = find(
        &|s| s.service == "gateway" && s.kind == 4,
        "gateway publish (producer)",
    );
    let consume = find(&|s| s.name == "process update job", "worker consume");
    let agent_call = find(
        &|s| {
            s.service == "summarizer-worker"
                && s.kind == 3
                && s.attribute("mcp.method.name") == Some("tools/call")
        },
        "worker agent call",
    );
    let agent_tool = find(&|s| s.service == "summarizer-agent", "agent tool call");
    let commit = find(
        &|s| s.service == "memory-store" && s.name.ends_with("CommitJobs"),
        "store CommitJobs",
    );

    // The chain: receive -> publish -> consume (child of the publish, and linked to it)
    // -> agent call -> agent; consume -> ... -> store write.
    let ancestors = |s: &ReceivedSpan| -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = by_id.get(s.parent_span_id.as_str()).copied();
        while let Some(p) = cur {
            out.push(p.span_id.clone());
            cur = by_id.get(p.parent_span_id.as_str()).copied();
        }
        out
    };
    assert!(
        ancestors(&publish).contains(&receive.span_id),
        "publish is not under the UpdateMemory span"
    );
    assert_eq!(
        consume.parent_span_id, publish.span_id,
        "the worker span must be a child of the publish"
    );
    assert!(
        consume.links.contains(&publish.trace_id),
        "the worker span must link to the publish"
    );
    assert_eq!(consume.kind, 5, "the worker span is a consumer span");
    assert!(ancestors(&agent_call).contains(&consume.span_id));
    assert!(
        ancestors(&agent_tool).contains(&agent_call.span_id),
        "the agent's span must continue the worker's call"
    );
    assert!(
        ancestors(&commit).contains(&consume.span_id),
        "the store write must be under the worker span"
    );
    // No message content in any attribute.
    for s in &trace {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains("CLM-4411"),
                "span {} attribute {k} carries message content",
                s.name
            );
        }
    }
    // The audit rows of the update (gateway) and of its application (memory-store)
    // carry the trace id: from an audit row to the trace and its logs.
    stack.audit_relayed().await;
    let mut admin = test_support::stack::gateway_client(
        stack.gateway_addr(),
        test_support::auth::Bearer::new(&test_support::auth::mint(
            test_support::auth::TENANT,
            "auditor",
            &["memory:admin"],
        )),
    )
    .await;
    let rows = admin
        .query_audit(QueryAuditRequest {
            chat_id: "trace-chat".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .entries;
    for action in ["update", "apply"] {
        let row = rows
            .iter()
            .find(|r| r.action == action)
            .unwrap_or_else(|| panic!("no {action} row in {rows:#?}"));
        assert_eq!(row.trace_id, trace[0].trace_id, "{action} row: {row:?}");
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_prometheus_scrapes_every_metric_the_alerts_use() {
    let stack = ProcessStack::start(ProcessOptions::default()).await;
    let prometheus = Prometheus::start(&stack, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Some traffic: updates, reads, a bad request.
    let mut client = test_support::processes::gateway_client(&stack).await;
    for i in 0..5 {
        client
            .update_memory(exchange(
                &format!("prom-{i}"),
                "My plan is Cigna Open Access Plus.",
            ))
            .await
            .expect("update");
    }
    let _ = client.get_memory(get("never-written")).await;
    stack
        .wait_until("the updates to apply", Duration::from_secs(30), || {
            let mut client = client.clone();
            async move { client.get_memory(get("prom-4")).await.ok().map(|_| ()) }
        })
        .await;

    let queries = [
        "chat_memory_queue_depth",
        r#"chat_memory_updates_total{outcome="succeeded"}"#,
        "chat_memory_retrieval_duration_seconds_count",
        "chat_memory_retrieval_duration_seconds_sum",
        r#"chat_memory_api_requests_total{method="UpdateMemory",code="OK"}"#,
        r#"chat_memory_api_requests_total{method="GetMemory",code="NotFound"}"#,
        "chat_memory_job_duration_seconds_count",
        "chat_memory_agent_call_duration_seconds_count",
        "chat_memory_queue_wait_seconds_count",
        r#"chat_memory_audit_rows_total{result="outboxed"}"#,
        r#"chat_memory_audit_rows_total{result="relayed"}"#,
        "chat_memory_audit_outbox_depth",
        // Every gathered call's size, by kind (gateway, worker, memory-store).
        r#"chat_memory_gathered_batch_size_count{call="claims"}"#,
        r#"chat_memory_gathered_batch_size_count{call="registrations"}"#,
        r#"chat_memory_gathered_batch_size_count{call="reads"}"#,
        r#"chat_memory_gathered_batch_size_count{call="audit_outbox"}"#,
        r#"chat_memory_gathered_batch_size_count{call="begins"}"#,
        r#"chat_memory_gathered_batch_size_count{call="commits"}"#,
    ];
    for q in queries {
        let n = stack
            .wait_until(
                &format!("Prometheus to have {q}"),
                Duration::from_secs(30),
                || prometheus.series(q),
            )
            .await;
        println!("scraped {q}: {n} series");
    }
    let names = prometheus
        .get("/api/v1/label/__name__/values", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ours: Vec<&str> = names["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter(|n| n.starts_with("chat_memory_"))
        .collect();
    println!("metrics scraped by Prometheus: {}", ours.join(", "));
    stack.shutdown().await;
}

/// The `CHAT_MEMORY__...` variables a deployment file gives each service:
/// `k8s/<service>.yaml` (`- name: CHAT_MEMORY__...`) and the service's
/// `environment:` block in `docker-compose.yml`.
fn deployment_env(root: &std::path::Path, service: &str) -> Vec<(String, String)> {
    let mut names = std::collections::BTreeSet::new();
    let manifest = std::fs::read_to_string(root.join("k8s").join(format!("{service}.yaml")))
        .unwrap_or_else(|e| panic!("k8s/{service}.yaml: {e}"));
    for line in manifest.lines() {
        if let Some(name) = line.trim().strip_prefix("- name: ")
            && name.starts_with("CHAT_MEMORY__")
        {
            names.insert(name.to_owned());
        }
    }
    let compose = std::fs::read_to_string(root.join("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    let mut current = String::new();
    for line in compose.lines() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            current = name.to_owned();
        } else if current == service
            && let Some((key, _)) = line.trim().split_once(':')
            && key.starts_with("CHAT_MEMORY__")
        {
            names.insert(key.to_owned());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let value = if name.ends_with("DATABASE__URL") {
                "postgres://chat_memory:pw@postgres:5432/chat_memory".to_owned()
            } else if name.ends_with("OTLP_ENDPOINT") {
                // docker-compose.yml's default: no export without its observability profile.
                String::new()
            } else {
                "placeholder-secret-0123456789abcdef0123456789".to_owned()
            };
            (name, value)
        })
        .collect()
}

/// The settings files the Kubernetes manifests and docker-compose.yml share
/// (`k8s/config/*.toml`) load in each real binary with exactly the variables its
/// deployment files give it: a renamed or misspelt setting fails here, not in a rollout.
#[test]
fn deployment_settings_files_load_in_every_service() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The MCP front is deployed beside the four services (not part of the
    // process stack); it and the worker are the two that take no secret.
    let services = test_support::processes::SERVICES
        .into_iter()
        .chain(["chat-memory-mcp"]);
    for service in services {
        let env = deployment_env(&root, service);
        assert!(
            matches!(service, "summarizer-worker" | "chat-memory-mcp") || !env.is_empty(),
            "{service}: its deployment gives it no secrets"
        );
        let config = root.join("k8s/config").join(format!("{service}.toml"));
        let out = std::process::Command::new(test_support::processes::bin_dir().join(service))
            .arg("--config")
            .arg(&config)
            .arg("--print-config")
            .env_clear()
            .envs(env.iter().cloned())
            .output()
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{service} refused its deployment settings ({env:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{service}: --print-config is not JSON: {e}"));
        let listen = printed["listen_addr"].as_str().unwrap_or_default();
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{service} listens on {listen} in a container"
        );
        assert!(
            !stdout.contains("placeholder-secret"),
            "{service} printed a secret"
        );
        println!(
            "{service}: k8s/config/{service}.toml + {} secret variables: ok",
            env.len()
        );
    }
}

/// docker-compose.yml's `observability` profile mounts files that exist, and
/// the dashboard it provisions is valid JSON (`promtool check config
/// monitoring/prometheus.yml` in scripts/test.sh checks the Prometheus side).
#[test]
fn the_observability_profile_mounts_files_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose");
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./monitoring/"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(mounts.len() >= 5, "the profile's mounts: {mounts:?}");
    for mount in &mounts {
        assert!(
            root.join("monitoring").join(mount).exists(),
            "docker-compose.yml mounts monitoring/{mount}, which does not exist"
        );
    }
    let dashboard =
        std::fs::read_to_string(root.join("monitoring/grafana-dashboard.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    for service in [
        "memory-store",
        "summarizer-agent",
        "summarizer-worker",
        "gateway",
        "chat-memory-mcp",
    ] {
        let config =
            std::fs::read_to_string(root.join("k8s/config").join(format!("{service}.toml")))
                .expect("config");
        assert!(
            config.contains("otlp_endpoint = \"http://otel-collector:4317\""),
            "{service} exports to k8s/otel-collector.yaml"
        );
    }
}

/// The rate limiter fails open when its shared state is gone (by design: a
/// limiter outage is not an outage), and counts it in
/// `chat_memory_rate_limit_fail_open_total`, which ChatMemoryRateLimiterFailingOpen
/// alerts on (DEBT D-38).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_without_its_shared_state_lets_calls_through_and_counts_it() {
    let bucket = format!("CMT_RL_open_{}", test_support::unique_suffix());
    let stack = ProcessStack::start(ProcessOptions {
        env: vec![(
            "gateway",
            vec![
                ("CHAT_MEMORY__RATE_LIMIT__BUCKET".to_owned(), bucket.clone()),
                // Small leases, so calls keep refilling from the bucket.
                (
                    "CHAT_MEMORY__RATE_LIMIT__PER_MINUTE".to_owned(),
                    "100".to_owned(),
                ),
            ],
        )],
        ..ProcessOptions::default()
    })
    .await;
    let metrics = format!("http://{}/metrics", stack.ports["gateway"].metrics);
    let fail_opens = || async {
        summarizer_agent::install_ring_provider();
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("chat_memory_rate_limit_fail_open_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>(),
        )
    };
    let mut client = test_support::processes::gateway_client(&stack).await;
    let _ = client.get_memory(get("limited")).await;
    assert_eq!(fail_opens().await.unwrap_or(0.0), 0.0, "the bucket works");

    let js = job_queue::connect(&stack.queue_settings(), "test")
        .await
        .expect("nats");
    js.delete_stream(format!("KV_{bucket}"))
        .await
        .expect("the bucket's stream deleted");
    // More calls than a user's budget of 100: each is let through, none
    // refused for the rate, and the fail-open is counted.
    for _ in 0..150 {
        let status = client
            .get_memory(get("limited"))
            .await
            .expect_err("no memory");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
    stack
        .wait_until("the fail-open counted", Duration::from_secs(10), || async {
            fail_opens().await.filter(|n| *n >= 1.0)
        })
        .await;
    stack.shutdown().await;
}
