//! Order and exactly once: every chat's updates apply in acceptance order
//! across workers, and a job redelivered (its worker killed mid-job) or
//! delivered twice is applied once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use prost::Message as _;

use chat_memory_proto::jobs::v1::UpdateJob;
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::v1::JobState;
use summarizer_agent::backend::offline::OfflineBackend;
use test_support::gate::{Gate, GatedBackend};
use test_support::requests::{memory, send, update, user};
use test_support::{StackOptions, TestStack};

use super::JOB_TIMEOUT;

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
    let mut client = client.clone();
    for (chat, chat_jobs) in chats.iter().zip(&jobs) {
        // In acceptance order, each summarizer call applies a contiguous run
        // of jobs (several when coalesced) and makes exactly the next version.
        stack
            .assert_applied_in_order(chat, chat_jobs, Duration::from_secs(120))
            .await;
        let got = memory(&mut client, chat).await;
        assert_eq!(got.freshness.expect("freshness").pending_jobs, 0, "{chat}");
    }
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
