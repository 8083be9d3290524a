//! Operations a platform team runs, exercised on the real binaries:
//! `scripts/ops/backup.sh` and `scripts/ops/restore.sh` (Postgres with
//! pg_dump / pg_restore, the JetStream streams with `chat-memory streams`),
//! JWT key rotation through the JWKS file, and service-token rotation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};

use chat_memory_proto::v1::JobState;
use test_support::auth::{self, Bearer};
use test_support::processes::{ProcessOptions, ProcessStack, bin_dir, gateway_client};
use test_support::requests::{after_job, get, memory, send, update_status, user_update};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `scripts/ops/<script> <dir>` against the stack's database and streams.
fn run_script(stack: &ProcessStack, script: &str, dir: &Path) {
    let queue = stack.queue_settings();
    let output = std::process::Command::new(repo_root().join("scripts/ops").join(script))
        .arg(dir)
        .env("CHAT_MEMORY__DATABASE__URL", &stack.database.url)
        .env("CHAT_MEMORY__NATS__URL", &queue.url)
        .env("CHAT_MEMORY__NATS__STREAM", &queue.stream)
        .env("CHAT_MEMORY_CLI", bin_dir().join("chat-memory"))
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "{script}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A deployment lost (database emptied, streams deleted) and restored from a
/// backup taken while jobs were still queued: every applied job stays applied
/// once, and the queued ones apply after the restore, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_applied_memories_and_the_queued_jobs_apply_once_in_order() {
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    let mut client = gateway_client(&stack).await;
    let mut applied = Vec::new();
    for text in [
        "My plan is Aetna Choice POS II.",
        "My deductible is $1,500.",
    ] {
        applied.push(send(&mut client, user_update("ops-a", text)).await);
    }
    let last = applied.last().cloned().unwrap_or_default();
    let before = client
        .get_memory(after_job("ops-a", &last, 10_000))
        .await
        .expect("applied")
        .into_inner()
        .memory
        .expect("memory");
    assert_eq!(before.version, 2);

    // Jobs queued while no worker runs: in the stream only.
    stack.kill("summarizer-worker").await;
    let queued = [
        send(&mut client, user_update("ops-a", "I take metformin daily.")).await,
        send(
            &mut client,
            user_update("ops-a", "My pharmacy is CVS on Main St."),
        )
        .await,
        send(
            &mut client,
            user_update("ops-b", "My member ID is W123456789."),
        )
        .await,
    ];

    let dir = stack.log_dir.join("backup");
    run_script(&stack, "backup.sh", &dir);

    // The disaster: services down, the database emptied, the streams gone.
    stack.kill("gateway").await;
    stack.kill("memory-store").await;
    let db = Database::connect(&stack.database.url).await.expect("db");
    db.execute_unprepared("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .expect("empty the database");
    db.close().await.expect("close");
    let js = job_queue::connect(&stack.queue_settings(), "ops-test")
        .await
        .expect("nats");
    for suffix in ["", "_DLQ", "_AUDIT"] {
        js.delete_stream(format!("{}{suffix}", stack.stream))
            .await
            .expect("delete stream");
    }

    run_script(&stack, "restore.sh", &dir);
    stack.spawn("memory-store").await;
    stack.spawn("gateway").await;
    stack.spawn("summarizer-worker").await;

    let mut client = gateway_client(&stack).await;
    let restored = memory(&mut client, "ops-a").await;
    assert!(
        restored.memory.is_some_and(|m| m.version >= 2),
        "the applied memory is back"
    );
    let a = client
        .get_memory(after_job("ops-a", &queued[1], 10_000))
        .await
        .expect("queued jobs of ops-a")
        .into_inner()
        .memory
        .expect("memory");
    let b = client
        .get_memory(after_job("ops-b", &queued[2], 10_000))
        .await
        .expect("queued job of ops-b")
        .into_inner()
        .memory
        .expect("memory");
    assert_eq!(b.version, 1);
    // Every job's record: the applied ones kept their versions; the queued
    // ones applied after them, in acceptance order (two may share one
    // coalesced call and its version), each once.
    let mut versions = Vec::new();
    for job in applied.iter().chain(&queued[..2]) {
        let status = client
            .get_update_status(update_status(job))
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.state(), JobState::Succeeded, "{job}");
        versions.push(status.resulting_version.unwrap_or_default());
    }
    assert_eq!(
        versions[..2],
        [1, 2],
        "the applied jobs kept their versions"
    );
    assert!(
        versions[2] >= 3 && versions[3] >= versions[2] && versions[3] <= 4,
        "the queued jobs applied once each, in order: {versions:?}"
    );
    assert_eq!(
        a.version, versions[3],
        "the memory is the last job's version"
    );
    // Nothing is left to apply: the restored jobs were consumed.
    stack
        .wait_until(
            "the restored jobs to be acknowledged",
            Duration::from_secs(10),
            || {
                let js = js.clone();
                let name = stack.stream.clone();
                async move {
                    let info = js
                        .get_stream(name)
                        .await
                        .ok()?
                        .info()
                        .await
                        .ok()?
                        .state
                        .messages;
                    (info == 0).then_some(())
                }
            },
        )
        .await;
    stack.shutdown().await;
}

