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

    // Within JetStream's duplicate window (the message itself is deduplicated).
    let first = accept_then_refuse_the_reuse(&mut client, &original, &reused).await;
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

/// memory-store down when a key is reused: the gateway compares the repeat
/// with the queued job it repeats, refuses to answer a repeat it cannot
/// compare, and the worker keeps the digest of the job it registers; a second
/// message of the job id with other messages (what a reuse accepted after the
/// duplicate window looks like) is dead-lettered, never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_reused_while_memory_store_is_down_is_refused_or_dead_lettered_never_dropped() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let chat = "chat-reuse-down";
    let original = keyed(user_update(chat, "My plan is Blue Shield PPO."), "turn-7");
    let reused = keyed(user_update(chat, "My deductible is $2,000."), "turn-7");
    stack.stop_store().await;

    // Compared with the queued message: no memory-store needed.
    let first = accept_then_refuse_the_reuse(&mut client, &original, &reused).await;

    stack.restart_store().await;
    stack.wait_job_done(&first.job_id, JOB_TIMEOUT).await;
    // The job left the stream, so only memory-store can compare a repeat:
    // while it is down the repeat is not answered, not even a true one.
    stack.stop_store().await;
    let unchecked = client
        .update_memory(original.clone())
        .await
        .expect_err("a repeat nothing can compare");
    assert_eq!(unchecked.code(), Code::Unavailable, "{unchecked:?}");
    assert!(
        unchecked.message().contains("idempotency_key"),
        "{unchecked:?}"
    );
    stack.restart_store().await;
    // The worker registered the job with its digest: the reuse is refused.
    let late = client
        .update_memory(reused.clone())
        .await
        .expect_err("refused by the digest the worker kept");
    assert_eq!(late.code(), Code::InvalidArgument, "{late:?}");
    let again = client
        .update_memory(original)
        .await
        .expect("a true retry")
        .into_inner();
    assert!(again.deduplicated);

    // A second message of the job id with other messages, published under
    // another message id as a reuse past the duplicate window would be.
    publish_past_the_window(
        &stack,
        &first.job_id,
        chat,
        "turn-7",
        reused.messages.clone(),
        "late",
    )
    .await;
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].job_id, first.job_id);
    assert!(letters[0].reason.contains("idempotency key"), "{letters:?}");
    let m = memory(&mut client, chat).await.memory.expect("memory");
    assert_eq!(m.version, 1);
    assert!(!m.user_confirmed.contains("2,000"), "{}", m.user_confirmed);
    stack.shutdown().await;
}

/// memory-store down from a keyed update until two more messages of its job
/// id arrive behind it (what a reuse and a true retry published past the
/// duplicate window look like): the job applies once, the reuse is
/// dead-lettered, the retry skipped. (Whether they meet in one batch depends
/// on redelivery timing; store API `messages_of_one_job_id_in_one_begin_...`
/// covers one call holding all three.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_of_one_job_id_queued_together_apply_once_and_a_reuse_is_dead_lettered() {
    let mut stack = TestStack::start().await;
    let mut client = stack.gateway().await;
    let chat = "chat-queued-reuse";
    let original = keyed(
        user_update(chat, "My plan is Aetna Choice POS II."),
        "turn-9",
    );
    let reused = user_update(chat, "My copay for specialists is $75.");
    stack.stop_store().await;
    let first = client
        .update_memory(original.clone())
        .await
        .expect("accepted while memory-store is down")
        .into_inner();
    for (suffix, messages) in [("reuse", reused.messages), ("retry", original.messages)] {
        publish_past_the_window(&stack, &first.job_id, chat, "turn-9", messages, suffix).await;
    }
    stack.restart_store().await;
    let letters = dead_letters(&stack).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].reason.contains("idempotency key"), "{letters:?}");
    // Every message of the chat has left the stream.
    let js = stack.jetstream().await;
    test_support::wait::until("the queue drained", JOB_TIMEOUT, || {
        let js = js.clone();
        let stream = stack.queue.stream.clone();
        async move {
            let mut stream = js.get_stream(&stream).await.ok()?;
            (stream.info().await.ok()?.state.messages == 0).then_some(())
        }
    })
    .await;
    let m = memory(&mut client, chat).await.memory.expect("memory");
    assert_eq!(m.version, 1, "applied once");
    assert!(m.user_confirmed.contains("Aetna"), "{}", m.user_confirmed);
    assert!(!m.user_confirmed.contains("$75"), "{}", m.user_confirmed);
    stack.shutdown().await;
}

