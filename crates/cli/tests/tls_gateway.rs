//! The real `chat-memory` binary against a gateway serving TLS with the
//! certificates `scripts/local-tls.sh` makes: the README's TLS try-out
//! (`CHAT_MEMORY_TLS=1 scripts/run-local.sh`), with the rest of the stack real
//! and in-process.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use test_support::pki::LocalTls;
use test_support::{StackOptions, TestStack, auth};

/// Long enough for an update to be summarised and committed in a debug build.
const CLI_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `chat-memory args...` with only the environment the README exports.
async fn chat_memory(gateway: &str, ca_cert: &str, token: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-memory"))
        .args(args)
        .env_clear()
        .env("CHAT_MEMORY_GATEWAY", gateway)
        .env("CHAT_MEMORY_CA_CERT", ca_cert)
        .env("CHAT_MEMORY_TOKEN", token)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(CLI_DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("chat-memory {args:?} did not finish in {CLI_DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("run chat-memory: {e}"))
}

/// The JSON a successful command printed.
fn printed_json(args: &str, out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat-memory {args}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "chat-memory {args} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_updates_and_reads_a_memory_through_a_tls_gateway_trusting_a_ca_file() {
    // Arrange: the gateway serves the run-local certificate.
    let tls = LocalTls::generate();
    let stack = TestStack::start_with(StackOptions {
        gateway_tls: Some(tls.gateway_tls()),
        ..StackOptions::default()
    })
    .await;
    let token = auth::mint(auth::TENANT, auth::USER, &["memory:read", "memory:write"]);
    let ca = tls.path("ca.crt");
    let port = stack.gateway_addr.port();

    // Act: update --wait by name, then get by address (the certificate names both).
    let updated = chat_memory(
        &format!("https://localhost:{port}"),
        &ca,
        &token,
        &[
            "update",
            "--chat",
            "tls-1",
            "-m",
            "user:My plan is Blue Shield PPO.",
            "--wait",
        ],
    )
    .await;
    let read = chat_memory(
        &format!("https://127.0.0.1:{port}"),
        &ca,
        &token,
        &["get", "tls-1"],
    )
    .await;

    // Assert
    let job = printed_json("update --wait", &updated);
    assert_eq!(job["state"], "succeeded", "{job}");
    let memory = printed_json("get", &read);
    let confirmed = memory["user_confirmed"].as_str().unwrap_or_default();
    assert!(confirmed.contains("Blue Shield PPO"), "{memory}");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_names_the_cause_when_it_does_not_trust_the_gateway_certificate() {
    // Arrange: the CLI trusts another local CA than the one that signed the gateway's.
    let tls = LocalTls::generate();
    let other_ca = LocalTls::generate();
    let stack = TestStack::start_with(StackOptions {
        gateway_tls: Some(tls.gateway_tls()),
        workers: 0,
        ..StackOptions::default()
    })
    .await;
    let token = auth::mint(auth::TENANT, auth::USER, &["memory:read"]);
    let gateway = format!("https://localhost:{}", stack.gateway_addr.port());

    // Act
    let refused = chat_memory(
        &gateway,
        &other_ca.path("ca.crt"),
        &token,
        &["get", "tls-1"],
    )
    .await;

    // Assert: not a bare "transport error", but what went wrong under it.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the gateway at {gateway}: transport error"
        )),
        "{stderr}"
    );
    // (BadSignature: both local CAs bear the same name, but the key differs.)
    assert!(stderr.contains("invalid peer certificate: "), "{stderr}");
    stack.shutdown().await;
}
