//! Availability: updates are accepted while memory-store is down and applied
//! when it returns; a full queue answers RESOURCE_EXHAUSTED; every service
//! reports SERVING; the gateway and worker fail fast without NATS.

use std::time::Duration;

use tonic::{Code, Request};

use chat_memory_proto::v1::JobState;
use test_support::requests::{get, memory, send, update, user};
use test_support::{StackOptions, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_accepted_while_memory_store_is_down_are_applied_when_it_returns() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    stack.stop_store().await;

    let s = client
        .get_memory(get("chat-outage"))
        .await
        .expect_err("store down");
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    // Accepting only needs JetStream.
    let job = send(
        &mut client,
        update(
            "chat-outage",
            vec![user("My claim CLM-5521 was denied for code CO-197.")],
        ),
    )
    .await;

    stack.restart_store().await;
    let status = stack.wait_job_done(&job, Duration::from_secs(60)).await;
    assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
    let m = memory(&mut client, "chat-outage")
        .await
        .memory
        .expect("memory");
    assert!(m.user_confirmed.contains("CLM-5521"));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_resource_exhausted() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        max_jobs: 2,
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    send(&mut client, update("full-1", vec![user("one")])).await;
    send(&mut client, update("full-2", vec![user("two")])).await;
    let s = client
        .update_memory(update("full-3", vec![user("three")]))
        .await
        .expect_err("queue full");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let reason = tonic_types::StatusExt::get_details_error_info(&s).map(|i| i.reason);
    assert_eq!(reason.as_deref(), Some("QUEUE_FULL"), "{s:?}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_reports_serving_on_grpc_health() {
    let stack = TestStack::start().await;
    let addrs = [
        ("gateway", stack.gateway_addr),
        ("memory-store", stack.store_addr),
        ("summarizer-agent", stack.agent_addr),
        ("summarizer-worker", stack.worker_addrs[0]),
    ];
    for (name, addr) in addrs {
        let channel = test_support::stack::channel(addr).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(Request::new(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            }))
            .await
            .unwrap_or_else(|s| panic!("{name}: {s:?}"))
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{name}"
        );
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_and_worker_fail_fast_when_nats_is_unreachable() {
    let queue = job_queue::QueueSettings {
        url: "nats://127.0.0.1:1".into(),
        connect_timeout_ms: 500,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let settings = gateway::Settings {
        nats: queue.clone(),
        ..gateway::Settings::default()
    };
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        gateway::run(settings, listener, std::future::pending()),
    )
    .await
    .expect("gateway gave up in time")
    .expect_err("gateway must not start without NATS");
    assert!(err.to_string().contains("NATS"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let settings = summarizer_worker::Settings {
        nats: queue,
        ..summarizer_worker::Settings::default()
    };
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        summarizer_worker::run(settings, listener, std::future::pending()),
    )
    .await
    .expect("worker gave up in time")
    .expect_err("worker must not start without NATS");
    assert!(err.to_string().contains("NATS"), "{err}");
}
