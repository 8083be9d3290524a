//! The gateways' read cache across replicas, end to end on the real parts: a
//! commit's change event installs the new memory in every gateway, changes
//! and deletions through one gateway reach the others' caches, and a deletion
//! is announced before it is made (docs/architecture.md, "The gateway's read
//! cache").

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;

use summarizer_agent::backend::offline::OfflineBackend;
use test_support::gate::{Gate, GatedBackend};
use test_support::requests::{after_job, delete, min_version, send, user_update};
use test_support::{GatewayClient, StackOptions, TestStack, auth, wait};

const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Long enough never to be the reason a test passes.
const WAIT_MS: u32 = 10_000;

/// Waits until `client` answers NOT_FOUND for `chat` (a plain read), at most `within`.
async fn until_not_found(client: &GatewayClient, chat: &str, within: Duration) {
    wait::until(
        &format!("NOT_FOUND for {chat} through the other gateway"),
        within,
        || {
            let mut client = client.clone();
            async move {
                match client.get_memory(min_version(chat, 0, 0)).await {
                    Err(s) if s.code() == Code::NotFound => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
}

/// A client of the gateway replica at `addr`, as the stack's default user.
async fn replica_client(stack: &TestStack, addr: std::net::SocketAddr) -> GatewayClient {
    replica_client_as(stack, addr, auth::TENANT, auth::USER).await
}

/// A client of the gateway replica at `addr`, as `user` of `tenant`.
async fn replica_client_as(
    stack: &TestStack,
    addr: std::net::SocketAddr,
    tenant: &str,
    user: &str,
) -> GatewayClient {
    let token = auth::mint(tenant, user, &["memory:read", "memory:write"]);
    chat_memory_proto::v1::memory_service_client::MemoryServiceClient::with_interceptor(
        stack.gateway_channel(addr).await,
        test_support::auth::Bearer::new(&token),
    )
}

/// A commit's change event installs the new memory in every gateway's cache:
/// a gateway that never read the chat answers it with memory-store stopped,
/// exactly as memory-store answered it, and only to who memory-store would
/// answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_installs_its_memory_in_every_gateway_answered_as_memory_store_answers_it() {
    let mut stack = TestStack::start().await;
    let mut a = stack.gateway().await;
    let b_addr = stack.add_gateway().await;
    let b = replica_client(&stack, b_addr).await;

    let job = send(
        &mut a,
        user_update("installed", "My plan is Blue Shield PPO 500."),
    )
    .await;
    let applied = a
        .get_memory(after_job("installed", &job, WAIT_MS))
        .await
        .expect("applied")
        .into_inner();
    let truth = stack
        .store()
        .await
        .get_memory(chat_memory_proto::store::GetMemoryRequest {
            chat_id: format!("{}/installed", auth::TENANT),
            access: None,
        })
        .await
        .expect("memory-store's answer")
        .into_inner();
    assert_eq!(applied.memory, truth.memory);
    stack.stop_store().await;

    // B never read the chat: only the commit's event can have put it there.
    let cached = wait::until(
        "B to answer from the installed entry",
        Duration::from_secs(5),
        || {
            let mut b = b.clone();
            async move {
                Some(
                    b.get_memory(min_version("installed", 0, 0))
                        .await
                        .ok()?
                        .into_inner(),
                )
            }
        },
    )
    .await;
    assert_eq!(
        cached.memory, truth.memory,
        "the memory as memory-store answers it"
    );
    let freshness = cached.freshness.expect("freshness");
    let truth_freshness = truth.freshness.expect("memory-store's freshness");
    assert_eq!(freshness.pending_jobs, truth_freshness.pending_jobs);
    assert_eq!(freshness.pending_jobs, 0);
    assert_eq!(freshness.last_applied_job_id, job);
    assert_eq!(cached.chat_id, "installed");

    // The owner came with the event: another user of the tenant gets
    // NOT_FOUND from the same entry. (Another tenant's "installed" is another
    // key, `tenant-b/installed`: not cached, so memory-store, stopped, would
    // answer it.)
    let mut other = replica_client_as(&stack, b_addr, auth::TENANT, "someone-else").await;
    let hidden = other
        .get_memory(min_version("installed", 0, 0))
        .await
        .expect_err("not theirs");
    assert_eq!(hidden.code(), Code::NotFound);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_memory_cached_by_one_gateway_is_dropped_when_another_changes_or_deletes_the_chat() {
    let gate = Gate::new(Arc::new(OfflineBackend::new()));
    let opts = StackOptions {
        backend: Some(Arc::new(GatedBackend(gate.clone()))),
        ..StackOptions::default()
    };
    let mut stack = TestStack::start_with(opts).await;
    let mut a = stack.gateway().await;
    let b_addr = stack.add_gateway().await;
    let mut b = replica_client(&stack, b_addr).await;

    // Version 1, read (and cached) through gateway B.
    let first = send(
        &mut a,
        user_update("cached", "My plan is Blue Shield PPO 500."),
    )
    .await;
    gate.wait_entered().await;
    gate.release();
    a.get_memory(after_job("cached", &first, WAIT_MS))
        .await
        .expect("version 1");
    let cached = b
        .get_memory(min_version("cached", 0, 0))
        .await
        .expect("read")
        .into_inner();
    assert_eq!(cached.freshness.as_ref().map(|f| f.pending_jobs), Some(0));

    // An update accepted through A (its summarizer call held): B's answer
    // shows it pending (B dropped its entry on the acceptance event), then
    // the new version.
    gate.arm();
    let second = send(&mut a, user_update("cached", "My deductible is $500.")).await;
    let pending = wait::until("B to see the pending job", Duration::from_secs(5), || {
        let mut b = b.clone();
        async move {
            let r = b
                .get_memory(min_version("cached", 0, 0))
                .await
                .ok()?
                .into_inner();
            (r.freshness.as_ref().map(|f| f.pending_jobs) == Some(1)).then_some(r)
        }
    })
    .await;
    assert_eq!(pending.memory.map(|m| m.version), Some(1));
    gate.wait_entered().await;
    gate.release();
    a.get_memory(after_job("cached", &second, WAIT_MS))
        .await
        .expect("version 2");
    wait::until("B to see version 2", Duration::from_secs(5), || {
        let mut b = b.clone();
        async move {
            let r = b
                .get_memory(min_version("cached", 0, 0))
                .await
                .ok()?
                .into_inner();
            (r.memory.as_ref().map(|m| m.version) == Some(2)).then_some(())
        }
    })
    .await;

    // Deleted through A: B answers NOT_FOUND, not its cached memory (within
    // the event's trip; the cache's TTL is 10 s, far beyond this wait).
    a.delete_memory(delete("cached")).await.expect("delete");
    until_not_found(&b, "cached", Duration::from_secs(2)).await;

    // The chat is written again by another user (a new owner): the first
    // user, reading through B, gets NOT_FOUND, never the new owner's memory.
    let mut other = stack
        .gateway_as(&auth::mint(
            auth::TENANT,
            "new-owner",
            &["memory:read", "memory:write"],
        ))
        .await;
    let third = send(&mut other, user_update("cached", "I am someone else.")).await;
    other
        .get_memory(after_job("cached", &third, WAIT_MS))
        .await
        .expect("the new owner's version 1");
    let hidden = b
        .get_memory(min_version("cached", 0, 0))
        .await
        .expect_err("not theirs");
    assert_eq!(hidden.code(), Code::NotFound);
    stack.shutdown().await;
}

/// A settled chat's entry lives for the long TTL, so a deletion is announced
/// before it is made. The test plays a deleting gateway that dies between
/// memory-store's deletion and its `deleted` event: it announces `deleting`;
/// the other gateway (B) reads the chat again before the deletion, as a busy
/// one would, and keeps that entry only for the short TTL, so it answers
/// NOT_FOUND soon after the deletion, not at the settled TTL (600 s here). A
/// deletion nobody announced (the control) is still answered from B's cache:
/// B's reads are cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deletion_announced_before_its_commit_reaches_every_gateway_even_if_its_own_dies() {
    let short = Duration::from_secs(3);
    let mut stack = TestStack::start_with(StackOptions {
        read_cache: gateway::cache::ReadCacheSettings {
            ttl_ms: 3_000,
            settled_ttl_ms: 600_000,
            ..gateway::cache::ReadCacheSettings::default()
        },
        ..StackOptions::default()
    })
    .await;
    let mut a = stack.gateway().await;
    let b_addr = stack.add_gateway().await;
    let mut b = replica_client(&stack, b_addr).await;
    let accepted = Instant::now();
    for chat in ["announced", "unannounced"] {
        let job = send(&mut a, user_update(chat, "My plan is Blue Shield PPO 500.")).await;
        a.get_memory(after_job(chat, &job, WAIT_MS))
            .await
            .expect("applied");
        let read = b
            .get_memory(min_version(chat, 0, 0))
            .await
            .expect("read through B")
            .into_inner();
        assert_eq!(read.freshness.map(|f| f.pending_jobs), Some(0));
    }
    let access = chat_memory_proto::store::Access {
        tenant: auth::TENANT.into(),
        user: auth::USER.into(),
        acts_for_tenant: false,
    };
    let delete_in_store = |chat: &str| chat_memory_proto::store::DeleteChatRequest {
        chat_id: format!("{}/{chat}", auth::TENANT),
        through_stream_seq: 0,
        access: Some(access.clone()),
    };

    // The control: memory-store deletes, nobody announces anything.
    stack
        .store()
        .await
        .delete_chat(delete_in_store("unannounced"))
        .await
        .expect("deleted in memory-store");
    let stale = b
        .get_memory(min_version("unannounced", 0, 0))
        .await
        .expect("B's cached entry");
    assert_eq!(
        stale.into_inner().memory.map(|m| m.version),
        Some(1),
        "an unannounced change is bounded only by the TTL"
    );

    // A deleting gateway's announcement. memory-store is stopped meanwhile,
    // so B's read misses its cache (UNAVAILABLE) exactly once the event has
    // dropped the entry.
    stack.stop_store().await;
    // Past the short TTL after the acceptances, so only the announced
    // deletion keeps B's next entry of the chat unsettled.
    tokio::time::sleep_until((accepted + short).into()).await;
    let changes = job_queue::changes::Publisher::new(
        stack.jetstream().await.client(),
        stack.queue.subject_prefix.clone(),
    );
    changes
        .publish_flushed(
            job_queue::changes::MemoryChanged {
                chat_id: format!("{}/announced", auth::TENANT),
                deleting: true,
                ..Default::default()
            },
            Duration::from_secs(5),
        )
        .await
        .expect("announced");
    let dropped = wait::until(
        "B to drop the announced chat",
        Duration::from_secs(5),
        || {
            let mut b = b.clone();
            async move {
                match b.get_memory(min_version("announced", 0, 0)).await {
                    Err(s) if s.code() == Code::Unavailable => Some(Instant::now()),
                    _ => None,
                }
            }
        },
    )
    .await;
    stack.restart_store().await;
    // B reads the chat again before the deletion and caches it.
    let reread = b
        .get_memory(min_version("announced", 0, 0))
        .await
        .expect("read again through B");
    assert_eq!(reread.into_inner().memory.map(|m| m.version), Some(1));
    assert!(
        dropped.elapsed() < short,
        "memory-store took too long to restart for this test to tell"
    );
    // The deleting gateway's deletion; then it dies: no `deleted` event.
    stack
        .store()
        .await
        .delete_chat(delete_in_store("announced"))
        .await
        .expect("deleted in memory-store");
    until_not_found(&b, "announced", Duration::from_secs(15)).await;

    // A gateway's DeleteMemory announces `deleting`, then `deleted`.
    let nats = stack.jetstream().await.client();
    let mut events = nats
        .subscribe(job_queue::changes::subject(
            &stack.queue.subject_prefix,
            &format!("{}/unannounced", auth::TENANT),
        ))
        .await
        .expect("subscribed");
    nats.flush().await.expect("subscription registered");
    a.delete_memory(delete("unannounced"))
        .await
        .expect("delete through A");
    let mut next = async || {
        let message = tokio::time::timeout(JOB_TIMEOUT, futures::StreamExt::next(&mut events))
            .await
            .expect("an event in time")
            .expect("subscription open");
        job_queue::changes::decode(&message.payload).expect("an event")
    };
    let first = next().await;
    assert!(first.deleting && !first.deleted, "{first:?}");
    let second = next().await;
    assert!(second.deleted && !second.deleting, "{second:?}");
    stack.shutdown().await;
}

/// Events numbered by one process leave it in their numbers' order, even when
/// tasks on several threads publish at once: a gateway takes a number skipped
/// (or come late) for a lost event and clears its whole cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_processs_change_events_arrive_in_their_numbers_order_from_many_threads() {
    use futures::StreamExt as _;
    const TASKS: u64 = 8;
    const EACH: u64 = 300;
    let client = async_nats::connect(test_support::nats_url())
        .await
        .expect("NATS is up (scripts/services.sh)");
    let prefix = format!("CMT_order_{}", test_support::unique_suffix());
    let mut events = client
        .subscribe(job_queue::changes::wildcard(&prefix))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let publisher = Arc::new(job_queue::changes::Publisher::new(
        client.clone(),
        prefix.clone(),
    ));
    let senders: Vec<_> = (0..TASKS)
        .map(|t| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    publisher
                        .publish(job_queue::changes::MemoryChanged {
                            chat_id: format!("{}/chat-{t}-{i}", auth::TENANT),
                            ..Default::default()
                        })
                        .await
                        .expect("published");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    let mut expected = 1;
    while expected <= TASKS * EACH {
        let message = tokio::time::timeout(JOB_TIMEOUT, events.next())
            .await
            .expect("every event arrives")
            .expect("subscription open");
        let event = job_queue::changes::decode(&message.payload).expect("an event");
        assert_eq!(event.seq, expected, "events out of their numbers' order");
        expected += 1;
    }
}
