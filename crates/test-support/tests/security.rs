//! Security of the public and internal APIs on the real stack: every RPC needs
//! credentials, tenants and users are isolated, scopes are enforced, one rate
//! limit holds across gateway replicas, every call leaves one audit row, and
//! inactive chats expire.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prost::Message as _;
use prost_types::FileDescriptorSet;
use tonic::Code;

use chat_memory_proto::v1::{
    ChatMessage, DeleteMemoryRequest, GetMemoryRequest, GetUpdateStatusRequest, QueryAuditRequest,
    Role, UpdateMemoryRequest,
};
use test_support::auth::{self, Bearer};
use test_support::processes::{ProcessOptions, ProcessStack};
use test_support::stack::{channel, gateway_client, succeeded};
use test_support::{GatewayClient, StackOptions, TestStack, wait};

const JOB_TIMEOUT: Duration = Duration::from_secs(30);
const RW: &[&str] = &["memory:read", "memory:write"];

fn update(chat_id: &str, text: &str) -> UpdateMemoryRequest {
    UpdateMemoryRequest {
        chat_id: chat_id.into(),
        messages: vec![ChatMessage {
            role: Role::User as i32,
            content: text.into(),
            ..Default::default()
        }],
        idempotency_key: String::new(),
    }
}

fn get(chat_id: &str) -> GetMemoryRequest {
    GetMemoryRequest {
        chat_id: chat_id.into(),
    }
}

/// Every (service, method) of the compiled descriptor set.
fn every_rpc() -> Vec<(String, String)> {
    let fds = FileDescriptorSet::decode(chat_memory_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| panic!("descriptor set: {e}"));
    let mut rpcs = Vec::new();
    for file in fds.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                rpcs.push((full.clone(), method.name().to_owned()));
            }
        }
    }
    rpcs
}

