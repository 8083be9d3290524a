//! Idempotency keys: a retry is the same job and applies once; a key reused
//! for other messages is refused naming the key.

use tonic::Code;
use tonic_types::StatusExt;

use test_support::TestStack;
use test_support::requests::{keyed, memory, send, update, user, user_update};

use super::JOB_TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_reused_for_other_messages_is_refused_naming_the_key() {
    let stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let original = keyed(
        user_update("chat-reuse", "My plan is Blue Shield PPO."),
        "turn-41",
    );
    let reused = keyed(
        user_update("chat-reuse", "My deductible is $2,000."),
        "turn-41",
    );

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
    let req = keyed(
        user_update(
            "chat-idem",
            "My deductible is $1,500 and I have met $900 of it.",
        ),
        "req-7f3a",
    );

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
