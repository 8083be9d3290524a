//! Requests refused at the gateway: each bad update names its field and
//! enqueues nothing; unknown chats and jobs are NOT_FOUND, malformed ids
//! INVALID_ARGUMENT.

use tonic::Code;
use tonic_types::StatusExt;

use chat_memory_proto::v1::{ChatMessage, UpdateMemoryRequest};
use test_support::requests::{get, update, update_status, user};
use test_support::{StackOptions, TestStack};

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
        .get_memory(get("never-written"))
        .await
        .expect_err("no memory");
    assert_eq!(s.code(), Code::NotFound);
    let s = client
        .get_update_status(update_status("0191f7c2-6b0e-7a3c-9f00-0123456789ab"))
        .await
        .expect_err("no job");
    assert_eq!(s.code(), Code::NotFound);
    let s = client
        .get_update_status(update_status("nope"))
        .await
        .expect_err("bad id");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("job_id"), "{s:?}");
    let s = client
        .get_memory(get("bad id"))
        .await
        .expect_err("bad chat id");
    assert_eq!(s.code(), Code::InvalidArgument);
    stack.shutdown().await;
}