/// Past the duplicate window a reused key's request is published as a message
/// of its own before memory-store refuses it: the caller is refused naming the
/// key, and the worker never applies the message; it dead-letters it, a
/// visible trace of a client reusing keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reuse_refused_past_the_duplicate_window_is_never_applied() {
    let stack = TestStack::start_with(test_support::StackOptions {
        duplicate_window_secs: 1,
        ..test_support::StackOptions::default()
    })
    .await;
    let mut client = stack.gateway().await;
    let chat = "chat-reuse-late";
    let first = client
        .update_memory(keyed(user_update(chat, "My plan is Kaiser HMO."), "turn-3"))
        .await
        .expect("accepted")
        .into_inner();
    stack.wait_job_done(&first.job_id, JOB_TIMEOUT).await;
    let js = stack.jetstream().await;
    let last_seq = || {
        let js = js.clone();
        let stream = stack.queue.stream.clone();
        async move {
            let mut stream = js.get_stream(&stream).await.ok()?;
            stream.info().await.ok().map(|i| i.state.last_sequence)
        }
    };
    let before = last_seq().await.expect("stream");
    // Refused within the window (deduplicated) and past it (published, then
    // refused); repeated until one was past it.
    let reused = keyed(user_update(chat, "My deductible is $3,000."), "turn-3");
    test_support::wait::until("a reuse past the duplicate window", JOB_TIMEOUT, || {
        let mut client = client.clone();
        let reused = reused.clone();
        let last_seq = &last_seq;
        async move {
            let refused = client.update_memory(reused).await.err()?;
            assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
            (last_seq().await? > before).then_some(())
        }
    })
    .await;
    let letters = dead_letters(&stack).await;
    assert_eq!(letters[0].job_id, first.job_id, "{letters:?}");
    // A later update of the chat applies on top of the first only.
    let next = send(&mut client, user_update(chat, "My copay is $20.")).await;
    stack.wait_job_done(&next, JOB_TIMEOUT).await;
    let m = memory(&mut client, chat).await.memory.expect("memory");
    assert_eq!(m.version, 2);
    assert!(!m.user_confirmed.contains("3,000"), "{}", m.user_confirmed);
    stack.shutdown().await;
}

/// Publishes another message of job `job_id` for `chat` under its own message
/// id (`suffix`), as a request with the job's key published past JetStream's
/// duplicate window would be.
async fn publish_past_the_window(
    stack: &TestStack,
    job_id: &str,
    chat: &str,
    key: &str,
    messages: Vec<chat_memory_proto::v1::ChatMessage>,
    suffix: &str,
) {
    use chat_memory_proto::jobs::v1::UpdateJob;
    use chat_memory_proto::namespace::TenantChatId;
    use test_support::auth::{TENANT, USER};
    let publisher = job_queue::JobPublisher::new(stack.jetstream().await, stack.queue.clone());
    let job = UpdateJob {
        job_id: job_id.to_owned(),
        chat_id: TenantChatId::new(TENANT, chat)
            .expect("chat id")
            .as_str()
            .to_owned(),
        messages,
        idempotency_key: key.to_owned(),
        owner_user: USER.into(),
        ..Default::default()
    };
    publisher
        .publish_payload(
            &job.chat_id,
            &format!("{job_id}-{suffix}"),
            prost::Message::encode_to_vec(&job).into(),
            Vec::new(),
        )
        .await
        .expect("published");
}

/// The dead letters, once there is any.
async fn dead_letters(stack: &TestStack) -> Vec<job_queue::dlq::DeadLetterEntry> {
    let js = stack.jetstream().await;
    test_support::wait::until("a dead letter", JOB_TIMEOUT, || {
        let js = js.clone();
        let queue = stack.queue.clone();
        async move {
            let list = job_queue::dlq::list(&js, &queue, 10).await.ok()?;
            (!list.is_empty()).then_some(list)
        }
    })
    .await
}

/// Sends `original` (accepted), then `reused` (its key with other messages:
/// refused naming the key), then `original` again (a true retry: the same job,
/// deduplicated); the first answer.
async fn accept_then_refuse_the_reuse(
    client: &mut test_support::GatewayClient,
    original: &chat_memory_proto::v1::UpdateMemoryRequest,
    reused: &chat_memory_proto::v1::UpdateMemoryRequest,
) -> chat_memory_proto::v1::UpdateMemoryResponse {
    let first = client
        .update_memory(original.clone())
        .await
        .expect("the first request")
        .into_inner();
    let refused = client
        .update_memory(reused.clone())
        .await
        .expect_err("a reused key with other messages must be refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let details = refused
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details: {refused:?}"));
    assert_eq!(details.field_violations[0].field, "idempotency_key");
    let retry = client
        .update_memory(original.clone())
        .await
        .expect("a true retry")
        .into_inner();
    assert_eq!(retry.job_id, first.job_id);
    assert!(retry.deduplicated);
    first
}
