//! Every RPC of every service needs credentials; each public RPC needs its scope.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::FileDescriptorSet;
use tonic::Code;

use chat_memory_proto::v1::QueryAuditRequest;
use test_support::auth::{self, Bearer};
use test_support::requests::{delete, get, update_status, user_update};
use test_support::stack::channel;
use test_support::{StackOptions, TestStack};

use super::RW;

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
        .update_memory(user_update("c", "hi"))
        .await
        .expect_err("update");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = read.delete_memory(delete("c")).await.expect_err("delete");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = write.get_memory(get("c")).await.expect_err("read");
    assert_eq!(s.code(), Code::PermissionDenied);
    let s = write
        .query_audit(QueryAuditRequest::default())
        .await
        .expect_err("audit");
    assert_eq!(s.code(), Code::PermissionDenied);
    write
        .update_memory(user_update("c", "hi"))
        .await
        .expect("write may update");
    read.get_update_status(update_status("0191f7c2-6b0e-7a3c-9f00-0123456789ab"))
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
async fn the_gateway_neither_lists_nor_serves_the_internal_store_api() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let stack = TestStack::start_with(StackOptions {
        workers: 0,
        ..StackOptions::default()
    })
    .await;

    // Reflection lists what the gateway serves, and not memory-store's API.
    let mut reflection = ServerReflectionClient::new(channel(stack.gateway_addr).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap_or_else(|s| panic!("reflection: {s:?}"))
        .into_inner();
    let answer = answers
        .message()
        .await
        .unwrap_or_else(|s| panic!("reflection answer: {s:?}"))
        .and_then(|a| a.message_response);
    let Some(MessageResponse::ListServicesResponse(listed)) = answer else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<&str> = listed.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"chatmemory.v1.MemoryService"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("chatmemory.store")),
        "internal API listed: {names:?}"
    );

    // Its methods are UNIMPLEMENTED on the gateway, with or without a token.
    let valid = Bearer::new(&auth::mint(
        "tenant-m",
        "user-m",
        &["memory:read", "memory:write", "memory:admin"],
    ));
    for bearer in [Bearer::none(), valid, Bearer::new(auth::SERVICE_TOKEN)] {
        for method in ["GetMemory", "CommitJobs", "RecordAudit"] {
            let code = raw_call(
                stack.gateway_addr,
                "chatmemory.store.v1.MemoryStore",
                method,
                bearer.clone(),
            )
            .await;
            assert_eq!(code, Code::Unimplemented, "{method}");
        }
    }
    stack.shutdown().await;
}
