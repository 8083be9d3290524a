//! End-to-end tests of the update -> summarize -> retrieve pipeline on the real
//! parts: Postgres, JetStream, the MCP agent, every service over gRPC.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::v1::{
    ChatMessage, DeleteMemoryRequest, GetMemoryRequest, GetMemoryResponse, GetUpdateStatusRequest,
    JobState, Role, UpdateMemoryRequest,
};
use summarizer_agent::backend::offline::OfflineBackend;
use test_support::gate::{Gate, GatedBackend};
use test_support::{GatewayClient, StackOptions, TestStack, wait};

const JOB_TIMEOUT: Duration = Duration::from_secs(30);

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: Role::User as i32,
        content: text.into(),
        ..Default::default()
    }
}

fn assistant(text: &str) -> ChatMessage {
    ChatMessage {
        role: Role::Assistant as i32,
        content: text.into(),
        ..Default::default()
    }
}

fn update(chat_id: &str, messages: Vec<ChatMessage>) -> UpdateMemoryRequest {
    UpdateMemoryRequest {
        chat_id: chat_id.into(),
        messages,
        idempotency_key: String::new(),
    }
}

async fn send(client: &mut GatewayClient, req: UpdateMemoryRequest) -> String {
    client
        .update_memory(req)
        .await
        .unwrap_or_else(|s| panic!("update rejected: {s:?}"))
        .into_inner()
        .job_id
}