/// A client of the gateway presenting `token`.
async fn client_with(stack: &ProcessStack, token: &str) -> test_support::GatewayClient {
    test_support::stack::gateway_client(stack.gateway_addr(), Bearer::new(token)).await
}

/// The code a read of a chat that does not exist gets: NOT_FOUND once the
/// token is accepted, UNAUTHENTICATED while it is not.
async fn read_code(client: &mut test_support::GatewayClient) -> tonic::Code {
    match client.get_memory(get("ops-never-written")).await {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// The JWKS of the test keys with only the keys whose `kid` is in `kids`.
fn jwks_of(kids: &[&str]) -> String {
    let text = std::fs::read_to_string(format!("{}/jwks.json", auth::JWT_KEYS_DIR)).expect("jwks");
    let mut set: serde_json::Value = serde_json::from_str(&text).expect("jwks json");
    if let Some(keys) = set["keys"].as_array_mut() {
        keys.retain(|k| k["kid"].as_str().is_some_and(|kid| kids.contains(&kid)));
    }
    set.to_string()
}

/// Key rotation on a running gateway (runbooks/maintenance.md): the new key is
/// published beside the old one, then the old one withdrawn, by rewriting the
/// JWKS file; the gateway picks each change up without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_keys_rotate_by_rewriting_the_jwks_file_without_restarting_the_gateway() {
    let dir = std::env::temp_dir().join(format!("cm-ops-jwks-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("dir");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, jwks_of(&["rsa-1"])).expect("write");
    let env = |k: &str, v: String| (k.to_owned(), v);
    let stack = ProcessStack::start(ProcessOptions {
        otlp_endpoint: None,
        env: vec![(
            "gateway",
            vec![
                env("CHAT_MEMORY__AUTH__HS256_SECRET", String::new()),
                env("CHAT_MEMORY__AUTH__JWKS_PATH", jwks.display().to_string()),
                env("CHAT_MEMORY__AUTH__JWKS_RELOAD_SECS", "1".to_owned()),
            ],
        )],
        nats_url: None,
    })
    .await;
    let gateway_pid = stack.pids().into_iter().find(|(n, _)| *n == "gateway");
    let claims = auth::claims(auth::TENANT, auth::USER, &["memory:read"]);
    let old_key = auth::sign_with_key(&claims, jsonwebtoken::Algorithm::RS256, "rsa-1", "rsa.pem");
    let new_key = auth::sign_with_key(&claims, jsonwebtoken::Algorithm::ES256, "ec-1", "ec.pem");
    let mut old_client = client_with(&stack, &old_key).await;
    let mut new_client = client_with(&stack, &new_key).await;
    assert_eq!(read_code(&mut old_client).await, tonic::Code::NotFound);
    assert_eq!(
        read_code(&mut new_client).await,
        tonic::Code::Unauthenticated
    );

    // Step 1: publish the new key beside the old one.
    std::fs::write(&jwks, jwks_of(&["rsa-1", "ec-1"])).expect("write");
    stack
        .wait_until("the new key to verify", Duration::from_secs(15), || {
            let mut c = new_client.clone();
            async move { (read_code(&mut c).await == tonic::Code::NotFound).then_some(()) }
        })
        .await;
    assert_eq!(
        read_code(&mut old_client).await,
        tonic::Code::NotFound,
        "old tokens still work"
    );

    // Step 2, once every issuer signs with the new key: withdraw the old one.
    std::fs::write(&jwks, jwks_of(&["ec-1"])).expect("write");
    stack
        .wait_until("the old key to be withdrawn", Duration::from_secs(15), || {
            let mut c = old_client.clone();
            async move { (read_code(&mut c).await == tonic::Code::Unauthenticated).then_some(()) }
        })
        .await;
    assert_eq!(read_code(&mut new_client).await, tonic::Code::NotFound);
    assert_eq!(
        stack.pids().into_iter().find(|(n, _)| *n == "gateway"),
        gateway_pid,
        "the gateway was never restarted"
    );
    let _ = std::fs::remove_dir_all(&dir);
    stack.shutdown().await;
}

/// Service-token rotation (runbooks/maintenance.md): servers accept the new
/// and the previous token, callers switch to the new one, servers drop the
/// old one. An update is applied end to end after each step, so no internal
/// call was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_service_token_rotates_in_three_rolling_steps_without_a_refused_call() {
    const NEW: &str = "rotated-service-token-0123456789";
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    let mut step = 0;
    let mut applied_after_step = async |stack: &ProcessStack| {
        step += 1;
        let mut client = gateway_client(stack).await;
        let chat = format!("ops-rotation-{step}");
        let job = send(&mut client, user_update(&chat, "My copay is $25.")).await;
        let read = client
            .get_memory(after_job(&chat, &job, 10_000))
            .await
            .unwrap_or_else(|s| panic!("step {step}: {s:?}"))
            .into_inner();
        assert_eq!(
            read.memory.map(|m| m.version),
            Some(1),
            "step {step}: the update was applied"
        );
    };
    // 1. Servers accept both tokens (rolled one by one).
    for server in ["memory-store", "summarizer-agent"] {
        stack.set_env(server, "CHAT_MEMORY__SERVICE_TOKEN", NEW);
        stack.set_env(
            server,
            "CHAT_MEMORY__SERVICE_TOKEN_PREVIOUS",
            auth::SERVICE_TOKEN,
        );
        stack.terminate(server).await;
        stack.spawn(server).await;
    }
    applied_after_step(&stack).await;
    // 2. Callers present the new token.
    for caller in ["gateway", "summarizer-worker"] {
        stack.set_env(caller, "CHAT_MEMORY__STORE__SERVICE_TOKEN", NEW);
        if caller == "summarizer-worker" {
            stack.set_env(caller, "CHAT_MEMORY__AGENT__SERVICE_TOKEN", NEW);
        }
        stack.terminate(caller).await;
        stack.spawn(caller).await;
    }
    applied_after_step(&stack).await;
    // 3. Servers drop the old token.
    for server in ["memory-store", "summarizer-agent"] {
        stack.set_env(server, "CHAT_MEMORY__SERVICE_TOKEN_PREVIOUS", "");
        stack.terminate(server).await;
        stack.spawn(server).await;
    }
    applied_after_step(&stack).await;
    // The old token is now refused, the new one accepted.
    let store = stack.ports["memory-store"].grpc;
    for (token, want) in [
        (auth::SERVICE_TOKEN, tonic::Code::Unauthenticated),
        (NEW, tonic::Code::NotFound),
    ] {
        let mut client =
            chat_memory_proto::store::memory_store_client::MemoryStoreClient::with_interceptor(
                tonic::transport::Endpoint::from_shared(format!("http://{store}"))
                    .expect("endpoint")
                    .connect_lazy(),
                Bearer::new(token),
            );
        let code = client
            .get_job(chat_memory_proto::store::GetJobRequest {
                job_id: uuid::Uuid::now_v7().to_string(),
                access: None,
            })
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(code, Some(want), "memory-store with token {token}");
    }
    stack.shutdown().await;
}

/// A port probed free can be taken by another process before the service
/// binds it (tests run side by side): the harness starts the service again on
/// fresh ports, and the settings of every service follow, instead of waiting
/// 30 s for a process that already exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_whose_port_was_taken_meanwhile_starts_again_on_fresh_ports() {
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    stack.terminate("gateway").await;
    let taken = stack.ports["gateway"];
    let _grpc = std::net::TcpListener::bind(taken.grpc).expect("hold the gRPC port");
    let _metrics = std::net::TcpListener::bind(taken.metrics).expect("hold the metrics port");

    stack.spawn("gateway").await;

    let moved = stack.ports["gateway"];
    assert_ne!(moved.grpc, taken.grpc, "the gateway listens elsewhere now");
    assert_ne!(moved.metrics, taken.metrics);
    let mut client = client_with(
        &stack,
        &auth::mint(auth::TENANT, auth::USER, &["memory:read"]),
    )
    .await;
    assert_eq!(read_code(&mut client).await, tonic::Code::NotFound);
    stack.shutdown().await;
}

/// A gateway told to stop while a read waits for a version that is not
/// coming stops at its drain deadline (`runtime.shutdown_grace_ms`), not
/// when the read's own 10 s wait would end, and still exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_still_serving_at_its_drain_deadline_stops_there() {
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    stack.terminate("gateway").await;
    stack.set_env("gateway", "CHAT_MEMORY__RUNTIME__SHUTDOWN_GRACE_MS", "500");
    stack.spawn("gateway").await;
    let mut client = gateway_client(&stack).await;
    let job = send(&mut client, user_update("drain", "My plan is Aetna.")).await;
    client
        .get_memory(after_job("drain", &job, 10_000))
        .await
        .expect("applied");

    // A read that waits up to 10 s for a version that never comes.
    let mut waiting = gateway_client(&stack).await;
    let mut read = tokio::spawn(async move {
        waiting
            .get_memory(test_support::requests::min_version("drain", 100, 10_000))
            .await
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut read).await;
    assert!(early.is_err(), "the read did not wait: {early:?}");
    let started = std::time::Instant::now();
    stack.terminate("gateway").await;
    let took = started.elapsed();
    // At least the deadline (the waiting read held the drain: a gateway with
    // nothing under way stops at once), and far less than the read's wait.
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "the gateway took {took:?} to stop with a 0.5 s drain deadline"
    );
    let answer = read.await.expect("read task");
    assert!(
        answer.is_err(),
        "the cut-off read got an answer: {answer:?}"
    );
    stack.shutdown().await;
}

