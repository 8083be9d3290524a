//! One audit row per call, never content; rows survive memory-store being down
//! and the gateway dying; expiry is audited.

use std::time::Duration;

use tonic::Code;

use chat_memory_proto::v1::QueryAuditRequest;
use test_support::auth::{self, Bearer};
use test_support::processes::{ProcessOptions, ProcessStack};
use test_support::requests::{delete, get, keyed, user_update};
use test_support::stack::{gateway_client, succeeded};
use test_support::{GatewayClient, StackOptions, TestStack, wait};

use super::JOB_TIMEOUT;

async fn audit_rows(
    client: &mut GatewayClient,
    filter: QueryAuditRequest,
) -> Vec<chat_memory_proto::v1::AuditEntry> {
    client
        .query_audit(QueryAuditRequest {
            limit: 1000,
            ..filter
        })
        .await
        .unwrap_or_else(|s| panic!("audit: {s:?}"))
        .into_inner()
        .entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_leaves_exactly_one_audit_row_without_content() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let secret_text = "My SSN is 123-45-6789.";
    let job = client
        .update_memory(user_update("audited", secret_text))
        .await
        .expect("update")
        .into_inner()
        .job_id;
    stack.wait_job_done(&job, JOB_TIMEOUT).await; // status calls, audited too
    // A keyed update and its repeat (deduplicated by JetStream: no message of
    // its own to carry its row): one row each.
    let keyed_update = || {
        keyed(
            user_update("audited-keyed", "My deductible is $500."),
            "turn-1",
        )
    };
    let first = client.update_memory(keyed_update()).await.expect("keyed");
    let repeat = client.update_memory(keyed_update()).await.expect("repeat");
    assert!(repeat.get_ref().deduplicated, "{repeat:?}");
    assert_eq!(first.get_ref().job_id, repeat.get_ref().job_id);
    client.get_memory(get("audited")).await.expect("read");
    client
        .delete_memory(delete("audited"))
        .await
        .expect("delete");
    let mut read_only = stack
        .gateway_as(&auth::mint(auth::TENANT, "reader", &["memory:read"]))
        .await;
    read_only
        .update_memory(user_update("audited", "x"))
        .await
        .expect_err("scope");
    let mut anonymous = gateway_client(stack.gateway_addr, Bearer::none()).await;
    anonymous
        .get_memory(get("audited"))
        .await
        .expect_err("no token");

    let mut admin = stack
        .gateway_as(&auth::mint(auth::TENANT, "auditor", &["memory:admin"]))
        .await;
    // Rows are durable in the outbox before each answer; the relay stores them.
    stack.audit_relayed().await;
    let rows = audit_rows(&mut admin, QueryAuditRequest::default()).await;
    let count = |action: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r.action == action && r.outcome == outcome)
            .count()
    };
    assert_eq!(count("update", "OK"), 3, "{rows:#?}");
    assert_eq!(count("read", "OK"), 1, "{rows:#?}");
    assert_eq!(count("delete", "OK"), 1, "{rows:#?}");
    assert!(count("status", "OK") >= 1);
    assert_eq!(count("denied", "PERMISSION_DENIED"), 1, "{rows:#?}");
    let ids: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "one row per request id");
    for r in &rows {
        assert!(
            !format!("{r:?}").contains("123-45-6789"),
            "content in audit row {r:?}"
        );
        assert_eq!(r.tenant, auth::TENANT);
    }
    let update_row = rows
        .iter()
        .find(|r| r.action == "update" && r.chat_id == "audited")
        .expect("update row");
    assert_eq!(
        (
            update_row.chat_id.as_str(),
            update_row.job_id.as_str(),
            update_row.user.as_str()
        ),
        ("audited", job.as_str(), auth::USER)
    );
    // The unauthenticated call has no tenant: it is in the log, not in any tenant's view.
    let mut store = stack.store().await;
    let anonymous_rows = store
        .query_audit(chat_memory_proto::store::QueryAuditRequest {
            tenant: String::new(),
            filter: None,
        })
        .await;
    assert_eq!(
        anonymous_rows
            .map(|_| ())
            .expect_err("tenant required")
            .code(),
        Code::InvalidArgument
    );
    stack.shutdown().await;
}