async fn memory(client: &mut GatewayClient, chat_id: &str) -> GetMemoryResponse {
    client
        .get_memory(GetMemoryRequest {
            chat_id: chat_id.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("get_memory({chat_id}): {s:?}"))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_round_trips_to_a_readable_memory() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;

    let job_id = send(
        &mut client,
        update(
            "chat-roundtrip",
            vec![
                user("My plan is Aetna Choice POS II and my member ID is W123456789."),
                assistant(
                    "It sounds like you probably have already met your deductible this year.",
                ),
            ],
        ),
    )
    .await;
    let status = stack.wait_job_done(&job_id, JOB_TIMEOUT).await;
    assert_eq!(
        status.state,
        JobState::Succeeded as i32,
        "job status: {status:?}"
    );
    assert_eq!(status.resulting_version, Some(1));

    let got = memory(&mut client, "chat-roundtrip").await;
    let m = got.memory.expect("memory present");
    assert!(
        m.user_confirmed.contains("W123456789"),
        "user_confirmed: {}",
        m.user_confirmed
    );
    assert!(
        !m.user_confirmed.contains("deductible"),
        "a guess leaked into user_confirmed: {}",
        m.user_confirmed
    );
    assert!(
        m.llm_inferred.contains("deductible"),
        "llm_inferred: {}",
        m.llm_inferred
    );
    assert!(!m.general_summary.is_empty());
    assert_eq!(m.version, 1);
    let tokens = m.token_counts.expect("token counts");
    assert!(tokens.user_confirmed > 0);
    assert_eq!(
        tokens.total,
        tokens.user_confirmed + tokens.llm_inferred + tokens.general_summary
    );
    let fresh = got.freshness.expect("freshness");
    assert_eq!(fresh.last_applied_job_id, job_id);
    assert_eq!(fresh.pending_jobs, 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_builds_on_the_prior_memory_over_three_updates() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let chat = "chat-continuity";
    let batches = [
        vec![user(
            "My member ID is BCX-44821 and I am on the Blue Cross PPO Gold plan.",
        )],
        vec![
            user("I take Humira 40 mg every two weeks for Crohn's disease."),
            assistant("Humira usually needs prior authorization."),
        ],
        vec![user("My rheumatologist is Dr. Patel at Cedars-Sinai.")],
    ];
    for batch in batches {
        let job = send(&mut client, update(chat, batch)).await;
        let status = stack.wait_job_done(&job, JOB_TIMEOUT).await;
        assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
    }
    let m = memory(&mut client, chat).await.memory.expect("memory");
    assert_eq!(m.version, 3);
    for fact in ["BCX-44821", "Humira", "Dr. Patel"] {
        assert!(
            m.user_confirmed.contains(fact),
            "{fact} lost from user_confirmed: {}",
            m.user_confirmed
        );
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_chats_with_twenty_updates_each_apply_in_acceptance_order_across_two_workers() {
    let stack = TestStack::start_with(StackOptions {
        workers: 2,
        ..StackOptions::default()
    })
    .await;
    let client = stack.gateway().await;
    let chats: Vec<String> = (0..50).map(|c| format!("order-{c}")).collect();

    // Round r of every chat is accepted before round r + 1 of the same chat.
    let mut jobs: Vec<Vec<String>> = vec![Vec::new(); chats.len()];
    for round in 0..20 {
        let sent = join_all(chats.iter().map(|chat| {
            let mut client = client.clone();
            let req = update(
                chat,
                vec![user(&format!(
                    "Claim number CLM-{round:03} for {chat} was filed on March {}.",
                    round + 1
                ))],
            );
            async move { send(&mut client, req).await }
        }))
        .await;
        for (c, job) in sent.into_iter().enumerate() {
            jobs[c].push(job);
        }
    }
    let mut calls_per_chat = Vec::with_capacity(chats.len());
    for (c, chat_jobs) in jobs.iter().enumerate() {
        // In acceptance order, each summarizer call applies a contiguous run of
        // jobs (several when coalesced) and makes exactly the next version.
        let mut previous: Option<(i64, String)> = None;
        let mut calls = 0i64;
        for (i, job) in chat_jobs.iter().enumerate() {
            let status = stack.wait_job_done(job, Duration::from_secs(120)).await;
            assert_eq!(
                status.state,
                JobState::Succeeded as i32,
                "{}: {status:?}",
                chats[c]
            );
            let version = status.resulting_version.unwrap_or_default();
            let call = status.applied_in_call.clone();
            match &previous {
                Some((v, prev_call)) if *prev_call == call => {
                    assert_eq!(version, *v, "{} job {i}: one call, one version", chats[c])
                }
                Some((v, _)) => {
                    assert_eq!(version, v + 1, "{} job {i} applied out of order", chats[c])
                }
                None => assert_eq!(version, 1, "{} job 0 applied out of order", chats[c]),
            }
            if previous
                .as_ref()
                .is_none_or(|(_, prev_call)| *prev_call != call)
            {
                calls += 1;
            }
            previous = Some((version, call));
        }
        calls_per_chat.push(calls);
    }
    let mut client = client.clone();
    for (chat, calls) in chats.iter().zip(&calls_per_chat) {
        let got = memory(&mut client, chat).await;
        assert_eq!(
            got.memory.expect("memory").version,
            *calls,
            "{chat}: one version per summarizer call"
        );
        assert_eq!(got.freshness.expect("freshness").pending_jobs, 0, "{chat}");
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_reused_for_other_messages_is_refused_naming_the_key() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let mut original = update("chat-reuse", vec![user("My plan is Blue Shield PPO.")]);
    original.idempotency_key = "turn-41".into();
    let mut reused = update("chat-reuse", vec![user("My deductible is $2,000.")]);
    reused.idempotency_key = "turn-41".into();

    let first = client
        .update_memory(original.clone())
        .await
        .expect("first")
        .into_inner();
    // Within JetStream's duplicate window (the message itself is deduplicated).
    let refused = client
        .update_memory(reused.clone())
        .await
        .expect_err("a reused key with other messages must be refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let details = refused
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details: {refused:?}"));
    assert_eq!(details.field_violations[0].field, "idempotency_key");
    // A true retry is still answered as the same job.
    let retry = client
        .update_memory(original.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry.job_id, first.job_id);
    assert!(retry.deduplicated);
    // After the job was applied too.
    stack.wait_job_done(&first.job_id, JOB_TIMEOUT).await;
    let late = client
        .update_memory(reused)
        .await
        .expect_err("still refused after the job applied");
    assert_eq!(late.code(), Code::InvalidArgument, "{late:?}");
    let m = memory(&mut client, "chat-reuse")
        .await
        .memory
        .expect("memory");
    assert_eq!(m.version, 1);
    assert!(!m.user_confirmed.contains("2,000"), "{}", m.user_confirmed);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_idempotency_key_returns_the_same_job_and_applies_once() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let mut req = update(
        "chat-idem",
        vec![user("My deductible is $1,500 and I have met $900 of it.")],
    );
    req.idempotency_key = "req-7f3a".into();

    let first = client
        .update_memory(req.clone())
        .await
        .expect("first")
        .into_inner();
    let second = client
        .update_memory(req.clone())
        .await
        .expect("second")
        .into_inner();
    assert_eq!(first.job_id, second.job_id);
    assert!(!first.deduplicated);
    assert!(second.deduplicated);
    stack.wait_job_done(&first.job_id, JOB_TIMEOUT).await;
    // After it was applied, the same key still maps to the same job and changes nothing.
    let third = client.update_memory(req).await.expect("third").into_inner();
    assert_eq!(third.job_id, first.job_id);
    assert!(third.deduplicated);

    let other = send(
        &mut client,
        update(
            "chat-idem",
            vec![user("My coinsurance is 20% after the deductible.")],
        ),
    )
    .await;
    stack.wait_job_done(&other, JOB_TIMEOUT).await;
    let m = memory(&mut client, "chat-idem")
        .await
        .memory
        .expect("memory");
    assert_eq!(
        m.version, 2,
        "the repeated request must not have been applied twice"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_worker_is_killed_mid_job_is_redelivered_and_applied_once() {
    let gate = Gate::new(Arc::new(OfflineBackend::new()));
    let opts = StackOptions {
        workers: 1,
        backend: Some(Arc::new(GatedBackend(gate.clone()))),
        ..StackOptions::default()
    };
    let mut stack = TestStack::start_with(opts).await;
    let mut client = stack.gateway().await;

    let job = send(
        &mut client,
        update(
            "chat-kill",
            vec![user(
                "My prior authorization number is PA-99812 for an MRI.",
            )],
        ),
    )
    .await;
    tokio::time::timeout(JOB_TIMEOUT, gate.wait_entered())
        .await
        .expect("the worker reached the agent");
    stack.kill_worker(0);
    gate.release();
    stack.add_worker().await;

    let status = stack.wait_job_done(&job, JOB_TIMEOUT).await;
    assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
    assert_eq!(status.resulting_version, Some(1));
    assert!(
        status.attempts >= 2,
        "the job must have been redelivered: {status:?}"
    );
    assert!(gate.calls.load(Ordering::SeqCst) >= 2);
    let m = memory(&mut client, "chat-kill")
        .await
        .memory
        .expect("memory");
    assert_eq!(m.version, 1);
    assert_eq!(
        m.user_confirmed.matches("PA-99812").count(),
        1,
        "{}",
        m.user_confirmed
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_delivered_twice_is_applied_once() {
    // As when a worker dies after memory-store committed but before its ack: the
    // same job arrives again, outside JetStream's duplicate detection.
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let job_id = send(
        &mut client,
        update(
            "chat-dup",
            vec![user("My PCP is Dr. Alvarez at One Medical.")],
        ),
    )
    .await;
    stack.wait_job_done(&job_id, JOB_TIMEOUT).await;

    // Behind the gateway, chat ids are namespaced by tenant.
    let namespaced = TenantChatId::new(test_support::auth::TENANT, "chat-dup").expect("valid");
    let replay = UpdateJob {
        job_id: job_id.clone(),
        chat_id: namespaced.to_string(),
        messages: vec![user("My PCP is Dr. Alvarez at One Medical.")],
        ..Default::default()
    };
    let js = stack.jetstream().await;
    let subject = job_queue::layout::chat_subject(&stack.queue.subject_prefix, namespaced.as_str());
    js.publish(subject, replay.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    // A later update proves the replay was consumed before it (same chat subject, in order).
    let next = send(
        &mut client,
        update(
            "chat-dup",
            vec![user("I also see Dr. Kim for dermatology.")],
        ),
    )
    .await;
    let status = stack.wait_job_done(&next, JOB_TIMEOUT).await;
    assert_eq!(
        status.resulting_version,
        Some(2),
        "the replayed job must not have produced a version"
    );
    let m = memory(&mut client, "chat-dup")
        .await
        .memory
        .expect("memory");
    assert_eq!(
        m.user_confirmed.matches("Dr. Alvarez").count(),
        1,
        "{}",
        m.user_confirmed
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_bad_update_is_invalid_argument_naming_the_field_and_enqueues_nothing() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    let ok = || vec![user("hello")];
    let cases: Vec<(&str, UpdateMemoryRequest, &str)> = vec![
        ("empty chat id", update("", ok()), "chat_id"),
        (
            "over-long chat id",
            update(&"c".repeat(129), ok()),
            "chat_id",
        ),
        ("no messages", update("c1", vec![]), "messages"),
        (
            "too many messages",
            update("c1", vec![user("x"); 101]),
            "messages",
        ),
        (
            "over-size message",
            update("c1", vec![user(&"a".repeat(32 * 1024 + 1))]),
            "messages[0].content",
        ),
        (
            "control characters",
            update("c1", vec![user("ok"), user("null\u{0}byte")]),
            "messages[1].content",
        ),
        (
            "unknown role",
            update(
                "c1",
                vec![ChatMessage {
                    role: 17,
                    content: "x".into(),
                    ..Default::default()
                }],
            ),
            "messages[0].role",
        ),
        (
            "unspecified role",
            update(
                "c1",
                vec![ChatMessage {
                    role: 0,
                    content: "x".into(),
                    ..Default::default()
                }],
            ),
            "messages[0].role",
        ),
    ];
    for (name, req, field) in cases {
        let status = client.update_memory(req).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{name}: message {:?} must name {field}",
            status.message()
        );
        let details = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{name}: no BadRequest details"));
        assert_eq!(details.field_violations[0].field, field, "{name}");
    }
    let js = stack.jetstream().await;
    let mut stream = js.get_stream(&stack.queue.stream).await.expect("stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        0,
        "a rejected update was enqueued"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_of_unknown_chats_and_jobs_are_not_found_and_bad_ids_invalid() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let s = client
        .get_memory(GetMemoryRequest {
            chat_id: "never-written".into(),
            ..Default::default()
        })
        .await
        .expect_err("no memory");
    assert_eq!(s.code(), Code::NotFound);
    let s = client
        .get_update_status(GetUpdateStatusRequest {
            job_id: "0191f7c2-6b0e-7a3c-9f00-0123456789ab".into(),
        })
        .await
        .expect_err("no job");
    assert_eq!(s.code(), Code::NotFound);
    let s = client
        .get_update_status(GetUpdateStatusRequest {
            job_id: "nope".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("job_id"), "{s:?}");
    let s = client
        .get_memory(GetMemoryRequest {
            chat_id: "bad id".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad chat id");
    assert_eq!(s.code(), Code::InvalidArgument);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_removes_memory_and_jobs_and_discards_jobs_still_queued() {
    let mut stack = TestStack::start_with(StackOptions {
        workers: 1,
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    let applied = send(
        &mut client,
        update("chat-del", vec![user("My member ID is DEL-1001.")]),
    )
    .await;
    stack.wait_job_done(&applied, JOB_TIMEOUT).await;

    // A job accepted while no worker runs is still queued when the chat is deleted.
    stack.kill_worker(0);
    let queued = send(
        &mut client,
        update("chat-del", vec![user("My group number is G-77.")]),
    )
    .await;
    let deleted = client
        .delete_memory(DeleteMemoryRequest {
            chat_id: "chat-del".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.memory_deleted);
    assert_eq!(deleted.jobs_removed, 2);
    let s = client
        .get_memory(GetMemoryRequest {
            chat_id: "chat-del".into(),
            ..Default::default()
        })
        .await
        .expect_err("deleted");
    assert_eq!(s.code(), Code::NotFound);
    let s = client
        .get_update_status(GetUpdateStatusRequest {
            job_id: applied.clone(),
        })
        .await
        .expect_err("deleted job");
    assert_eq!(s.code(), Code::NotFound);

    // The queued job must not resurrect the chat; a job accepted after the delete applies.
    stack.add_worker().await;
    let after = send(
        &mut client,
        update("chat-del", vec![user("My new member ID is DEL-2002.")]),
    )
    .await;
    let status = stack.wait_job_done(&after, JOB_TIMEOUT).await;
    assert_eq!(status.resulting_version, Some(1), "{status:?}");
    let m = memory(&mut client, "chat-del")
        .await
        .memory
        .expect("memory");
    assert!(
        !m.user_confirmed.contains("G-77"),
        "a job queued before the delete was applied: {}",
        m.user_confirmed
    );
    assert!(!m.user_confirmed.contains("DEL-1001"));
    let s = client
        .get_update_status(GetUpdateStatusRequest { job_id: queued })
        .await
        .expect_err("discarded job");
    assert_eq!(s.code(), Code::NotFound);
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
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updates_accepted_while_memory_store_is_down_are_applied_when_it_returns() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    stack.stop_store().await;

    let s = client
        .get_memory(GetMemoryRequest {
            chat_id: "chat-outage".into(),
            ..Default::default()
        })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_jobs_are_counted_until_applied() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let first = send(
        &mut client,
        update("chat-pending", vec![user("My plan year starts January 1.")]),
    )
    .await;
    stack.wait_job_done(&first, JOB_TIMEOUT).await;
    stack.kill_worker(0);
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(
            send(
                &mut client,
                update(
                    "chat-pending",
                    vec![user(&format!("Visit {i} cost a $30 copay."))],
                ),
            )
            .await,
        );
    }
    let got = memory(&mut client, "chat-pending").await;
    assert_eq!(got.freshness.expect("freshness").pending_jobs, 3);
    stack.add_worker().await;
    wait::until("pending jobs to drain", JOB_TIMEOUT, || {
        let mut client = client.clone();
        async move {
            let got = client
                .get_memory(GetMemoryRequest {
                    chat_id: "chat-pending".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (got.freshness?.pending_jobs == 0).then_some(())
        }
    })
    .await;
    // The three waiting updates may be folded into fewer summarizer calls
    // (coalescing): each call makes one version, and every update says which
    // call applied it and at which version.
    let version = memory(&mut client, "chat-pending")
        .await
        .memory
        .expect("memory")
        .version;
    let mut calls = std::collections::BTreeMap::new();
    for job in &waiting {
        let status = stack.wait_job_done(job, JOB_TIMEOUT).await;
        assert_eq!(status.state, JobState::Succeeded as i32, "{status:?}");
        let at = status.resulting_version.expect("resulting version");
        assert!(!status.applied_in_call.is_empty(), "{status:?}");
        assert_eq!(
            *calls.entry(status.applied_in_call.clone()).or_insert(at),
            at,
            "updates applied by one call share its version"
        );
    }
    assert_eq!(
        version,
        1 + i64::try_from(calls.len()).expect("few calls"),
        "one version per summarizer call: {calls:?}"
    );
    stack.shutdown().await;
}