/// Calls `/<service>/<method>` with an empty message; the status code of the answer.
async fn raw_call(addr: std::net::SocketAddr, service: &str, method: &str, bearer: Bearer) -> Code {
    let channel = channel(addr).await;
    let mut grpc = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(
        channel, bearer,
    ));
    if let Err(e) = grpc.ready().await {
        panic!("{addr} not ready: {e}");
    }
    let path: http::uri::PathAndQuery = format!("/{service}/{method}")
        .parse()
        .unwrap_or_else(|e| panic!("path: {e}"));
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_of_every_service_rejects_a_missing_token() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let valid_rw = auth::mint(
        "tenant-m",
        "user-m",
        &["memory:read", "memory:write", "memory:admin"],
    );
    let mut wrong_aud = auth::claims("tenant-m", "user-m", RW);
    wrong_aud["aud"] = "someone-else".into();
    let gateway_cases: Vec<(&str, Bearer)> = vec![
        ("missing", Bearer::none()),
        ("malformed", Bearer::raw("Bearer not.a.jwt")),
        ("not bearer", Bearer::raw("Basic dXNlcjpwdw==")),
        (
            "expired",
            Bearer::new(&auth::expired("tenant-m", "user-m", RW, 3600)),
        ),
        (
            "wrong key",
            Bearer::new(&auth::sign(
                &auth::claims("tenant-m", "user-m", RW),
                "another-secret-of-at-least-32-bytes!!",
            )),
        ),
        (
            "wrong audience",
            Bearer::new(&auth::sign(&wrong_aud, auth::JWT_SECRET)),
        ),
        (
            "no scope",
            Bearer::new(&auth::mint("tenant-m", "user-m", &[])),
        ),
        ("all scopes", Bearer::new(&valid_rw)),
    ];
    let store_cases: Vec<(&str, Bearer)> = vec![
        ("missing", Bearer::none()),
        ("wrong token", Bearer::new("not-the-service-token")),
        ("service token", Bearer::new(auth::SERVICE_TOKEN)),
    ];

    let mut matrix: BTreeMap<String, BTreeMap<&str, Code>> = BTreeMap::new();
    let rpcs = every_rpc();
    assert!(rpcs.len() >= 15, "descriptor lists too few RPCs: {rpcs:?}");
    for (service, method) in &rpcs {
        let (addr, cases) = match service.as_str() {
            "chatmemory.v1.MemoryService" => (stack.gateway_addr, &gateway_cases),
            "chatmemory.store.v1.MemoryStore" => (stack.store_addr, &store_cases),
            other => panic!("service {other} has no entry here: decide how it is protected"),
        };
        let row = matrix.entry(format!("{service}/{method}")).or_default();
        for (case, bearer) in cases {
            row.insert(case, raw_call(addr, service, method, bearer.clone()).await);
        }
    }

    println!("\nAUTH MATRIX (RPC x case -> status code)");
    for (rpc, row) in &matrix {
        let cells: Vec<String> = row
            .iter()
            .map(|(case, code)| format!("{case}={code:?}"))
            .collect();
        println!("{rpc:<45} {}", cells.join("  "));
    }
    for (rpc, row) in &matrix {
        for (case, code) in row {
            let want = match *case {
                "no scope" => Some(Code::PermissionDenied),
                "all scopes" | "service token" => None,
                _ => Some(Code::Unauthenticated),
            };
            match want {
                Some(want) => assert_eq!(*code, want, "{rpc} with {case}"),
                None => assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{rpc} refused valid credentials: {code:?}"
                ),
            }
        }
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_or_user_cannot_read_update_delete_or_see_status_of_a_chat() {
    let stack = TestStack::start().await;
    let mut owner = stack.gateway().await;
    let job = owner
        .update_memory(update("shared", "My member ID is ISO-4242."))
        .await
        .unwrap_or_else(|s| panic!("owner update: {s:?}"))
        .into_inner()
        .job_id;
    stack.wait_job_done(&job, JOB_TIMEOUT).await;

    let mut other_tenant = stack
        .gateway_as(&auth::mint("tenant-b", auth::USER, RW))
        .await;
    let mut other_user = stack
        .gateway_as(&auth::mint(auth::TENANT, "user-2", RW))
        .await;
    for (who, client) in [
        ("other tenant", &mut other_tenant),
        ("other user", &mut other_user),
    ] {
        let s = client.get_memory(get("shared")).await.expect_err("read");
        assert_eq!(s.code(), Code::NotFound, "{who} read: {s:?}");
        let s = client
            .get_update_status(GetUpdateStatusRequest {
                job_id: job.clone(),
            })
            .await
            .expect_err("status");
        assert_eq!(s.code(), Code::NotFound, "{who} status: {s:?}");
    }
    // Same-tenant user: the chat exists but is not theirs: NOT_FOUND, never PERMISSION_DENIED.
    let s = other_user
        .update_memory(update("shared", "overwrite"))
        .await
        .expect_err("update");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    let s = other_user
        .delete_memory(DeleteMemoryRequest {
            chat_id: "shared".into(),
        })
        .await
        .expect_err("delete");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    // Another tenant's "shared" is another chat: its delete and update touch nothing of ours.
    let deleted = other_tenant
        .delete_memory(DeleteMemoryRequest {
            chat_id: "shared".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("other tenant delete: {s:?}"))
        .into_inner();
    assert!(!deleted.memory_deleted);
    let theirs = other_tenant
        .update_memory(update("shared", "My member ID is OTHER-1."))
        .await
        .unwrap_or_else(|s| panic!("other tenant update: {s:?}"))
        .into_inner()
        .job_id;
    let s = owner
        .get_update_status(GetUpdateStatusRequest { job_id: theirs })
        .await
        .expect_err("their job");
    assert_eq!(s.code(), Code::NotFound);
    let mine = owner
        .get_memory(get("shared"))
        .await
        .expect("owner read")
        .into_inner();
    let memory = mine.memory.expect("memory");
    assert_eq!(mine.chat_id, "shared");
    assert_eq!(memory.version, 1);
    assert!(memory.user_confirmed.contains("ISO-4242"));
    assert!(!memory.user_confirmed.contains("OTHER-1"));
    // An admin acts for the whole tenant.
    let mut admin = stack
        .gateway_as(&auth::mint(auth::TENANT, "ops", &["memory:admin"]))
        .await;
    admin
        .get_memory(get("shared"))
        .await
        .expect("admin reads any chat of its tenant");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_rpc_needs_its_scope() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let mut read = stack
        .gateway_as(&auth::mint(auth::TENANT, auth::USER, &["memory:read"]))
        .await;
    let mut write = stack
        .gateway_as(&auth::mint(auth::TENANT, auth::USER, &["memory:write"]))
        .await;
    let mut admin = stack
        .gateway_as(&auth::mint(auth::TENANT, auth::USER, &["memory:admin"]))
        .await;
    let s = read
        .update_memory(update("c", "hi"))
        .await
        .expect_err("update");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = read
        .delete_memory(DeleteMemoryRequest {
            chat_id: "c".into(),
        })
        .await
        .expect_err("delete");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = write.get_memory(get("c")).await.expect_err("read");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = write
        .query_audit(QueryAuditRequest::default())
        .await
        .expect_err("audit");
    assert_eq!(s.code(), Code::PermissionDenied);
    write
        .update_memory(update("c", "hi"))
        .await
        .expect("write may update");
    read.get_update_status(GetUpdateStatusRequest {
        job_id: "0191f7c2-6b0e-7a3c-9f00-0123456789ab".into(),
    })
    .await
    .expect_err("unknown job is NOT_FOUND, not denied");
    admin
        .query_audit(QueryAuditRequest::default())
        .await
        .expect("admin reads the audit log");
    admin
        .get_memory(get("c"))
        .await
        .expect_err("no memory yet, but allowed");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_together_hold_one_per_user_rate_limit() {
    const LIMIT: u32 = 100;
    let mut stack = TestStack::start_with(StackOptions {
        workers: 0,
        rate_limit_per_minute: LIMIT,
        ..StackOptions::default()
    })
    .await;
    let second = stack.add_gateway().await;
    let token = auth::mint(auth::TENANT, "busy-user", RW);
    let clients: Vec<GatewayClient> = vec![
        stack.gateway_as(&token).await,
        gateway_client(second, Bearer::new(&token)).await,
    ];
    let started = Instant::now();
    let mut allowed = 0u32;
    let mut limited = 0u32;
    let mut retry_after = None;
    let total = 160usize;
    for round in 0..total / 8 {
        let calls = (0..8).map(|i| {
            let mut client = clients[(round * 8 + i) % 2].clone();
            async move { client.get_memory(get("never-written")).await }
        });
        for result in futures::future::join_all(calls).await {
            match result {
                Err(s) if s.code() == Code::ResourceExhausted => {
                    limited += 1;
                    retry_after = s
                        .metadata()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                }
                Err(s) if s.code() == Code::NotFound => allowed += 1,
                other => panic!("unexpected answer: {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    // GCRA refills one request every 60/LIMIT s while the test runs.
    let refilled = (elapsed.as_secs_f64() * f64::from(LIMIT) / 60.0).floor() as u32;
    println!(
        "\nRATE LIMIT: two gateways, {total} requests in {:.2} s: allowed {allowed}, limited {limited}; limit {LIMIT}/min (+{refilled} refilled during the run); retry-after {retry_after:?}",
        elapsed.as_secs_f64()
    );
    let ceiling = f64::from(LIMIT + refilled) * 1.05;
    assert!(
        f64::from(allowed) <= ceiling,
        "allowed {allowed} > {ceiling}"
    );
    assert!(
        f64::from(allowed) >= f64::from(LIMIT) * 0.95,
        "allowed only {allowed}"
    );
    assert!(
        retry_after.is_some(),
        "RESOURCE_EXHAUSTED without retry-after"
    );
    stack.shutdown().await;
}

/// Calls without a valid token are limited per client address (token guessing
/// costs the guesser time); callers with valid tokens from the same address are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_are_limited_per_address_without_slowing_valid_callers() {
    let stack = TestStack::start_with(StackOptions {
        failed_auth_per_minute: 5,
        ..StackOptions::default()
    })
    .await;
    let mut guesser = gateway_client(stack.gateway_addr, Bearer::new("not.a.token")).await;
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..8 {
        let status = guesser
            .get_memory(get("any"))
            .await
            .map(|_| ())
            .expect_err("no valid token");
        if status.code() == Code::ResourceExhausted {
            retry_after = status.metadata().get("retry-after").cloned();
        }
        codes.push(status.code());
    }
    assert_eq!(
        codes,
        [
            vec![Code::Unauthenticated; 5],
            vec![Code::ResourceExhausted; 3]
        ]
        .concat()
    );
    assert!(
        retry_after.is_some(),
        "RESOURCE_EXHAUSTED without retry-after"
    );
    // The same address with a valid token is served.
    let mut client = stack.gateway().await;
    let status = client.get_memory(get("never-written")).await;
    assert_eq!(
        status.map(|_| ()).expect_err("unknown chat").code(),
        Code::NotFound
    );
    stack.shutdown().await;
}

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
        .update_memory(update("audited", secret_text))
        .await
        .expect("update")
        .into_inner()
        .job_id;
    stack.wait_job_done(&job, JOB_TIMEOUT).await; // status calls, audited too
    client.get_memory(get("audited")).await.expect("read");
    client
        .delete_memory(DeleteMemoryRequest {
            chat_id: "audited".into(),
        })
        .await
        .expect("delete");
    let mut read_only = stack
        .gateway_as(&auth::mint(auth::TENANT, "reader", &["memory:read"]))
        .await;
    read_only
        .update_memory(update("audited", "x"))
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
    let rows = audit_rows(&mut admin, QueryAuditRequest::default()).await;
    let count = |action: &str, outcome: &str| {
        rows.iter()
            .filter(|r| r.action == action && r.outcome == outcome)
            .count()
    };
    assert_eq!(count("update", "OK"), 1, "{rows:#?}");
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
        .find(|r| r.action == "update")
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

/// TLS on every gRPC listener, mTLS from the gateway and the worker into
/// memory-store, and tokens verified with RS256/ES256 keys from a JWKS file:
/// a whole update round trip over it, and what each listener refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_everywhere_mtls_into_memory_store_and_jwks_signed_tokens() {
    use jsonwebtoken::Algorithm;
    use test_support::pki::TestPki;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let pki = std::sync::Arc::new(TestPki::generate());
    let stack = TestStack::start_with(StackOptions {
        pki: Some(pki.clone()),
        auth: Some(auth::jwks_auth()),
        ..StackOptions::default()
    })
    .await;
    let claims = auth::claims(auth::TENANT, auth::USER, RW);

    // RS256 over TLS: the full round trip (gateway -> JetStream -> worker ->
    // memory-store over mTLS -> read back).
    let rs256 = auth::sign_with_key(&claims, Algorithm::RS256, "rsa-1", "rsa.pem");
    let mut client = stack.gateway_as(&rs256).await;
    let job = client
        .update_memory(update("tls-chat", "My member id is XKW-88123."))
        .await
        .expect("update over TLS")
        .into_inner()
        .job_id;
    let done = stack.wait_job_done(&job, JOB_TIMEOUT).await;
    assert_eq!(
        done.state,
        chat_memory_proto::v1::JobState::Succeeded as i32,
        "{done:?}"
    );
    let memory = client
        .get_memory(get("tls-chat"))
        .await
        .expect("read over TLS")
        .into_inner()
        .memory
        .expect("memory");
    assert!(
        memory.user_confirmed.contains("XKW-88123"),
        "{:?}",
        memory.user_confirmed
    );

    // ES256 from the same JWKS.
    let es256 = auth::sign_with_key(&claims, Algorithm::ES256, "ec-1", "ec.pem");
    stack
        .gateway_as(&es256)
        .await
        .get_memory(get("tls-chat"))
        .await
        .expect("ES256 token");
    // A key outside the JWKS, and an HS256 token, are refused.
    for (name, token) in [
        (
            "RS256 by another key",
            auth::sign_with_key(&claims, Algorithm::RS256, "rsa-1", "rsa-other.pem"),
        ),
        ("HS256", auth::mint(auth::TENANT, auth::USER, RW)),
    ] {
        let refused = stack
            .gateway_as(&token)
            .await
            .get_memory(get("tls-chat"))
            .await;
        assert_eq!(
            refused.map(|_| ()).expect_err(name).code(),
            Code::Unauthenticated,
            "{name}"
        );
    }

    // Plain HTTP/2 reaches no listener.
    for (name, addr) in [
        ("gateway", stack.gateway_addr),
        ("memory-store", stack.store_addr),
        ("worker", stack.worker_addrs[0]),
    ] {
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await;
        let answered = match plain {
            Err(_) => false,
            Ok(channel) => HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_ok(),
        };
        assert!(!answered, "{name} answered plain HTTP/2");
    }
    // memory-store wants a client certificate: without one, no call gets through.
    let without_cert = match pki.channel(stack.store_addr, false).await {
        Err(_) => false,
        Ok(channel) => HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .is_ok(),
    };
    assert!(
        !without_cert,
        "memory-store answered a client without a certificate"
    );
    // The gateway does not (clients are authenticated by their tokens).
    let gateway_health = HealthClient::new(
        pki.channel(stack.gateway_addr, false)
            .await
            .expect("TLS without a client certificate"),
    )
    .check(HealthCheckRequest::default())
    .await;
    assert!(gateway_health.is_ok(), "{gateway_health:?}");
    stack.shutdown().await;
}

/// The double failure: memory-store is down (rows cannot be written) and then the
/// gateway that answered the calls dies. The rows went to the JetStream audit
/// outbox before the answers, so the restarted gateway relays each of them once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_rows_of_calls_made_while_memory_store_is_down_survive_a_gateway_crash() {
    let mut stack = ProcessStack::start(ProcessOptions::default()).await;
    stack.terminate("memory-store").await;

    let mut client = test_support::processes::gateway_client(&stack).await;
    let job = client
        .update_memory(update("outboxed", "My plan is Gold PPO 2500."))
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
    let denied = read_only.update_memory(update("outboxed", "x")).await;
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
        .update_memory(update("short-lived", "My plan is HMO Silver."))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_refuses_mcp_calls_without_the_service_token() {
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let url = format!("http://{}/mcp", stack.agent_addr);
    let input: summarizer_agent::tool::SummarizeInput = serde_json::from_value(serde_json::json!({
        "chat_id": "t/c", "messages": [{"id": "m1", "role": "user", "content": "hello"}]
    }))
    .unwrap_or_else(|e| panic!("input: {e}"));
    let anonymous = summarizer_agent::client::AgentClient::new(&url, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        anonymous.summarize(&input).await.is_err(),
        "anonymous MCP call succeeded"
    );
    let token = auth::service_token();
    let trusted = summarizer_agent::client::AgentClient::with_service_token(
        &url,
        Duration::from_secs(5),
        Some(&token),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    trusted
        .summarize(&input)
        .await
        .unwrap_or_else(|e| panic!("trusted call: {e}"));
    stack.shutdown().await;
}