/// `nats.replicas` reaches JetStream: this machine's single server refuses a
/// stream of 3 replicas, and the start fails naming the stream and the
/// server's reason instead of running with fewer copies than configured; with
/// 1 the stream is created with 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_stream_replicas_than_the_nats_deployment_has_fail_at_start_naming_the_stream() {
    let suffix = test_support::unique_suffix();
    let settings = job_queue::QueueSettings {
        url: test_support::nats_url(),
        stream: format!("REPLICAS_{suffix}"),
        subject_prefix: format!("replicas{suffix}"),
        replicas: 3,
        ..job_queue::QueueSettings::default()
    };
    let js = job_queue::connect(&settings, "replicas-test")
        .await
        .unwrap_or_else(|e| panic!("NATS: {e}"));
    let refused = job_queue::ensure_stream(&js, &settings)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains(&settings.stream) && refused.to_lowercase().contains("replica"),
        "{refused:?}"
    );
    let single = job_queue::QueueSettings {
        replicas: 1,
        ..settings.clone()
    };
    let mut stream = job_queue::ensure_stream(&js, &single)
        .await
        .unwrap_or_else(|e| panic!("one replica: {e}"));
    let replicas = stream
        .info()
        .await
        .map(|i| i.config.num_replicas)
        .unwrap_or_else(|e| panic!("stream info: {e}"));
    assert_eq!(replicas, 1);
    let _ = js.delete_stream(&settings.stream).await;
}

