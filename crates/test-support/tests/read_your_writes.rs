//! Read-your-writes GetMemory (min_version / after_job_id with a wait) and
//! WatchMemory streams, end to end on the real parts: the worker announces each
//! commit on NATS, the gateway wakes the waiting read or the stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_types::StatusExt;

use chat_memory_proto::v1::{
    GetMemoryRequest, QueryAuditRequest, ReadCondition, WatchMemoryResponse,
};
use summarizer_agent::backend::offline::OfflineBackend;
use test_support::gate::{Gate, GatedBackend};
use test_support::requests::{after_job, delete, min_version, send, user_update, watch};
use test_support::{StackOptions, TestStack, auth};

const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Long enough never to be the reason a test passes.
const WAIT_MS: u32 = 10_000;

async fn next_event(
    stream: &mut tonic::Streaming<WatchMemoryResponse>,
) -> Result<Option<WatchMemoryResponse>, tonic::Status> {
    tokio::time::timeout(JOB_TIMEOUT, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {JOB_TIMEOUT:?}"))
}

fn version_of(event: &WatchMemoryResponse) -> i64 {
    event.memory.as_ref().map_or(0, |m| m.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_a_job_waits_for_it_and_answers_once_it_is_applied() {
    let gate = Gate::new(Arc::new(OfflineBackend::new()));
    let opts = StackOptions {
        backend: Some(Arc::new(GatedBackend(gate.clone()))),
        ..StackOptions::default()
    };
    let stack = TestStack::start_with(opts).await;
    let mut client = stack.gateway().await;

    let job = send(
        &mut client,
        user_update("ryw", "My member ID is W123456789."),
    )
    .await;
    let mut reader = client.clone();
    let read = {
        let job = job.clone();
        tokio::spawn(async move { reader.get_memory(after_job("ryw", &job, WAIT_MS)).await })
    };
    // The summarizer holds the job: the read must still be waiting.
    gate.wait_entered().await;
    assert!(
        !read.is_finished(),
        "the read answered before the job was applied"
    );
    let released = Instant::now();
    gate.release();
    let got = read.await.expect("task").expect("read").into_inner();
    assert_eq!(got.condition, ReadCondition::Met as i32);
    let memory = got.memory.expect("memory");
    assert_eq!(memory.version, 1);
    assert!(
        memory.user_confirmed.contains("W123456789"),
        "{}",
        memory.user_confirmed
    );
    assert_eq!(got.freshness.expect("freshness").last_applied_job_id, job);
    // Woken by the commit, not by a timer: far inside the wait.
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "took {:?}",
        released.elapsed()
    );

    // A job already applied answers at once; so does a version already reached.
    let again = client
        .get_memory(after_job("ryw", &job, WAIT_MS))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(again.condition, ReadCondition::Met as i32);
    let reached = client
        .get_memory(min_version("ryw", 1, WAIT_MS))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(reached.condition, ReadCondition::Met as i32);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_not_reached_by_the_deadline_answers_the_current_memory_flagged_timed_out() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let job = send(&mut client, user_update("ryw-timeout", "I take metformin.")).await;
    client
        .get_memory(after_job("ryw-timeout", &job, WAIT_MS))
        .await
        .expect("first version");

    let got = client
        .get_memory(min_version("ryw-timeout", 5, 200))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(got.condition, ReadCondition::TimedOut as i32);
    assert_eq!(got.memory.expect("memory").version, 1);

    // No memory at all by the deadline: NOT_FOUND, as for a plain read.
    let none = client
        .get_memory(min_version("ryw-nothing", 1, 200))
        .await
        .expect_err("no memory");
    assert_eq!(none.code(), Code::NotFound);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_read_conditions_are_refused_naming_the_field_and_other_users_jobs_stay_hidden() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let job = send(
        &mut client,
        user_update("ryw-a", "My plan is Blue Shield PPO 500."),
    )
    .await;
    client
        .get_memory(after_job("ryw-a", &job, WAIT_MS))
        .await
        .expect("applied");
    send(&mut client, user_update("ryw-b", "Another chat.")).await;

    let cases = [
        (after_job("ryw-b", &job, 100), "after_job_id"),
        (after_job("ryw-a", "not-a-uuid", 100), "after_job_id"),
        (min_version("ryw-a", -1, 0), "min_version"),
        (min_version("ryw-a", 1, 60_000), "wait_ms"),
        (
            GetMemoryRequest {
                chat_id: "ryw-a".into(),
                wait_ms: 100,
                ..Default::default()
            },
            "wait_ms",
        ),
    ];
    for (request, field) in cases {
        let status = client.get_memory(request.clone()).await.expect_err(field);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        let violations = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert!(
            violations.iter().any(|v| v.field == field),
            "{request:?}: {violations:?}"
        );
    }

    // Another user of the tenant waiting on this user's job learns nothing:
    // NOT_FOUND, exactly as for a chat that does not exist.
    let mut other = stack
        .gateway_as(&auth::mint(auth::TENANT, "someone-else", &["memory:read"]))
        .await;
    let hidden = other
        .get_memory(after_job("ryw-a", &job, 200))
        .await
        .expect_err("hidden");
    assert_eq!(hidden.code(), Code::NotFound);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_stream_gets_every_new_version_then_the_deletion() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let mut stream = client
        .watch_memory(watch("watched", 0))
        .await
        .expect("watch opens on a chat without memory yet")
        .into_inner();

    let first = send(
        &mut client,
        user_update("watched", "My deductible is $500."),
    )
    .await;
    let event = next_event(&mut stream).await.expect("ok").expect("event");
    assert_eq!(version_of(&event), 1);
    assert_eq!(event.last_applied_job_id, first);
    assert!(
        event
            .memory
            .as_ref()
            .is_some_and(|m| m.user_confirmed.contains("$500"))
    );

    let second = send(
        &mut client,
        user_update("watched", "My pharmacy is CVS on Main St."),
    )
    .await;
    let event = next_event(&mut stream).await.expect("ok").expect("event");
    assert_eq!(version_of(&event), 2);
    assert_eq!(event.last_applied_job_id, second);

    client
        .delete_memory(delete("watched"))
        .await
        .expect("delete");
    let event = next_event(&mut stream).await.expect("ok").expect("event");
    assert!(event.deleted);
    assert!(
        next_event(&mut stream)
            .await
            .expect("ends cleanly")
            .is_none()
    );

    // Both ends of the stream are audited (the end row once the stream task
    // finished, which the client sees as the stream's end).
    stack.audit_relayed().await;
    let mut auditor = stack
        .gateway_as(&auth::mint(auth::TENANT, "auditor", &["memory:admin"]))
        .await;
    let rows = auditor
        .query_audit(QueryAuditRequest {
            chat_id: "watched".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .entries;
    let opened = rows.iter().filter(|r| r.action == "watch").count();
    let ended: Vec<_> = rows.iter().filter(|r| r.action == "watch_end").collect();
    assert_eq!(opened, 1, "{rows:?}");
    assert_eq!(ended.len(), 1, "{rows:?}");
    assert!(
        ended[0].detail.contains("versions_sent=3 ended=deleted"),
        "{:?}",
        ended[0]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_resumes_from_a_version_across_a_gateway_restart() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let job = send(
        &mut client,
        user_update("resumed", "My plan is Aetna Choice POS II."),
    )
    .await;
    client
        .get_memory(after_job("resumed", &job, WAIT_MS))
        .await
        .expect("version 1");
    let mut stream = client
        .watch_memory(watch("resumed", 0))
        .await
        .expect("watch")
        .into_inner();
    let event = next_event(&mut stream)
        .await
        .expect("ok")
        .expect("current version");
    assert_eq!(version_of(&event), 1);

    // The gateway goes away: the stream ends with UNAVAILABLE naming where to resume.
    stack.stop_gateway().await;
    let ended = next_event(&mut stream).await.expect_err("stream ends");
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("from_version=1"), "{ended:?}");

    // A version committed while nobody watched is the first thing the
    // resumed stream sends.
    stack.restart_gateway().await;
    let mut client = stack.gateway().await;
    let job = send(&mut client, user_update("resumed", "I also see Dr. Patel.")).await;
    client
        .get_memory(after_job("resumed", &job, WAIT_MS))
        .await
        .expect("version 2");
    let mut stream = client
        .watch_memory(watch("resumed", 1))
        .await
        .expect("watch again")
        .into_inner();
    let event = next_event(&mut stream)
        .await
        .expect("ok")
        .expect("missed version");
    assert_eq!(version_of(&event), 2);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_resumed_from_a_version_of_a_deleted_chat_gets_the_deletion() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    send(&mut client, user_update("reborn", "My deductible is $500.")).await;
    let second = send(&mut client, user_update("reborn", "My pharmacy is CVS.")).await;
    let had = client
        .get_memory(after_job("reborn", &second, WAIT_MS))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(had.memory.map(|m| m.version), Some(2));
    // The client's copy is version 2; the chat is deleted and started again
    // (version 1 now) while it is away.
    client
        .delete_memory(delete("reborn"))
        .await
        .expect("delete");
    let job = send(&mut client, user_update("reborn", "My plan is Aetna.")).await;
    let current = client
        .get_memory(after_job("reborn", &job, WAIT_MS))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(current.memory.map(|m| m.version), Some(1));
    let mut stream = client
        .watch_memory(watch("reborn", 2))
        .await
        .expect("watch opens")
        .into_inner();
    let event = next_event(&mut stream).await.expect("ok").expect("event");
    assert!(event.deleted, "{event:?}");
    assert!(
        next_event(&mut stream)
            .await
            .expect("ends cleanly")
            .is_none()
    );
    // From a version it does not have, it gets the new chat's memory.
    let mut stream = client
        .watch_memory(watch("reborn", 0))
        .await
        .expect("watch opens")
        .into_inner();
    let event = next_event(&mut stream).await.expect("ok").expect("event");
    assert_eq!(version_of(&event), 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_never_shows_another_users_chat() {
    let stack = TestStack::start().await;
    let mut owner = stack.gateway().await;
    let mut intruder = stack
        .gateway_as(&auth::mint(auth::TENANT, "intruder", &["memory:read"]))
        .await;
    // The intruder watches the chat before it exists (allowed: nothing to hide yet).
    let mut spying = intruder
        .watch_memory(watch("private", 0))
        .await
        .expect("watch on a chat without memory")
        .into_inner();
    let mut watching = owner
        .watch_memory(watch("private", 0))
        .await
        .expect("owner's watch")
        .into_inner();
    send(&mut owner, user_update("private", "My member ID is W999.")).await;
    let event = next_event(&mut watching).await.expect("ok").expect("event");
    assert_eq!(version_of(&event), 1);
    // The same event reached the intruder's stream; it was checked against
    // memory-store and dropped. Nothing arrives (bounded wait for an absence).
    let leaked = tokio::time::timeout(Duration::from_millis(500), spying.message()).await;
    assert!(leaked.is_err(), "the intruder's stream yielded {leaked:?}");

    // Opening a watch on the chat now that it exists looks exactly like
    // opening one on a chat without memory (refusing it would reveal that the
    // chat exists), and it shows nothing of the owner's next version either.
    let mut spying_again = intruder
        .watch_memory(watch("private", 0))
        .await
        .expect("same answer as for a chat without memory")
        .into_inner();
    send(
        &mut owner,
        user_update("private", "My pharmacy is Walgreens."),
    )
    .await;
    let event = next_event(&mut watching).await.expect("ok").expect("event");
    assert_eq!(version_of(&event), 2);
    for stream in [&mut spying, &mut spying_again] {
        let leaked = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(leaked.is_err(), "the intruder's stream yielded {leaked:?}");
    }

    // A deletion ends the owner's stream; the intruder's streams learn nothing
    // of it (neither that the chat existed nor when it went).
    owner
        .delete_memory(delete("private"))
        .await
        .expect("delete");
    let event = next_event(&mut watching).await.expect("ok").expect("event");
    assert!(event.deleted);
    for stream in [&mut spying, &mut spying_again] {
        let leaked = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(leaked.is_err(), "the intruder's stream yielded {leaked:?}");
    }
    let negative = owner
        .watch_memory(watch("private", -1))
        .await
        .expect_err("negative from_version");
    assert_eq!(negative.code(), Code::InvalidArgument);
    stack.shutdown().await;
}