/// The double failure: memory-store is down (rows cannot be written) and then the
/// gateway that answered the calls dies. The rows went to the JetStream audit
/// outbox before the answers, so the restarted gateway relays each of them once.
/// The update's row also travels in its job message (its registration failed)
/// and reaches Postgres a second time when the worker begins the job: the same
/// row, to the microsecond, so it is still one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_rows_of_calls_made_while_memory_store_is_down_survive_a_gateway_crash() {
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    stack.terminate("memory-store").await;

    let mut client = test_support::processes::gateway_client(&stack).await;
    let job = client
        .update_memory(user_update("outboxed", "My plan is Gold PPO 2500."))
        .await
        .expect("an update is accepted while memory-store is down")
        .into_inner()
        .job_id;
    let read = client.get_memory(get("outboxed")).await;
    assert_eq!(
        read.map(|_| ()).expect_err("store down").code(),
        Code::Unavailable
    );
    let mut read_only = gateway_client(
        stack.gateway_addr(),
        Bearer::new(&auth::mint(auth::TENANT, "reader", &["memory:read"])),
    )
    .await;
    let denied = read_only.update_memory(user_update("outboxed", "x")).await;
    assert_eq!(
        denied.map(|_| ()).expect_err("scope").code(),
        Code::PermissionDenied
    );

    // SIGKILL: whatever the gateway held in memory is gone.
    stack.kill("gateway").await;
    stack.spawn("memory-store").await;
    stack.spawn("gateway").await;

    let admin = gateway_client(
        stack.gateway_addr(),
        Bearer::new(&auth::mint(auth::TENANT, "auditor", &["memory:admin"])),
    )
    .await;
    let expected = [
        ("update", "OK"),
        ("read", "UNAVAILABLE"),
        ("denied", "PERMISSION_DENIED"),
    ];
    let rows = stack
        .wait_until("the outboxed audit rows to be relayed", JOB_TIMEOUT, || {
            let mut admin = admin.clone();
            async move {
                let rows = audit_rows(&mut admin, QueryAuditRequest::default()).await;
                expected
                    .iter()
                    .all(|(a, o)| rows.iter().any(|r| r.action == *a && r.outcome == *o))
                    .then_some(rows)
            }
        })
        .await;
    for (action, outcome) in expected {
        let n = rows
            .iter()
            .filter(|r| r.action == action && r.outcome == outcome)
            .count();
        assert_eq!(n, 1, "{action} {outcome}: {rows:#?}");
    }
    let update_row = rows
        .iter()
        .find(|r| r.action == "update")
        .expect("update row");
    assert_eq!(update_row.job_id, job);
    assert!(
        rows.iter().all(|r| !format!("{r:?}").contains("Gold PPO")),
        "content in an audit row"
    );
    // The update itself was applied once memory-store came back.
    let status =
        test_support::stack::wait_job(&admin, &job, "be applied", JOB_TIMEOUT, succeeded).await;
    assert!(
        status.resulting_version.is_some_and(|v| v >= 1),
        "{status:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inactive_chats_expire_and_the_expiry_is_audited() {
    let stack = TestStack::start_with(StackOptions {
        expiry: memory_store::settings::ExpirySettings {
            inactive_after_secs: 2,
            sweep_interval_ms: 200,
        },
        ..StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    client
        .update_memory(user_update("short-lived", "My plan is HMO Silver."))
        .await
        .expect("update");
    // Whether or not the job was applied first, the chat expires once idle;
    // a job still queued then is discarded by the tombstone.
    let admin = stack
        .gateway_as(&auth::mint(auth::TENANT, "auditor", &["memory:admin"]))
        .await;
    let filter = QueryAuditRequest {
        action: "expire".into(),
        chat_id: "short-lived".into(),
        ..Default::default()
    };
    wait::until("the expiry to be audited", Duration::from_secs(30), || {
        let mut admin = admin.clone();
        let filter = filter.clone();
        async move { (!audit_rows(&mut admin, filter).await.is_empty()).then_some(()) }
    })
    .await;
    let s = client
        .get_memory(get("short-lived"))
        .await
        .expect_err("expired");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let rows = audit_rows(&mut admin.clone(), filter).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].user, auth::USER);
    stack.shutdown().await;
}

/// Rows of concurrent calls share outbox messages, and every row still
/// reaches the audit log exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_outbox_messages_and_each_leaves_one_row() {
    let stack = TestStack::start().await;
    let client = stack.gateway().await;
    let js = stack.jetstream().await;
    let outbox = job_queue::audit_outbox::outbox_stream_name(&stack.queue);
    let last_seq = |js: async_nats::jetstream::Context, name: String| async move {
        let mut stream = js.get_stream(&name).await.expect("outbox stream");
        stream
            .info()
            .await
            .expect("outbox info")
            .state
            .last_sequence
    };
    let before = last_seq(js.clone(), outbox.clone()).await;

    const CALLS: usize = 200;
    let reads = futures::future::join_all((0..CALLS).map(|i| {
        let mut client = client.clone();
        async move { client.get_memory(get(&format!("grouped-{i}"))).await }
    }))
    .await;
    assert!(
        reads
            .iter()
            .all(|r| r.as_ref().err().map(tonic::Status::code) == Some(Code::NotFound)),
        "every read answered (NOT_FOUND: no memory yet)"
    );
    let messages = last_seq(js, outbox).await - before;
    assert!(
        messages < CALLS as u64,
        "{CALLS} rows went out in {messages} messages: none shared"
    );

    stack.audit_relayed().await;
    let mut admin = stack
        .gateway_as(&auth::mint(auth::TENANT, "auditor", &["memory:admin"]))
        .await;
    let rows = audit_rows(
        &mut admin,
        QueryAuditRequest {
            action: "read".into(),
            ..Default::default()
        },
    )
    .await;
    let grouped = rows
        .iter()
        .filter(|r| r.chat_id.starts_with("grouped-"))
        .count();
    assert_eq!(grouped, CALLS, "one row per call, none lost or doubled");
    stack.shutdown().await;
}