/// `nats.replicas = 3` on a three-node JetStream cluster of private servers,
/// the services given all three nodes (`nats.url` lists them): the node
/// leading the jobs stream is SIGKILLed in the middle of a run (whichever
/// node the services happen to be connected to), and every accepted update
/// still applies exactly once and in acceptance order. Callers repeat a
/// refused update with its idempotency key, as the API asks (DEBT D-27).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_three_replicas_killing_the_jobs_stream_leader_loses_and_repeats_no_update() {
    use test_support::nats_cluster::NatsCluster;
    use test_support::{StackOptions, TestStack};

    const CHATS: usize = 12;
    const ROUNDS: usize = 8;
    const KILL_AFTER_ROUND: usize = 3;

    let mut cluster = NatsCluster::start(3).await;
    let stack = TestStack::start_with(StackOptions {
        nats_url: Some((0..3).map(|i| cluster.url(i)).collect::<Vec<_>>().join(",")),
        nats_replicas: 3,
        ..StackOptions::default()
    })
    .await;
    let js = stack.jetstream().await;
    let mut jobs_stream = js
        .get_stream(&stack.queue.stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let info = jobs_stream
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream info: {e}"));
    assert_eq!(
        info.config.num_replicas, 3,
        "the jobs stream is created with nats.replicas"
    );
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_else(|| panic!("the jobs stream has no leader: {:?}", info.cluster));
    let victim = cluster
        .index_of(&leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a node of the cluster"));

    let client = stack.gateway().await;
    let chats: Vec<String> = (0..CHATS).map(|c| format!("replicated-{c}")).collect();
    let mut jobs: Vec<Vec<String>> = vec![Vec::new(); CHATS];
    let mut repeated = 0usize;
    let mut election = Duration::ZERO;
    for round in 0..ROUNDS {
        let began = std::time::Instant::now();
        if round == KILL_AFTER_ROUND {
            cluster.kill(victim).await;
        }
        let sent = futures::future::join_all(chats.iter().map(|chat| {
            let mut client = client.clone();
            let mut request =
                user_update(chat, &format!("Claim CLM-{round:03} for {chat} was filed."));
            request.idempotency_key = format!("{chat}-{round}");
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                let mut tries = 0usize;
                loop {
                    tries += 1;
                    match client.update_memory(request.clone()).await {
                        Ok(r) => return (r.into_inner().job_id, tries - 1),
                        Err(s)
                            if s.code() == tonic::Code::Unavailable
                                && std::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(s) => panic!("{chat} round {round}: {s:?}"),
                    }
                }
            }
        }))
        .await;
        for (c, (job, retries)) in sent.into_iter().enumerate() {
            jobs[c].push(job);
            repeated += retries;
        }
        if round == KILL_AFTER_ROUND {
            election = began.elapsed();
        }
    }

    for (chat, chat_jobs) in chats.iter().zip(&jobs) {
        stack
            .assert_applied_in_order(chat, chat_jobs, Duration::from_secs(120))
            .await;
    }
    eprintln!(
        "killed node {victim} (the jobs stream's leader) after round {KILL_AFTER_ROUND}; {repeated} updates were repeated by their callers; that round took {election:?}"
    );
    stack.shutdown().await;
}

/// The fault suite's private NATS server (scenario 5) keeps its streams and
/// their messages across a stop and a start on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_nats_server_keeps_its_streams_across_a_restart() {
    let mut nats = test_support::nats_cluster::NatsServer::start().await;
    let settings = job_queue::QueueSettings {
        url: nats.url(),
        stream: "RESTART_PROBE".into(),
        subject_prefix: "restartprobe".into(),
        max_bytes: test_support::TEST_STREAM_BYTES,
        ..job_queue::QueueSettings::default()
    };
    let js = job_queue::connect(&settings, "restart-test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    job_queue::ensure_stream(&js, &settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    js.publish("restartprobe.jobs.0000000000000001", "kept".into())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    nats.stop().await;
    nats.start_again().await;
    let js = job_queue::connect(&settings, "restart-test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let messages = js
        .get_stream("RESTART_PROBE")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .info()
        .await
        .map(|i| i.state.messages)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(messages, 1);
}
